"""Tooth instances from a tooth map, on the two real STS-2024 dentitions (no network, no image).

The instance-first design separates teeth where a network marked the boundary between them
(:func:`toothseg.core.postprocessing.instances.separate_instances`). A young or weak network misses
boundaries, and a binary tooth/no-tooth network draws none. This measures the separation step on the real
teeth (left/right numbering corrected, canonical axes, every ``step``-th voxel), given two inputs:

* ``boundary``: the true interior/boundary classes (what a perfect tooth-boundary network gives);
* ``binary``: one tooth class, touching teeth merged (a binary network's perfect output, and what a
  tooth-boundary network that never learnt the boundary gives);

each with the split of seeds larger than any tooth (``max_tooth_mm3`` 800) and without it (0), at 0.5-1.25
mm. Reported: the mean over true teeth of the Dice of the instance covering most of each, the number of
instances, and the share of teeth the whole step (``teeth_from_boundary``: separation, then numbering from
the arch) numbers right.

    python Testing/benchmarks/bench_tooth_separation.py --out Testing/benchmarks/results/tooth_separation.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "ToothSegTraining"))

from toothseg.core.io.atomic import atomic_write_text  # noqa: E402
from toothseg.core.metrics import best_instance_dice, numbered_right_share  # noqa: E402
from toothseg.core.postprocessing import apply_steps  # noqa: E402
from toothseg.core.postprocessing.instances import boundary_classes, separate_instances  # noqa: E402
from toothseg.core.preprocessing import to_canonical  # noqa: E402
from toothseg.train.data.cases import Case, shared_data_dir  # noqa: E402
from toothseg.train.data.dataset import BUILTIN_LABEL_MAPS, read_training_labels  # noqa: E402

PATIENTS = ("sts2024-0001", "sts2024-0002")


def canonical_teeth(name: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A patient's corrected FDI map in canonical axes (towards superior, posterior, left) and its spacing."""
    path = shared_data_dir() / "sts2024" / f"{BUILTIN_LABEL_MAPS[name]}.nii.gz"
    canonical, _ = to_canonical(read_training_labels(Case(name, path, path), handedness="fix"))
    return canonical.array, tuple(float(s) for s in canonical.spacing_zyx)


def inputs(truth: np.ndarray, spacing: tuple[float, ...]) -> dict[str, np.ndarray]:
    classes = boundary_classes(truth, spacing)
    return {"boundary": classes, "binary": (truth > 0).astype(np.uint8)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spacing", type=float, action="append",
                        help="target spacing in mm, reached by taking every n-th voxel (repeatable; "
                             "default 0.6, 0.9, 1.2)")
    parser.add_argument("--max-tooth-mm3", type=float, default=800.0,
                        help="the split's threshold, compared with no split")
    parser.add_argument("--patient", action="append", choices=PATIENTS, help="repeatable; default both")
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    args = parser.parse_args(argv)
    targets = args.spacing or [0.6, 0.9, 1.2]
    if min(targets) <= 0 or args.max_tooth_mm3 <= 0:
        parser.error("--spacing and --max-tooth-mm3 must be > 0")
    rows = []
    for patient in args.patient or PATIENTS:
        full, full_spacing = canonical_teeth(patient)
        for target in targets:
            step = max(1, round(target / full_spacing[0]))
            truth = full[::step, ::step, ::step]
            spacing = tuple(step * s for s in full_spacing)
            for name, classes in inputs(truth, spacing).items():
                for threshold in (0.0, args.max_tooth_mm3):
                    started = time.perf_counter()
                    instances = separate_instances(classes, spacing, max_tooth_mm3=threshold)
                    numbered = apply_steps(classes, spacing, [{"name": "teeth_from_boundary",
                                                               "max_tooth_mm3": threshold}])
                    row = {"patient": patient, "spacing_mm": round(spacing[0], 3), "input": name,
                           "max_tooth_mm3": threshold, "instances": int(instances.max()),
                           "teeth": int(len(np.unique(truth)) - 1),
                           "instance_dice": round(best_instance_dice(truth, instances), 3),
                           "numbered_right": round(numbered_right_share(truth, numbered), 3),
                           "seconds": round(time.perf_counter() - started, 2)}
                    rows.append(row)
                    print(f"{patient} {row['spacing_mm']:.2f} mm {name:8s} split>{threshold:>5.0f}: "
                          f"{row['instances']:3d} instances of {row['teeth']}, instance Dice "
                          f"{row['instance_dice']:.3f}, numbered right {row['numbered_right']:.3f} "
                          f"({row['seconds']:.1f} s)", flush=True)
    result = {"benchmark": "bench_tooth_separation",
              "note": "real STS-2024 tooth maps (left/right numbering corrected), no image and no network: "
                      "the inputs are what a perfect network of each kind would give",
              "rows": rows}
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
