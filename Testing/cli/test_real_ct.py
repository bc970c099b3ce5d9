"""The real head CT of ``../shared/data/ct`` (InVesalius example, not a CBCT) through ``toothseg segment``.

What this can show: the pipeline reads a real scanner's file (int16 HU, 0.957x0.957x1.5 mm), reorients,
resamples, predicts, restores the exact input geometry and writes, and it tells the user that the scan
does not look like a dental CBCT. The network here is a small untrained one: no accuracy is claimed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import torch

from toothseg.core import LabelTable
from toothseg.core.io import read_label_map, read_volume
from toothseg.core.networks import build_network
from toothseg.core.models.card import IntensityNormalization, ModelCard
from toothseg.core.models.folder import save_model_folder

from ..conftest import shared_data_dir
from .test_segment_cli import run

CT = shared_data_dir() / "ct" / "Cranium_ProMED_CT_0051.nii.gz"
pytestmark = pytest.mark.skipif(not CT.exists(), reason="needs ../shared/data/ct (real head CT)")


def coarse_model(folder):
    """A small untrained 3D network at 2 mm (about 100 windows on this CT: seconds, not minutes)."""
    torch.manual_seed(0)
    kwargs = {"features_per_stage": [4, 8], "strides": [1, 2], "n_blocks_per_stage": [1, 1]}
    network = build_network("resenc_unet", num_classes=3, **kwargs)
    card = ModelCard(id="tiny-ct", architecture="resenc_unet", kwargs=kwargs, spatial_dims=3,
                     label_table=LabelTable.fdi().subset([11, 21]), class_values=[0, 11, 21],
                     spacing_zyx=[2.0, 2.0, 2.0], patch_size=[32, 32, 32], mirror_axes=[2],
                     intensity=IntensityNormalization("clip_scale", clip=(-1000.0, 3000.0)))
    return save_model_folder(network, card, folder)


def test_real_head_ct_runs_end_to_end_and_is_flagged_as_not_a_dental_cbct(tmp_path):
    model = coarse_model(tmp_path / "tiny-ct")
    out = tmp_path / "ct_teeth.nii.gz"
    result = run("segment", CT, "-o", out, "--model", model, "--no-tta", "--fast", "--report", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert "coarse for dental CBCT" in result.stderr and "Traceback" not in result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert any("conventional CT" in w for w in report["warnings"])
    image, labels = read_volume(CT), read_label_map(out)
    assert image.shape == labels.shape == (108, 256, 256)
    np.testing.assert_allclose(labels.spacing, image.spacing, rtol=1e-5)
    np.testing.assert_allclose(labels.origin, image.origin, atol=1e-3)
    np.testing.assert_allclose(labels.direction, image.direction, atol=1e-6)
    assert set(np.unique(labels.array)) <= {0, 11, 21}
