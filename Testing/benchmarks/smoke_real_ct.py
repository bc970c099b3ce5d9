"""Real-scanner smoke test: a 3D model on the real head CT of ``../shared/data/ct`` — what did it find?

The CT (InVesalius example, conventional CT, 0.957x0.957x1.5 mm, not a CBCT) shows tooth crowns only
in its lowest ~6 slices and one metal filling; there is no ground truth. So this reports what the
model found and where, against what is known about the scan, not an accuracy:

    python Testing/benchmarks/smoke_real_ct.py --model MODEL [--raw] [--jaws upper] [--prediction EXISTING.nii.gz]
        [--json OUT] [--picture PNG]

Figures: the labelled volume (mm³), the slices it spans, connected components, how much of it lies
in the crown slices (the lowest ``--teeth-slices``) and in the slices a whole tooth can reach (the lowest
``--tooth-slices``: the crowns plus their roots, which a tooth model should find too), and what share of the
very bright voxels (> 1500 HU: enamel, metal, dense cortical bone) it covers. The CT holds the upper jaw
only, so every tooth number of the lower jaw (quadrants 3 and 4) is a numbering error
(``lower_jaw_numbers``); ``--jaws upper`` runs ``segment --jaws upper``, as a user who knows it would.

Why 18 tooth slices: the crowns reach down to slice 0, and the longest tooth, the upper canine, measures
about 27 mm from cusp tip to root apex (Wheeler's dental anatomy: 26.5-27 mm), 18 slices of 1.5 mm (the
picture's axial slice 10 shows the roots in the maxilla; the bundled default's root outlines end at slice
13). This bound is anatomy, fixed before any model was scored against it; it says what lies beyond any
tooth, not where a tooth ends.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "ToothSegTraining"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ufba import shown  # noqa: E402
from toothseg.core.io.images import read_label_map, read_volume  # noqa: E402
from toothseg.train.data.cases import shared_data_dir  # noqa: E402


def summarise(ct_path: Path, prediction_path: Path, teeth_slices: int, tooth_slices: int = 18) -> dict:
    image, labels = read_volume(ct_path), read_label_map(prediction_path)
    found = labels.array > 0
    voxel_mm3 = float(np.prod(labels.spacing))
    slices = np.nonzero(found.any(axis=(1, 2)))[0]
    _, components = ndimage.label(found)
    bright = image.array > 1500
    low = np.zeros_like(found)
    low[:teeth_slices] = True  # array axis 0 is the file's slice axis (inferior first in this scan)
    reach = np.zeros_like(found)
    reach[:tooth_slices] = True
    return {"ct": shown(ct_path), "prediction": shown(prediction_path),
            "labels": [int(v) for v in np.unique(labels.array) if v],
            "volume_mm3": round(float(found.sum()) * voxel_mm3, 1),
            "slices": [int(slices.min()), int(slices.max())] if slices.size else None,
            "slice_count": int(image.shape[0]),
            "components": int(components),
            "share_in_lowest_slices": round(float((found & low).sum()) / max(1, int(found.sum())), 4),
            "tooth_slices": tooth_slices,
            "share_in_tooth_slices": round(float((found & reach).sum()) / max(1, int(found.sum())), 4),
            "bright_voxels_covered": round(float((found & bright).sum()) / max(1, int(bright.sum())), 4),
            "median_hu_of_found": float(np.median(image.array[found])) if found.any() else None}


def picture(ct_path: Path, prediction_path: Path, teeth_slices: int, path: Path, title: str,
            tooth_slices: int = 18) -> None:
    """Front and side maximum-intensity projections of the CT (0-2500 HU) with the found voxels in red, the
    crown slices' and the tooth slices' tops marked, and one axial slice above the crowns with the found
    outlines: where the model put its teeth, and whether what lies above the crowns is roots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench_ufba import save_figure

    image, labels = read_volume(ct_path), read_label_map(prediction_path)
    found = labels.array > 0
    sz, sy, sx = image.spacing_zyx
    figure, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, axis, name, width in ((axes[0], 1, "front (max over y)", sx), (axes[1], 2, "side (max over x)", sy)):
        mip = np.clip(image.array.max(axis=axis), 0, 2500)
        ax.imshow(mip, cmap="gray", origin="lower", aspect=sz / width)
        overlay = np.ma.masked_where(~found.any(axis=axis), np.ones(mip.shape))
        ax.imshow(overlay, cmap="autumn", alpha=0.6, origin="lower", aspect=sz / width)
        ax.axhline(teeth_slices - 0.5, color="cyan", lw=1)
        ax.axhline(tooth_slices - 0.5, color="yellow", lw=1, ls="--")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_ylabel("slice (inferior first)")
    above = min(image.shape[0] - 1, teeth_slices + 4)  # 6 mm above the crown slices: roots, if any
    axes[2].imshow(np.clip(image.array[above], -200, 2500), cmap="gray", origin="lower")
    if found[above].any():
        axes[2].contour(found[above], [0.5], colors="red", linewidths=0.7, origin="lower")
    axes[2].set_title(f"axial slice {above}, found outlined", fontsize=9)
    axes[2].set_xticks([])
    axes[2].set_yticks([])
    figure.suptitle(title + f"\nred: found; below the cyan line: the {teeth_slices} crown slices; below the yellow "
                    f"dashes: the {tooth_slices} slices a tooth can reach", fontsize=9)
    save_figure(figure, path, dpi=90, bbox_inches="tight")
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model ID or folder (runs toothseg segment)")
    parser.add_argument("--prediction", type=Path, help="an existing prediction of the CT instead of running one")
    parser.add_argument("--teeth-slices", type=int, default=6, help="the crown slices (lowest; default 6)")
    parser.add_argument("--tooth-slices", type=int, default=18,
                        help="the slices a whole tooth can reach, crowns and roots (lowest; default 18 = 27 mm, "
                             "the upper canine's length)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--picture", type=Path, help="PNG of where the found voxels lie (front and side projections)")
    parser.add_argument("--jaws", choices=("auto", "both", "upper", "lower"), default="auto",
                        help="segment --jaws: which jaws the user says the scan holds (this CT: upper)")
    parser.add_argument("--raw", action="store_true",
                        help="the network's own finds, before the model's post-processing (e.g. the numbering "
                             "that drops pieces off the dental arch)")
    args = parser.parse_args(argv)
    if not 1 <= args.teeth_slices <= args.tooth_slices:
        parser.error(f"--teeth-slices {args.teeth_slices} and --tooth-slices {args.tooth_slices}: the crown slices "
                     "are at least 1 and no more than the slices a tooth can reach")
    ct = shared_data_dir() / "ct" / "Cranium_ProMED_CT_0051.nii.gz"
    prediction = args.prediction
    run_report = {}
    scratch = None
    if args.raw and prediction is not None:
        parser.error("--raw runs the model itself; it does not apply to --prediction")
    if args.jaws != "auto" and (args.raw or prediction is not None):
        parser.error(f"--jaws {args.jaws} goes to the model's post-processing; it does not apply to --raw or "
                     "--prediction")
    if prediction is None:
        if not args.model:
            parser.error("give --model or --prediction")
        scratch = Path(tempfile.mkdtemp(prefix="toothseg-smoke-"))
        prediction = scratch / "ct_teeth.nii.gz"
        report = prediction.with_name("report.json")
        if args.raw:  # in this process: the CLI always runs the card's post-processing
            from toothseg.core.inference import InferenceOptions, Predictor
            from toothseg.core.io.images import write_volume
            from toothseg.core.models.catalog import load_catalog

            predictor = Predictor(load_catalog().resolve(args.model),
                                  InferenceOptions(device="cpu", tta=False, postprocessing=[]))
            result = predictor.predict(read_volume(ct))
            write_volume(result.labels, prediction)
            run_report = {"warnings": result.warnings, "seconds": result.report.get("seconds")}
        else:
            subprocess.run([sys.executable, "-m", "toothseg.cli", "segment", str(ct), "-o", str(prediction),
                            "--model", args.model, "--no-tta", "--jaws", args.jaws, "--report", str(report)],
                           check=True)
            run_report = json.loads(report.read_text())
    summary = {**summarise(ct, prediction, args.teeth_slices, args.tooth_slices), "model": args.model, "raw": args.raw,
               "jaws": args.jaws, "warnings": run_report.get("warnings"), "seconds": run_report.get("seconds")}
    summary["lower_jaw_numbers"] = [v for v in summary["labels"] if v // 10 in (3, 4)]
    if args.picture:
        share = summary["share_in_lowest_slices"]
        what = f"{args.model} (raw network output)" if args.raw else (args.model or shown(prediction))
        title = (f"{what} on the real head CT: {share:.0%} of found voxels in crown slices, "
                 f"{summary['share_in_tooth_slices']:.0%} within a tooth's reach")
        picture(ct, prediction, args.teeth_slices, args.picture, title, args.tooth_slices)
    if scratch is not None:  # the prediction was only made to be summarised
        summary["prediction"] = None
        shutil.rmtree(scratch, ignore_errors=True)
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
