"""3D models on patients and intensity generators they may not have seen. INTENSITIES ARE SYNTHETIC.

No real CBCT image is available to this project; what can be measured is how a model fares on a
**patient** whose tooth shapes it never saw (leave one patient out: STS-2024 ``Validation_0001`` or
``Validation_0002``, their mirrored numbering corrected) and on an **intensity family** it was not
trained with:

* ``hu``: ToothSeg's own synthesiser with HU-like tissue ranges, metal streaks and rings (the
  bundled sample's family);
* ``synthseg``: the same anatomy, every tissue's grey value drawn on its own from a wide range, a
  bias field, thick slices and photon noise;
* ``rtk``: a physically simulated cone-beam scan of the same anatomy (``rtk_cbct.py``: attenuation
  at two energies, RTK cone-beam forward projection, scatter, Poisson noise, photon starvation behind
  metal, FDK reconstruction), a family no ToothSeg recipe trains on. Needs ``make rtk-env`` (itk-rtk in
  its own environment, ``.venv-rtk``); about a minute per scan on 2 cores.

Each scan is the patient's teeth cropped with a 12 mm margin at 0.6 mm, as the bundled sample; each
has its own seed (``--seed`` + index), so the figures are reproducible. Reported per model, patient and
family: the STS-2024 metrics (instance Dice, IA, whole-dentition Dice) and the handedness of the
prediction (+1: the patient's right teeth numbered as right ones). Where the tooth map falls short, the
recall of each true tooth's occlusal half and apical half (split at the middle of its height, any predicted
tooth counts) says whether crowns or roots are missed. ``--breakdown`` adds where the instance Dice is lost
(:func:`loss_breakdown`: to the numbering, to separating the map into teeth, or to the map itself), the
network map's own whole-dentition Dice, and what the model's grid allows at best (:func:`grid_limit_dsc`).

Over all its scans, each model's mean instance Dice and IA come with a 95 % bootstrap interval over the scans,
and every model after the first with its gain over the first, paired scan by scan, and that gain's interval
(:func:`with_intervals`): three scans a family leave the mean uncertain by several points (the default's nine
scans of seed 7000 give 0.325, nine others 0.257), so a difference between two models counts only where the
interval of its gain lies clear of 0.

    python Testing/benchmarks/bench_cbct_generalisation.py --model toothseg-cbct-synthetic-demo \\
        --model runs/cbct_lopo_0001/export --patient sts2024-0002 --family hu --family synthseg \\
        --scans 2 --out Testing/benchmarks/results/cbct_generalisation_cpu.json
    python Testing/benchmarks/bench_cbct_generalisation.py --model toothseg-cbct-synthetic-demo --family rtk \
        --scans 2 --out Testing/benchmarks/results/cbct_rtk_family_cpu.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "ToothSegTraining"))

from toothseg.core.handedness import handedness_of  # noqa: E402
from toothseg.core.inference import InferenceOptions, Predictor  # noqa: E402
from toothseg.core.io.images import read_volume, write_volume  # noqa: E402
from toothseg.core.io.atomic import atomic_write_text  # noqa: E402
from toothseg.core.metrics.protocols import sts2024_case  # noqa: E402
from toothseg.core.postprocessing.arch_numbering import renumber_from_arch  # noqa: E402
from toothseg.core.preprocessing import resampled_shape, to_canonical  # noqa: E402
from toothseg.core.errors import InputError  # noqa: E402
from toothseg.core.models.catalog import load_catalog  # noqa: E402
from toothseg.core.models.folder import read_card  # noqa: E402
from toothseg.train.data.cases import shared_data_dir  # noqa: E402
from toothseg.train.data.dataset import BUILTIN_LABEL_MAPS  # noqa: E402
from toothseg.core.volume import Volume  # noqa: E402
from toothseg.train.synth import SynthesisOptions, synthesize  # noqa: E402
from toothseg.train.synth.sample import cropped_anatomy  # noqa: E402
from bench_ufba import paired_gain_interval  # noqa: E402

RTK_PYTHON = REPO / ".venv-rtk" / "bin" / "python"
RTK_SCRIPT = Path(__file__).resolve().parent / "rtk_cbct.py"
FAMILIES = {
    "hu": SynthesisOptions(missing_teeth=(0, 0), metal_probability=0.5, ring_probability=0.5),
    "synthseg": SynthesisOptions(missing_teeth=(0, 0), metal_probability=0.5, ring_probability=0.0,
                                 synthseg_probability=1.0, bias_field_probability=1.0, thick_slices_probability=0.3,
                                 poisson_noise_probability=0.5),
    "rtk": None,  # not painted: simulated by rtk_cbct.py in its own environment
}
NOTE = ("INTENSITIES ARE SYNTHETIC: scans painted by toothseg.train.synth (families hu, synthseg) or simulated "
        "by RTK cone-beam projection and FDK reconstruction (family rtk) on real STS-2024 tooth shapes "
        "(left/right numbering corrected); no real CBCT image exists in this project")


def scans(patient: str, family: str, count: int, seed: int):
    """``count`` synthetic scans (image, labels) of one patient in one intensity family."""
    path = shared_data_dir() / "sts2024" / f"{BUILTIN_LABEL_MAPS[patient]}.nii.gz"
    anatomy, region = cropped_anatomy(path, 0.6, 12.0)
    for index in range(count):
        if family == "rtk":
            yield index, *rtk_scan(anatomy, region, seed * 1000 + index)
        else:
            yield index, *synthesize(anatomy, np.random.default_rng([seed, index]), FAMILIES[family], region=region)


def rtk_scan(anatomy, region: tuple[slice, ...], seed: int) -> tuple[Volume, Volume]:
    """A cone-beam scan simulated by ``rtk_cbct.py`` (in ``.venv-rtk``) of the anatomy's block."""
    if not RTK_PYTHON.exists():
        raise SystemExit(f"the rtk family needs the RTK environment {RTK_PYTHON.parent.parent}: run  make rtk-env")
    labels = anatomy.labels
    origin = tuple(labels.index_to_physical(np.array([[s.start for s in region][::-1]], dtype=float))[0])
    geometry = dict(spacing=labels.spacing, origin=origin, direction=labels.direction)
    with tempfile.TemporaryDirectory(prefix="toothseg-rtk-") as scratch:
        tissue_path, image_path = Path(scratch) / "tissue.nii.gz", Path(scratch) / "image.nii.gz"
        write_volume(Volume(anatomy.tissue[region].copy(), **geometry), tissue_path)
        subprocess.run([str(RTK_PYTHON), str(RTK_SCRIPT), "--tissue", str(tissue_path), "--out", str(image_path),
                        "--seed", str(seed)], check=True, stdout=subprocess.DEVNULL)
        image = read_volume(image_path)
    image.metadata["synthetic"] = True
    return image, Volume(labels.array[region].copy(), **geometry)


