"""Settings: defaults < settings file (YAML/TOML) < MEDRAG_* environment < keyword overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from medrag.config import DEFAULT_HOME, Settings, load_settings
from medrag.errors import ConfigError, MedragError


@pytest.fixture
def env(clean_env, tmp_path, monkeypatch):
    """No MEDRAG_* variables from the shell, and a home with no config.yaml in it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("MEDRAG_HOME", str(home))
    return monkeypatch


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults -------------------------------------------------------------


def test_defaults(env, tmp_path):
    env.delenv("MEDRAG_HOME")
    env.setenv("HOME", str(tmp_path))  # ~/.medrag/config.yaml of the test, not of the developer
    s = load_settings()
    assert s.home == tmp_path / ".medrag"
    assert s.home.is_absolute()
    assert s.embedder == "all-MiniLM-L6-v2"
    assert s.device == "auto"
    assert s.progress is True
    assert s.chunking.max_words == 180 and s.chunking.overlap_sentences == 0
    assert (s.retrieval.top_k, s.retrieval.candidates, s.retrieval.rrf_k) == (8, 50, 60)
    assert s.agent.abstain_below == pytest.approx(0.45)
    assert s.indexes_dir == s.home / "indexes"
    assert s.models_dir == s.home / "models"


def test_settings_model_expands_default_home():
    assert Settings().home == DEFAULT_HOME.expanduser()
    assert "~" not in str(Settings().home)


# --- MEDRAG_HOME ---------------------------------------------------------


def test_medrag_home_env_is_used_and_expanded(env, tmp_path):
    env.setenv("HOME", str(tmp_path))
    env.setenv("MEDRAG_HOME", "~/somewhere/medrag")
    s = load_settings()
    assert s.home == tmp_path / "somewhere" / "medrag"
    assert s.indexes_dir == tmp_path / "somewhere" / "medrag" / "indexes"


def test_medrag_home_expands_environment_variables(env, tmp_path):
    env.setenv("DATA_ROOT", str(tmp_path / "data"))
    env.setenv("MEDRAG_HOME", "$DATA_ROOT/medrag")
    assert load_settings().home == tmp_path / "data" / "medrag"


def test_config_yaml_in_medrag_home_is_read(env, tmp_path):
    home = tmp_path / "home"
    write(home / "config.yaml", "embedder: hashing:64\nretrieval:\n  top_k: 3\n")
    s = load_settings()
    assert s.embedder == "hashing:64"
    assert s.retrieval.top_k == 3
    assert s.retrieval.candidates == 50  # untouched nested keys keep their defaults


# --- settings files ------------------------------------------------------


YAML_TEXT = """\
embedder: hashing:128
device: cpu
progress: false
chunking:
  max_words: 80
retrieval:
  top_k: 5
  rrf_k: 30
agent:
  abstain_below: 0.2
"""

TOML_TEXT = """\
embedder = "hashing:128"
device = "cpu"
progress = false

[chunking]
max_words = 80

[retrieval]
top_k = 5
rrf_k = 30

[agent]
abstain_below = 0.2
"""


def assert_file_values(s: Settings) -> None:
    assert s.embedder == "hashing:128"
    assert s.device == "cpu"
    assert s.progress is False
    assert s.chunking.max_words == 80
    assert s.chunking.overlap_sentences == 0  # not in the file: the default
    assert s.retrieval.top_k == 5 and s.retrieval.rrf_k == 30
    assert s.agent.abstain_below == pytest.approx(0.2)


@pytest.mark.parametrize("name, text", [("s.yaml", YAML_TEXT), ("s.yml", YAML_TEXT), ("s.toml", TOML_TEXT)])
def test_settings_file_by_path(env, tmp_path, name, text):
    path = write(tmp_path / name, text)
    assert_file_values(load_settings(path))
    assert_file_values(load_settings(str(path)))


@pytest.mark.parametrize("name, text", [("s.yaml", YAML_TEXT), ("s.toml", TOML_TEXT)])
def test_settings_file_from_medrag_config(env, tmp_path, name, text):
    env.setenv("MEDRAG_CONFIG", str(write(tmp_path / name, text)))
    assert_file_values(load_settings())


def test_explicit_path_beats_medrag_config_and_home_file(env, tmp_path):
    write(tmp_path / "home" / "config.yaml", "embedder: from-home\n")
    env.setenv("MEDRAG_CONFIG", str(write(tmp_path / "env.yaml", "embedder: from-env-file\n")))
    assert load_settings().embedder == "from-env-file"
    assert load_settings(write(tmp_path / "arg.yaml", "embedder: from-arg\n")).embedder == "from-arg"


def test_settings_file_path_is_expanded(env, tmp_path):
    env.setenv("HOME", str(tmp_path))
    write(tmp_path / "my.yaml", "top_level_unknown_is_ignored: 1\nembedder: tilde\n")
    assert load_settings("~/my.yaml").embedder == "tilde"


def test_empty_settings_file_gives_defaults(env, tmp_path):
    s = load_settings(write(tmp_path / "empty.yaml", ""))
    assert s.embedder == "all-MiniLM-L6-v2"
    assert s.retrieval.top_k == 8


