"""A small, strict reader of OBO 1.2 ontology files (HPO, Disease Ontology, ...)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medrag.errors import SourceFileError

SYNONYM_SCOPES = frozenset({"EXACT", "RELATED", "BROAD", "NARROW"})
_QUOTED = re.compile(r'^"((?:[^"\\]|\\.)*)"\s*(.*)$')


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


@dataclass
class Ontology:
    terms: dict[str, OboTerm]
    header: dict[str, str]
    source: str

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


def read_obo(path: str | Path) -> Ontology:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SourceFileError(path, "file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceFileError(path, f"cannot read OBO file: {exc}") from exc
    header: dict[str, str] = {}
    terms: dict[str, OboTerm] = {}
    current: OboTerm | None = None
    in_term = False
    in_header = True  # header lines come before the first stanza ([Term], [Typedef], ...)
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("!"):
            continue
        if line.startswith("["):
            in_header = False
            in_term = line == "[Term]"
            current = None
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        value = re.sub(r"\s+!.*$", "", value) if key in {"is_a", "xref"} else value
        if in_header:
            if key == "property_value" and re.match(r"(dc:|http://purl.org/dc/elements/1.1/)title ", value):
                header["title"] = _unquote(value.split(" ", 1)[1])[0]
            header.setdefault(key, value)
            continue
        if not in_term:
            continue
        if key == "id":
            current = OboTerm(id=value)
            terms[value] = current
        elif current is None:
            continue
        elif key == "name":
            current.name = value
        elif key == "def":
            current.definition = _unquote(value)[0]
        elif key == "synonym":
            syn, rest = _unquote(value)
            scope = rest.split()[0] if rest else ""
            current.synonyms.append((syn, scope if scope in SYNONYM_SCOPES else "RELATED"))  # OBO 1.2: scope optional
        elif key == "is_a":
            current.is_a.append(value.split()[0])
        elif key == "xref":
            current.xrefs.append(value.split()[0])
        elif key == "comment":
            current.comment = value
        elif key == "is_obsolete":
            current.obsolete = value == "true"
    if not terms:
        raise SourceFileError(path, "no [Term] stanzas found: not an OBO ontology file")
    return Ontology(terms=terms, header=header, source=path.name)
