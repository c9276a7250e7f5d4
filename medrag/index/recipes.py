"""Index recipes: a YAML file saying which sources, embedder, index kind and chunking make an index.

The repository's ``indexes/`` folder holds one folder per recipe (``indexes/NAME/index.yaml``);
``medrag index build RECIPE`` turns a recipe into a named index under the index home::

    name: textbook                      # the index it builds (default: the recipe folder's name)
    description: OpenStax A&P chapters
    embedder: all-MiniLM-L6-v2
    index: {kind: auto, params: {}}     # flat | hnsw | ivfpq | auto; params: medrag.index.faiss_index.AnnParams
    chunking: {max_words: 120, overlap_sentences: 1}
    skip_bad: true                      # log and skip unreadable files instead of stopping
    sources:
      - path: ../../../shared/data/textbook   # relative to this file; ~ and $VARS expand
        include: ["*.pdf"]
        exclude: ["*_SCANNED.pdf"]
      - path: abstracts.jsonl
        id_field: doc_id                 # JSONL/CSV field mapping
        text_fields: [text]
        title_field: title

Building is incremental: files already in the index with the same content are skipped, so
re-running a recipe after adding files embeds only the new ones. The recipe (its path and a
hash of its text) is saved in the index manifest.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medrag.config import ChunkingSettings, Settings
from medrag.errors import ConfigError, InputError, SourceFileError
from medrag.index.faiss_index import KINDS, AnnParams

log = logging.getLogger(__name__)

RECIPE_FILE = "index.yaml"
RECIPES_DIR = Path("indexes")


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    include: list[str] = Field(default_factory=list, description="file-name globs to keep (default: every supported file)")
    exclude: list[str] = Field(default_factory=list, description="file-name globs to leave out")
    id_field: str | None = None
    text_fields: list[str] = Field(default_factory=list)
    title_field: str | None = None


class IndexSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal[KINDS] = "auto"  # type: ignore[valid-type]
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _known_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            AnnParams.from_dict(value)  # unknown or invalid parameters fail here, before any work
        except InputError as exc:
            raise ValueError(str(exc)) from exc
        return value


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    embedder: str = "all-MiniLM-L6-v2"
    index: IndexSpec = IndexSpec()
    chunking: ChunkingSettings = ChunkingSettings()
    skip_bad: bool = True
    store: str = Field("faiss", description="where vectors live: faiss (index folder), milvus, pgvector")
    store_uri: str | None = Field(None, description="Milvus URI or PostgreSQL DSN; default: the embedded one under MEDRAG_HOME")
    engine: str = Field("local", description="ingestion engine: local (one process) or ray (Ray Data)")
    ray_address: str | None = Field(None, description="engine ray: auto, ray://HOST:PORT, or none for a local Ray")
    sources: list[SourceSpec] = Field(min_length=1)
    folder: Path = Field(Path("."), exclude=True)  # where the recipe file is: relative paths start here
    fingerprint: str = Field("", exclude=True)

    def settings_record(self) -> dict[str, Any]:
        """What the index manifest keeps of the recipe (so an index says how it was made)."""
        return {**self.model_dump(mode="json"), "file": str(self.folder / RECIPE_FILE), "sha256": self.fingerprint}


def find_recipe(spec: str | Path, recipes_dir: Path = RECIPES_DIR) -> Path:
    """A recipe file from a path to the YAML file, to its folder, or a recipe name under ``indexes/``."""
    path = Path(spec).expanduser()
    for candidate in (path, path / RECIPE_FILE, recipes_dir / str(spec) / RECIPE_FILE):
        if candidate.is_file():
            return candidate
    known = sorted(p.parent.name for p in recipes_dir.glob(f"*/{RECIPE_FILE}")) if recipes_dir.is_dir() else []
    raise ConfigError(
        f"no index recipe at {spec!r}: give a YAML file, a folder holding {RECIPE_FILE}, or a recipe name "
        f"under {recipes_dir}/ (known: {', '.join(known) or 'none'})"
    )


def load_recipe(spec: str | Path, recipes_dir: Path = RECIPES_DIR) -> Recipe:
    path = find_recipe(spec, recipes_dir)
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read index recipe {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"index recipe {path} must hold a mapping (name, embedder, index, sources ...)")
    data.setdefault("name", path.parent.name if path.name == RECIPE_FILE else path.stem)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid index recipe {path}: {exc}") from exc
    recipe.folder = path.parent.resolve()
    recipe.fingerprint = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return recipe


def source_files(recipe: Recipe, source: SourceSpec) -> list[Path]:
    """The files one source names, after include/exclude (paths relative to the recipe's folder)."""
    from medrag.ingest.pipeline import collect_files

    root = Path(os.path.expandvars(source.path)).expanduser()
    root = root if root.is_absolute() else recipe.folder / root
    if not root.exists():
        raise SourceFileError(root, f"source of recipe '{recipe.name}' not found (paths are relative to {recipe.folder})")
    files = collect_files([root])
    if source.include:
        files = [f for f in files if any(fnmatch.fnmatch(f.name, g) for g in source.include)]
    files = [f for f in files if not any(fnmatch.fnmatch(f.name, g) for g in source.exclude)]
    if not files:
        raise SourceFileError(root, f"no files left after include {source.include} / exclude {source.exclude}")
    return files


@dataclass
class BuildReport:
    index: str
    ingested: list[Any] = field(default_factory=list)  # IngestReport per source
    compaction: dict[str, Any] | None = None
    vectors: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [r.summary() for r in self.ingested]
        if self.compaction:
            after = self.compaction.get("after") or {}  # external stores (Milvus, pgvector) compact on their own
            lines.append(
                f"compacted: {after.get('count', '?')} vectors as {after.get('structure', '?')}, dropped {self.compaction.get('dropped', 0)}"
            )
        if self.vectors:
            lines.append(f"vectors: {self.vectors.get('count')} ({self.vectors.get('structure', self.vectors.get('kind', '?'))})")
        return "\n".join(lines)


def build_recipe(recipe: Recipe, settings: Settings, *, name: str | None = None, rebuild: bool = False, progress: bool | None = None) -> BuildReport:
    """Build (or bring up to date) the index a recipe describes; returns what was done."""
    from medrag.embed.text import make_embedder
    from medrag.errors import IndexMismatch
    from medrag.index.text_index import IndexStore, TextIndex, validate_index_name
    from medrag.ingest.pipeline import ingest
    from medrag.ingest.ray_engine import ENGINES, run_engine
    from medrag.ingest.records import RecordMapping
    from medrag.index.stores import check_store

    name = validate_index_name(name or recipe.name)
    settings = settings.model_copy(update={"chunking": recipe.chunking})
    store = IndexStore(settings.indexes_dir)
    if recipe.engine not in ENGINES:
        raise ConfigError(f"recipe {recipe.name}: unknown engine {recipe.engine!r}; known: {', '.join(sorted(ENGINES))}")
    check_store(recipe.store)
    files = [(source, source_files(recipe, source)) for source in recipe.sources]  # fail before any work
    embedder = make_embedder(recipe.embedder, device=settings.device)

    if store.exists(name) and rebuild:
        store.delete(name)
    created = False
    if store.exists(name):
        stored = store.info(name)
        made_with = (stored.get("settings") or {}).get("index", {}).get("kind", "flat")
        if stored["embedder"]["name"] != embedder.info().name or made_with != recipe.index.kind:
            raise IndexMismatch(
                f"index '{name}' was built with embedder {stored['embedder']['name']} / kind {made_with}, the recipe asks for "
                f"{embedder.info().name} / {recipe.index.kind}; run again with --rebuild to replace it"
            )
    else:
        index_settings = {
            "chunking": recipe.chunking.model_dump(),
            "index": recipe.index.model_dump(),
            "recipe": recipe.settings_record(),
        }
        store.save(
            TextIndex(name, embedder.info(), settings=index_settings, store=recipe.store, store_uri=recipe.store_uri, home=settings.home)
        )
        created = True

    report = BuildReport(index=name)
    try:
        for source, paths in files:
            mapping = None
            if source.id_field or source.text_fields or source.title_field:
                mapping = RecordMapping(source.id_field, tuple(source.text_fields), source.title_field)
            if recipe.engine == "local":
                done = ingest(
                    paths, index_name=name, embedder=embedder, settings=settings, skip_bad=recipe.skip_bad,
                    progress=progress, mapping=mapping, vector_store=recipe.store, store_uri=recipe.store_uri,
                )
            else:
                done = run_engine(
                    recipe.engine, paths, embedder_spec=recipe.embedder, settings=settings, ray_address=recipe.ray_address,
                    index_name=name, mapping=mapping, vector_store=recipe.store, store_uri=recipe.store_uri,
                )
            report.ingested.append(done)
    except BaseException:
        if created and not len(store.open(name)):  # do not leave an empty index behind a failed first build
            store.delete(name)
        raise
    changed = any(r.added or r.replaced for r in report.ingested)
    if changed:
        # Pick the structure for the final size (auto) and train IVF-PQ on everything at once.
        report.compaction = store.compact(name)
    report.vectors = store.info(name).get("vectors", {})
    return report
