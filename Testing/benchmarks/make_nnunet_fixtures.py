"""Make the nnU-Net reference fixtures with nnU-Net itself (run by a developer, never by CI or the tests).

Real nnU-Net v2 checkpoints and real ``nnUNetv2_predict`` outputs, small enough to commit, so that the
tests (``Testing/core/inference/test_nnunet_reference.py``) can check without nnU-Net installed that
``toothseg models import-checkpoint nnunet`` + ``toothseg segment`` reproduce nnU-Net's own inference.

It needs nnU-Net in a virtual environment of its own (ToothSeg's stays lean)::

    make nnunet-fixtures            # or, by hand:
    python3 -m venv .venv-nnunet && .venv-nnunet/bin/pip install "nnunetv2==2.8.1"
    .venv-nnunet/bin/pip uninstall -y torchvision   # only if its build does not load on your torch
    .venv-nnunet/bin/python Testing/benchmarks/make_nnunet_fixtures.py --out Testing/data/nnunet_reference

It takes about 4 minutes on 2 CPU cores.

What it builds, all through nnU-Net's own API (planner, preprocessor, trainer, predictor):

* ``Dataset901_Aniso``: small CT-like volumes (two labels) with thick spacing along the *last* array
  axis and a rotated, flipped direction, so that nnU-Net transposes the axes (``transpose_forward``
  ``[2, 0, 1]``) and resamples the thick axis separately (order 3 in-plane, 0 across). Planned with the
  default planner (``PlainConvUNet``); one model trained with nnU-Net's default trainer (mirroring on
  all axes), one with ``nnUNetTrainerNoMirroring`` (no test-time mirroring).
* ``Dataset902_Iso``: near-isotropic volumes, planned with the ResEnc planner (``ResidualEncoderUNet``);
  its test images have another spacing, so the whole-volume order-3 resampling path runs.

The planners' network width is reduced (base 8 features, at most 16), and training is a few
iterations on the CPU: the networks are not good segmenters, and need not be: the fixtures check
arithmetic, and an undertrained network's near-ties make a stricter test of it than a confident one.
Per model the output folder holds ``checkpoint_final.pth``, ``plans.json``, ``dataset.json`` (as nnU-Net
wrote them) and ``reference/`` with nnU-Net's label maps (``.nrrd``) and probabilities (``.npz``) for the
test images in ``<dataset>/images/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

SEED = 1234


def _direction(kind: str) -> tuple[float, ...]:
    """A non-trivial direction: axes permuted and flipped, then rotated 20 degrees about one axis."""
    if kind == "identity":
        return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    angle = np.deg2rad(20.0)
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    swap = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return tuple(float(v) for v in (rotation @ swap).ravel())


def _case(rng: np.random.Generator, shape_zyx: tuple[int, int, int], spacing_xyz: tuple[float, float, float]):
    """A CT-like volume (HU, int16) with two labelled ellipsoids and a zero-padded border (crop-to-nonzero)."""
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape_zyx, spacing_xyz[::-1])], indexing="ij")
    extent = [n * s for n, s in zip(shape_zyx, spacing_xyz[::-1])]
    image = rng.normal(-700.0, 60.0, shape_zyx)
    labels = np.zeros(shape_zyx, dtype=np.uint8)
    for label, hu in ((1, 400.0), (2, 1500.0)):
        centre = [rng.uniform(0.35, 0.65) * e for e in extent]
        radii = [rng.uniform(0.18, 0.3) * e for e in extent]
        distance = sum(((axis - c) / r) ** 2 for axis, c, r in zip((z, y, x), centre, radii))
        inside = distance <= 1
        image[inside] = rng.normal(hu, 80.0, int(inside.sum()))
        labels[inside] = label
    image = image.astype(np.int16)
    pad = 2  # a zero border, as scanners pad outside the field of view: nnU-Net crops it away
    image[:pad], image[-pad:] = 0, 0
    labels[:pad], labels[-pad:] = 0, 0
    return image, labels


def _write(array: np.ndarray, spacing_xyz, direction, path: Path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing_xyz))
    image.SetDirection(direction)
    image.SetOrigin((-12.5, 30.25, 7.0))
    sitk.WriteImage(image, str(path), useCompression=True)


def _raw_dataset(raw: Path, name: str, spacing_xyz, test_spacing_xyz, direction, shape_zyx, n_train: int,
                 rng: np.random.Generator, fixture_dir: Path) -> None:
    folder = raw / name
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for i in range(n_train):
        image, labels = _case(rng, shape_zyx, spacing_xyz)
        _write(image, spacing_xyz, direction, folder / "imagesTr" / f"case{i:03d}_0000.nrrd")
        _write(labels, spacing_xyz, direction, folder / "labelsTr" / f"case{i:03d}.nrrd")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "left_thing": 1, "right_thing": 2},
        "numTraining": n_train, "file_ending": ".nrrd", "name": name}))
    images = fixture_dir / name / "images"
    images.mkdir(parents=True)
    for i, spacing in enumerate(test_spacing_xyz):
        test_shape = tuple(max(8, int(round(n * s0 / s1)))
                           for n, s0, s1 in zip(shape_zyx, spacing_xyz[::-1], spacing[::-1]))
        image, labels = _case(rng, test_shape, spacing)
        _write(image, spacing, direction, images / f"test{i:03d}_0000.nrrd")
        _write(labels, spacing, direction, images / f"test{i:03d}_truth.nrrd")


def _plan(dataset_id: int, planner_class, plans_name: str) -> None:
    planner = planner_class(dataset_id, plans_name=plans_name)
    planner.UNet_base_num_features = 8
    planner.UNet_max_features_3d = 16
    planner.UNet_max_features_2d = 16
    planner.plan_experiment()


def _trainer_class(name: str):
    """nnU-Net's trainer class of that name, imported directly.

    nnU-Net's own lookup (``recursive_find_trainer_class_by_name``) imports every trainer module, and
    the Primus ones import timm, hence torchvision, whose PyPI build does not load on a CPU-only torch.
    """
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
        nnUNetTrainerNoMirroring,
    )

    return {"nnUNetTrainer": nnUNetTrainer, "nnUNetTrainerNoMirroring": nnUNetTrainerNoMirroring}[name]


def _train(dataset_name: str, trainer_name: str, plans_name: str, epochs: int, iterations: int) -> Path:
    """What ``nnUNetv2_train <dataset> 3d_fullres all -tr <trainer> -p <plans> -device cpu`` does, shortened
    to ``epochs`` epochs of ``iterations`` iterations."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed

    os.environ["nnUNet_n_proc_DA"] = "0"  # augment in this process (the planner needs it unset or > 0)
    folder = Path(nnUNet_preprocessed) / dataset_name
    plans = load_json(str(folder / f"{plans_name}.json"))
    plans["continue_training"] = False  # as nnU-Net's get_trainer_from_args sets it
    trainer = _trainer_class(trainer_name)(plans=plans, configuration="3d_fullres", fold="all",
                                           dataset_json=load_json(str(folder / "dataset.json")),
                                           device=torch.device("cpu"))
    trainer.num_epochs = epochs
    trainer.num_iterations_per_epoch = iterations
    trainer.num_val_iterations_per_epoch = 2
    trainer.run_training()
    return Path(trainer.output_folder)


