"""A small, strict reader of OBO 1.2 ontology files (HPO, Disease Ontology, ...).

A malformed ``[Term]`` stanza (no id, an id that is not ``PREFIX:LOCAL``, a
repeated id, a line that is not ``tag: value``, an unterminated quoted value)
is logged, skipped and counted in ``Ontology.problems``: one bad stanza in a
20,000-term file should not stop a build.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medrag.errors import SourceFileError

SYNONYM_SCOPES = frozenset({"EXACT", "RELATED", "BROAD", "NARROW"})
_QUOTED = re.compile(r'^"((?:[^"\\]|\\.)*)"\s*(.*)$')
_TERM_ID = re.compile(r"^[^\s:]+:\S+$")
_TAG = re.compile(r"^[A-Za-z][\w-]*$")

log = logging.getLogger(__name__)


@dataclass
class OboTerm:
    id: str
    name: str = ""
    definition: str = ""
    synonyms: list[tuple[str, str]] = field(default_factory=list)  # (text, scope: EXACT/RELATED/BROAD/NARROW)
    is_a: list[str] = field(default_factory=list)
    xrefs: list[str] = field(default_factory=list)
    comment: str = ""
    obsolete: bool = False
    alt_ids: list[str] = field(default_factory=list)
    abbreviations: list[str] = field(default_factory=list)  # synonyms typed "abbreviation" (HPO)


@dataclass
class Ontology:
    terms: dict[str, OboTerm]
    header: dict[str, str]
    source: str
    problems: list[str] = field(default_factory=list)  # one line per skipped stanza: "line N: reason"

    @property
    def skipped(self) -> int:
        return len(self.problems)

    @property
    def version(self) -> str:
        return self.header.get("data-version", "")

    def live_terms(self) -> Iterator[OboTerm]:
        return (t for t in self.terms.values() if not t.obsolete)

    def descendants(self, root: str) -> set[str]:
        children: dict[str, list[str]] = {}
        for term in self.live_terms():
            for parent in term.is_a:
                children.setdefault(parent, []).append(term.id)
        seen, stack = {root}, [root]
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        return seen


def _unquote(value: str) -> tuple[str, str]:
    match = _QUOTED.match(value)
    if not match:
        return value, ""
    return match.group(1).replace('\\"', '"'), match.group(2)


def _stanzas(lines: list[str]) -> Iterator[tuple[str, int, list[tuple[int, str]]]]:
    """Yield (kind, first line number, [(line number, line)]) per stanza; kind "" is the header."""
    kind, start, body = "", 1, []
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("!"):
            continue
        if line.startswith("["):
            yield kind, start, body
            kind, start, body = line, lineno, []
            continue
        body.append((lineno, line))
    yield kind, start, body


def _split_tag(line: str) -> tuple[str, str] | None:
    key, sep, value = line.partition(":")
    if not sep or not _TAG.match(key):
        return None
    return key, value.strip()


def _parse_term(body: list[tuple[int, str]], seen: dict[str, OboTerm]) -> OboTerm:
    """One [Term] stanza; raises ValueError with the reason when it is malformed."""
    term: OboTerm | None = None
    for lineno, line in body:
        tagged = _split_tag(line)
        if tagged is None:
            raise ValueError(f"line {lineno}: not a 'tag: value' line: {line[:60]!r}")
        key, value = tagged
        if key in {"is_a", "xref", "alt_id"}:
            value = re.sub(r"\s+!.*$", "", value)
        if key == "id":
            if term is not None:
                raise ValueError(f"line {lineno}: a second id in one stanza")
            if not _TERM_ID.match(value):
                raise ValueError(f"line {lineno}: id {value!r} is not of the form PREFIX:LOCAL")
            if value in seen:
                raise ValueError(f"line {lineno}: id {value} appears twice")
            term = OboTerm(id=value)
            continue
        if term is None:
            raise ValueError(f"line {lineno}: '{key}' before the stanza's id")
        if key in {"def", "synonym"} and value.startswith('"') and not _QUOTED.match(value):
            raise ValueError(f"line {lineno}: unterminated quoted {key}")
        if key in {"is_a", "xref", "alt_id"} and not value:
            raise ValueError(f"line {lineno}: empty {key}")
        if key == "name":
            term.name = value
        elif key == "def":
            term.definition = _unquote(value)[0]
        elif key == "synonym":
            syn, rest = _unquote(value)
            words = rest.split()
            scope = words[0] if words else ""
            term.synonyms.append((syn, scope if scope in SYNONYM_SCOPES else "RELATED"))  # OBO 1.2: scope optional
            if len(words) > 1 and words[1] == "abbreviation":
                term.abbreviations.append(syn)
        elif key == "is_a":
            term.is_a.append(value.split()[0])
        elif key == "xref":
            term.xrefs.append(value.split()[0])
        elif key == "alt_id":
            term.alt_ids.append(value.split()[0])
        elif key == "comment":
            term.comment = value
        elif key == "is_obsolete":
            term.obsolete = value == "true"
    if term is None:
        raise ValueError("stanza without an id")
    return term


def read_obo(path: str | Path) -> Ontology:
    """Read an OBO file; malformed [Term] stanzas are skipped and listed in ``problems``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SourceFileError(path, "file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceFileError(path, f"cannot read OBO file: {exc}") from exc
    header: dict[str, str] = {}
    terms: dict[str, OboTerm] = {}
    problems: list[str] = []
    for kind, start, body in _stanzas(text.splitlines()):
        if kind == "":  # header lines come before the first stanza ([Term], [Typedef], ...)
            for _, line in body:
                key, sep, value = line.partition(": ")
                if not sep:
                    continue
                if key == "property_value" and re.match(r"(dc:|http://purl.org/dc/elements/1.1/)title ", value):
                    header["title"] = _unquote(value.split(" ", 1)[1])[0]
                header.setdefault(key, value)
        elif kind == "[Term]":
            try:
                term = _parse_term(body, terms)
            except ValueError as exc:
                problems.append(f"[Term] at line {start}: {exc}")
                log.warning("%s: skipped malformed [Term] at line %d: %s", path.name, start, exc)
                continue
            terms[term.id] = term
    if not terms:
        reason = "no [Term] stanzas found: not an OBO ontology file"
        if problems:
            reason = f"no [Term] stanzas could be read ({len(problems)} malformed; first: {problems[0]})"
        raise SourceFileError(path, reason)
    return Ontology(terms=terms, header=header, source=path.name, problems=problems)
