"""FDI numbers from arch geometry alone, on the two real STS-2024 dentitions (no network, no image).

The instance-first design separates teeth without numbering them and numbers them afterwards
(:mod:`toothseg.core.postprocessing.arch_numbering`). This measures that numbering step on its own:
each patient's real teeth (left/right numbering corrected, every tooth as one instance, its number
hidden) are numbered from their places, with all teeth and with teeth removed at random (missing
teeth, seeded), and scored as the share of instances given their true FDI number.

    python Testing/benchmarks/bench_arch_numbering.py --removed 0 --removed 2 --removed 4 --draws 10 \\
        --out Testing/benchmarks/results/arch_numbering.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "ToothSegTraining"))

from toothseg.core.io.atomic import atomic_write_text  # noqa: E402
from toothseg.core.postprocessing.arch_numbering import (  # noqa: E402
    TOOTH_TYPES, number_teeth_from_arch, type_of_position)
from toothseg.core.volume import Volume  # noqa: E402
from toothseg.train.data.cases import Case, shared_data_dir  # noqa: E402
from toothseg.train.data.dataset import BUILTIN_LABEL_MAPS, read_training_labels  # noqa: E402


def patient_map(name: str, step: int = 2) -> Volume:
    """A patient's corrected FDI map, every ``step``-th voxel (0.5-0.6 mm: centroids need no more)."""
    path = shared_data_dir() / "sts2024" / f"{BUILTIN_LABEL_MAPS[name]}.nii.gz"
    labels = read_training_labels(Case(name, path, path), handedness="fix")
    array = labels.array[::step, ::step, ::step]
    return Volume(array, tuple(step * s for s in labels.spacing), labels.origin, labels.direction)


def score(labels: Volume, removed: int, rng: np.random.Generator, type_accuracy: float | None = None) -> dict:
    """Hide the numbers (random instance values), drop ``removed`` teeth, number, compare. With
    ``type_accuracy`` each tooth also gets a type vote, its true type with that probability (else a random
    other type): what a tooth-type classifier of that accuracy would give the numbering."""
    counts = np.bincount(labels.array.ravel())
    teeth = [v for v in range(11, len(counts)) if counts[v] * labels.voxel_volume_mm3 >= 20.0]
    kept = sorted(rng.choice(teeth, size=len(teeth) - removed, replace=False).tolist())
    instance_of = {v: i + 1 for i, v in enumerate(rng.permutation(kept))}
    lookup = np.zeros(len(counts), dtype=np.uint16)
    for value, instance in instance_of.items():
        lookup[value] = instance
    votes = None
    if type_accuracy is not None:
        votes = {}
        for value, instance in instance_of.items():
            kind = type_of_position(value)
            if rng.random() >= type_accuracy:
                kind = int(rng.choice([k for k in range(len(TOOTH_TYPES)) if k != kind]))
            votes[instance] = np.eye(len(TOOTH_TYPES))[kind]
    result = number_teeth_from_arch(labels.with_array(lookup[labels.array]), type_votes=votes)
    truth = {i: v for v, i in instance_of.items()}
    right = sum(truth[i] == n for i, n in result.numbers.items())
    return {"teeth": len(kept), "removed": sorted(set(teeth) - set(kept)), "numbered": len(result.numbers),
            "right": right, "accuracy": right / len(kept),
            "wrong": sorted((truth[i], n) for i, n in result.numbers.items() if truth[i] != n)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--removed", type=int, action="append", help="teeth removed at random (repeatable; default 0)")
    parser.add_argument("--draws", type=int, default=10, help="random draws per setting with teeth removed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--type-accuracy", type=float, action="append",
                        help="also number with tooth-type votes right with this probability (repeatable; 1 = the "
                             "true types)")
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    args = parser.parse_args(argv)
    if any(not 0.0 <= t <= 1.0 for t in args.type_accuracy or []):
        parser.error("--type-accuracy is a probability, between 0 and 1")
    rows, summary = [], {}
    for patient in ("sts2024-0001", "sts2024-0002"):
        labels = patient_map(patient)
        for types in [None] + (args.type_accuracy or []):
            for removed in args.removed or [0]:
                draws = 1 if removed == 0 and types in (None, 1.0) else args.draws
                part = [score(labels, removed, np.random.default_rng([args.seed, removed, d]), types)
                        for d in range(draws)]
                rows += [{"patient": patient, "type_accuracy": types, **row} for row in part]
                accuracy = [row["accuracy"] for row in part]
                key = f"{patient}/removed {removed}" + ("" if types is None else f"/types right {types:g}")
                summary[key] = {"mean_accuracy": round(float(np.mean(accuracy)), 3),
                                "min_accuracy": round(float(np.min(accuracy)), 3), "draws": draws}
                cue = "geometry only" if types is None else f"type votes right {types:.0%}"
                print(f"{patient}  {removed} teeth removed  {cue:<22} numbered right: mean {np.mean(accuracy):.3f}  "
                      f"min {np.min(accuracy):.3f}  ({draws} draw(s))", flush=True)
    if args.out:
        payload = {"note": "real STS-2024 tooth shapes (left/right numbering corrected), true instances with their "
                           "numbers hidden; no image, no network", "command": " ".join(sys.argv),
                   "summary": summary, "rows": rows}
        atomic_write_text(args.out, json.dumps(payload, indent=1, default=int), overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
