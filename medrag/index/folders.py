"""Named saved indexes under one folder: the part text and image index homes share.

``IndexStore`` (``$MEDRAG_HOME/indexes``) and ``ImageIndexStore`` (``$MEDRAG_HOME/image-indexes``)
differ only in the index class they open and the hint an unknown name gets, so both are this
class with three attributes set.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from medrag.embed.base import EmbedderInfo
from medrag.errors import IndexCorrupt, IndexNotFound, InputError
from medrag.storage import read_json, recover_folder, remove_stale_temp

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

SavedIndex = TypeVar("SavedIndex")


def validate_index_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise InputError(
            f"invalid index name {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


class IndexFolders(Generic[SavedIndex]):
    """Open, save, list and delete the indexes saved as folders under ``root``.

    Subclasses set ``index_class`` (with ``load(path, embedder_info)`` and ``save(path)`` and a
    ``name``), ``what`` (how errors name one) and ``create_hint`` (the command that makes one,
    with ``{name}`` in it).
    """

    index_class: ClassVar[type]
    what: ClassVar[str] = "index"
    create_hint: ClassVar[str] = "medrag ingest PATH --index {name}"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def path(self, name: str) -> Path:
        return self.root / validate_index_name(name)

    def exists(self, name: str) -> bool:
        path = self.path(name)
        recover_folder(path)  # a save killed between its two renames leaves only a backup
        return (path / "manifest.json").is_file()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        for leftover in self.root.glob(".*.bak-*"):  # indexes whose save was killed mid-commit
            recover_folder(self.root / leftover.name[1:].rsplit(".bak-", 1)[0])
        return sorted(p.name for p in self.root.iterdir() if (p / "manifest.json").is_file() and not p.name.startswith("."))

    def _require(self, name: str) -> None:
        if not self.exists(name):
            known = ", ".join(self.names()) or "none yet"
            raise IndexNotFound(
                f"unknown {self.what} '{name}' in {self.root} (known: {known}); "
                f"create it with: {self.create_hint.format(name=name)}"
            )

    def open(self, name: str, embedder_info: EmbedderInfo | None = None) -> SavedIndex:
        self._require(name)
        return self.index_class.load(self.path(name), embedder_info)

    def info(self, name: str) -> dict[str, Any]:
        self._require(name)
        try:
            return read_json(self.path(name) / "manifest.json")
        except (OSError, ValueError) as exc:
            raise IndexCorrupt(f"unreadable manifest for {self.what} '{name}': {exc}") from exc

    def save(self, index: SavedIndex) -> Path:
        target = self.path(index.name)
        self.root.mkdir(parents=True, exist_ok=True)
        remove_stale_temp(target)
        index.save(target)
        return target

    def delete(self, name: str) -> None:
        self._require(name)
        shutil.rmtree(self.path(name))

    def iter_manifests(self) -> Iterable[dict[str, Any]]:
        for name in self.names():
            yield self.info(name)
