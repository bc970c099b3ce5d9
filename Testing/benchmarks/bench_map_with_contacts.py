"""One model's tooth map cut into teeth by another model's tooth contacts (issue #35), on synthetic scans.

The bundled default draws the better tooth map on a patient it never saw; a tooth/contact network
(``label_table: tooth-contact``) is meant to say where its teeth meet. This scores, per scan, the same
post-processing (the map model's card: ``teeth_from_boundary``, numbering from the arch) on four class maps:

* ``map``: the map model alone (its usual result);
* ``map+contacts``: the map model's teeth, boundary where the contact model draws a contact;
* ``map+cores``: the map model's teeth, seeded only where the contact model draws tooth that is not contact
  (the rest of the map grown from those seeds);
* ``contacts``: the contact model alone (its usual result).

It also reports how many voxels the contact model gave each class: a contact class it never draws makes
``map+contacts`` equal ``map``. INTENSITIES ARE SYNTHETIC (the scans of ``bench_cbct_generalisation.py``)::

    python Testing/benchmarks/bench_map_with_contacts.py --contacts runs/contact3d_head_lopo/model \\
        --family hu --family synthseg --family rtk --scans 3 --out runs/map_with_contacts.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cbct_generalisation import FAMILIES, NOTE, loss_breakdown, scans  # noqa: E402

from toothseg.core.errors import InputError  # noqa: E402
from toothseg.core.handedness import handedness_of  # noqa: E402
from toothseg.core.inference import InferenceOptions, Predictor  # noqa: E402
from toothseg.core.io.atomic import atomic_write_text  # noqa: E402
from toothseg.core.metrics.protocols import sts2024_case  # noqa: E402
from toothseg.core.models.catalog import load_catalog  # noqa: E402
from toothseg.core.postprocessing import apply_steps  # noqa: E402
from toothseg.core.preprocessing import restore_orientation, to_canonical  # noqa: E402

VARIANTS = ("map", "map+contacts", "map+cores", "contacts")
TOOTH, CONTACT = 1, 2


def class_maps(tooth_map: np.ndarray, contact_classes: np.ndarray) -> dict[str, np.ndarray]:
    """The four class maps (0 background, 1 interior, 2 boundary) ``teeth_from_boundary`` reads."""
    teeth = tooth_map > 0
    return {"map": teeth.astype(np.uint8),
            "map+contacts": np.where(teeth, np.where(contact_classes == CONTACT, 2, 1), 0).astype(np.uint8),
            "map+cores": np.where(teeth, np.where(contact_classes == TOOTH, 1, 2), 0).astype(np.uint8),
            "contacts": contact_classes.astype(np.uint8)}


def numbered(classes, scan: np.ndarray, steps: list[dict]) -> np.ndarray:
    """The card's post-processing on a class map, in the canonical orientation as the predictor runs it
    (``scan``: the image, already canonical, for the steps that read intensities)."""
    canonical, orientation = to_canonical(classes)
    return restore_orientation(apply_steps(canonical.array, canonical.spacing_zyx, steps, image=scan), orientation)


def score(map_model: Path, contact_model: Path, patient: str, families: list[str], count: int, seed: int,
          tta: bool) -> dict:
    options = InferenceOptions(device="cpu", tta=tta, postprocessing=[])  # the networks' classes, unprocessed
    maps, contacts = Predictor(map_model, options), Predictor(contact_model, options)
    if contacts.card.class_values != [0, TOOTH, CONTACT]:
        raise InputError(f"{contacts.card.id}: not a tooth/contact network (classes {contacts.card.class_values})")
    steps = maps.card.postprocessing
    rows = []
    for family in families:
        for index, image, truth in scans(patient, family, count, seed):
            started = time.perf_counter()
            tooth_map = maps.predict(image).labels.array
            contact_classes = contacts.predict(image).labels.array
            row = {"family": family, "scan": index,
                   "contact_class_voxels": {int(v): int(n) for v, n in
                                            enumerate(np.bincount(contact_classes.ravel().astype(np.int64))) if n}}
            scan = to_canonical(image)[0].array  # once per scan, not per variant
            for name, classes in class_maps(tooth_map, contact_classes).items():
                labels = numbered(image.with_array(classes), scan, steps)
                metrics = sts2024_case(truth.array, labels)
                parts = loss_breakdown(truth.array, labels, classes)
                row[name] = {"instance_dsc": round(float(metrics["instance_dsc"]), 4),
                             "ia": round(float(metrics["ia"]), 4),
                             "handedness": handedness_of(image.with_array(labels)).sign,
                             "best_numbers_instance_dsc": round(float(parts["best_numbers_instance_dsc"]), 4),
                             "map_limit_instance_dsc": round(float(parts["map_limit_instance_dsc"]), 4)}
            row["seconds"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            print(f"  {family} #{index}: " + ", ".join(f"{n} {row[n]['instance_dsc']:.3f}" for n in VARIANTS)
                  + f"; contact model's voxels per class {row['contact_class_voxels']}", flush=True)
    summary = {name: {key: round(float(np.mean([r[name][key] for r in rows])), 4) for key in rows[0][name]}
               for name in VARIANTS}
    return {"map_model": maps.card.id, "contact_model": contacts.card.id, "contact_folder": str(contact_model),
            "patient": patient, "rows": rows, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--map", default="toothseg-cbct-binary-lopo-long", help="model ID or folder of the tooth map")
    parser.add_argument("--contacts", required=True, help="model ID or folder of a tooth/contact network")
    parser.add_argument("--patient", default="sts2024-0002", choices=["sts2024-0001", "sts2024-0002"])
    parser.add_argument("--family", action="append", choices=sorted(FAMILIES), help="(default: hu and synthseg)")
    parser.add_argument("--scans", type=int, default=3, help="scans per family")
    parser.add_argument("--seed", type=int, default=7000, help="the scans' seed (bench_cbct_generalisation's)")
    parser.add_argument("--no-tta", action="store_true")
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    try:
        map_model, contact_model = catalog.resolve(args.map), catalog.resolve(args.contacts)
    except InputError as exc:
        parser.error(str(exc))
    try:  # a --contacts model of other classes is said in one line, not a traceback
        result = score(map_model, contact_model, args.patient, args.family or ["hu", "synthseg"], args.scans,
                       args.seed, not args.no_tta)
    except InputError as exc:
        parser.error(str(exc))
    for name, values in result["summary"].items():
        print(f"{name:<14} instance Dice {values['instance_dsc']:.3f}  IA {values['ia']:.3f}  best numbers "
              f"{values['best_numbers_instance_dsc']:.3f}  map limit {values['map_limit_instance_dsc']:.3f}  "
              f"handedness {values['handedness']:+.2f}")
    if args.out:
        payload = {"note": NOTE, "command": " ".join(sys.argv), "scans": args.scans, "seed": args.seed,
                   "tta": not args.no_tta, **result}
        atomic_write_text(args.out, json.dumps(payload, indent=1), overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
