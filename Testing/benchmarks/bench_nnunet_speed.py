"""Time and peak memory of nnU-Net's own predictor and of ``toothseg segment`` on the same model and scan.

nnU-Net's predictor is what DentalSegmentator and TotalSegmentator run; an imported nnU-Net model in
ToothSeg does the same arithmetic (``Testing/core/inference/test_nnunet_reference.py``), so the two can
be compared at equal output. Each runs in a process of its own (nnU-Net in the reference environment
of ``make nnunet-fixtures``), measured from outside: wall time, and the peak resident memory of the
process or of any of its workers (nnU-Net preprocesses and exports in worker processes). The label maps
are compared voxel by voxel, so that a ratio is never quoted for different results.

    python Testing/benchmarks/bench_nnunet_speed.py        # a fixture model, the sample scan at 0.4 mm
    python Testing/benchmarks/bench_nnunet_speed.py --model-dir RESULTS/Dataset…/Trainer__Plans__3d_fullres \\
        --fold 0 --image SCAN.nii.gz

Defaults: the ``iso_resenc_mirroring`` fixture (ResEnc U-Net, mirroring on 3 axes: 8 passes per window)
and the bundled synthetic CBCT resampled to 0.4 mm (SYNTHETIC intensities; only time and memory matter
here). Both run on the CPU with nnU-Net's defaults (step 0.5, Gaussian, mirroring, one preprocessing and
one export worker) and ToothSeg's (one window per forward pass on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "Testing" / "data" / "nnunet_reference"
SAMPLE = ROOT / "Resources" / "SampleData" / "SyntheticCBCT_Validation_0002.nii.gz"

_MEASURED = """
import resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.run(sys.argv[1:]).returncode
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # the command and its workers, GiB
print(f"MEASURED {seconds:.3f} {peak:.4f}", file=sys.stderr)
sys.exit(code)
"""
"""Runs a command and reports its wall time and the peak resident memory of it or of any of its worker
processes (``ru_maxrss`` of the waited-for descendants)."""

_NNUNET = """
import sys

import torch
import nnunetv2.inference.predict_from_raw_data as reference
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation import nnUNetTrainerNoMirroring as variants


def main():
    # nnU-Net's own lookup imports every trainer module (timm, hence torchvision, for some); two suffice here
    reference.recursive_find_trainer_class_by_name = {"nnUNetTrainer": nnUNetTrainer,
                                                      "nnUNetTrainerNoMirroring": variants.nnUNetTrainerNoMirroring}.get
    model_dir, fold, image, output = sys.argv[1:5]
    predictor = reference.nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                          perform_everything_on_device=False, device=torch.device("cpu"),
                                          verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_dir, use_folds=(fold if fold == "all" else int(fold),),
                                                   checkpoint_name="checkpoint_final.pth")
    predictor.predict_from_files([[image]], [output], save_probabilities=False, overwrite=True,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)


if __name__ == "__main__":  # nnU-Net's workers are spawned: they import this file again
    main()