def half_recalls(truth: Volume, prediction: Volume) -> tuple[float, float]:
    """(occlusal, apical) recall: the share of the true teeth's voxels found (as any tooth) in the half of
    each tooth's height towards the bite, and in the half towards the root tips. Upper teeth (FDI 1x, 2x,
    5x, 6x) point their crowns down, lower ones up: in the canonical (Z, Y, X) array Z grows towards the head."""
    labels, _ = to_canonical(truth)
    found = to_canonical(prediction)[0].array > 0
    hits = {"occlusal": [0, 0], "apical": [0, 0]}
    for value in np.unique(labels.array[labels.array > 0]):
        tooth = labels.array == value
        z = np.nonzero(tooth.any(axis=(1, 2)))[0]
        middle = (z.min() + z.max()) / 2
        below = tooth & (np.arange(tooth.shape[0]) < middle)[:, None, None]
        above = tooth & ~below
        crown, root = (below, above) if int(value) // 10 in (1, 2, 5, 6) else (above, below)
        for part, voxels in (("occlusal", crown), ("apical", root)):
            hits[part][0] += int((voxels & found).sum())
            hits[part][1] += int(voxels.sum())
    return tuple(round(h / max(n, 1), 4) for h, n in (hits["occlusal"], hits["apical"]))


