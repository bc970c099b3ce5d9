"""The pseudo-label probe: how right a semi-supervised method's labels for unlabeled images are during training,
measured against the labels a labeled fraction hides (issue #38 asks for this evidence where a method does not
gain). It must measure the method as it trains and leave the training exactly as it was."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from toothseg.core.models.folder import load_model_folder
from toothseg.train.config.loader import recipe_from_dict
from toothseg.train.engine.pipeline import run_recipe

from .conftest import losses, toy_recipe
from .test_recipes import _benchmark


def _train(data: dict, out: Path):
    return run_recipe(recipe_from_dict(json.loads(json.dumps(data))), data, out, device="cpu", quiet=True)


def _recipe(toy_dataset: Path, method: str, validate_every: int, settings: dict | None = None) -> dict:
    data = toy_recipe(toy_dataset, method=method, iterations=4, unlabeled_batch=2, architecture="unet2d",
                      settings=settings)
    data["data"]["labeled_fraction"] = 0.5  # two of the four labeled cases become unlabeled, their labels hidden
    data["stages"][0]["validate_every"] = validate_every
    return data


def _validation_rows(run: Path, stage: str) -> list[dict]:
    with open(run / stage / "validation.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("method, gated", [("mean_teacher", False), ("bcp", True), ("pseudo_label", True)])
def test_a_semi_supervised_run_logs_how_right_its_pseudo_labels_are(tmp_path, toy_dataset, method, gated):
    settings = {"gate_dice": 0.0}
    if method == "bcp":
        settings["pseudo_threshold"] = 0.0  # every voxel used: the used share must then be 1
    _train(_recipe(toy_dataset, method, 2, settings), tmp_path / "run")
    rows = _validation_rows(tmp_path / "run", f"0_{method}")
    assert [int(r["step"]) for r in rows] == [2, 4]
    for row in rows:
        assert 0.0 <= float(row["pl_dice"]) <= 1.0
        assert ("pl_used_share" in row and row["pl_used_share"] != "") == gated
    if method == "bcp":
        assert all(float(r["pl_used_share"]) == pytest.approx(1.0) for r in rows)
    # the evidence drawn and summarised: the terms of the last fifth of the steps and the last probe
    plot_ssl_run = _benchmark("plot_ssl_run")
    stages = plot_ssl_run.stage_folders([tmp_path / "run"])
    assert [s.name for s in stages] == [f"0_{method}"]
    summary = plot_ssl_run.stage_summary(stages[0])
    assert "supervised" in summary and summary["pl_dice"] == round(float(rows[-1]["pl_dice"]), 4)
    assert plot_ssl_run.plot_training(stages, tmp_path / "training.png")
    assert (tmp_path / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_ssl_run.plot_training([tmp_path], tmp_path / "none.png")  # no log: nothing drawn
    # the script: a clear error and exit 1 for a folder without logs, a broken log or an unwritable PNG
    assert plot_ssl_run.main([str(tmp_path / "run"), "--out", str(tmp_path / "cli.png")]) == 0
    assert plot_ssl_run.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "x.png")]) == 1
    broken = tmp_path / "broken" / "0_x"
    broken.mkdir(parents=True)
    (broken / "log.csv").write_text("step,supervised\n0,0.5\n1,not-a-number\n")
    assert plot_ssl_run.main([str(broken), "--out", str(tmp_path / "y.png")]) == 1
    assert not (tmp_path / "y.png").exists()
    assert plot_ssl_run.main([str(tmp_path / "run"), "--out", str(tmp_path / "run" / "log.csv" / "z.png")]) == 1


def test_a_supervised_run_has_no_pseudo_labels_to_probe(tmp_path, toy_dataset):
    _train(_recipe(toy_dataset, "supervised", 2), tmp_path / "run")
    assert "pl_dice" not in _validation_rows(tmp_path / "run", "0_supervised")[0]


@pytest.mark.parametrize("method", ["mean_teacher", "pseudo_label"])
def test_probing_leaves_the_training_exactly_as_it_was(tmp_path, toy_dataset, method):
    """Validated (and probed) every step or never: the same losses and the same weights, batch norm's running
    statistics included (the probe runs the networks in training mode, as the method does)."""
    settings = {"gate_dice": 0.0}
    probed = _recipe(toy_dataset, method, 1, settings)
    plain = _recipe(toy_dataset, method, 0, settings)
    plain["data"]["validation"] = None
    _train(probed, tmp_path / "probed")
    _train(plain, tmp_path / "plain")
    stage = f"0_{method}"
    assert "pl_dice" in _validation_rows(tmp_path / "probed", stage)[0]
    assert losses(tmp_path / "probed", stage) == losses(tmp_path / "plain", stage)
    one = load_model_folder(tmp_path / "probed" / stage / "model").network.state_dict()
    two = load_model_folder(tmp_path / "plain" / stage / "model").network.state_dict()
    assert one.keys() == two.keys()
    for key in one:
        assert torch.equal(one[key], two[key]), key


def test_the_probe_sees_at_most_a_training_patch_of_each_case():
    """A whole 3D scan through a network would take far more memory than a training step: each probe case is cut
    to the recipe's patch around its middle (a smaller axis is kept whole)."""
    from toothseg.train.data.dataset import PreparedCase
    from toothseg.train.engine.trainer import _central_crop

    labels = np.arange(10 * 40 * 50).reshape(10, 40, 50)
    case = PreparedCase("c", labels[None].astype(np.float32), labels, (1.0, 1.0, 1.0))
    cut = _central_crop(case, (16, 16, 16))
    assert cut.image.shape == (1, 10, 16, 16) and cut.labels.shape == (10, 16, 16)
    np.testing.assert_array_equal(cut.labels, labels[:, 12:28, 17:33])
    np.testing.assert_array_equal(cut.image[0], cut.labels)
    assert _central_crop(case, ()) is case