"""
"""nnUNetv2_predict's defaults, as a script (nnU-Net's own entry point would import every trainer module)."""


def _run(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``command`` under the measuring wrapper; its wall time (s) and peak memory (GiB)."""
    result = subprocess.run([sys.executable, "-c", _MEASURED, *command], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{result.stderr[-3000:]}")
    line = [ln for ln in result.stderr.splitlines() if ln.startswith("MEASURED")][-1].split()
    return {"seconds": float(line[1]), "peak_rss_gib": float(line[2])}


def _fixture_model(work: Path, name: str) -> tuple[Path, str]:
    """A fixture laid out as an nnU-Net results folder (plans, dataset.json, fold_all/checkpoint_final.pth)."""
    folder = work / f"nnUNetTrainer__{name}__3d_fullres"
    (folder / "fold_all").mkdir(parents=True)
    for file in ("plans.json", "dataset.json"):
        shutil.copy2(FIXTURES / name / file, folder / file)
    shutil.copy2(FIXTURES / name / "checkpoint_final.pth", folder / "fold_all" / "checkpoint_final.pth")
    return folder, "all"


def _scan(work: Path, spacing: float) -> Path:
    image = sitk.ReadImage(str(SAMPLE))
    size = [int(round(n * s / spacing)) for n, s in zip(image.GetSize(), image.GetSpacing())]
    resampled = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), [spacing] * 3,
                              image.GetDirection(), -1000.0, sitk.sitkInt16)
    path = work / "scan_0000.nii.gz"
    sitk.WriteImage(resampled, str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, help="an nnU-Net trainer folder (default: a fixture model)")
    parser.add_argument("--fold", default="all")
    parser.add_argument("--fixture", default="iso_resenc_mirroring")
    parser.add_argument("--image", type=Path, help="a scan (default: the bundled synthetic CBCT resampled)")
    parser.add_argument("--spacing", type=float, default=0.4, help="spacing of the default scan, mm")
    parser.add_argument("--batch-size", type=int, default=0, help="toothseg segment --batch-size (0: its default)")
    parser.add_argument("--nnunet-python", type=Path, default=ROOT / ".venv-nnunet" / "bin" / "python")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "Testing" / "benchmarks" / "results" / "nnunet_speed_cpu.json")
    args = parser.parse_args(argv)
    if not args.nnunet_python.is_file():
        parser.error(f"{args.nnunet_python} not found: run 'make nnunet-fixtures' first (it makes the environment)")
    work = Path(tempfile.mkdtemp(prefix="nnunet-speed-"))
    try:
        model_dir, fold = (args.model_dir, args.fold) if args.model_dir else _fixture_model(work, args.fixture)
        image = args.image or _scan(work, args.spacing)
        threads = str(os.cpu_count() or 1)
        env = {**os.environ, "nnUNet_compile": "false", "OMP_NUM_THREADS": threads,
               "nnUNet_raw": str(work), "nnUNet_preprocessed": str(work), "nnUNet_results": str(work)}
        nnunet_out = work / "nnunet" / "scan"
        nnunet_out.parent.mkdir()
        script = work / "nnunet_predict.py"
        script.write_text(_NNUNET)
        reference = _run([str(args.nnunet_python), str(script), str(model_dir), fold, str(image), str(nnunet_out)],
                         env)
        folder = work / "imported"
        checkpoint = model_dir / f"fold_{fold}" / "checkpoint_final.pth"
        subprocess.run([sys.executable, "-m", "toothseg.cli", "models", "import-checkpoint", "nnunet",
                        "--checkpoint", str(checkpoint), "--plans", str(model_dir / "plans.json"),
                        "--dataset", str(model_dir / "dataset.json"), "--out", str(folder)], check=True,
                       capture_output=True)
        ours_out = work / "toothseg.nii.gz"
        ours = _run([sys.executable, "-m", "toothseg.cli", "segment", str(image), "-o", str(ours_out),
                     "--model", str(folder), "--device", "cpu"]
                    + (["--batch-size", str(args.batch_size)] if args.batch_size else []), env)
        written = sorted(nnunet_out.parent.glob("scan.*"))  # nnU-Net writes its dataset's file ending
        theirs_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(written[0])))
        ours_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(ours_out)))
        agreement = float((theirs_labels == ours_labels).mean())
        summary = {
            "model": str(args.model_dir or f"fixture {args.fixture}"),
            "image": str(args.image or f"sample at {args.spacing} mm"),
            "image_size_xyz": list(sitk.ReadImage(str(image)).GetSize()), "voxel_agreement": round(agreement, 6),
            "nnunet_predictor": reference, "toothseg_segment": ours,
            "time_ratio_toothseg_over_nnunet": round(ours["seconds"] / reference["seconds"], 3),
            "peak_memory_ratio_toothseg_over_nnunet": round(ours["peak_rss_gib"] / reference["peak_rss_gib"], 3),
            "cpu_threads": threads, "device": "cpu", "toothseg_batch_size": args.batch_size or "default",
        }
        print(json.dumps(summary, indent=1))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
        if agreement < 0.999:
            print(f"warning: outputs differ (agreement {agreement:.5f}); the ratios compare different results",
                  file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
