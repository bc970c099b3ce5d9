"""The bundled default models: present, unchanged (Resources/Models/SHA256SUMS), within the size
budget, reproducible from a committed recipe, and honest about their training data."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from toothseg.core.models.catalog import load_catalog
from toothseg.core.models.folder import read_card, verify_model_folder
from toothseg.core.resources import resources_dir

MODELS = resources_dir() / "Models"
RECIPES = Path(__file__).resolve().parents[3] / "ToothSegTraining" / "toothseg" / "train" / "recipes"
BUDGET_BYTES = 50 * 1024 * 1024


def _bundled():
    return [entry for entry in load_catalog(include_user=False).entries if entry.folder is not None]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_every_bundled_file_matches_sha256sums():
    """The same check as ``cd Resources/Models && sha256sum -c SHA256SUMS``."""
    listed = {}
    for line in (MODELS / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.lstrip("*")] = digest
    on_disk = {str(p.relative_to(MODELS)): p for p in MODELS.rglob("*")
               if p.is_file() and p.name not in ("catalog.json", "SHA256SUMS")}
    assert set(listed) == set(on_disk), "SHA256SUMS and the bundled files disagree"
    for name, path in on_disk.items():
        assert _sha256(path) == listed[name], f"{name} changed; re-bundle and update SHA256SUMS"


def test_bundled_models_fit_the_budget():
    total = sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file())
    assert total <= BUDGET_BYTES, f"bundled models take {total / 2**20:.1f} MiB (budget 50 MiB)"


@pytest.mark.parametrize("kind", ["3d", "2d"])
def test_a_bundled_default_for_each_input_kind(kind):
    entry = load_catalog(include_user=False).default(kind)
    assert entry.available and entry.status() == "bundled"
    assert all(line.endswith("OK") for line in verify_model_folder(entry.folder))
    card = read_card(entry.folder)
    assert card.input_kind == kind
    assert {11, 21, 36, 48} <= set(card.output_table.values)  # FDI tooth numbers, as segment writes them
    recipe = card.provenance.get("recipe")
    assert recipe and (RECIPES / f"{recipe}.yaml").is_file(), "a bundled model names the recipe that made it"
    assert card.metrics, "a bundled model carries its validation metrics"


def test_the_3d_default_says_its_intensities_are_synthetic():
    entry = load_catalog(include_user=False).default("3d")
    card = read_card(entry.folder)
    members = [read_card(entry.folder / m["path"]) for m in card.members] or [card]
    assert all(m.provenance.get("synthetic_intensities") for m in members)
    assert "synthetic" in (entry.description + entry.name).lower()


def test_the_panoramic_default_finds_teeth_on_an_xray_at_clinical_size():
    """UFBA-425 X-rays are 512 x 512 px without spacing; a clinic's panoramic is thousands of px wide at ~0.1 mm.
    With its card's image_extent_yx the bundled default segments such an X-ray as it does the 512 px one;
    read at its own pixel spacing (the behaviour before the field) it found no tooth at all."""
    import json

    import numpy as np

    from toothseg.core import Volume
    from toothseg.core.inference import InferenceOptions, Predictor
    from toothseg.core.preprocessing import resample_array
    from toothseg.core.io import read_label_map, read_volume
    from toothseg.train.data.cases import shared_data_dir

    from ...benchmarks.bench_xray_size import tooth_dice

    split = json.loads((Path(__file__).resolve().parents[3] / "ToothSegTraining" / "toothseg" / "train" / "splits"
                        / "ufba425.json").read_text())
    case = split["test"][1]
    xray = read_volume(shared_data_dir() / "ufba425" / "images" / f"{case}.png")
    truth = read_label_map(shared_data_dir() / "ufba425" / "labels" / f"{case}.png")
    predictor = Predictor(load_catalog().default("2d").folder, InferenceOptions(device="cpu", tta=False))
    assert predictor.card.image_extent_yx == [512.0, 512.0]
    at_512 = tooth_dice(truth.array, predictor.predict(xray).labels.array)
    big = np.round(resample_array(xray.array.astype(np.float32), (1, 700, 1400)).numpy()).astype(np.uint8)
    big_truth = truth.array[:, np.arange(700) * 512 // 700][:, :, np.arange(1400) * 512 // 1400]
    clinical = Volume(big, (0.2, 0.2, 1.0), kind="2d")  # half the benchmark's 1400 x 2800 at 0.1 mm: faster
    at_clinical = tooth_dice(big_truth, predictor.predict(clinical).labels.array)
    assert at_512 > 0.3 and abs(at_clinical - at_512) < 0.02, (at_512, at_clinical)
    predictor.card.image_extent_yx = None
    assert tooth_dice(big_truth, predictor.predict(clinical).labels.array) < 0.05