def loss_breakdown(truth: np.ndarray, labels: np.ndarray, network_map: np.ndarray) -> dict[str, float]:
    """Where the instance Dice is lost: the STS-2024 instance Dice of the prediction as it is, with every
    predicted tooth given the number of the true tooth it overlaps most (``best_numbers``: what a perfect
    numbering of these teeth would score), and of the true teeth cut to the network's tooth map
    (``map_limit``: what a perfect separation and numbering of this map would score). Actual to
    best_numbers is the numbering's loss, best_numbers to map_limit the separation's, map_limit to 1 the
    map's."""
    labels = labels.astype(np.int64)
    best = np.zeros_like(labels)
    found = labels > 0
    if found.any():
        pairs = np.stack([labels[found], truth[found].astype(np.int64)], axis=1)
        pairs = pairs[pairs[:, 1] > 0]
        for value in np.unique(pairs[:, 0]):
            best[labels == value] = np.bincount(pairs[pairs[:, 0] == value, 1]).argmax()
    limit = np.where(network_map > 0, truth, 0)
    teeth, mapped = truth > 0, network_map > 0
    return {"instance_dsc": sts2024_case(truth, labels)["instance_dsc"],
            "best_numbers_instance_dsc": sts2024_case(truth, best)["instance_dsc"],
            "map_limit_instance_dsc": sts2024_case(truth, limit)["instance_dsc"],
            "map_image_dsc": float(2 * (teeth & mapped).sum() / max(1, teeth.sum() + mapped.sum()))}


def grid_limit_dsc(truth: np.ndarray, spacing_zyx: tuple[float, ...], grid_spacing_zyx: tuple[float, ...]) -> float:
    """Whole-dentition Dice of the true tooth map taken to a model's grid (area average) and back (trilinear,
    over one half): what a perfect network on that grid could give, beside ``map_image_dsc``, what it gave."""
    import torch
    import torch.nn.functional as F

    teeth = truth > 0
    grid = resampled_shape(teeth.shape, spacing_zyx, grid_spacing_zyx)
    tensor = torch.from_numpy(teeth.astype(np.float32))[None, None]
    back = F.interpolate(F.interpolate(tensor, size=grid, mode="area"), size=teeth.shape, mode="trilinear",
                         align_corners=False)[0, 0].numpy() > 0.5
    return float(2 * (teeth & back).sum() / max(1, teeth.sum() + back.sum()))