def test_the_probe_scores_the_labels_the_method_would_learn_from(tmp_path, toy_dataset, monkeypatch):
    """A method whose pseudo-labels are the hidden truth scores 1, its background-only labels score 0; the
    voxels it uses are scored on their own. The hidden cases are read once per stage, not at every probe."""
    from toothseg.train.methods.mean_teacher import MeanTeacher

    truth: list[np.ndarray] = []

    def perfect(self, images):
        labels = torch.from_numpy(np.stack(truth[:images.shape[0]])).long()
        used = torch.zeros_like(labels, dtype=torch.bool)
        used[..., :truth[0].shape[-1] // 2] = True  # the left half of each image
        return labels, used

    from toothseg.train.data.dataset import TrainingData
    from toothseg.train.engine.trainer import _central_crop

    original = TrainingData.probe_cases
    calls = []

    def remembered(self, count=8):
        calls.append(count)
        cases = original(self, count)
        truth[:] = [_central_crop(case, (32, 32)).labels.astype(np.int64) for case in cases]  # the toy's patch
        return cases

    monkeypatch.setattr(TrainingData, "probe_cases", remembered)
    monkeypatch.setattr(MeanTeacher, "probe_pseudo_labels", perfect)
    _train(_recipe(toy_dataset, "mean_teacher", 2, {"gate_dice": 0.0}), tmp_path / "run")
    rows = _validation_rows(tmp_path / "run", "0_mean_teacher")
    assert len(rows) == 2 and len(calls) == 1  # probed twice, the hidden cases read once
    assert len(truth) == 2  # the two hidden cases
    assert float(rows[0]["pl_dice"]) == pytest.approx(1.0)
    assert float(rows[0]["pl_used_dice"]) == pytest.approx(1.0)
    assert float(rows[0]["pl_used_share"]) == pytest.approx(0.5)
    monkeypatch.setattr(MeanTeacher, "probe_pseudo_labels",
                        lambda self, images: (torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.long), None))
    _train(_recipe(toy_dataset, "mean_teacher", 2, {"gate_dice": 0.0}), tmp_path / "zero")
    row = _validation_rows(tmp_path / "zero", "0_mean_teacher")[0]
    assert float(row["pl_dice"]) == 0.0 and not row.get("pl_used_share")
