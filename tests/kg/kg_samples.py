"""Tiny HPO-, DO-, hpoa- and triples-shaped files for fast knowledge-graph tests."""

from __future__ import annotations

import gzip
from pathlib import Path

HP_OBO = """\
format-version: 1.2
data-version: hp/releases/2025-01-16
ontology: hp.obo
property_value: dc:title "Human Phenotype Ontology" xsd:string

[Term]
id: HP:0000001
name: All

[Term]
id: HP:0000118
name: Phenotypic abnormality
is_a: HP:0000001 ! All

[Term]
id: HP:0000098
name: Tall stature
def: "A height above that which is expected." []
synonym: "Increased body height" EXACT []
xref: UMLS:C0241240
is_a: HP:0000118

[Term]
id: HP:0001519
name: Disproportionate tall stature
is_a: HP:0000098 ! Tall stature

[Term]
id: HP:0100807
name: Long fingers
is_a: HP:0000118

[Term]
id: HP:0001166
name: Arachnodactyly
def: "Abnormally long and slender fingers (spider fingers)." []
synonym: "Spider fingers" EXACT []
synonym: "Long slender fingers" EXACT layperson []
xref: UMLS:C0003706
xref: SNOMEDCT_US:62250003
is_a: HP:0100807 ! Long fingers

[Term]
id: HP:0001083
name: Ectopia lentis
alt_id: HP:0000665
synonym: "Lens dislocation" EXACT []
is_a: HP:0000118

[Term]
id: HP:0001631
name: Atrial septal defect
synonym: "ASD" EXACT abbreviation []
is_a: HP:0000118

[Term]
id: HP:0001662
name: Bradycardia
synonym: "Slow heart rate" EXACT layperson []
is_a: HP:0000118

[Term]
id: HP:0000999
name: obsolete Old term
is_obsolete: true

[Term]
name: a stanza without an id

[Term]
id: HP:0002000
name: Broken stanza
this line is not a tag value pair
"""

DO_OBO = """\
format-version: 1.2
data-version: releases/2016-09-01
ontology: doid

[Term]
id: DOID:4
name: disease

[Term]
id: DOID:14323
name: Marfan syndrome
synonym: "Marfan's syndrome" EXACT []
xref: OMIM:154700
xref: UMLS_CUI:C0024796
xref: MSH:D008382
is_a: DOID:4 ! disease

[Term]
id: DOID:9999
name: homocystinuria
xref: OMIM:236200
is_a: DOID:4
"""

HPOA_HEADER = (
    "#description: tiny annotations\n#version: 2025-01-16\n"
    "database_id\tdisease_name\tqualifier\thpo_id\treference\tevidence\tonset\tfrequency\tsex\tmodifier\taspect\tbiocuration\n"
)
HPOA_ROWS = [
    "OMIM:154700\tMarfan syndrome\t\tHP:0001519\tPMID:1\tPCS\t\t38/53\t\t\tP\tHPO:x",
    "OMIM:154700\tMarfan syndrome\t\tHP:0001166\tPMID:2;PMID:3\tPCS\t\t124/197\t\t\tP\tHPO:x",
    "OMIM:154700\tMarfan syndrome\t\tHP:0000665\tOMIM:154700\tIEA\t\tHP:0040282\t\t\tP\tHPO:x",  # an alt id of Ectopia lentis
    "OMIM:236200\tHomocystinuria\t\tHP:0001166\tOMIM:236200\tIEA\t\t\t\t\tP\tHPO:x",
    "OMIM:236200\tHomocystinuria\t\tHP:0001662\tOMIM:236200\tIEA\t\t\t\t\tP\tHPO:x",
    "OMIM:100000\tBradycardia syndrome\t\tHP:0001662\tOMIM:100000\tTAS\tHP:0003577\t1/1\t\t\tP\tHPO:x",
    "ORPHA:1\tSeptal syndrome\t\tHP:0001631\tORPHA:1\tTAS\t\tHP:0040281\t\t\tP\tHPO:x",
    "ORPHA:1\tSeptal syndrome\tNOT\tHP:0001166\tORPHA:1\tTAS\t\t\t\t\tP\tHPO:x",
    "OMIM:154700\tMarfan syndrome\t\tHP:9999999\tPMID:9\tPCS\t\t\t\t\tP\tHPO:x",  # unknown phenotype id
    "OMIM:154700\ttoo few columns",
]
HPOA = HPOA_HEADER + "\n".join(HPOA_ROWS) + "\n"

TRIPLES_CSV = """head,relation,tail,source,head_name
DRUG:1,treats,OMIM:154700,PMID:42,Losartan
HP:0001166,seen_in,DOID:14323,,
,treats,OMIM:154700,,
"""

TRIPLES_JSONL = '{"head": "DRUG:2", "relation": "treats", "tail": "OMIM:236200", "source": "curated", "head_name": "Pyridoxine"}\n'


def write_sources(folder: Path, *, gz: bool = False) -> dict[str, Path]:
    """Write the tiny sources into ``folder``; returns their paths by role."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"hp": folder / "hp.obo", "do": folder / "HumanDO.obo", "csv": folder / "triples.csv", "jsonl": folder / "triples.jsonl"}
    paths["hp"].write_text(HP_OBO, encoding="utf-8")
    paths["do"].write_text(DO_OBO, encoding="utf-8")
    paths["csv"].write_text(TRIPLES_CSV, encoding="utf-8")
    paths["jsonl"].write_text(TRIPLES_JSONL, encoding="utf-8")
    if gz:
        paths["hpoa"] = folder / "phenotype.hpoa.gz"
        paths["hpoa"].write_bytes(gzip.compress(HPOA.encode()))
    else:
        paths["hpoa"] = folder / "phenotype.hpoa"
        paths["hpoa"].write_text(HPOA, encoding="utf-8")
    return paths


RECIPE = """\
name: tiny
sources:
  - format: hpoa
    path: phenotype.hpoa
  - format: obo
    path: hp.obo
  - format: obo
    path: {do}
    title: Human Disease Ontology
  - format: triples
    path: triples.csv
  - format: triples
    path: triples.jsonl
"""


def write_recipe(folder: Path) -> Path:
    """Sources plus a recipe using relative paths (and one absolute path)."""
    paths = write_sources(folder)
    recipe = folder / "tiny.yaml"
    recipe.write_text(RECIPE.format(do=paths["do"]), encoding="utf-8")
    return recipe


def build_tiny(folder: Path):
    from medrag.kg.build import SourceSpec, build_graph

    paths = write_sources(folder)
    return build_graph([
        SourceSpec("obo", paths["hp"]),
        SourceSpec("obo", paths["do"], title="Human Disease Ontology"),
        SourceSpec("hpoa", paths["hpoa"]),
        SourceSpec("triples", paths["csv"]),
        SourceSpec("triples", paths["jsonl"]),
    ])
