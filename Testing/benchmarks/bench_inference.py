"""Inference benchmarks (printed figures; each measurement in a fresh process for honest peak memory).

1. ``monai``: the same network, patch, overlap and Gaussian blending through MONAI's
   ``sliding_window_inference`` and through ToothSeg's ``sliding_window_predict`` (MONAI window
   placement, float32): largest probability difference, wall-time ratio, peak-memory ratio.
2. ``large``: the whole ``Predictor`` pipeline (read → reorient → resample → sliding windows →
   slab-wise mapping back → post-processing) on a 640 x 640 x 400 scan at 0.25 mm, on the CPU,
   with a network of the bundled-model size (random weights: memory and time do not depend on them),
   33 FDI classes, at 0.5 mm model spacing: peak resident memory and seconds. Post-processing and
   the numbering checks are left out here: with random weights every label spans the whole scan,
   which says nothing about their cost on real predictions (tooth-sized bounding boxes).
3. ``cascade``: the default path for a coarse-to-fine model (coarse model at low resolution, fine
   model only on the region with teeth, windows without teeth skipped) against the same fine model
   slid over the whole scan at full resolution: seconds, window forward passes and the STS-2024
   metrics of both against the true labels. Scan: a full-field synthetic CBCT (the whole
   161 x 161 x 132 mm field of the bundled STS-2024 ``Validation_0002`` label map, SYNTHETIC
   intensities) at 0.6 mm; model: the bundled ``toothseg-cbct-synthetic-demo`` (or ``--model``).

4. ``fullfield``: what a clinician's full-field scan costs with the bundled 3D default as ``segment`` runs it
   (default options: TTA on, post-processing and numbering checks): a 640 x 640 x 400 scan at 0.25 mm
   (160 x 160 x 100 mm, int16, uncompressed NIfTI), the 0.6 mm full-field synthetic scan of ``cascade``
   resampled onto it (SYNTHETIC intensities) with fine noise added; reading and predicting timed apart,
   peak resident memory of the whole child process (goal: <= 2.5 GiB and <= 60 s on 2 CPU threads).

5. ``xray``: the whole ``Predictor`` pipeline with the default panoramic model (uncertainty on) on a
   random X-ray of clinical size (default 3000 x 6000 px at 0.1 mm): peak resident memory and seconds.

    python Testing/benchmarks/bench_inference.py monai
    python Testing/benchmarks/bench_inference.py large [--size 640 640 400]
    python Testing/benchmarks/bench_inference.py cascade [--model DIR] [--json OUT]
    python Testing/benchmarks/bench_inference.py fullfield [--model DIR] [--size 640 640 400] [--json OUT]
    python Testing/benchmarks/bench_inference.py xray [--xray-size 3000 6000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from peak_memory import peak_rss_gib  # the script's folder is on sys.path


def _peak_gib() -> float:
    return peak_rss_gib()


def _network(classes: int):
    import torch

    from toothseg.core.networks import build_network

    torch.manual_seed(0)
    return build_network("resenc_unet", num_classes=classes, features_per_stage=[16, 32, 64, 96],
                         strides=[1, 2, 2, 2], n_blocks_per_stage=[1, 2, 2, 2]).eval()


def child_monai(which: str, shape: list[int], patch: list[int], overlap: float, classes: int,
                probabilities: str) -> dict:
    import torch

    torch.set_num_threads(torch.get_num_threads())
    net = _network(classes)
    image = torch.from_numpy(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    base = _peak_gib()
    start = time.perf_counter()
    with torch.inference_mode():
        if which == "monai":
            from monai.inferers import sliding_window_inference

            out = sliding_window_inference(image[None, None], patch, 2, lambda x: torch.softmax(net(x), 1),
                                           overlap=overlap, mode="gaussian", sigma_scale=0.125)[0]
        else:
            from toothseg.core.inference.sliding_window import SlidingWindowConfig, sliding_window_predict

            config = SlidingWindowConfig(patch, overlap, batch_size=2, placement="monai", exact=(which == "exact"))
            out = sliding_window_predict(image[None], lambda x: torch.softmax(net(x), 1), classes, config)
    seconds = time.perf_counter() - start
    np.save(probabilities, out.float().numpy())  # for the parent to compare, outside the timed part
    return {"which": which, "seconds": seconds, "peak_gib": _peak_gib(), "baseline_gib": base}


def child_large(size: list[int], classes: int) -> dict:
    import torch

    from toothseg.core import LabelTable, Volume
    from toothseg.core.inference import InferenceOptions, Predictor
    from toothseg.core.models.card import IntensityNormalization, ModelCard
    from toothseg.core.models.folder import LoadedModel

    x, y, z = size
    rng = np.random.default_rng(0)
    array = np.empty((z, y, x), dtype=np.int16)
    for k in range(z):  # filled slice by slice: no float64 copy of the whole scan
        array[k] = rng.integers(-1000, 3000, size=(y, x), dtype=np.int16)
    volume = Volume(array, (0.25, 0.25, 0.25))
    table = LabelTable.fdi()
    card = ModelCard(id="bench", architecture="resenc_unet", kwargs={}, spatial_dims=3, label_table=table,
                     class_values=[0, *table.values], spacing_zyx=[0.5, 0.5, 0.5], patch_size=[96, 96, 96],
                     mirror_axes=[2], intensity=IntensityNormalization("percentile_zscore"))
    model = LoadedModel(card, None, network=_network(classes))  # type: ignore[arg-type]
    base = _peak_gib()
    start = time.perf_counter()
    prediction = Predictor(model, InferenceOptions(device="cpu", fast=True, postprocessing=[],
                                                numbering_checks=False)).predict(volume)
    seconds = time.perf_counter() - start
    return {"size_xyz": size, "seconds": seconds, "peak_gib": _peak_gib(), "input_gib": array.nbytes / 2**30,
            "baseline_gib": base, "threads": torch.get_num_threads(),
            "forward_passes": prediction.report.get("forward_passes")}


def full_field_scan(folder: str, spacing_mm: float) -> tuple[str, str]:
    """The whole field of the bundled STS-2024 label map as a synthetic CBCT (image, labels)."""
    from pathlib import Path

    from toothseg.core.io.images import write_volume
    from toothseg.train.synth.sample import make_sample

    sample_data = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
    labels_path = sample_data / "STS2024_Validation_0002_teeth.nii.gz"
    image, labels = make_sample(labels_path, spacing_mm=spacing_mm, margin_mm=1000.0)  # a margin past every edge
    paths = str(Path(folder) / "full_field.nii.gz"), str(Path(folder) / "full_field_teeth.nii.gz")
    write_volume(image, paths[0], overwrite=True)
    write_volume(labels, paths[1], overwrite=True)
    return paths


def child_cascade(variant: str, model: str, image_path: str, labels_path: str) -> dict:
    import torch

    from toothseg.core.inference import InferenceOptions, Predictor
    from toothseg.core.io.images import read_label_map, read_volume
    from toothseg.core.metrics.protocols import sts2024_case

    image, truth = read_volume(image_path), read_label_map(labels_path)
    predictor = Predictor(model, InferenceOptions(device="cpu", tta=False, use_cascade=(variant == "cascade")))
    base = _peak_gib()
    start = time.perf_counter()
    prediction = predictor.predict(image)
    seconds = time.perf_counter() - start
    metrics = sts2024_case(truth.array, prediction.labels.array)
    return {"variant": variant, "seconds": seconds, "peak_gib": _peak_gib(), "baseline_gib": base,
            "forward_passes": prediction.report.get("forward_passes"), "coarse": prediction.report.get("coarse"),
            "threads": torch.get_num_threads(), "shape_zyx": list(image.shape),
            "metrics": {k: round(float(v), 4) for k, v in metrics.items()}}


FULL_FIELD_SPACING = 0.25


def clinical_full_field_scan(folder: str, size_xyz: list[int], source_spacing: float) -> tuple[str, str]:
    """An int16 scan of ``size_xyz`` voxels at 0.25 mm centred on the teeth (image, labels): the full-field
    scan made at ``source_spacing`` resampled (linear; labels nearest) plus noise at the fine grid's scale."""
    from pathlib import Path

    import SimpleITK as sitk

    image_path, labels_path = full_field_scan(folder, source_spacing)
    coarse_image, coarse_labels = sitk.ReadImage(image_path), sitk.ReadImage(labels_path)
    teeth = np.argwhere(sitk.GetArrayViewFromImage(coarse_labels) > 0).mean(axis=0)[::-1]  # x y z index
    centre = np.asarray(coarse_labels.TransformContinuousIndexToPhysicalPoint(teeth.tolist()))
    size = np.asarray(size_xyz)
    direction = np.asarray(coarse_image.GetDirection()).reshape(3, 3)
    origin = centre - direction @ ((size - 1) / 2 * FULL_FIELD_SPACING)
    reference = sitk.Image([int(v) for v in size], sitk.sitkInt16)
    reference.SetSpacing([FULL_FIELD_SPACING] * 3)
    reference.SetDirection(coarse_image.GetDirection())
    reference.SetOrigin(origin.tolist())
    fine = sitk.Resample(coarse_image, reference, sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(fine)
    del fine
    array += np.random.default_rng(0).normal(0.0, 25.0, array.shape).astype(np.float32)
    image = sitk.GetImageFromArray(np.clip(array, -1024, 3071).astype(np.int16))
    del array
    image.CopyInformation(reference)
    labels = sitk.Resample(coarse_labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    paths = str(Path(folder) / "clinical_field.nii"), str(Path(folder) / "clinical_field_teeth.nii.gz")
    sitk.WriteImage(image, paths[0])
    sitk.WriteImage(labels, paths[1], True)
    return paths


def child_fullfield(model: str, image_path: str, labels_path: str) -> dict:
    import torch

    from toothseg.core.inference import InferenceOptions, Predictor
    from toothseg.core.io.images import read_label_map, read_volume
    from toothseg.core.metrics.protocols import sts2024_case

    predictor = Predictor(model, InferenceOptions(device="cpu"))  # segment's defaults
    base = _peak_gib()
    start = time.perf_counter()
    image = read_volume(image_path)
    read_seconds = time.perf_counter() - start
    prediction = predictor.predict(image)
    seconds = time.perf_counter() - start
    peak = _peak_gib()
    labels = prediction.labels.array
    postprocessing = prediction.report.get("postprocessing_seconds", 0.0)
    del image, prediction
    metrics = sts2024_case(read_label_map(labels_path).array, labels)
    return {"model": predictor.card.id, "seconds": seconds, "read_seconds": read_seconds,
            "postprocessing_seconds": postprocessing, "peak_gib": peak, "baseline_gib": base,
            "threads": torch.get_num_threads(), "shape_zyx": list(labels.shape),
            "metrics": {k: round(float(v), 4) for k, v in metrics.items()}}


def child_xray(rows: int, cols: int) -> dict:
    import torch

    from toothseg.core import Volume
    from toothseg.core.inference import InferenceOptions, Predictor
    from toothseg.core.models.catalog import load_catalog

    rng = np.random.default_rng(0)
    xray = Volume(rng.integers(0, 255, (1, rows, cols), dtype=np.uint8), (0.1, 0.1, 1.0), kind="2d")
    model = load_catalog().default("2d")  # what segment runs on an X-ray
    predictor = Predictor(model.folder, InferenceOptions(device="cpu", tta=False, uncertainty=True))
    base = _peak_gib()
    start = time.perf_counter()
    predictor.predict(xray)
    return {"model": model.id, "size_rows_cols": [rows, cols], "seconds": time.perf_counter() - start,
            "peak_gib": _peak_gib(),
            "baseline_gib": base, "threads": torch.get_num_threads()}


def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which",
                        choices=("monai", "large", "cascade", "fullfield", "xray", "_child_monai", "_child_large",
                                 "_child_cascade", "_child_fullfield", "_child_xray"))
    parser.add_argument("--model", help="model folder for 'cascade' and 'fullfield' (default: the bundled 3D model)")
    parser.add_argument("--spacing", type=float, default=0.6,
                        help="voxel size (mm) of the scan for 'cascade' (for 'fullfield': of the scan it resamples)")
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--labels", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, nargs=3, default=[640, 640, 400], help="x y z voxels for 'large' "
                        "and 'fullfield'")
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 160, 160], help="z y x voxels for 'monai'")
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64])
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--classes", type=int, default=33)
    parser.add_argument("--xray-size", type=int, nargs=2, default=[3000, 6000], metavar=("ROWS", "COLS"),
                        help="X-ray size for 'xray'")
    parser.add_argument("--variant", default="ours")
    parser.add_argument("--probabilities", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="append the figures to this JSON file")
    args = parser.parse_args()
    if args.which == "_child_monai":
        print(json.dumps(child_monai(args.variant, args.shape, args.patch, args.overlap, args.classes,
                                     args.probabilities)))
        return 0
    if args.which == "_child_large":
        print(json.dumps(child_large(args.size, args.classes)))
        return 0
    if args.which == "_child_xray":
        print(json.dumps(child_xray(*args.xray_size)))
        return 0
    if args.which == "_child_cascade":
        print(json.dumps(child_cascade(args.variant, args.model, args.image, args.labels)))
        return 0
    if args.which == "_child_fullfield":
        print(json.dumps(child_fullfield(args.model, args.image, args.labels)))
        return 0
    if args.which == "fullfield":
        import tempfile
        from pathlib import Path

        from toothseg.core.models.catalog import load_catalog

        model = args.model or str(load_catalog(include_user=False).default("3d").folder)  # what segment runs
        with tempfile.TemporaryDirectory(prefix="toothseg-bench-") as folder:
            image_path, labels_path = clinical_full_field_scan(folder, args.size, args.spacing)
            r = _child(["_child_fullfield", "--model", model, "--image", image_path, "--labels", labels_path])
        m = r["metrics"]
        print(f"# {r['model']} as segment runs it (TTA on), {tuple(args.size)} (x y z) int16 scan at "
              f"{FULL_FIELD_SPACING} mm, SYNTHETIC intensities, CPU, {r['threads']} threads")
        print(f"peak resident memory {r['peak_gib']:.2f} GiB (goal <= 2.5; model loaded: {r['baseline_gib']:.2f}), "
              f"{r['seconds']:.1f} s including {r['read_seconds']:.1f} s reading and "
              f"{r['postprocessing_seconds']:.1f} s post-processing (goal <= 60); instance Dice "
              f"{m['instance_dsc']:.3f}, IA {m['ia']:.3f}")
        result = {"benchmark": "fullfield", "settings": {"model": r["model"], "size_xyz": args.size,
                                                         "spacing_mm": FULL_FIELD_SPACING, "intensities": "SYNTHETIC"},
                  "run": r}
    elif args.which == "cascade":
        import tempfile
        from pathlib import Path

        model = args.model or str(Path(__file__).resolve().parents[2] / "Resources" / "Models" /
                                  "toothseg-cbct-synthetic-demo")
        from toothseg.core.errors import InputError
        from toothseg.core.models.folder import read_card

        try:
            roles = {m.get("role") for m in read_card(model).members}
        except InputError as exc:
            parser.error(str(exc))
        if not {"coarse", "fine"} <= roles:
            parser.error(f"{model} is not a coarse-to-fine cascade: there is nothing to compare")
        with tempfile.TemporaryDirectory(prefix="toothseg-bench-") as folder:
            image_path, labels_path = full_field_scan(folder, args.spacing)
            common = ["--model", model, "--image", image_path, "--labels", labels_path]
            runs = {v: _child(["_child_cascade", "--variant", v, *common]) for v in ("full", "cascade")}
        full, cascade = runs["full"], runs["cascade"]
        ratio = full["seconds"] / cascade["seconds"]
        points = 100 * (cascade["metrics"]["instance_dsc"] - full["metrics"]["instance_dsc"])
        print(f"# coarse-to-fine vs full-resolution sliding window, full-field SYNTHETIC scan "
              f"{tuple(full['shape_zyx'])} (z y x) at {args.spacing} mm, CPU, {full['threads']} threads, no TTA, "
              f"model {Path(model).name}")
        print("| path | seconds | window passes | peak RSS GiB | instance Dice | IA | image Dice |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, r in (("full-resolution sliding window, whole scan", full), ("cascade (default)", cascade)):
            m = r["metrics"]
            print(f"| {name} | {r['seconds']:.1f} | {r['forward_passes']} | {r['peak_gib']:.2f} | "
                  f"{m['instance_dsc']:.4f} | {m['ia']:.4f} | {m['image_dsc']:.4f} |")
        print(f"cascade: {ratio:.2f}x less wall time (goal >= 3x); "
              f"instance Dice {points:+.2f} points (goal within 0.5)")
        result = {"benchmark": "cascade", "settings": {"model": Path(model).name, "spacing_mm": args.spacing,
                                                       "intensities": "SYNTHETIC"},
                  "runs": runs, "time_ratio": ratio, "instance_dice_points": points}
    elif args.which == "monai":
        common = ["--shape", *map(str, args.shape), "--patch", *map(str, args.patch), "--overlap", str(args.overlap),
                  "--classes", str(args.classes)]
        import tempfile

        with tempfile.TemporaryDirectory(prefix="toothseg-bench-") as folder:  # private: runs side by side are safe
            runs = {v: _child(["_child_monai", "--variant", v, *common, "--probabilities", f"{folder}/{v}.npy"])
                    for v in ("monai", "exact", "ours")}
            reference = np.load(f"{folder}/monai.npy")
            diff_exact = float(np.abs(np.load(f"{folder}/exact.npy") - reference).max())
            diff_fp16 = float(np.abs(np.load(f"{folder}/ours.npy") - reference).max())
        m = runs["monai"]
        print(f"# MONAI sliding_window_inference vs ToothSeg, image {tuple(args.shape)}, patch {tuple(args.patch)}, "
              f"overlap {args.overlap}, {args.classes} classes, Gaussian sigma 0.125, batch 2, CPU")
        print("| variant | seconds | time ratio vs MONAI | peak RSS GiB | memory ratio vs MONAI | max abs diff |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, label, diff in (("monai", "MONAI 1.x", 0.0), ("exact", "ToothSeg float32", diff_exact),
                                  ("ours", "ToothSeg default (float16 accumulators)", diff_fp16)):
            r = runs[name]
            memory_ratio = (r["peak_gib"] - r["baseline_gib"]) / max(1e-9, m["peak_gib"] - m["baseline_gib"])
            print(f"| {label} | {r['seconds']:.2f} | {r['seconds'] / m['seconds']:.2f} | {r['peak_gib']:.2f} | "
                  f"{memory_ratio:.2f} | {diff:.2e} |")
        result = {"benchmark": "monai", "settings": vars(args), "runs": runs, "max_abs_diff_float32": diff_exact,
                  "max_abs_diff_float16": diff_fp16}
    elif args.which == "xray":
        if min(args.xray_size) < 2:
            parser.error("--xray-size: an X-ray needs at least 2 x 2 pixels")
        r = _child(["_child_xray", "--xray-size", *map(str, args.xray_size)])
        rows, cols = args.xray_size
        print(f"# {r['model']} on a {rows} x {cols} px X-ray at 0.1 mm, CPU, {r['threads']} threads, "
              "uncertainty on, no TTA")
        print(f"peak resident memory {r['peak_gib']:.2f} GiB (before predicting {r['baseline_gib']:.2f} GiB), "
              f"{r['seconds']:.1f} s")
        result = {"benchmark": "xray", "settings": vars(args), "run": r}
    else:
        r = _child(["_child_large", "--size", *map(str, args.size), "--classes", str(args.classes)])
        print(f"# whole pipeline on a {tuple(args.size)} scan at 0.25 mm (x y z), CPU, {r['threads']} threads, "
              f"{args.classes} classes, model spacing 0.5 mm, --fast")
        print(f"peak resident memory {r['peak_gib']:.2f} GiB (input array {r['input_gib']:.2f} GiB), "
              f"{r['seconds']:.1f} s, {r['forward_passes']} window forward passes")
        result = {"benchmark": "large", "settings": vars(args), "run": r}
    if args.json:
        try:
            with open(args.json, encoding="utf-8") as handle:
                existing = json.load(handle)
        except (OSError, json.JSONDecodeError):
            existing = []
        existing.append(result)
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(existing, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
