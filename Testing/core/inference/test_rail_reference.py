"""Imported RAIL students segment as RAIL's own test code does.

``Testing/data/rail_reference`` was made with RAIL's code (``Testing/benchmarks/make_rail_fixtures.py``):
two V-Net students of RAIL's class, saved as its training script saves them, and the label maps of
RAIL's ``test_util.test_single_case_array`` (the two students' mean softmax) and ``test_single_case``
(one student) on a CT-like NIfTI volume. RAIL is not needed here: ``import-checkpoint rail`` and
``segment`` must reproduce them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from toothseg.cli import main
from toothseg.core.inference.predictor import InferenceOptions, Predictor
from toothseg.core.io.images import read_volume
from toothseg.core.models.folder import load_model_folder

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "rail_reference"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text()) if (FIXTURES / "manifest.json").is_file() else None
pytestmark = pytest.mark.skipif(MANIFEST is None, reason="Testing/data/rail_reference is missing")


def _import(students: list[str], out: Path) -> Path:
    assert main(["models", "import-checkpoint", "rail", "--vnet", *[str(FIXTURES / s) for s in students],
                 "--out", str(out), "--id", "rail-fixture"]) == 0
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


@pytest.mark.parametrize("students, reference", [("both", "test000_ensemble.nrrd"), ("first", "test000_student0.nrrd")])
def test_segment_reproduces_rails_test_code(students, reference, tmp_path):
    names = MANIFEST["students"] if students == "both" else MANIFEST["students"][:1]
    folder = _import(names, tmp_path / "rail")
    card = load_model_folder(folder).card
    assert len(load_model_folder(folder).members) == len(names)
    assert card.sliding_window == {"strides": [32, 64, 64], "importance": "uniform"} and card.mirror_axes == []
    out = tmp_path / "labels.nrrd"
    assert main(["segment", str(FIXTURES / "test000.nii.gz"), "-o", str(out), "--model", str(folder),
                 "--device", "cpu"]) == 0
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(FIXTURES / reference))) > 0
    assert theirs.sum() > 1000, "a reference with no teeth tests nothing"
    agreement = float((ours == theirs).mean())
    assert agreement >= 0.999, f"voxel agreement {agreement:.5f}"
    assert _dice(ours, theirs) >= 0.995


def test_toothseg_windows_alone_do_not_reproduce_rail(tmp_path):
    """ToothSeg's default windows (half overlap, Gaussian weights, reoriented to LPS) on the same
    students differ from RAIL's: the fixture can tell the two apart."""
    folder = _import(MANIFEST["students"], tmp_path / "rail")
    for card_path in [folder / "model.json", *sorted(folder.glob("*/model.json"))]:
        card = json.loads(card_path.read_text())
        card.update(sliding_window=None, reorient=True)
        card_path.write_text(json.dumps(card))
    labels = Predictor(folder, InferenceOptions(device="cpu")).predict(read_volume(FIXTURES / "test000.nii.gz"))
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(FIXTURES / "test000_ensemble.nrrd"))) > 0
    assert _dice(labels.labels.array > 0, theirs) < 0.995