def score(model_folder: Path, patients: list[str], families: list[str], count: int, seed: int, tta: bool,
          arch_numbering: bool = False, breakdown: bool = False) -> dict:
    predictor = Predictor(model_folder, InferenceOptions(device="cpu", tta=tta, keep_network_labels=breakdown))
    card = read_card(model_folder)
    rows = []
    for patient in patients:
        for family in families:
            for index, image, truth in scans(patient, family, count, seed):
                started = time.perf_counter()
                prediction = predictor.predict(image)
                metrics = sts2024_case(truth.array, prediction.labels.array)
                hand = handedness_of(prediction.labels)
                occlusal, apical = half_recalls(truth, prediction.labels)
                rows.append({"patient": patient, "family": family, "scan": index,
                             "case": f"{patient}/{family}/{index}",
                             "seconds": round(time.perf_counter() - started, 1),
                             "teeth_true": int(len(np.unique(truth.array)) - 1),
                             "teeth_found": len(prediction.report.get("labels_found", [])),
                             "handedness": hand.sign, "determinant": hand.determinant,
                             "occlusal_half_recall": occlusal, "apical_half_recall": apical,
                             **{k: round(float(v), 4) for k, v in metrics.items()}})
                print(f"  {card.id} {patient} {family} #{index}: instance Dice {metrics['instance_dsc']:.3f}, "
                      f"IA {metrics['ia']:.3f}, image Dice {metrics['image_dsc']:.3f}, handedness {hand.sign:+d}, "
                      f"found {occlusal:.0%} of the crown halves and {apical:.0%} of the root halves",
                      flush=True)
                if breakdown:
                    parts = loss_breakdown(truth.array, prediction.labels.array, prediction.network_labels.array)
                    if card.spacing_zyx:
                        parts["grid_limit_image_dsc"] = grid_limit_dsc(truth.array, truth.spacing_zyx,
                                                                       tuple(card.spacing_zyx))
                    rows[-1].update({k: round(float(v), 4) for k, v in parts.items() if k != "instance_dsc"})
                    # voxels per class of the network's own map: a class it never draws shows here (the
                    # contact class of contact3d_from_binary_lopo won no voxel, unseen for a session)
                    counts = np.bincount(prediction.network_labels.array.ravel().astype(np.int64))
                    rows[-1]["network_class_voxels"] = {int(v): int(n) for v, n in enumerate(counts) if n}
                    print(f"    each tooth given its best number: {parts['best_numbers_instance_dsc']:.3f}; the true "
                          f"teeth within the map: {parts['map_limit_instance_dsc']:.3f}; the map's whole-dentition "
                          f"Dice {parts['map_image_dsc']:.3f} (its grid allows "
                          f"{parts.get('grid_limit_image_dsc', float('nan')):.3f}); voxels per network class "
                          f"{rows[-1]['network_class_voxels']}", flush=True)
                if arch_numbering:  # the same teeth, numbered from the arch geometry instead of by the network
                    renumbered, _ = renumber_from_arch(prediction.labels)
                    arch = sts2024_case(truth.array, renumbered.array)
                    rows[-1].update({f"arch_{k}": round(float(v), 4) for k, v in arch.items()})
                    print(f"    numbered from the arch: instance Dice {arch['instance_dsc']:.3f}, IA {arch['ia']:.3f}",
                          flush=True)
    summary = {}
    for patient in patients:
        for family in families:
            part = [r for r in rows if r["patient"] == patient and r["family"] == family]
            keys = ["instance_dsc", "ia", "image_dsc", "handedness", "occlusal_half_recall", "apical_half_recall"]
            keys += ["arch_instance_dsc", "arch_ia"] if arch_numbering else []
            keys += ["best_numbers_instance_dsc", "map_limit_instance_dsc", "map_image_dsc"] if breakdown else []
            keys += ["grid_limit_image_dsc"] if breakdown and card.spacing_zyx else []
            summary[f"{patient}/{family}"] = {k: round(float(np.mean([r[k] for r in part])), 4) for k in keys}
    return {"model": card.id, "folder": str(model_folder), "provenance": card.provenance, "rows": rows,
            "summary": summary}


#: The means that get an interval over the scans in :func:`with_intervals`.
HEADLINES = ("instance_dsc", "ia")


def mean_interval(values: list[float], resamples: int = 2000, seed: int = 0) -> list[float]:
    """95 % bootstrap interval of the mean of ``values`` (one per scan): scans drawn with replacement."""
    array = np.asarray(values, dtype=float)
    draws = np.random.default_rng(seed).integers(0, array.size, size=(resamples, array.size))
    return [round(float(q), 4) for q in np.percentile(array[draws].mean(axis=1), [2.5, 97.5])]


