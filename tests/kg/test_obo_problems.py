"""The OBO reader skips, logs and counts malformed [Term] stanzas instead of failing."""

from __future__ import annotations

import logging

import pytest

from medrag.errors import SourceFileError
from medrag.kg.obo import read_obo

GOOD = "[Term]\nid: X:1\nname: one\n\n"


@pytest.mark.parametrize(
    "stanza, reason",
    [
        ("[Term]\nname: no id here\n", "before the stanza's id"),
        ("[Term]\nid: not an id\nname: spaces\n", "not of the form PREFIX:LOCAL"),
        ("[Term]\nid: NOCOLON\n", "not of the form PREFIX:LOCAL"),
        ("[Term]\nid: X:1\nname: again\n", "appears twice"),
        ("[Term]\nid: X:2\nid: X:3\n", "a second id"),
        ("[Term]\nid: X:2\nthis is prose, not a tag\n", "not a 'tag: value' line"),
        ('[Term]\nid: X:2\ndef: "never closed\n', "unterminated quoted def"),
        ("[Term]\nid: X:2\nis_a:\n", "empty is_a"),
        ("[Term]\n", "stanza without an id"),
    ],
)
def test_malformed_stanza_is_skipped_and_counted(tmp_path, caplog, stanza, reason):
    path = tmp_path / "bad.obo"
    path.write_text("format-version: 1.2\n\n" + GOOD + stanza + "\n[Term]\nid: X:9\nname: nine\n")
    with caplog.at_level(logging.WARNING, logger="medrag.kg.obo"):
        onto = read_obo(path)
    assert "X:1" in onto.terms and "X:9" in onto.terms
    assert onto.skipped == 1
    assert reason in onto.problems[0]
    assert "skipped malformed [Term]" in caplog.text


def test_all_stanzas_malformed_raises_with_the_first_reason(tmp_path):
    path = tmp_path / "bad.obo"
    path.write_text("[Term]\nname: x\n\n[Term]\nid: bad id\n")
    with pytest.raises(SourceFileError, match=r"no \[Term\] stanzas could be read \(2 malformed"):
        read_obo(path)


def test_alt_ids_and_abbreviations(tmp_path):
    path = tmp_path / "t.obo"
    path.write_text('[Term]\nid: X:1\nname: Atrial septal defect\nalt_id: X:7 ! old\nsynonym: "ASD" EXACT abbreviation []\nsynonym: "Hole" EXACT []\n')
    term = read_obo(path).terms["X:1"]
    assert term.alt_ids == ["X:7"]
    assert term.abbreviations == ["ASD"]
    assert term.synonyms == [("ASD", "EXACT"), ("Hole", "EXACT")]


def test_clean_file_has_no_problems(tmp_path):
    path = tmp_path / "ok.obo"
    path.write_text(GOOD + "[Typedef]\nid: part_of\nfree text in a typedef is not our business\n")
    onto = read_obo(path)
    assert onto.problems == [] and onto.skipped == 0
