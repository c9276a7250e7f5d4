"""Registries: register/create/names, duplicates, unknown names, entry-point plugins."""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint

import pytest

import medrag.registry as registry_module
from medrag.errors import ConfigError, RegistryError
from medrag.registry import Registry
from medrag.testing.fakes import HashingEmbedder

GROUP = "medrag.test-widgets"


@pytest.fixture
def no_plugins(monkeypatch):
    """No entry points installed for any group, whatever the environment has."""
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [])


@pytest.fixture
def plugins(monkeypatch):
    """Install fake entry points: ``plugins(EntryPoint(...), ...)``; records the groups asked for."""
    asked: list[str] = []

    def install(*eps: EntryPoint) -> list[str]:
        def fake_entry_points(group: str):
            asked.append(group)
            return [ep for ep in eps if ep.group == group]

        monkeypatch.setattr(registry_module, "entry_points", fake_entry_points)
        return asked

    return install


def make_registry() -> Registry:
    return Registry("widget", GROUP)


def test_register_create_and_names(no_plugins):
    reg = make_registry()

    def make_pair(a: int = 1, b: int = 2):
        return (a, b)

    reg.register("pair", make_pair)
    assert reg.names() == ["pair"]
    assert "pair" in reg
    assert "other" not in reg
    assert reg.get("pair") is make_pair
    assert reg.create("pair") == (1, 2)
    assert reg.create("pair", a=5, b=6) == (5, 6)


def test_register_as_decorator_returns_the_function(no_plugins):
    reg = make_registry()

    @reg.register("zeta")
    def zeta():
        return "z"

    @reg.register("alpha")
    def alpha():
        return "a"

    assert zeta() == "z"  # the decorator hands the function back unchanged
    assert reg.names() == ["alpha", "zeta"]  # sorted
    assert reg.create("alpha") == "a"


def test_duplicate_name_is_refused(no_plugins):
    reg = make_registry()
    reg.register("w", lambda: 1)
    with pytest.raises(RegistryError, match="widget 'w' is already registered"):
        reg.register("w", lambda: 2)
    assert reg.create("w") == 1


def test_same_factory_registered_twice_is_harmless(no_plugins):
    reg = make_registry()

    def factory():
        return "f"

    reg.register("w", factory)
    reg.register("w", factory)  # e.g. a module imported twice
    assert reg.names() == ["w"]


def test_replace_overrides(no_plugins):
    reg = make_registry()
    reg.register("w", lambda: 1)
    reg.register("w", lambda: 2, replace=True)
    assert reg.create("w") == 2


def test_unknown_name_lists_known_names(no_plugins):
    reg = make_registry()
    reg.register("beta", lambda: None)
    reg.register("alpha", lambda: None)
    with pytest.raises(RegistryError) as info:
        reg.get("gamma")
    message = str(info.value)
    assert "unknown widget 'gamma'" in message
    assert "known: alpha, beta" in message
    with pytest.raises(RegistryError, match="unknown widget 'gamma'"):
        reg.create("gamma")


def test_unknown_name_in_empty_registry_says_none(no_plugins):
    with pytest.raises(RegistryError, match="known: none"):
        make_registry().get("anything")


def test_registry_error_is_a_config_error():
    assert issubclass(RegistryError, ConfigError)


def test_entry_points_are_loaded(plugins):
    asked = plugins(
        EntryPoint("hash-plugin", "medrag.testing.fakes:HashingEmbedder", GROUP),
        EntryPoint("other-group", "medrag.testing.fakes:HashingEmbedder", "medrag.somewhere-else"),
    )
    reg = make_registry()
    reg.register("builtin", lambda: "b")
    assert reg.names() == ["builtin", "hash-plugin"]
    assert asked == [GROUP]
    assert reg.get("hash-plugin") is HashingEmbedder
    embedder = reg.create("hash-plugin", dim=16)
    assert isinstance(embedder, HashingEmbedder)
    assert embedder.dim == 16


def test_entry_points_load_lazily_and_once(plugins):
    asked = plugins(EntryPoint("hash-plugin", "medrag.testing.fakes:HashingEmbedder", GROUP))
    reg = make_registry()
    reg.register("builtin", lambda: "b")
    assert reg.create("builtin") == "b"
    assert asked == []  # a registered name needs no plugin scan
    assert "hash-plugin" in reg
    reg.names()
    reg.get("hash-plugin")
    assert asked == [GROUP]


def test_unknown_name_triggers_entry_point_loading(plugins):
    plugins(EntryPoint("hash-plugin", "medrag.testing.fakes:HashingEmbedder", GROUP))
    reg = make_registry()
    assert reg.get("hash-plugin") is HashingEmbedder  # get() of an unregistered name scans plugins first


def test_registered_name_wins_over_entry_point(plugins):
    plugins(EntryPoint("dup", "medrag.testing.fakes:HashingEmbedder", GROUP))
    reg = make_registry()

    def mine():
        return "mine"

    reg.register("dup", mine)
    assert reg.names() == ["dup"]
    assert reg.get("dup") is mine


@pytest.mark.parametrize(
    "value",
    [
        "medrag_no_such_plugin_module:factory",  # module missing
        "medrag.testing.fakes:NoSuchFactory",  # attribute missing
    ],
)
def test_broken_plugin_logs_warning_and_does_not_break_names(plugins, caplog, value):
    plugins(
        EntryPoint("broken", value, GROUP),
        EntryPoint("good", "medrag.testing.fakes:HashingEmbedder", GROUP),
    )
    reg = make_registry()
    reg.register("builtin", lambda: "b")
    with caplog.at_level(logging.WARNING, logger="medrag.registry"):
        names = reg.names()
    assert names == ["builtin", "good"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "medrag.registry"]
    assert len(warnings) == 1
    assert "broken" in warnings[0].getMessage()
    assert value in warnings[0].getMessage()
    with pytest.raises(RegistryError, match="unknown widget 'broken'; known: builtin, good"):
        reg.get("broken")


def test_global_registries_have_their_groups_and_builtins():
    import medrag.embed.text  # noqa: F401  (registers the built-in embedders)

    assert registry_module.embedders.group == "medrag.embedders"
    assert registry_module.indexes.group == "medrag.indexes"
    assert registry_module.tools.group == "medrag.tools"
    assert registry_module.vlms.group == "medrag.vlms"
    assert registry_module.sources.group == "medrag.sources"
    assert {"hashing", "sentence-transformers"} <= set(registry_module.embedders.names())
    assert isinstance(registry_module.embedders.create("hashing", dim=32), HashingEmbedder)
