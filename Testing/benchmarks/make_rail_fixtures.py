"""Make the RAIL reference fixtures with RAIL's own code (run by a developer, never by CI or the tests).

Students built with RAIL's classes, saved as RAIL's training script saves them, and RAIL's own test-time
function run on a CT-like volume, so that ``Testing/core/inference/test_rail_reference.py`` can check
without RAIL's code that ``toothseg models import-checkpoint rail`` + ``toothseg segment`` reproduce it.
No RAIL code is copied into ToothSeg: the script imports it from a checkout the developer names::

    git clone https://github.com/Tournesol-Saturday/RAIL /path/to/RAIL
    make rail-fixtures RAIL=/path/to/RAIL        # or, by hand:
    .venv-nnunet/bin/python Testing/benchmarks/make_rail_fixtures.py --rail /path/to/RAIL \\
        --out Testing/data/rail_reference

(``.venv-nnunet`` is the reference environment of ``make nnunet-fixtures``; RAIL's test code also needs
nibabel, scikit-image and matplotlib, which it has.)

What it does, with RAIL's code wherever RAIL has code for it:

* two ``networks.vnet.VNet`` students (``normalization="batchnorm"``, ``has_dropout=True`` as
  ``train_RAIL.py``'s ``create_model``; ``n_filters=3`` instead of 16 so that the committed files stay
  small), fitted for a few supervised steps to a synthetic tooth-like blob so that their outputs have
  structure, then saved with ``torch.save(model.state_dict(), "pmt_<i>_iter_<n>.pth")`` as RAIL saves them.
  RAIL's ResVNet is not included: its fixed ResNet-34 encoder makes each file 72 MB; its key mapping and
  logits are checked against ToothSeg's own ``resvnet`` in ``Testing/core/models/test_importers.py``.
* the test volume is written as NIfTI in HU; its intensities go through RAIL's preprocessing arithmetic
  (``data_generation_labeled.py``: clip to [500, 2500], ``(x - 500) / 2000``, on nibabel's array) and
  then ``test_util.test_single_case_array`` (patch 112 x 112 x 80, strides 64/64/32, mean softmax of the
  students, uniform window weights, argmax). Its depth fits one window along z, where RAIL's
  accumulation slip (R4 in docs/methods.md: the loop variable ``y`` is reused as the accumulator) only
  adds the same constant to both classes and so cannot change the labels; ToothSeg implements the clean
  mean. ``test_util`` calls ``.cuda()``; on a CPU-only machine that call is made a no-op.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np

SEED = 7
PATCH = (112, 112, 80)


def _import_rail(checkout: Path):
    """RAIL's ``networks.vnet`` and ``test_util`` from the checkout. Modules its test code imports but
    the function used here never calls (``medpy`` metrics, ``h5py`` readers) are stubbed when absent."""
    code = checkout / "code"
    if not (code / "test_util.py").is_file():
        raise SystemExit(f"{checkout} is not a RAIL checkout (no code/test_util.py)")
    for name, attributes in (("medpy", ("metric",)), ("h5py", ())):
        try:
            __import__(name)
        except ImportError:
            module = types.ModuleType(name)
            for attribute in attributes:
                setattr(module, attribute, types.ModuleType(f"{name}.{attribute}"))
            sys.modules[name] = module
    sys.path.insert(0, str(code))
    import torch

    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self  # test_util moves every patch to CUDA
    import test_util
    from networks.vnet import VNet

    return VNet, test_util


def _volume(rng: np.random.Generator, shape_xyz: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A CBCT-like volume in HU (x, y, z as nibabel gives it) with tooth-like blobs, and their mask."""
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape_xyz], indexing="ij")
    image = rng.normal(300.0, 150.0, shape_xyz).astype(np.float32)
    mask = np.zeros(shape_xyz, dtype=np.uint8)
    for _ in range(7):
        centre = [rng.uniform(0.2, 0.8) * n for n in shape_xyz]
        radii = [rng.uniform(5, 12), rng.uniform(5, 12), rng.uniform(12, 25)]
        inside = sum(((axis - c) / r) ** 2 for axis, c, r in zip((x, y, z), centre, radii)) <= 1
        image[inside] = rng.normal(1900.0, 250.0, int(inside.sum()))
        mask[inside] = 1
    return np.round(image / 25.0) * 25.0, mask  # 25 HU steps: a noisy image that still compresses


