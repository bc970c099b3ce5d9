"""Where the bundled assets are found: the checkout's ``Resources/`` or ``$TOOTHSEG_RESOURCES`` (an
installed extension or wheel), with a clear error when the override points at the wrong folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from toothseg.core import InputError
from toothseg.core.resources import resources_dir, sample_label_map, sample_scan, sample_scan_labels

REPO_RESOURCES = Path(__file__).resolve().parents[2] / "Resources"


def test_a_checkout_finds_its_own_resources(monkeypatch):
    monkeypatch.delenv("TOOTHSEG_RESOURCES", raising=False)
    assert resources_dir() == REPO_RESOURCES
    for path in (sample_label_map(), sample_scan(), sample_scan_labels()):
        assert path.is_file() and path.parent == REPO_RESOURCES / "SampleData"


def test_the_environment_variable_points_elsewhere(monkeypatch, tmp_path):
    (tmp_path / "SampleData").mkdir()
    monkeypatch.setenv("TOOTHSEG_RESOURCES", str(tmp_path))
    assert resources_dir() == tmp_path
    assert sample_scan() == tmp_path / "SampleData" / "SyntheticCBCT_Validation_0002.nii.gz"


def test_an_override_without_sample_data_is_refused_by_name(monkeypatch, tmp_path):
    monkeypatch.setenv("TOOTHSEG_RESOURCES", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match=r"TOOTHSEG_RESOURCES=.*nowhere has no SampleData folder"):
        resources_dir()