# --- precedence ----------------------------------------------------------


def test_environment_overrides_file(env, tmp_path):
    path = write(tmp_path / "s.yaml", YAML_TEXT)
    env.setenv("MEDRAG_EMBEDDER", "hashing:32")
    env.setenv("MEDRAG_DEVICE", "cuda")
    env.setenv("MEDRAG_PROGRESS", "1")
    env.setenv("MEDRAG_TOP_K", "11")
    env.setenv("MEDRAG_ABSTAIN_BELOW", "0.6")
    s = load_settings(path)
    assert s.embedder == "hashing:32"
    assert s.device == "cuda"
    assert s.progress is True
    assert s.retrieval.top_k == 11
    assert s.retrieval.rrf_k == 30  # nested values the environment does not name stay from the file
    assert s.agent.abstain_below == pytest.approx(0.6)
    assert s.chunking.max_words == 80


def test_environment_without_file(env):
    env.setenv("MEDRAG_TOP_K", "4")
    env.setenv("MEDRAG_PROGRESS", "false")
    s = load_settings()
    assert s.retrieval.top_k == 4
    assert s.progress is False


def test_keyword_overrides_beat_environment_and_file(env, tmp_path):
    path = write(tmp_path / "s.yaml", YAML_TEXT)
    env.setenv("MEDRAG_EMBEDDER", "hashing:32")
    s = load_settings(path, embedder="hashing:16", device="mps", home=str(tmp_path / "kw"))
    assert s.embedder == "hashing:16"
    assert s.device == "mps"
    assert s.home == tmp_path / "kw"
    assert s.retrieval.top_k == 5  # not overridden


def test_none_keyword_overrides_are_ignored(env, tmp_path):
    path = write(tmp_path / "s.yaml", YAML_TEXT)
    s = load_settings(path, embedder=None, device=None)
    assert s.embedder == "hashing:128"
    assert s.device == "cpu"


def test_keyword_home_is_expanded(env, tmp_path):
    env.setenv("HOME", str(tmp_path))
    assert load_settings(home="~/kw-home").home == tmp_path / "kw-home"


def test_nested_keyword_override(env):
    s = load_settings(retrieval={"top_k": 2, "candidates": 7})
    assert (s.retrieval.top_k, s.retrieval.candidates) == (2, 7)


# --- errors --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "device: gpu\n",  # not one of auto/cpu/cuda/mps
        "retrieval:\n  top_k: 0\n",  # ge=1
        "retrieval:\n  top_k: 1000\n",  # le=200
        "agent:\n  abstain_below: 1.5\n",  # le=1.0
        "chunking:\n  max_words: 5\n",  # ge=10
        "progress: maybe\n",
        "retrieval: 5\n",  # a section must be a mapping
    ],
)
def test_invalid_file_values_raise_config_error(env, tmp_path, text):
    with pytest.raises(ConfigError, match="invalid settings"):
        load_settings(write(tmp_path / "bad.yaml", text))


@pytest.mark.parametrize("var, value", [("MEDRAG_TOP_K", "many"), ("MEDRAG_DEVICE", "tpu"), ("MEDRAG_ABSTAIN_BELOW", "-1")])
def test_invalid_environment_values_raise_config_error(env, var, value):
    env.setenv(var, value)
    with pytest.raises(ConfigError, match="invalid settings"):
        load_settings()


def test_invalid_keyword_override_raises_config_error(env):
    with pytest.raises(ConfigError):
        load_settings(device="quantum")


def test_environment_value_on_non_mapping_section_is_a_config_error(env, tmp_path):
    env.setenv("MEDRAG_TOP_K", "3")
    with pytest.raises(ConfigError, match="invalid settings"):
        load_settings(write(tmp_path / "bad.yaml", "retrieval: 5\n"))


def test_missing_explicit_file_raises_config_error(env, tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_settings(missing)
    assert str(missing) in str(info.value)


def test_missing_medrag_config_file_raises_config_error(env, tmp_path):
    env.setenv("MEDRAG_CONFIG", str(tmp_path / "typo.yaml"))
    with pytest.raises(ConfigError, match="MEDRAG_CONFIG") as info:
        load_settings()
    assert "typo.yaml" in str(info.value)


def test_missing_home_config_is_fine(env, tmp_path):
    assert not (tmp_path / "home" / "config.yaml").exists()
    assert load_settings().home == tmp_path / "home"


@pytest.mark.parametrize("name, text", [("list.yaml", "- a\n- b\n"), ("scalar.yaml", "just a string\n")])
def test_non_mapping_file_raises_config_error(env, tmp_path, name, text):
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path / name, text))


@pytest.mark.parametrize("name, text", [("broken.yaml", "a: [1, 2\n"), ("broken.toml", "a = \n")])
def test_unparsable_file_raises_config_error(env, tmp_path, name, text):
    with pytest.raises(ConfigError, match="cannot read settings file"):
        load_settings(write(tmp_path / name, text))


def test_config_error_is_a_medrag_error_with_usage_exit_code():
    assert issubclass(ConfigError, MedragError)
    assert ConfigError.exit_code == 2