def with_intervals(results: list[dict]) -> None:
    """Adds to each model's result ``overall``: its mean :data:`HEADLINES` over every scan it was scored on,
    with a 95 % bootstrap interval over those scans, and, for every model after the first, its gain over the
    first, paired scan by scan (the same synthetic scans), with the paired bootstrap interval of that gain
    (``bench_ufba.paired_gain_interval``). The scans, not the teeth, are the units: a tooth's score depends on
    its neighbours' in the same scan."""
    first = results[0] if results else None
    for result in results:
        rows = result["rows"]
        overall: dict = {"scans": len(rows)}
        for key in HEADLINES:
            overall[key] = round(float(np.mean([r[key] for r in rows])), 4)
            overall[f"{key}_ci95"] = mean_interval([r[key] for r in rows])
        if result is not first:
            overall["compared_with"] = first["model"]
            for key in HEADLINES:
                ours = {r["case"]: r[key] for r in rows}
                theirs = {r["case"]: r[key] for r in first["rows"]}
                shared = sorted(set(ours) & set(theirs))
                if not shared:
                    raise ValueError(f"{result['model']} and {first['model']} share no scored scan")
                overall[f"{key}_gain"] = round(float(np.mean([ours[c] - theirs[c] for c in shared])), 4)
                overall[f"{key}_gain_ci95"] = list(paired_gain_interval(
                    [{"case": c, key: ours[c]} for c in shared], [{"case": c, key: theirs[c]} for c in shared],
                    value=key))
        result["overall"] = overall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="model ID or folder (repeatable)")
    parser.add_argument("--patient", action="append", choices=["sts2024-0001", "sts2024-0002"],
                        help="held-out patient(s) (default: both)")
    parser.add_argument("--family", action="append", choices=sorted(FAMILIES),
                        help="intensity family (default: hu and synthseg; rtk needs make rtk-env)")
    parser.add_argument("--scans", type=int, default=2, help="scans per patient and family")
    parser.add_argument("--seed", type=int, default=7000)
    parser.add_argument("--no-tta", action="store_true")
    parser.add_argument("--arch-numbering", action="store_true",
                        help="also score the predicted teeth renumbered from the arch geometry")
    parser.add_argument("--breakdown", action="store_true",
                        help="also say where the instance Dice is lost: numbering, separation or the tooth map "
                             "(loss_breakdown)")
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    try:  # every model before the first scan: a typo is said at once, not after an hour of scoring
        folders = {model: catalog.resolve(model) for model in args.model}
    except InputError as exc:
        parser.error(str(exc))
    results = []
    for model, folder in folders.items():
        print(f"{model}:", flush=True)
        families = args.family or ["hu", "synthseg"]
        results.append(score(folder, args.patient or ["sts2024-0001", "sts2024-0002"], families, args.scans,
                             args.seed, not args.no_tta, args.arch_numbering, args.breakdown))
    with_intervals(results)
    for result in results:
        for key, values in result["summary"].items():
            arch = (f"  | numbered from the arch: instance Dice {values['arch_instance_dsc']:.3f}  IA "
                    f"{values['arch_ia']:.3f}" if "arch_ia" in values else "")
            parts = (f"  | best numbers {values['best_numbers_instance_dsc']:.3f}  map limit "
                     f"{values['map_limit_instance_dsc']:.3f}" if "map_limit_instance_dsc" in values else "")
            print(f"{result['model']:<32} {key:<24} instance Dice {values['instance_dsc']:.3f}  IA {values['ia']:.3f}  "
                  f"image Dice {values['image_dsc']:.3f}  handedness {values['handedness']:+.2f}{arch}{parts}")
        overall = result["overall"]
        line = (f"{result['model']:<32} {'all ' + str(overall['scans']) + ' scans':<24} instance Dice "
                f"{overall['instance_dsc']:.3f} [{overall['instance_dsc_ci95'][0]:.3f}, "
                f"{overall['instance_dsc_ci95'][1]:.3f}]  IA {overall['ia']:.3f} [{overall['ia_ci95'][0]:.3f}, "
                f"{overall['ia_ci95'][1]:.3f}] (95 % intervals over the scans)")
        if "compared_with" in overall:
            line += (f"; instance Dice gain over {overall['compared_with']} {overall['instance_dsc_gain']:+.3f} "
                     f"[{overall['instance_dsc_gain_ci95'][0]:+.3f}, {overall['instance_dsc_gain_ci95'][1]:+.3f}]")
        print(line)
    if args.out:
        payload = {"note": NOTE, "command": " ".join(sys.argv), "scans": args.scans, "seed": args.seed,
                   "tta": not args.no_tta, "results": results}
        atomic_write_text(args.out, json.dumps(payload, indent=1), overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