def _predict(model_dir: Path, images: Path, out: Path) -> None:
    """``nnUNetv2_predict -f all --save_probabilities -device cpu`` with its defaults (step 0.5, Gaussian,
    mirroring on the axes the checkpoint allows)."""
    import nnunetv2.inference.predict_from_raw_data as reference
    import torch

    reference.recursive_find_trainer_class_by_name = _trainer_class  # see _trainer_class
    predictor = reference.nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                          perform_everything_on_device=False, device=torch.device("cpu"),
                                          verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=("all",),
                                                   checkpoint_name="checkpoint_final.pth")
    inputs = [[str(p)] for p in sorted(images.glob("*_0000.nrrd"))]
    outputs = [str(out / Path(p[0]).name.replace("_0000.nrrd", "")) for p in inputs]
    predictor.predict_from_files(inputs, outputs, save_probabilities=True, overwrite=True,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)


def _keep(model_dir: Path, fold_dir: Path, reference: Path, target: Path) -> None:
    target.mkdir(parents=True)
    shutil.copy2(fold_dir / "checkpoint_final.pth", target / "checkpoint_final.pth")
    for name in ("plans.json", "dataset.json"):
        shutil.copy2(model_dir / name, target / name)
    (target / "reference").mkdir()
    for path in sorted(reference.iterdir()):
        if path.suffix == ".npz":  # probabilities as float16 (a few MB less; 3 significant digits)
            with np.load(path) as data:
                np.savez_compressed(target / "reference" / path.name,
                                    probabilities=data["probabilities"].astype(np.float16))
        elif path.name.endswith(".nrrd"):
            shutil.copy2(path, target / "reference" / path.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("Testing/data/nnunet_reference"))
    parser.add_argument("--epochs", type=int, default=6, help="training epochs per model")
    parser.add_argument("--iterations", type=int, default=50, help="training iterations per epoch")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        parser.error(f"{args.out} exists; pass --overwrite to replace it")
    work = Path(tempfile.mkdtemp(prefix="nnunet-fixtures-"))
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (work / key).mkdir()
        os.environ[key] = str(work / key)
    os.environ.setdefault("nnUNet_compile", "false")
    staging = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    import torch

    torch.manual_seed(SEED)
    _raw_dataset(work / "nnUNet_raw", "Dataset901_Aniso", (2.4, 0.7, 0.7), [(2.0, 0.6, 0.8), (2.4, 0.7, 0.7)],
                 _direction("rotated"), (40, 44, 18), 6, rng, staging)
    _raw_dataset(work / "nnUNet_raw", "Dataset902_Iso", (0.8, 0.8, 0.8), [(0.65, 0.9, 1.0)],
                 _direction("identity"), (32, 36, 40), 6, rng, staging)

    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
        nnUNetPlannerResEncM,
    )
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, preprocess

    extract_fingerprints([901, 902], num_processes=1, check_dataset_integrity=True)
    _plan(901, ExperimentPlanner, "nnUNetPlansTiny")
    _plan(902, nnUNetPlannerResEncM, "nnUNetResEncPlansTiny")
    preprocess([901], "nnUNetPlansTiny", configurations=("3d_fullres",), num_processes=(1,))
    preprocess([902], "nnUNetResEncPlansTiny", configurations=("3d_fullres",), num_processes=(1,))
    jobs = [("aniso_plain_mirroring", "Dataset901_Aniso", "nnUNetTrainer", "nnUNetPlansTiny"),
            ("aniso_plain_nomirroring", "Dataset901_Aniso", "nnUNetTrainerNoMirroring", "nnUNetPlansTiny"),
            ("iso_resenc_mirroring", "Dataset902_Iso", "nnUNetTrainer", "nnUNetResEncPlansTiny")]
    manifest = {"nnunetv2": _version("nnunetv2"), "torch": torch.__version__, "models": {}}
    for name, dataset, trainer_name, plans_name in jobs:
        fold_dir = _train(dataset, trainer_name, plans_name, args.epochs, args.iterations)
        model_dir = fold_dir.parent
        reference = work / "predictions" / name
        reference.mkdir(parents=True)
        _predict(model_dir, staging / dataset / "images", reference)
        _keep(model_dir, fold_dir, reference, staging / name)
        manifest["models"][name] = {"dataset": dataset, "trainer": trainer_name, "plans": plans_name,
                                    "images": f"{dataset}/images"}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if args.out.exists():  # replaced only once the new fixtures are complete
        shutil.rmtree(args.out)
    staging.rename(args.out)
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    sys.exit(main())
