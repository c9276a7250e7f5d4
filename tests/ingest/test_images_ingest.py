"""Image ingestion: sidecar folders, plain folders and DICOM into an image index; bad images; `medrag ingest`/`images search`."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import medrag.testing.image_fakes  # noqa: F401  registers fake-image-text
from medrag.config import load_settings
from medrag.errors import InputError, SourceFileError
from medrag.index.image_index import ImageIndexStore
from medrag.ingest.images import collect_image_items, is_image_source, normalise_modality
from medrag.ingest.pipeline import ingest
from medrag.testing.image_fakes import FakeImageTextEmbedder


def shape(kind: str, k: int = 0, size: int = 48) -> Image.Image:
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    (draw.ellipse if kind == "circle" else draw.rectangle)([8 + k, 8, 36, 36 - k], fill=255)
    return image


def write_sidecar_folder(folder: Path, cases: int = 4) -> Path:
    """MedPix layout: images/, images.jsonl (two images a case), cases.jsonl."""
    (folder / "images").mkdir(parents=True)
    rows, case_rows = [], []
    for case in range(cases):
        kind = "circle" if case % 2 == 0 else "square"
        for k in range(2):
            name = f"images/MPX{case}_{k}.png"
            shape(kind, k).save(folder / name)
            rows.append({"image_id": f"MPX{case}_{k}", "case_id": f"MPX{case}", "file": name,
                         "modality_type": "CT" if case % 2 == 0 else "MR", "plane": "Axial",
                         "caption": f"a {'round' if kind == 'circle' else 'square'} lesion", "location": "Chest"})
        case_rows.append({"case_id": f"MPX{case}", "title": f"Case {case}", "case_diagnosis": "Cyst" if case % 2 == 0 else "Block"})
    rows.append({"image_id": "absent", "case_id": "MPX9", "file": None, "caption": "not here"})
    (folder / "images.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "cases.jsonl").write_text("\n".join(json.dumps(r) for r in case_rows) + "\n")
    return folder


def write_dicom(path: Path, modality: str = "CT", body_part: str | None = "CHEST", samples: int = 1) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    raw = (np.asarray(shape("circle"), dtype=np.int16) * 4 - 1000)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    if body_part:
        ds.BodyPartExamined = body_part
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else "RGB"
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = raw.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = raw.tobytes()  # with samples=3 the data is a third of what the header promises
    ds.save_as(path, enforce_file_format=True)
    return path


def huge_png_header(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A PNG whose header claims width x height (valid CRC) but holds a tiny body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def settings(home):
    return load_settings()


def test_modality_words_are_normalised():
    assert normalise_modality("CT w/contrast (IV)") == "ct"
    assert normalise_modality("MR - T2 weighted") == "mr" and normalise_modality("MRA - MR Angiography") == "mr"
    assert normalise_modality("X-ray") == "xray" and normalise_modality("Drawing") is None and normalise_modality(None) is None


def test_what_counts_as_an_image_source(tmp_path):
    folder = write_sidecar_folder(tmp_path / "medpix")
    assert is_image_source(folder) and is_image_source(folder / "images") and is_image_source(folder / "images" / "MPX0_0.png")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "book.pdf").write_bytes(b"%PDF")
    (tmp_path / "docs" / "fig.png").write_bytes(b"")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "report.txt").write_text("no acute disease")
    assert not is_image_source(tmp_path / "docs") and not is_image_source(tmp_path / "notes")
    items = collect_image_items([folder])
    assert len(items) == 8 and items[0].case["title"] == "Case 0"  # the row without a file is left out


def test_sidecar_folder_becomes_an_image_index(tmp_path, settings):
    folder = write_sidecar_folder(tmp_path / "medpix")
    embedder = FakeImageTextEmbedder(64)
    report = ingest([folder], index_name="cases", embedder=embedder, settings=settings, progress=False)
    assert len(report.added) == 8 and report.total_chunks == 8 and not report.failed
    store = ImageIndexStore.for_settings(settings)
    manifest = store.info("cases")
    assert manifest["embedder"] == embedder.info().to_dict() and manifest["modalities"] == {"ct": 4, "mr": 4}
    assert manifest["counts"] == {"images": 8, "captions": 8, "cases": 4}
    record = store.open("cases").records["MPX1_0"]
    assert record.case_id == "MPX1" and record.title == "Case 1" and record.diagnosis == "Block"
    assert record.modality == "mr" and record.modality_source == "sidecar" and record.plane == "Axial" and record.body_part == "Chest"
    assert Path(record.path).is_file() and record.caption == "a square lesion"
    # Ingesting again changes nothing; a changed file replaces its record.
    again = ingest([folder], index_name="cases", embedder=embedder, settings=settings, progress=False)
    assert len(again.unchanged) == 8 and not again.added
    shape("circle").save(folder / "images" / "MPX1_0.png")
    changed = ingest([folder], index_name="cases", embedder=embedder, settings=settings, progress=False)
    assert changed.replaced == ["MPX1_0.png"] and changed.total_chunks == 8


def test_dicom_and_plain_folders_take_modality_and_body_part_from_the_file(tmp_path, settings):
    scans = tmp_path / "scans"
    scans.mkdir()
    write_dicom(scans / "ct.dcm", "CT")
    write_dicom(scans / "cr.dcm", "CR", body_part="THORAX")
    shape("square").convert("RGB").save(scans / "photo.jpg")
    report = ingest([scans], index_name="scans", embedder=FakeImageTextEmbedder(64), settings=settings, progress=False)
    assert len(report.added) == 3
    records = ImageIndexStore.for_settings(settings).open("scans").records
    assert records["ct"].modality == "ct" and records["ct"].modality_source == "dicom" and records["ct"].body_part == "chest"
    assert records["cr"].modality == "xray" and records["cr"].body_part == "chest"
    assert records["photo"].modality_source == "guess"


@pytest.mark.parametrize("make_bad", [
    lambda d: (d / "bytes.png").write_bytes(b"this is not an image") and d / "bytes.png",
    lambda d: (d / "cut.png").write_bytes((d / "good.png").read_bytes()[:-40]) and d / "cut.png",
    lambda d: Image.new("L", (1, 1)).save(d / "one.png") or d / "one.png",
    lambda d: huge_png_header(d / "huge.png"),
    lambda d: write_dicom(d / "rgb.dcm", samples=3),
], ids=["not-an-image", "truncated-png", "1x1", "20000x20000", "wrong-channel-dicom"])
def test_bad_images_stop_the_run_and_write_nothing(tmp_path, settings, make_bad):
    folder = tmp_path / "in"
    folder.mkdir()
    shape("circle").save(folder / "good.png")
    bad = make_bad(folder)
    embedder = FakeImageTextEmbedder(64)
    with pytest.raises(SourceFileError, match=bad.name):
        ingest([folder], index_name="bad", embedder=embedder, settings=settings, progress=False)
    assert not ImageIndexStore.for_settings(settings).exists("bad")
    report = ingest([folder], index_name="bad", embedder=embedder, settings=settings, progress=False, skip_bad=True)
    assert report.added == ["good.png"] and [Path(p).name for p, _ in report.failed] == [bad.name]


def test_text_embedders_and_mixed_calls_are_refused(tmp_path, settings):
    from medrag.testing.fakes import HashingEmbedder

    folder = write_sidecar_folder(tmp_path / "medpix")
    with pytest.raises(InputError, match="image-text embedder"):
        ingest([folder], index_name="x", embedder=HashingEmbedder(64), settings=settings, progress=False)
    (tmp_path / "book.pdf").write_bytes(b"%PDF-1.4")
    with pytest.raises(InputError, match="separate calls"):
        ingest([folder, tmp_path / "book.pdf"], index_name="x", embedder=FakeImageTextEmbedder(64), settings=settings, progress=False)


def test_cli_ingest_then_search_by_image_and_text(tmp_path, cli):
    folder = write_sidecar_folder(tmp_path / "medpix")
    code, out, err = cli("ingest", folder, "--index", "cases", "--embedder", "fake-image-text:64", "--no-progress")
    assert code == 0, err
    assert "8 added" in out
    # Re-ingest without --embedder: the image index's manifest names its embedder.
    code, out, err = cli("ingest", folder, "--index", "cases", "--no-progress")
    assert code == 0 and "8 unchanged" in out, err
    query = folder / "images" / "MPX0_0.png"
    code, out, err = cli("images", "search", query, "--index", "cases", "-k", "3", "--modality", "any")
    assert code == 0, err
    lines = out.splitlines()
    assert "MPX0_0.png" not in out  # the query image itself is left out
    assert lines[0] == "route: None by none; all modalities searched"
    assert ("MPX0" in lines[1] or "MPX2" in lines[1]) and "a round lesion" in lines[2]  # circles come first
    code, out, err = cli("images", "search", query, "--index", "cases", "--modality", "mr", "--json")
    results = json.loads(out)["results"]
    assert code == 0 and results and {r["citation"]["locator"]["modality"] for r in results} == {"mr"}
    code, out, err = cli("images", "search", "square lesion", "--index", "cases", "-k", "2", "--json")
    assert code == 0 and all("square" in r["citation"]["locator"]["caption"] for r in json.loads(out)["results"])
    code, out, err = cli("images", "search", "x", "--index", "nope")
    assert code == 2 and "unknown image index 'nope'" in err