def _rail_preprocess(image_hu: np.ndarray) -> np.ndarray:
    """RAIL's ``data_generation_labeled.py`` intensity arithmetic (its file is a script, not importable)."""
    image = image_hu.astype(np.float64).copy()
    image[image < 500] = 500
    image[image > 2500] = 2500
    return (image - 500) / (2500 - 500)


def _fit(students, image01: np.ndarray, mask: np.ndarray, steps: int, rng: np.random.Generator) -> None:
    """A few supervised steps on random 64 x 64 x 48 crops, so that the students' outputs have structure."""
    import torch
    import torch.nn.functional as F

    for student in students:
        optimizer = torch.optim.SGD(student.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
        student.train()
        for _ in range(steps):
            corner = [int(rng.integers(0, n - c + 1)) for n, c in zip(image01.shape, (64, 64, 48))]
            box = tuple(slice(c, c + s) for c, s in zip(corner, (64, 64, 48)))
            x = torch.from_numpy(image01[box][None, None].astype(np.float32))
            target = torch.from_numpy(mask[box][None].astype(np.int64))
            loss = F.cross_entropy(student(x), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        student.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rail", type=Path, required=True, help="a checkout of Tournesol-Saturday/RAIL")
    parser.add_argument("--out", type=Path, default=Path("Testing/data/rail_reference"))
    parser.add_argument("--steps", type=int, default=100, help="supervised steps per student")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        parser.error(f"{args.out} exists; pass --overwrite to replace it")
    import nibabel as nib
    import SimpleITK as sitk
    import torch

    VNet, test_util = _import_rail(args.rail.resolve())
    rng = np.random.default_rng(SEED)
    torch.manual_seed(SEED)
    staging = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    train_hu, train_mask = _volume(rng, (128, 128, 96))
    students = [VNet(n_channels=1, n_classes=2, n_filters=3, normalization="batchnorm", has_dropout=True)
                for _ in range(2)]
    _fit(students, _rail_preprocess(train_hu), train_mask, args.steps, rng)
    for index, student in enumerate(students):  # as train_RAIL.py names and writes its students
        torch.save(student.state_dict(), staging / f"pmt_{index}_iter_{args.steps}.pth")

    # the test volume: one window deep along z (see the module docstring), several across x and y
    test_hu, _ = _volume(rng, (176, 150, 64))  # x: windows at 0, 64; y: at 0, 38; z: one, padded to 80
    affine = np.diag([0.4, 0.4, 0.4, 1.0])
    affine[:3, 3] = (-30.0, 12.5, 4.0)
    nib.save(nib.Nifti1Image(test_hu.astype(np.int16), affine), str(staging / "test000.nii.gz"))
    image01 = _rail_preprocess(np.asarray(nib.load(str(staging / "test000.nii.gz")).get_fdata()))
    with torch.no_grad():
        ensemble, _ = test_util.test_single_case_array(students, image01, stride_xy=64, stride_z=32,
                                                       patch_size=PATCH, num_classes=2)
        single, _ = test_util.test_single_case(students[0], None, image01, stride_xy=64, stride_z=32,
                                               patch_size=PATCH, num_classes=2)
    reference = sitk.ReadImage(str(staging / "test000.nii.gz"))  # the same grid, as SimpleITK reads it
    for name, labels in (("ensemble", ensemble), ("student0", single)):
        out = sitk.GetImageFromArray(np.ascontiguousarray(labels.astype(np.uint8).transpose(2, 1, 0)))
        out.CopyInformation(reference)
        sitk.WriteImage(out, str(staging / f"test000_{name}.nrrd"), useCompression=True)
    manifest = {"rail_commit": _commit(args.rail), "torch": torch.__version__, "steps": args.steps,
                "students": [f"pmt_{i}_iter_{args.steps}.pth" for i in range(2)], "n_filters": 3,
                "patch_xyz": list(PATCH), "strides_xyz": [64, 64, 32],
                "references": {"test000_ensemble.nrrd": "test_single_case_array(both students)",
                               "test000_student0.nrrd": "test_single_case(student 0)"}}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if args.out.exists():
        shutil.rmtree(args.out)
    staging.rename(args.out)
    print(f"wrote {args.out} (foreground voxels: ensemble {int(ensemble.sum())}, student 0 {int(single.sum())})")
    return 0


def _commit(checkout: Path) -> str:
    head = checkout / ".git" / "HEAD"
    return head.read_text().strip() if head.is_file() else "unknown"


if __name__ == "__main__":
    sys.exit(main())
