"""The exception tree: one base class, messages that say what to do, require()."""

from __future__ import annotations

import inspect
import json

import pytest

import medrag.errors as errors
from medrag.errors import (
    ConfigError,
    EmptyQueryError,
    InputError,
    MedragError,
    MissingExtra,
    ModelUnavailable,
    RegistryError,
    SourceFileError,
    require,
)

ALL_ERRORS = [
    obj
    for _, obj in inspect.getmembers(errors, inspect.isclass)
    if issubclass(obj, Exception) and obj.__module__ == errors.__name__
]


def test_the_module_defines_a_real_tree():
    names = {cls.__name__ for cls in ALL_ERRORS}
    assert {"MedragError", "InputError", "SourceFileError", "ConfigError", "RegistryError", "MissingExtra"} <= names
    assert len(ALL_ERRORS) >= 15


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_everything_derives_from_medrag_error(cls):
    assert issubclass(cls, MedragError)
    assert isinstance(cls.exit_code, int) and cls.exit_code in (1, 2)


def test_user_input_errors_exit_with_usage_code():
    assert MedragError.exit_code == 1
    assert InputError.exit_code == 2
    assert EmptyQueryError.exit_code == 2  # inherited
    assert SourceFileError.exit_code == 2
    assert RegistryError.exit_code == 2
    assert issubclass(EmptyQueryError, InputError)
    assert issubclass(RegistryError, ConfigError)
    assert issubclass(MissingExtra, ModelUnavailable)


def test_index_store_error_does_not_shadow_builtin_index_error():
    assert not issubclass(errors.IndexStoreError, IndexError)
    assert issubclass(errors.IndexNotFound, errors.IndexStoreError)


def test_source_file_error_message_has_path_and_reason(tmp_path):
    path = tmp_path / "book.pdf"
    exc = SourceFileError(path, "file is encrypted")
    assert str(path) in str(exc)
    assert "file is encrypted" in str(exc)
    assert str(exc) == f"{path}: file is encrypted"
    assert exc.path == str(path)  # stored as text, whatever was passed
    assert exc.reason == "file is encrypted"
    with pytest.raises(MedragError):
        raise exc


def test_missing_extra_message_names_package_and_install_hint():
    exc = MissingExtra("open_clip_torch", "vision", "Image search")
    message = str(exc)
    assert message.startswith("Image search needs the optional package 'open_clip_torch'.")
    assert 'pip install "medrag[vision]"' in message
    assert exc.package == "open_clip_torch"
    assert exc.extra == "vision"
    assert isinstance(exc, ModelUnavailable)


def test_require_returns_an_installed_module():
    module = require("json", extra="core", purpose="Reading manifests")
    assert module is json


def test_require_returns_submodules():
    module = require("medrag.kg.obo", extra="core", purpose="Ontologies")
    assert module.read_obo.__name__ == "read_obo"


def test_require_raises_missing_extra_for_a_missing_module():
    with pytest.raises(MissingExtra) as info:
        require("medrag_definitely_missing_module", package="medrag-missing", extra="vision", purpose="Chest X-ray search")
    exc = info.value
    assert exc.package == "medrag-missing"
    assert exc.extra == "vision"
    assert 'pip install "medrag[vision]"' in str(exc)
    assert "Chest X-ray search" in str(exc)
    assert isinstance(exc.__cause__, ImportError)


def test_require_names_the_module_when_no_package_is_given():
    with pytest.raises(MissingExtra, match="'medrag_definitely_missing_module'") as info:
        require("medrag_definitely_missing_module", extra="llm", purpose="Generation")
    assert info.value.package == "medrag_definitely_missing_module"


def test_failure_reason_leaves_the_path_to_the_caller() -> None:
    from medrag.errors import InputError, SourceFileError, failure_reason

    assert failure_reason(SourceFileError("/data/a.pdf", "corrupt or unreadable PDF")) == "corrupt or unreadable PDF"
    assert failure_reason(InputError("duplicate id 'x'")) == "duplicate id 'x'"
