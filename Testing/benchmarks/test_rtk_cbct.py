"""The RTK cone-beam simulation (``rtk_cbct.py``): its draws come from the seed, its tissue classes are
the synthesiser's, and (where ``make rtk-env`` has built ``.venv-rtk``) a simulated scan is the same for
the same seed, differs for another, and shows the anatomy where it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toothseg.core import Volume
from toothseg.core.io.images import read_volume, write_volume
from toothseg.train.synth import cbct, prepare_anatomy

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rtk_cbct  # noqa: E402

RTK_PYTHON = HERE.parents[1] / ".venv-rtk" / "bin" / "python"
needs_rtk = pytest.mark.skipif(not RTK_PYTHON.exists(), reason="needs the RTK environment: make rtk-env (1.9 GB)")


@pytest.fixture(scope="module")
def tissue(sts_labels):
    coarse = Volume(sts_labels.array[::4, ::4, ::4].copy(), (1.2, 1.2, 1.2), sts_labels.origin, sts_labels.direction)
    anatomy = prepare_anatomy(coarse)
    teeth = np.argwhere(anatomy.labels.array > 0)
    lo, hi = np.maximum(teeth.min(0) - 6, 0), teeth.max(0) + 7
    region = tuple(slice(a, b) for a, b in zip(lo, hi))
    return Volume(anatomy.tissue[region].copy(), coarse.spacing, coarse.origin, coarse.direction)


def test_tissue_classes_are_the_synthesisers():
    names = ("AIR", "SOFT", "BONE_CANCELLOUS", "BONE_CORTICAL", "DENTINE", "ENAMEL", "PULP")
    assert [getattr(rtk_cbct, n) for n in names] == [getattr(cbct, n) for n in names]


def test_draws_come_from_the_seed_and_fillings_stay_in_teeth(tissue):
    first, rng_a = rtk_cbct.draw_scan(5, 100)
    again, rng_b = rtk_cbct.draw_scan(5, 100)
    other, _ = rtk_cbct.draw_scan(6, 100)
    assert first == again and first != other
    low_a, high_a = rtk_cbct.attenuation_volumes(tissue.array, 1.2, first, rng_a)
    low_b, _ = rtk_cbct.attenuation_volumes(tissue.array, 1.2, again, rng_b)
    np.testing.assert_array_equal(low_a, low_b)
    # physics: enamel attenuates more than dentine, dentine more than soft tissue; low energy more than high
    t = tissue.array
    assert low_a[t == cbct.ENAMEL].mean() > low_a[t == cbct.DENTINE].mean() > low_a[t == cbct.SOFT].mean()
    assert np.all(low_a[t > cbct.AIR] >= high_a[t > cbct.AIR])
    metal = low_a > 1.0
    assert np.all(np.isin(t[metal], (cbct.DENTINE, cbct.ENAMEL, cbct.PULP)))


def _simulate(tmp_path: Path, tissue: Volume, seed: int, name: str) -> np.ndarray:
    source, out = tmp_path / "tissue.nii.gz", tmp_path / f"{name}.nii.gz"
    if not source.exists():
        write_volume(tissue, source)
    subprocess.run([str(RTK_PYTHON), str(HERE / "rtk_cbct.py"), "--tissue", str(source), "--out", str(out),
                    "--seed", str(seed), "--views", "90"], check=True, capture_output=True)
    image = read_volume(out)
    assert image.shape == tissue.shape
    np.testing.assert_allclose(image.origin, tissue.origin, atol=1e-4)
    return image.array.astype(np.float64)


@needs_rtk
def test_a_simulated_scan_is_reproducible_from_its_seed_and_shows_the_anatomy(tmp_path, tissue):
    first = _simulate(tmp_path, tissue, 3, "a")
    again = _simulate(tmp_path, tissue, 3, "b")
    other = _simulate(tmp_path, tissue, 4, "c")
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 10.0
    t = tissue.array
    median = {k: float(np.median(first[t == k])) for k in (cbct.AIR, cbct.SOFT, cbct.DENTINE, cbct.ENAMEL)}
    assert median[cbct.AIR] < -700 and -300 < median[cbct.SOFT] < 300, median
    assert median[cbct.SOFT] + 500 < median[cbct.DENTINE] < median[cbct.ENAMEL], median
    assert (tmp_path / "a.draw.json").exists() and not list(tmp_path.glob("*.partial*"))  # written whole, then renamed


@needs_rtk
def test_an_unreadable_tissue_map_is_refused_with_its_name(tmp_path):
    broken = tmp_path / "tissue.nii.gz"
    broken.write_bytes(b"\x1f\x8b not a NIfTI file")
    done = subprocess.run([str(RTK_PYTHON), str(HERE / "rtk_cbct.py"), "--tissue", str(broken), "--out",
                           str(tmp_path / "out.nii.gz"), "--seed", "1"], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "cannot read the tissue map" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.nii.gz").exists()
