"""Typed settings: defaults < settings file < environment (MEDRAG_*) < explicit arguments.

The settings file is YAML or TOML, found at ``$MEDRAG_CONFIG`` or
``$MEDRAG_HOME/config.yaml``. Every saved artifact stores the part of the
settings that made it (see the index manifest), so results can be reproduced.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medrag.errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport (a declared dependency there)
    import tomli as tomllib

DEFAULT_HOME = Path("~/.medrag")


class ChunkingSettings(BaseModel):
    # 180 words (~240 word pieces) nearly fill MiniLM's 256-piece window, and no overlap: on the
    # textbook questions 180/0 found the gold page first as often as 120/0 and more often than
    # 120/1 (0.925 vs 0.90), with MIRAGE unchanged, while embedding ~25% fewer word pieces
    # (tools/eval_retrieval.py, tools/bench_ingest.py; docs/ingest.md has the table).
    max_words: int = Field(180, ge=10, description="target chunk length in words")
    overlap_sentences: int = Field(0, ge=0, description="sentences repeated between neighbouring chunks")


class RetrievalSettings(BaseModel):
    top_k: int = Field(8, ge=1, le=200, description="evidence passages handed to the composer")
    candidates: int = Field(50, ge=1, description="hits taken from each retriever before fusion")
    rrf_k: int = Field(60, ge=1, description="reciprocal-rank-fusion constant")
    dense_weight: float = Field(1.0, ge=0.0, description="weight of the dense ranking in fusion")
    lexical_weight: float = Field(1.0, ge=0.0, description="weight of the BM25 ranking in fusion")
    fusion: Literal["score", "rrf"] = Field(
        "score", description="score: convex combination of scores divided by their list's best; rrf: reciprocal rank fusion (ranks only)"
    )
    dense_share: float = Field(
        0.75, ge=0.0, le=1.0, description="score fusion: weight of the dense scores, BM25 gets the rest (tuned on the MIRAGE dev half)"
    )
    source_weights: dict[str, float] = Field(
        default_factory=dict, description="fused-score multiplier per source file (glob, e.g. {'*.pdf': 1.2}); first match wins"
    )
    page_weight: float = Field(0.5, ge=0.0, description="weight of the page-level BM25 rank in fusion")
    figure_weight: float = Field(0.5, ge=0.0, description="boost of caption chunks when the question asks about a figure")
    adaptive_ratio: float | None = Field(
        None, gt=0.0, le=1.0, description="adaptive k: keep passages scoring at least this share of the best (None = fixed k)"
    )
    dedup_threshold: float = Field(0.9, gt=0.0, le=1.0, description="word overlap above which a lower-ranked passage is a duplicate")


class AgentSettings(BaseModel):
    max_sentences: int = Field(3, ge=1, le=20)
    abstain_below: float = Field(0.45, ge=0.0, le=1.0, description="confidence under which the agent abstains")
    min_support: float = Field(0.5, ge=0.0, le=1.0, description="sentence support under which verify drops it")
    max_rounds: int = Field(3, ge=1, le=10, description="think-act-rethink rounds before composing regardless")
    sufficient_above: float = Field(
        0.5, ge=0.0, le=1.0, description="relevance of the best evidence for a sub-question at which it counts as answered"
    )
    tool_timeout_s: float = Field(60.0, gt=0.0, description="a tool call running longer becomes a failed step")
    max_parallel_tools: int = Field(4, ge=1, le=32, description="tool calls run at once in one round")
    deidentify: bool = Field(False, description="scrub names, dates, phone numbers and record numbers from the question")


class Settings(BaseModel):
    model_config = ConfigDict(validate_default=True)

    home: Path = DEFAULT_HOME
    embedder: str = "all-MiniLM-L6-v2"
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    progress: bool = True
    ocr: str = Field("auto", description="OCR for pages without text: auto, off, rapidocr, tesseract")
    chunking: ChunkingSettings = ChunkingSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    agent: AgentSettings = AgentSettings()

    @field_validator("home", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return Path(os.path.expandvars(str(value))).expanduser()

    @property
    def indexes_dir(self) -> Path:
        return self.home / "indexes"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"


# Environment variables that map onto settings (flat ones only; nested via the file).
_ENV = {
    "MEDRAG_HOME": ("home",),
    "MEDRAG_EMBEDDER": ("embedder",),
    "MEDRAG_DEVICE": ("device",),
    "MEDRAG_PROGRESS": ("progress",),
    "MEDRAG_OCR": ("ocr",),
    "MEDRAG_TOP_K": ("retrieval", "top_k"),
    "MEDRAG_ABSTAIN_BELOW": ("agent", "abstain_below"),
    "MEDRAG_MAX_ROUNDS": ("agent", "max_rounds"),
}


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (OSError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"settings file {path} must hold a mapping at the top level")
    return data


def _set(tree: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    for key in keys[:-1]:
        node = tree.setdefault(key, {})
        if not isinstance(node, dict):  # e.g. "retrieval: 5" in the file: leave it for validation to report
            return
        tree = node
    tree[keys[-1]] = value


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, a settings file, the environment and keyword overrides."""
    data: dict[str, Any] = {}
    env_home = os.environ.get("MEDRAG_HOME")
    home = Path(env_home).expanduser() if env_home else DEFAULT_HOME.expanduser()
    # A file named by the caller or by $MEDRAG_CONFIG must exist; $MEDRAG_HOME/config.yaml is optional.
    candidates = [
        (path or None, "settings file"),
        (os.environ.get("MEDRAG_CONFIG") or None, "settings file named by MEDRAG_CONFIG"),
        (home / "config.yaml", None),
    ]
    for candidate, explicit in candidates:
        if candidate is None:
            continue
        candidate = Path(candidate).expanduser()
        if candidate.is_file():
            data = _read_file(candidate)
            break
        if explicit:
            raise ConfigError(f"{explicit} not found: {candidate}")
    for var, keys in _ENV.items():
        if var in os.environ:
            _set(data, keys, os.environ[var])
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc
