"""Name -> factory registries, extended by Python entry points.

Third-party packages add components without editing medrag by declaring, in
their pyproject.toml::

    [project.entry-points."medrag.embedders"]
    my-embedder = "my_package.module:make_embedder"

Groups: medrag.embedders, medrag.indexes, medrag.tools, medrag.vlms, medrag.sources, medrag.stores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from medrag.errors import RegistryError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Registry(Generic[T]):
    """A named set of factories for one role (embedders, indexes, tools ...)."""

    def __init__(self, role: str, entry_point_group: str) -> None:
        self.role = role
        self.group = entry_point_group
        self._factories: dict[str, Callable[..., T]] = {}
        self._entry_points_loaded = False

    def register(self, name: str, factory: Callable[..., T] | None = None, *, replace: bool = False):
        """Register ``factory`` under ``name``; usable as a decorator."""

        def add(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories and not replace and self._factories[name] is not fn:
                raise RegistryError(f"{self.role} '{name}' is already registered")
            self._factories[name] = fn
            return fn

        return add(factory) if factory is not None else add

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            if ep.name in self._factories:
                continue
            try:
                self._factories[ep.name] = ep.load()
            except Exception as exc:  # a broken plugin must not break medrag
                log.warning("could not load %s plugin %r from %s: %s", self.role, ep.name, ep.value, exc)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._factories:
            self._load_entry_points()
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"unknown {self.role} '{name}'; known: {known}") from None

    def create(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._factories


embedders: Registry[Any] = Registry("embedder", "medrag.embedders")
indexes: Registry[Any] = Registry("index", "medrag.indexes")
tools: Registry[Any] = Registry("tool", "medrag.tools")
vlms: Registry[Any] = Registry("vision-language model", "medrag.vlms")
sources: Registry[Any] = Registry("source reader", "medrag.sources")
# Where a text index keeps its vectors (faiss, milvus, pgvector): see medrag.index.stores.
stores: Registry[Any] = Registry("vector store", "medrag.stores")
