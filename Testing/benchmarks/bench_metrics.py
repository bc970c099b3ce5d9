"""STS-2024 metrics: ``toothseg``'s ``sts2024_case`` against the official challenge script, same
case, same process, same thread count; the values must agree to the 4 decimals of the official CSV.

The official code is not part of this repository (its licence is the challenge's); point the
benchmark at a checkout of https://github.com/STS-challenge/STS (it needs pandas and tqdm):

    pip install pandas tqdm
    python Testing/benchmarks/bench_metrics.py --official-dir STS/STS2024/evaluation/3d \\
        [--gt ../shared/data/sts2024/Validation_0002_gt.nii.gz] \\
        [--pred ../shared/data/sts2024/Validation_0002_pred.nii.gz] [--json out.json]

Both sides include reading the two NIfTI files, as the official ``compute_metrics(name)`` does.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

KEYS = ("image_dsc", "image_iou", "image_nsd", "instance_dsc", "instance_iou", "instance_nsd", "ia")
DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sts2024"


def load_official(folder: Path, gt_dir: Path, seg_dir: Path):
    """Import the official ``compute_metrics.py`` (it parses sys.argv at import time).

    The official ``SurfaceDice.py`` uses ``np.Inf``, which NumPy 2 removed; the alias is restored
    (it is the same float) so that the official code runs unchanged.
    """
    import numpy as np

    if not hasattr(np, "Inf"):
        np.Inf = np.inf
    sys.path.insert(0, str(folder))
    saved = sys.argv
    sys.argv = ["compute_metrics.py", "-s", str(seg_dir), "-g", str(gt_dir)]
    try:
        spec = importlib.util.spec_from_file_location("sts_official_compute_metrics", folder / "compute_metrics.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.argv = saved
    return module


def ours(gt_path: Path, pred_path: Path) -> dict[str, float]:
    from toothseg.core.io.images import read_label_map
    from toothseg.core.metrics.protocols import sts2024_case

    return sts2024_case(read_label_map(gt_path).array, read_label_map(pred_path).array)


def timed(function, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-dir", type=Path, required=True, help="STS/STS2024/evaluation/3d of a checkout")
    parser.add_argument("--gt", type=Path, default=DEFAULT_DATA / "Validation_0002_gt.nii.gz")
    parser.add_argument("--pred", type=Path, default=DEFAULT_DATA / "Validation_0002_pred.nii.gz")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each side")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        # The official function takes a file name and reads gts/NAME and segs/NAME.
        gt_dir, seg_dir = Path(tmp, "gts"), Path(tmp, "segs")
        gt_dir.mkdir()
        seg_dir.mkdir()
        (gt_dir / "case.nii.gz").symlink_to(args.gt.resolve())
        (seg_dir / "case.nii.gz").symlink_to(args.pred.resolve())
        official = load_official(args.official_dir.resolve(), gt_dir, seg_dir)
        official_s, values = timed(lambda: official.compute_metrics("case.nii.gz"), args.repeats)
    official_values = dict(zip(KEYS, (float(v) for v in values[1:])))
    ours_s, our_values = timed(lambda: ours(args.gt, args.pred), args.repeats)
    agree = all(round(official_values[k], 4) == round(our_values[k], 4) for k in KEYS)
    result = {"case": args.gt.name, "official_s": round(official_s, 2), "toothseg_s": round(ours_s, 2),
              "speedup": round(official_s / ours_s, 1), "values_agree_4_decimals": agree,
              "official": {k: round(v, 4) for k, v in official_values.items()},
              "toothseg": {k: round(v, 4) for k, v in our_values.items()},
              "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
    print(f"| case | official (s) | toothseg (s) | speed-up | values agree (4 dp) |\n|---|---|---|---|---|\n"
          f"| {result['case']} | {official_s:.2f} | {ours_s:.2f} | {result['speedup']}x | {agree} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
