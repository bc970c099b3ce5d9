"""Panoramic X-rays at clinical size: does the 2D model still find the teeth?

UFBA-425's X-rays come resized to 512 x 512 px without pixel spacing (read as 1 mm pixels); a
clinic's panoramic is a few thousand pixels wide at about 0.1 mm. This benchmark upsamples each
test-split X-ray (and its ground truth, nearest) to such a size and segments it with the model's own
card (``image_extent_yx``: any X-ray is read as spanning the training images' extent) and, for
comparison, with that field removed (the X-ray's own pixel spacing decides the scale, as before the
field existed), at 0.1 mm and at 1 mm pixels (3D Slicer reads a PNG as 1 mm pixels). The score is the
mean Dice per ground-truth tooth on each grid; the 512 px row is the published size.

    python Testing/benchmarks/bench_xray_size.py [--model toothseg-panoramic-demo] \
        --out Testing/benchmarks/results/xray_size_cpu.json

The upsampled images are smooth (bilinear), not new detail: the benchmark measures the scale
handling, not accuracy on real clinical X-rays.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "ToothSegTraining"))
sys.path.insert(0, str(REPO / "Testing" / "benchmarks"))

from bench_ufba import shown, write_result  # noqa: E402
from toothseg.core.inference.predictor import InferenceOptions, Predictor  # noqa: E402
from toothseg.core.preprocessing import resample_array  # noqa: E402
from toothseg.core.io.images import read_label_map, read_volume  # noqa: E402
from toothseg.core.models.catalog import load_catalog  # noqa: E402
from toothseg.core.volume import Volume  # noqa: E402
from toothseg.train.data.cases import ufba_cases  # noqa: E402


def tooth_dice(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean Dice over the ground-truth teeth (one confusion count, fast on large images)."""
    top = int(max(truth.max(), predicted.max())) + 1
    counts = np.bincount(truth.ravel().astype(np.int64) * top + predicted.ravel(), minlength=top * top)
    confusion = counts.reshape(top, top)
    teeth = [t for t in range(1, top) if confusion[t].sum()]
    return float(np.mean([2 * confusion[t, t] / (confusion[t].sum() + confusion[:, t].sum()) for t in teeth]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="catalogue id or 2D model folder (default: the catalogue's 2D default, "
                                         "what segment runs on an X-ray)")
    parser.add_argument("--size", type=int, nargs=2, default=(1400, 2800), metavar=("ROWS", "COLUMNS"),
                        help="clinical X-ray size in pixels (default 1400 2800)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N test X-rays")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=REPO / "Testing" / "benchmarks" / "results" / "xray_size_cpu.json")
    args = parser.parse_args(argv)

    if min(args.size) < 2:
        parser.error(f"--size {args.size[0]} {args.size[1]}: an X-ray needs at least 2 x 2 pixels")
    args.model = args.model or load_catalog().default("2d").id
    predictor = Predictor(load_catalog().resolve(args.model), InferenceOptions(device=args.device, tta=False))
    extent = predictor.card.image_extent_yx
    if not extent:
        parser.error(f"model {args.model!r} declares no image_extent_yx: nothing to compare")
    rows_out, cols_out = args.size
    cases = ufba_cases("test")[: args.limit or None]
    settings = {
        "published size (512 px, 1 mm)": None,
        f"{rows_out} x {cols_out} px at 0.1 mm, whole-image scale (image_extent_yx)": (0.1, True),
        f"{rows_out} x {cols_out} px at 0.1 mm, own pixel spacing (before)": (0.1, False),
        f"{rows_out} x {cols_out} px at 1 mm (Slicer's PNG), own pixel spacing (before)": (1.0, False),
    }
    rows = []
    started = time.perf_counter()
    for index, case in enumerate(cases, start=1):
        image, truth = read_volume(case.image), read_label_map(case.label)
        big = resample_array(image.array.astype(np.float32), (1, rows_out, cols_out)).numpy()
        big = np.clip(np.round(big), 0, 255).astype(np.uint8)
        iy = np.arange(rows_out) * truth.shape[1] // rows_out
        ix = np.arange(cols_out) * truth.shape[2] // cols_out
        big_truth = truth.array[:, iy][:, :, ix]
        row = {"case": case.id}
        for name, setting in settings.items():
            if setting is None:
                predicted, reference = predictor.predict(image).labels.array, truth.array
            else:
                spacing, whole_image = setting
                predictor.card.image_extent_yx = extent if whole_image else None
                try:
                    clinical = Volume(big, (spacing, spacing, 1.0), kind="2d")
                    predicted, reference = predictor.predict(clinical).labels.array, big_truth
                finally:
                    predictor.card.image_extent_yx = extent
            row[name] = round(tooth_dice(reference, predicted), 4)
        rows.append(row)
        print(f"[{index}/{len(cases)}] {case.id}: " + ", ".join(f"{row[n]:.3f}" for n in settings), flush=True)
    summary = {name: round(float(np.mean([r[name] for r in rows])), 4) for name in settings}
    result = {"benchmark": "bench_xray_size", "model": args.model,
              "model_folder": shown(str(load_catalog().resolve(args.model))),
              "image_extent_yx": extent, "clinical_size": [rows_out, cols_out], "cases": len(rows),
              "subset": "UFBA-425 test split (real X-rays, upsampled)", "device": args.device,
              "seconds": round(time.perf_counter() - started, 1), "mean_tooth_dice": summary, "per_case": rows}
    write_result(args.out, result, rows_key="per_case")
    print("\nmean Dice per ground-truth tooth:")
    for name, value in summary.items():
        print(f"  {value:.3f}  {name}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
