"""Challenge protocols reproduce the official numbers; NSD equals the DeepMind/MONAI definition."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from toothseg.core.metrics import normalized_surface_dice, sts2024_case, stsr2025_cases, toothseg_case

from ...conftest import shared_data_dir

OFFICIAL_VALIDATION_0002 = {"image_dsc": 0.9738, "image_iou": 0.9489, "image_nsd": 0.9701, "instance_dsc": 0.8816,
                            "instance_iou": 0.8701, "instance_nsd": 0.8793, "ia": 0.9000}


@pytest.fixture(scope="module")
def sts_pair():
    root = shared_data_dir() / "sts2024"
    gt = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "Validation_0002_gt.nii.gz")))
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "Validation_0002_pred.nii.gz")))
    return gt, pred


def test_sts2024_reproduces_the_official_numbers(sts_pair):
    result = sts2024_case(*sts_pair)
    assert {k: round(v, 4) for k, v in result.items()} == OFFICIAL_VALIDATION_0002


def test_cli_json_has_the_challenge_keys(tmp_path):
    root = shared_data_dir() / "sts2024"
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, "-m", "toothseg.cli", "evaluate", str(root / "Validation_0002_gt.nii.gz"),
                           str(root / "Validation_0002_pred.nii.gz"), "--protocol", "sts2024", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    data = json.loads(out.read_text())
    assert {k: round(data[k], 4) for k in OFFICIAL_VALIDATION_0002} == OFFICIAL_VALIDATION_0002


@pytest.mark.parametrize("spacing, tolerance",
                         [((1.0, 1.0, 1.0), 2.0), ((0.3, 0.25, 0.25), 0.5), ((2.0, 0.7, 0.7), 1.0)])
def test_nsd_equals_monai_subvoxel_surface_dice(spacing, tolerance):
    import torch
    from monai.metrics import compute_surface_dice

    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:30, :34, :38]
    gt = ((z - 15) / 9) ** 2 + ((y - 17) / 11) ** 2 + ((x - 19) / 12) ** 2 <= 1
    pred = ((z - 16) / 8) ** 2 + ((y - 16) / 12) ** 2 + ((x - 20) / 11) ** 2 <= 1
    pred ^= rng.random(pred.shape) < 0.01

    def onehot(m):
        t = torch.from_numpy(m.astype(np.uint8))[None, None]
        return torch.cat([1 - t, t], 1)

    expected = float(compute_surface_dice(onehot(pred), onehot(gt), [tolerance], include_background=False,
                                          spacing=spacing, use_subvoxels=True))
    assert normalized_surface_dice(gt, pred, spacing, tolerance) == pytest.approx(expected, abs=1e-5)


def test_empty_masks():
    empty = np.zeros((5, 5, 5), bool)
    full = empty.copy()
    full[1:4, 1:4, 1:4] = True
    assert normalized_surface_dice(empty, empty, (1, 1, 1), 2) == 1.0
    assert normalized_surface_dice(full, empty, (1, 1, 1), 2) == 0.0
    case = sts2024_case(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8))
    assert math.isnan(case["image_dsc"]) and math.isnan(case["ia"])


def test_stsr2025_pools_instances_and_counts_missing_predictions():
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[2:6, 2:6, 2:6] = 1
    gt[7:11, 7:11, 7:11] = 2
    perfect = gt.copy()
    half = gt.copy()
    half[7:11, 7:11, 7:9] = 0  # label 2: IoU exactly 0.5 → counted (≥ 0.5), unlike STS-2024 (> 0.5)
    result = stsr2025_cases([(gt, perfect, (1.0, 1.0, 1.0)), (gt, half, (1.0, 1.0, 1.0)), (gt, None, (1.0, 1.0, 1.0))])
    assert result["ia"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    assert result["instance_iou"] == pytest.approx((1 + 1 + 1 + 0.5) / 4)  # pooled over 4 (case, label) pairs
    assert result["image_dsc"] == pytest.approx((1.0 + 2 * 96 / (128 + 96) + 0.0) / 3)
    assert result["all_average"] == pytest.approx(np.mean([result[k] for k in (
        "image_dsc", "image_iou", "image_nsd", "instance_dsc", "instance_iou", "instance_nsd", "ia")]))
    sts = sts2024_case(gt, half)
    assert sts["ia"] == pytest.approx(1 / 2)  # STS-2024: IoU must exceed 0.5


def test_toothseg_per_tooth_metrics_in_millimetres():
    gt = np.zeros((20, 20, 20), np.uint8)
    gt[5:15, 5:15, 5:15] = 11
    pred = np.zeros_like(gt)
    pred[5:15, 5:15, 7:17] = 11  # shifted by 2 voxels along x
    pred[0:2, 0:2, 0:2] = 21  # a tooth only in the prediction
    result = toothseg_case(gt, pred, (1.0, 1.0, 0.5), tolerance_mm=1.0)
    assert result[11]["dice"] == pytest.approx(0.8)
    assert result[11]["hd95"] == pytest.approx(1.0, abs=1e-6)  # 2 voxels x 0.5 mm
    assert result[21]["in_gt"] is False and result[21]["dice"] == 0.0 and math.isinf(result[21]["hd95"])


def test_best_instance_dice_scores_unnumbered_instances_against_the_teeth():
    from toothseg.core.metrics import best_instance_dice

    truth = np.zeros((4, 4, 8), np.uint8)
    truth[:, :, :4], truth[:, :, 4:] = 11, 21
    renumbered = np.where(truth == 11, 7, 3)  # same teeth, other numbers: perfect
    assert best_instance_dice(truth, renumbered) == 1.0
    merged = np.ones_like(truth)  # one instance for both teeth: 2*64/(64+128) each
    assert abs(best_instance_dice(truth, merged) - 2 / 3) < 1e-9
    assert best_instance_dice(truth, np.zeros_like(truth)) == 0.0


def test_numbered_right_share_counts_teeth_that_mostly_carry_their_own_number():
    from toothseg.core.metrics import numbered_right_share

    truth = np.zeros((4, 4, 8), np.uint8)
    truth[:, :, :4], truth[:, :, 4:] = 11, 21
    assert numbered_right_share(truth, truth) == 1.0
    assert numbered_right_share(truth, np.where(truth == 11, 21, 11)) == 0.0  # swapped
    mostly = truth.copy()
    mostly[0, 0, :3] = 0  # 3 of 64 voxels of 11 missed: still its number
    assert numbered_right_share(truth, mostly) == 1.0
    assert numbered_right_share(truth, np.where(truth == 21, 0, truth)) == 0.5
    assert np.isnan(numbered_right_share(np.zeros_like(truth), truth))
