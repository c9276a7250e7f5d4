"""Benchmark the image tools on CPU: per-tool latency on the shared images, to a JSON file.

    .venv/bin/python tools/bench_vision.py --out results/bench_vision.json
    .venv/bin/python tools/bench_vision.py --classifier ~/.medrag/models/medpix-modality --only-models --out results/bench_classifier.json

For each (tool, image): the median, min and max wall time of --repeats calls
(after one warm-up), split into load_image and the whole tool call (load +
segment + overlay PNG). Overlays and crops go to a temporary MEDRAG_HOME.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images"
XRAY = "torchxrayvision_tests"
CASES = [
    ("segment_lungs_xray", f"{XRAY}/00000001_000.png", {}),
    ("segment_lungs_xray", f"{XRAY}/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm", {}),
    ("segment_lungs_xray", f"{XRAY}/covid-19-pneumonia-58-prior.jpg", {}),
    ("segment_lungs_xray", "pydicom_data/RG1_UNCR.dcm", {}),
    ("segment_ct_tissues", "pydicom/CT_small.dcm", {}),
    ("zoom_region", f"{XRAY}/00000001_000.png", {"box": [0.1, 0.2, 0.5, 0.6]}),
    ("zoom_region", "skimage/retina.jpg", {"box": [0.4, 0.4, 0.6, 0.6]}),
]


def timed(fn, repeats: int) -> dict:
    fn()  # warm-up: imports, caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return {"median_ms": round(1000 * statistics.median(times), 1), "min_ms": round(1000 * min(times), 1), "max_ms": round(1000 * max(times), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench_vision.json"))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--classifier", type=Path, default=None, help="also time classify_image with this trained model folder")
    parser.add_argument("--only-models", action="store_true", help="time only the model-backed tools given above")
    args = parser.parse_args()
    cases = [] if args.only_models else list(CASES)
    if args.classifier:
        medpix = "../medpix/images/MPX1009_synpic46283.png"
        cases += [("classify_image", medpix, {"saliency": False}), ("classify_image", medpix, {"saliency": True})]

    os.environ["MEDRAG_HOME"] = tempfile.mkdtemp(prefix="medrag-bench-vision-")
    import numpy
    import PIL
    import pydicom
    import skimage

    from medrag.registry import tools
    from medrag.tools import vision  # noqa: F401  (registers the tools)
    from medrag.vision import load_image

    rows = []
    from medrag.tools import classify  # noqa: F401  (registers the classifiers)

    for name, rel, inputs in cases:
        path = args.data / rel
        img = load_image(path)
        tool = tools.create(name, model=args.classifier) if name == "classify_image" else tools.create(name)
        result = tool(image=str(path), **inputs)
        if not result.ok:
            raise SystemExit(f"{name} on {rel} failed: {result.error}")
        rows.append({
            "tool": name,
            "image": rel,
            "inputs": inputs,
            "size": [img.width, img.height],
            "megapixels": round(img.width * img.height / 1e6, 2),
            "modality": img.modality,
            "load_image": timed(lambda: load_image(path), args.repeats),
            "tool_call": timed(lambda: tool(image=str(path), **inputs), args.repeats),
            "evidence": result.evidence[0].text,
        })
        print(f"{name:20s} {rel[-40:]:40s} load {rows[-1]['load_image']['median_ms']:7.1f} ms  tool {rows[-1]['tool_call']['median_ms']:7.1f} ms")
    report = {
        "what": "per-tool latency of the image tools, CPU, one process (model tools: weights loaded during warm-up)",
        "load_average": os.getloadavg(),
        "repeats": args.repeats,
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "versions": {"numpy": numpy.__version__, "pillow": PIL.__version__, "pydicom": pydicom.__version__, "scikit-image": skimage.__version__},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
