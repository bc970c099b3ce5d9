"""The trainer: exact resume, interruptions, full disks, bad data, export → segment, and DDP."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from toothseg.core import InputError, LabelError
from toothseg.core.io import read_label_map
from toothseg.core.models.folder import load_model_folder
from toothseg.core.progress import CancelToken
from toothseg.train.config.loader import recipe_from_dict
from toothseg.train.engine.pipeline import run_recipe

from .conftest import losses, toy_recipe

REPO = Path(__file__).resolve().parents[2]


def train(data: dict, out: Path, token: CancelToken | None = None):
    return run_recipe(recipe_from_dict(json.loads(json.dumps(data))), data, out, device="cpu", quiet=True, token=token)


def test_train_export_and_segment(tmp_path, toy_dataset):
    data = toy_recipe(toy_dataset, iterations=6)
    result = train(data, tmp_path / "run")
    assert not result.interrupted and (result.model / "model.json").exists()
    model = load_model_folder(result.model)
    card = model.card
    assert card.class_values == [0, 11, 21] and card.input_kind == "2d" and card.mirror_axes == [1]
    assert card.provenance["method"] == "supervised" and "val_dice" in card.metrics
    assert (tmp_path / "run" / "recipe.yaml").exists()
    out = tmp_path / "pred.png"
    image = toy_dataset / "images" / "validation0.png"
    proc = subprocess.run([sys.executable, "-m", "toothseg.cli", "segment", str(image), "-o", str(out), "--model",
                           str(result.model)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert set(np.unique(read_label_map(out).array)) <= {0, 11, 21}


def test_a_run_refused_before_training_can_be_rerun_corrected_in_the_same_folder(tmp_path, toy_dataset):
    """A bad model setting stops the run before any training; the corrected recipe then runs in the
    same folder (it is not 'a different recipe'), while a folder with training in it still refuses one."""
    bad = toy_recipe(toy_dataset, iterations=2, architecture="unet2d")
    bad["model"]["kwargs"].update(edge_guided=True, edge_cbam="sometimes")
    with pytest.raises(InputError, match="edge_cbam must be one of"):
        train(bad, tmp_path / "run")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["recipe.yaml"]
    good = toy_recipe(toy_dataset, iterations=2, architecture="unet2d")
    assert not train(good, tmp_path / "run").interrupted
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["model"] == good["model"]
    other = toy_recipe(toy_dataset, iterations=3, architecture="unet2d")
    with pytest.raises(InputError, match=r"different recipe \(stages\.0\.iterations: 2 -> 3\)"):
        train(other, tmp_path / "run")


def test_recipe_differences_name_each_changed_value():
    from toothseg.train.engine.pipeline import recipe_differences

    before = {"name": "r", "seed": 0, "stages": [{"iterations": 800}], "data": {"root": "a"}}
    after = {"name": "r", "seed": 1, "stages": [{"iterations": 800}, {"iterations": 5}], "data": {"root": "a"},
             "export": {"half": True}}
    assert recipe_differences(before, after) == ["seed: 0 -> 1", "stages: 1 -> 2 entries",
                                                 "export: (absent) -> {'half': True}"]
    assert recipe_differences(before, before) == []


def test_restart_deletes_run_folders_only(tmp_path, toy_dataset):
    """``--output ~/cases --restart`` used to delete the user's folder whole."""
    data = toy_recipe(toy_dataset, iterations=1)
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "scan.nii.gz").write_bytes(b"a scan")
    for restart in (True, False):
        with pytest.raises(InputError, match="not a ToothSeg run folder"):
            run_recipe(recipe_from_dict(json.loads(json.dumps(data))), data, cases, device="cpu", quiet=True,
                       restart=restart)
        assert [p.name for p in cases.iterdir()] == ["scan.nii.gz"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        train(data, tmp_path / "file")
    assert not train(data, tmp_path / "run").interrupted  # a run folder is restarted as before
    run_recipe(recipe_from_dict(json.loads(json.dumps(data))), data, tmp_path / "run", device="cpu", quiet=True,
               restart=True)


def test_resume_after_interruption_continues_the_same_curve(tmp_path, toy_dataset):
    data = toy_recipe(toy_dataset, iterations=6)
    train(data, tmp_path / "straight")
    reference = losses(tmp_path / "straight")
    token = CancelToken()
    from toothseg.train.methods.supervised import Supervised

    original = Supervised.after_step

    def stop_after_three(self, step):
        original(self, step)
        if step == 2:
            token.cancel()  # what SIGTERM/Ctrl-C does: finish the step, checkpoint, stop

    Supervised.after_step = stop_after_three
    try:
        first = train(data, tmp_path / "resumed", token)
    finally:
        Supervised.after_step = original
    assert first.interrupted and len(losses(tmp_path / "resumed")) == 3
    second = train(data, tmp_path / "resumed")
    assert not second.interrupted
    np.testing.assert_allclose(losses(tmp_path / "resumed"), reference, rtol=1e-5, atol=1e-6)


def test_snapshot_writes_the_latest_checkpoint_as_a_model_folder(tmp_path, toy_dataset):
    """``train.py RECIPE --snapshot DEST`` scores a long run half-way: the folder holds the checkpoint's
    weights (not the initial ones), says the step, segments, and the run then resumes unchanged."""
    from safetensors.torch import load_file
    from toothseg.cli.main import main as cli
    from toothseg.train.engine.pipeline import snapshot_stage

    data = toy_recipe(toy_dataset, iterations=6)
    train(data, tmp_path / "straight")
    token = CancelToken()
    from toothseg.train.methods.supervised import Supervised

    original = Supervised.after_step

    def stop_after_four(self, step):
        original(self, step)
        if step == 3:
            token.cancel()

    Supervised.after_step = stop_after_four
    try:
        assert train(data, tmp_path / "run", token).interrupted
    finally:
        Supervised.after_step = original
    recipe = recipe_from_dict(json.loads(json.dumps(data)))
    folder, stage, step = snapshot_stage(recipe, data, tmp_path / "run", tmp_path / "snap")
    assert (stage, step) == ("0_supervised", 4)
    model = load_model_folder(folder)
    assert model.card.metrics == {"snapshot_step": 4} and model.card.class_values == [0, 11, 21]
    saved = torch.load(tmp_path / "run" / "0_supervised" / "checkpoint.pt", weights_only=True)["networks"]
    weights = load_file(folder / model.card.weights_file)
    student = next(iter(saved.values()))
    assert weights.keys() <= student.keys()
    for key, tensor in weights.items():
        torch.testing.assert_close(tensor.float(), student[key].float())
    out = tmp_path / "pred.png"
    assert cli(["segment", str(toy_dataset / "images" / "validation0.png"), "-o", str(out), "--model",
                str(folder)]) == 0
    # refusals: another recipe's run, a stage that does not exist, a folder of the user's
    changed = toy_recipe(toy_dataset, iterations=7)
    with pytest.raises(InputError, match="different recipe"):
        snapshot_stage(recipe_from_dict(json.loads(json.dumps(changed))), changed, tmp_path / "run", tmp_path / "s2")
    with pytest.raises(InputError, match="not in recipe"):
        snapshot_stage(recipe, data, tmp_path / "run", tmp_path / "s3", stage="fine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a model folder"):
        snapshot_stage(recipe, data, tmp_path / "run", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    train(data, tmp_path / "done")  # a finished run's own models are not replaced by a snapshot
    exported = (tmp_path / "done" / "model" / "model.json").read_text()
    for own in (tmp_path / "done" / "model", tmp_path / "done" / "0_supervised" / "model"):
        with pytest.raises(InputError, match="exported itself"):
            snapshot_stage(recipe, data, tmp_path / "done", own)
    assert (tmp_path / "done" / "model" / "model.json").read_text() == exported
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    for wrong in (["--stage", "0_supervised"], ["--snapshot", str(tmp_path / "s4"), "--restart"]):
        assert cli(["train", str(recipe_file), "--output", str(tmp_path / "run"), *wrong]) != 0
    assert (tmp_path / "run" / "0_supervised" / "checkpoint.pt").exists() and not (tmp_path / "s4").exists()
    # the snapshot took nothing from the run: it resumes onto the uninterrupted curve
    assert not train(data, tmp_path / "run").interrupted
    np.testing.assert_allclose(losses(tmp_path / "run"), losses(tmp_path / "straight"), rtol=1e-5, atol=1e-6)


def test_full_disk_during_checkpoint_keeps_the_last_good_one(tmp_path, toy_dataset, monkeypatch, caplog):
    data = toy_recipe(toy_dataset, iterations=4)
    calls = {"n": 0}
    real_save = torch.save

    def flaky_save(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint hits a full disk halfway
            with open(path, "wb") as handle:
                handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", flaky_save)
    result = train(data, tmp_path / "run")
    assert not result.interrupted and "could not write a checkpoint" in caplog.text
    state = torch.load(tmp_path / "run" / "0_supervised" / "checkpoint.pt", weights_only=True)
    assert state["step"] in (2, 4)
    assert not [p for p in (tmp_path / "run" / "0_supervised").iterdir() if p.name.startswith(".toothseg-tmp")]


def test_keyboard_interrupt_saves_a_resumable_checkpoint(tmp_path, toy_dataset, monkeypatch):
    data = toy_recipe(toy_dataset, iterations=5)
    from toothseg.train.methods.supervised import Supervised

    original = Supervised.train_step

    def interrupt(self, batch, step):
        if step == 3:
            raise KeyboardInterrupt
        return original(self, batch, step)

    monkeypatch.setattr(Supervised, "train_step", interrupt)
    result = train(data, tmp_path / "run")
    assert result.interrupted
    state = torch.load(tmp_path / "run" / "0_supervised" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3
    monkeypatch.setattr(Supervised, "train_step", original)
    assert not train(data, tmp_path / "run").interrupted
    assert len(losses(tmp_path / "run")) == 5


def test_a_run_stopped_while_it_replaces_best_keeps_a_whole_best_model(tmp_path, toy_dataset, monkeypatch):
    """``best/`` is replaced at every better validation; Ctrl+C (or a full disk) half-way through writing
    it used to leave new weights under the old card, and the resumed run then failed on the hash."""
    from toothseg.core.models import folder as model_folder
    from toothseg.train.engine.trainer import Trainer

    data = toy_recipe(toy_dataset, iterations=4)
    data["stages"][0]["validate_every"] = 1
    scores = iter([0.1, 0.2, 0.3, 0.4, 0.5])
    monkeypatch.setattr(Trainer, "validate", lambda self: {"val_dice": next(scores)})  # every validation is best
    original, calls = model_folder.atomic_write_text, []

    def stop_before_the_second_card(path, text, overwrite=True):  # the new weights are written by then
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(path, text, overwrite=overwrite)

    monkeypatch.setattr(model_folder, "atomic_write_text", stop_before_the_second_card)
    assert train(data, tmp_path / "run").interrupted
    best = tmp_path / "run" / "0_supervised" / "best"
    assert load_model_folder(best).card.metrics["val_dice"] == 0.1  # the first best, whole
    assert [p.name for p in best.parent.iterdir() if p.name.startswith(".")] == []  # no staging left
    monkeypatch.setattr(model_folder, "atomic_write_text", original)
    assert not train(data, tmp_path / "run").interrupted


@pytest.mark.parametrize("method", ["supervised", "rail"])
def test_the_exported_model_is_the_best_validated_one_when_training_ends_worse(tmp_path, toy_dataset, monkeypatch,
                                                                             method):
    """Validation Dice 0.1, 0.9, 0.2, 0.3, then 0.3 at the end: the stage's model is the step-2 network
    (every member of an ensemble), with its own metrics, not the last one."""
    from toothseg.train.engine.trainer import Trainer
    from toothseg.train.methods import get_method

    settings = {"group_steps": 1} if method == "rail" else {}
    data = toy_recipe(toy_dataset, method=method, iterations=4, settings=settings,
                      unlabeled_batch=2 if get_method(method).needs_unlabeled else 0)
    data["stages"][0]["validate_every"] = 1
    scores = iter([0.1, 0.9, 0.2, 0.3, 0.3])
    monkeypatch.setattr(Trainer, "validate", lambda self: {"val_dice": next(scores)})
    result = train(data, tmp_path / "run")
    stage = tmp_path / "run" / f"0_{method}"
    best, model = load_model_folder(stage / "best"), load_model_folder(result.model)
    assert best.card.metrics["val_dice"] == 0.9 and best.card.metrics["step"] == 2
    assert model.card.metrics["val_dice"] == 0.9 and model.card.metrics["step"] == 2
    members = [m for _, m in model.members] or [model]
    best_members = [m for _, m in best.members] or [best]
    assert len(members) == (4 if method == "rail" else 1)
    for exported, kept in zip(members, best_members):
        for name, tensor in kept.network.state_dict().items():
            torch.testing.assert_close(exported.network.state_dict()[name], tensor)
    # control: the last step's weights differ from the best ones (so the check above can fail)
    last = torch.load(stage / "checkpoint.pt", weights_only=True)["networks"]
    first_name = next(iter(last))
    differs = any(not torch.equal(t, members[0].network.state_dict()[k]) for k, t in last[first_name].items()
                  if k in members[0].network.state_dict())
    assert differs


def test_a_renumbering_model_keeps_the_snapshot_its_network_scores_best(tmp_path, toy_dataset, monkeypatch):
    """Where post-processing renumbers the network's classes, the numbered score on the training grid is no
    signal (binary3d_lopo: 0.000-0.001): the snapshot is chosen by ``val_network_dice``. Here the numbered
    score rises while the network's falls after step 1, so step 1 is kept; by ``val_dice`` it would be step 4."""
    from toothseg.train.engine.trainer import Trainer, selection_score

    data = toy_recipe(toy_dataset, iterations=4)
    data["stages"][0]["validate_every"] = 1
    scores = iter([(0.1, 0.8), (0.2, 0.5), (0.3, 0.4), (0.4, 0.3)])
    monkeypatch.setattr(Trainer, "validate",
                        lambda self: dict(zip(("val_dice", "val_network_dice"), next(scores))))
    result = train(data, tmp_path / "run")
    model = load_model_folder(result.model)
    assert model.card.metrics["step"] == 1 and model.card.metrics["val_network_dice"] == 0.8
    assert selection_score({"val_dice": 0.4}) == 0.4  # a model that does not renumber: its result's score


def test_bad_data_is_reported(tmp_path, toy_dataset):
    data = toy_recipe(toy_dataset, method="mean_teacher", unlabeled_batch=2)
    data["data"]["unlabeled"] = None
    with pytest.raises(InputError, match="unlabeled set is empty"):
        train(data, tmp_path / "a")
    data = toy_recipe(toy_dataset)
    data["data"]["class_values"] = [0, 11]  # the labels also hold 21
    with pytest.raises(LabelError, match=r"label value\(s\) \[21\]"):
        train(data, tmp_path / "b")
    data["data"]["workers"] = 1  # raised in a loader worker: the same error, its one-line message, no traceback
    with pytest.raises(LabelError, match=r"label value\(s\) \[21\]") as raised:
        train(data, tmp_path / "b1")
    assert "Traceback" not in str(raised.value) and "\n" not in str(raised.value)
    data = toy_recipe(toy_dataset, method="mean_teacher")  # no unlabeled batch size
    with pytest.raises(InputError, match="unlabeled_batch_size"):
        train(data, tmp_path / "c")


def test_stages_chain_weights(tmp_path, toy_dataset):
    stage = {"method": "supervised", "iterations": 2, "batch_size": 2, "checkpoint_every": 2,
             "optimizer": {"name": "adam", "lr": 0.0, "schedule": "constant"}}
    data = toy_recipe(toy_dataset, stages=[dict(stage, name="first", optimizer={"name": "adam", "lr": 0.01}),
                                           dict(stage, name="second", init_from="previous")])
    result = train(data, tmp_path / "run")
    first = load_model_folder(tmp_path / "run" / "first" / "model").network.state_dict()
    second = load_model_folder(result.model).network.state_dict()
    for key in first:  # lr 0 in the second stage: it must still hold the first stage's weights
        torch.testing.assert_close(first[key], second[key])


def test_train_py_runs_as_a_plain_script(tmp_path, toy_dataset):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(toy_recipe(toy_dataset, iterations=2)))
    proc = subprocess.run([sys.executable, str(REPO / "ToothSegTraining" / "train.py"), str(recipe), "--output",
                           str(tmp_path / "run"), "--device", "cpu", "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "model folder" in proc.stdout and "Qt" not in proc.stderr
    assert (tmp_path / "run" / "model" / "model.json").exists()


def test_two_process_gloo_run_matches_one_process(tmp_path, toy_dataset):
    """Same global batch (4) split over 2 CPU processes: the same loss curve as one process.

    Cross-entropy and gradients are averaged exactly; the batch Dice is computed per process (over
    2 samples instead of 4), so the curves agree to about 0.1 %, not to round-off."""
    data = toy_recipe(toy_dataset, iterations=3)
    data["stages"][0]["batch_size"] = 4
    data["data"]["validation"] = None
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    single = subprocess.run([sys.executable, str(REPO / "ToothSegTraining" / "train.py"), str(recipe), "--output",
                             str(tmp_path / "one"), "--device", "cpu", "-q"],
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    env = dict(os.environ, OMP_NUM_THREADS="1")
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                             "29531", str(REPO / "ToothSegTraining" / "train.py"), str(recipe), "--output",
                             str(tmp_path / "two"), "--device", "cpu", "-q"], capture_output=True, text=True,
                            timeout=600, env=env)
    assert double.returncode == 0, double.stderr[-2000:]
    np.testing.assert_allclose(losses(tmp_path / "two"), losses(tmp_path / "one"), rtol=2e-3)


@pytest.mark.parametrize("method", ["mean_teacher", "bcp_pretrain", "bcp", "rail", "consistency", "pseudo_label",
                                    "mim_pretrain"])
def test_every_method_trains_through_the_engine(tmp_path, toy_dataset, method):
    from toothseg.train.methods import get_method

    settings = {"group_steps": 1} if method == "rail" else {}
    data = toy_recipe(toy_dataset, method=method, iterations=3, settings=settings,
                      unlabeled_batch=2 if get_method(method).needs_unlabeled else 0)
    data["data"]["validation"] = None
    result = train(data, tmp_path / "run")
    model = load_model_folder(result.model)
    if method == "rail":
        assert len(model.members) == 4  # the four students, averaged at inference
    assert all(np.isfinite(losses(tmp_path / "run", f"0_{method}")))


def test_coarse_to_fine_recipe_with_pseudo_labels_exports_a_cascade(tmp_path, toy_dataset):
    """CFP in miniature: a binary coarse stage at half resolution, a fine stage, confidence-filtered
    pseudo-labels on the unlabeled cases, retraining, and one cascade model folder."""
    base = toy_recipe(toy_dataset)
    stage = base["stages"][0]
    base["stages"] = [
        dict(stage, name="coarse", iterations=3, data={"label_table": "binary", "class_values": [0, 1],
                                                        "spacing": [2.0, 2.0], "patch_size": [16, 16]}),
        dict(stage, name="fine", iterations=3),
        dict(stage, name="fine_pl", iterations=3, init_from="previous",
             data={"pseudo_labels": "cascade", "pseudo_max_uncertainty": 0.99}),
    ]
    base["export"]["cascade"] = {"coarse": "coarse", "fine": "fine_pl"}
    result = train(base, tmp_path / "run")
    model = load_model_folder(result.model)
    assert [role for role, _ in model.members] == ["coarse", "fine"]
    assert model.members[0][1].card.class_values == [0, 1] and model.card.class_values == [0, 11, 21]
    pseudo = sorted(p.name for p in (tmp_path / "run" / "fine_pl" / "pseudo_labels").iterdir())
    assert pseudo == [f"unlabeled{i}.nii.gz" for i in range(4)]
    # a stage retrained after the cascade was assembled: the rerun's cascade holds the new weights
    shutil.rmtree(tmp_path / "run" / "fine_pl" / "model")
    shutil.copytree(tmp_path / "run" / "fine" / "model", tmp_path / "run" / "fine_pl" / "model")
    again = load_model_folder(train(base, tmp_path / "run").model)
    fine = load_model_folder(tmp_path / "run" / "fine" / "model")
    assert again.members[1][1].card.weights_sha256 == fine.card.weights_sha256
    assert again.members[1][1].card.weights_sha256 != model.members[1][1].card.weights_sha256
    proc = subprocess.run([sys.executable, "-m", "toothseg.cli", "segment",
                           str(toy_dataset / "images" / "validation0.png"), "-o", str(tmp_path / "p.png"),
                           "--model", str(result.model)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_pseudo_labels_from_a_named_stage_and_a_stage_without_unlabeled_cases(tmp_path, toy_dataset):
    """``pseudo_labels: first`` labels the unlabeled cases with that stage's model and trains on them;
    without unlabeled cases the recipe is refused before any stage trains."""
    base = toy_recipe(toy_dataset)
    stage = base["stages"][0]
    base["stages"] = [dict(stage, name="first", iterations=2),
                      dict(stage, name="second", iterations=2, init_from="previous",
                           data={"pseudo_labels": "first", "pseudo_max_uncertainty": 0.99})]
    result = train(base, tmp_path / "run")
    assert (result.model / "model.json").exists()
    pseudo = sorted(p.name for p in (tmp_path / "run" / "second" / "pseudo_labels").iterdir())
    assert pseudo == [f"unlabeled{i}.nii.gz" for i in range(4)]
    trained_on = json.loads((tmp_path / "run" / "second" / "model" / "model.json").read_text())
    assert trained_on["weights_sha256"] != load_model_folder(tmp_path / "run" / "first" / "model").card.weights_sha256
    base["data"]["unlabeled"] = None
    with pytest.raises(InputError, match="stage second: data.pseudo_labels labels the unlabeled cases"):
        train(base, tmp_path / "run2")
    assert not (tmp_path / "run2" / "first").exists()  # refused before the first stage trained


def _miniature_3d_recipe(name: str, sts_labels, tmp_path: Path, spacing: float) -> tuple[dict, object, object]:
    """A shipped synthetic 3D recipe shrunk to run in seconds on the real STS-2024 shapes at 1.2 mm (the fine
    stage at ``spacing``, the coarse one at 2.4 mm): its raw dict (for ``train``), the parsed recipe and the
    fine stage's training data."""
    from toothseg.core import Volume
    from toothseg.core.io import write_volume
    from toothseg.core.labels import label_table_named
    from toothseg.train.config import stage_data
    from toothseg.train.data.dataset import TrainingData, class_values_for

    small = tmp_path / "teeth.nii.gz"
    write_volume(Volume(sts_labels.array[::4, ::4, ::4].copy(), tuple(4 * s for s in sts_labels.spacing_zyx),
                        sts_labels.origin, sts_labels.direction), small)
    data = yaml.safe_load((REPO / f"ToothSegTraining/toothseg/train/recipes/{name}.yaml").read_text())
    data["data"].update(labeled=str(small), validation=1, workers=0, spacing=[spacing] * 3, patch_size=[32] * 3)
    data["model"]["kwargs"].update(features_per_stage=[4, 8, 16], strides=[1, 2, 2], n_blocks_per_stage=[1, 1, 1])
    # the coarse stage keeps the real jaw-level map beside the teeth (bone that is not tooth)
    assert data["stages"][0]["data"]["labeled"].endswith(",dentalsegmentator")
    data["stages"][0]["data"].update(spacing=[2.4] * 3, patch_size=[32] * 3, labeled=f"{small},dentalsegmentator")
    if "spacing" in data["stages"][1].get("data", {}):  # a fine stage with a spacing of its own
        data["stages"][1]["data"]["spacing"] = [spacing] * 3
    for stage in data["stages"]:
        stage.update(iterations=2, checkpoint_every=2, validate_every=2)
    recipe = recipe_from_dict(json.loads(json.dumps(data)))
    config = stage_data(recipe, 1)
    assert config.spacing == [spacing] * 3
    table = label_table_named(config.label_table)
    return data, recipe, TrainingData(config, table, class_values_for(config, table), recipe.seed)


def test_the_bundled_3d_demo_recipe_trains_on_synthetic_scans_in_miniature(tmp_path, sts_labels):
    """The recipe of the bundled CBCT model (``source: synthetic``), shrunk: synthetic scans painted on
    a real tooth label map feed both stages, validation runs on unseen synthetic scans, and the export
    is a cascade whose card says its intensities were synthetic."""
    data, recipe, dataset = _miniature_3d_recipe("demo3d_synthetic", sts_labels, tmp_path, 1.6)
    items = [dataset.labeled_item(i) for i in range(10)]
    assert items[0]["image"].shape[-3:] == (32, 32, 32) and float(items[0]["image"].std()) > 0.1
    assert not torch.equal(items[1]["image"], items[0]["image"])
    # the recipe's foreground_oversample 0.8: most synthetic blocks are centred on teeth
    assert sum(int((item["label"] > 0).sum()) > 0 for item in items) >= 6
    assert "label" not in dataset.unlabeled_item(0)  # a semi-supervised method's unlabeled batch: synthetic too

    result = train(data, tmp_path / "run")
    model = load_model_folder(result.model)
    assert [role for role, _ in model.members] == ["coarse", "fine"]
    assert model.members[0][1].card.class_values == [0, 1] and len(model.card.class_values) == 33
    provenance = model.card.provenance
    assert provenance["synthetic_intensities"] is True and provenance["data_source"] == "synthetic"
    assert provenance["training_anatomy"] == ["teeth"]  # the label map the scans were painted on (teeth.nii.gz)
    with open(tmp_path / "run" / "fine" / "validation.csv", encoding="utf-8") as handle:
        assert [row["step"] for row in csv.DictReader(handle)] == ["2"]



def test_the_instance_first_recipe_trains_and_exports_a_model_that_numbers_teeth(tmp_path, sts_labels):
    """instance3d_synthetic.yaml in miniature: the fine stage learns typed interior/boundary classes made
    from the FDI maps, validation scores the numbered result against the FDI maps, and the exported cascade's
    card says its result is FDI teeth (post-processing teeth_from_boundary), which the Predictor then returns."""
    from toothseg.core.inference import InferenceOptions, Predictor
    from toothseg.core.labels import label_table_named

    data, recipe, dataset = _miniature_3d_recipe("instance3d_synthetic", sts_labels, tmp_path, 1.2)
    labels = [dataset.labeled_item(i)["label"] for i in range(6)]
    seen = set(torch.unique(torch.stack(labels)).tolist())
    assert {0, 2, 4, 5} <= seen <= {0, 1, 2, 3, 4, 5}, seen  # boundary and typed interior, made from FDI

    result = train(data, tmp_path / "run")
    model = load_model_folder(result.model)
    assert [role for role, _ in model.members] == ["coarse", "fine"]
    assert model.members[0][1].card.class_values == [0, 1] and model.card.class_values == [0, 1, 2, 3, 4, 5]
    assert model.members[0][1].card.output_label_table is None  # the binary coarse stage keeps its own
    assert model.card.output_table.name == label_table_named("fdi").name
    assert model.card.postprocessing[0]["name"] == "teeth_from_boundary"
    with open(tmp_path / "run" / "fine" / "validation.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["step"] for row in rows] == ["2"]
    # the numbered result and the network's own classes are both scored; the latter chooses the snapshot
    assert 0.0 <= float(rows[0]["val_dice"]) <= 1.0 and 0.0 <= float(rows[0]["val_network_dice"]) <= 1.0
    scan = dataset.validation_volumes()[0][1]
    prediction = Predictor(result.model, InferenceOptions(device="cpu", tta=False,
                                                          keep_network_labels=True)).predict(scan)
    assert prediction.table.name == label_table_named("fdi").name
    assert set(np.unique(prediction.labels.array).tolist()) <= {0, *range(11, 49)}
    network = prediction.network_labels
    assert network is not None and network.array.shape == prediction.labels.array.shape
    assert set(np.unique(network.array).tolist()) <= {0, 1, 2, 3, 4, 5}  # interior/boundary classes, unnumbered
    assert Predictor(result.model, InferenceOptions(device="cpu", tta=False)).predict(scan).network_labels is None


def test_a_last_stage_with_classes_of_its_own_exports_the_recipes_post_processing(tmp_path, sts_labels):
    """jaw3d_from_binary_lopo.yaml in miniature: the recipe's top-level data is the binary locator's, and its
    last stage overrides it with upper/lower tooth classes. The exported model is that stage's, with
    teeth_from_jaws and an FDI result (they used to follow the top-level table and were dropped), and its
    validation scores the upper/lower classes; the binary stage keeps ToothSeg's defaults."""
    from toothseg.core import Volume
    from toothseg.core.inference import InferenceOptions, Predictor
    from toothseg.core.io import write_volume
    from toothseg.core.labels import label_table_named

    small = tmp_path / "teeth.nii.gz"
    write_volume(Volume(sts_labels.array[::4, ::4, ::4].copy(), tuple(4 * s for s in sts_labels.spacing_zyx),
                        sts_labels.origin, sts_labels.direction), small)
    data = yaml.safe_load((REPO / "ToothSegTraining/toothseg/train/recipes/jaw3d_from_binary_lopo.yaml").read_text())
    data["data"].update(labeled=f"{small},dentalsegmentator", validation=1, workers=0, spacing=[2.4] * 3,
                        patch_size=[32] * 3)
    data["stages"][1]["data"]["labeled"] = str(small)
    data["model"]["kwargs"].update(features_per_stage=[4, 8, 16], strides=[1, 2, 2], n_blocks_per_stage=[1, 1, 1])
    for stage in data["stages"]:
        stage.update(iterations=2, checkpoint_every=2, validate_every=2)
    result = train(data, tmp_path / "run")
    model = load_model_folder(result.model)
    assert model.card.class_values == [0, 1, 2] and model.card.provenance["stage"] == "jaws"
    assert [step["name"] for step in model.card.postprocessing] == ["teeth_from_jaws", "remove_small"]
    assert model.card.output_table.name == label_table_named("fdi").name
    locator = load_model_folder(tmp_path / "run" / "teeth" / "model")
    assert locator.card.postprocessing is None and locator.card.output_label_table is None
    with open(tmp_path / "run" / "jaws" / "validation.csv", encoding="utf-8") as handle:
        assert "val_network_dice" in next(csv.DictReader(handle))
    scan = Volume(np.zeros((40, 40, 40), np.int16), (2.4,) * 3)
    labels = Predictor(result.model, InferenceOptions(device="cpu", tta=False)).predict(scan).labels.array
    assert set(np.unique(labels).tolist()) <= {0, *range(11, 49)}


def test_the_instance_recipe_untyped_learns_interior_and_boundary_only(tmp_path, sts_labels):
    """``--set data.label_table=tooth-boundary``: the same recipe without tooth types: three classes
    (background, interior, boundary) whatever the tooth, and a network with three outputs."""
    from toothseg.core.labels import label_table_named
    from toothseg.train.config import stage_data
    from toothseg.train.data.dataset import TrainingData, class_values_for

    data, _, _ = _miniature_3d_recipe("instance3d_synthetic", sts_labels, tmp_path, 1.2)
    data["data"]["label_table"] = "tooth-boundary"
    recipe = recipe_from_dict(json.loads(json.dumps(data)))
    config = stage_data(recipe, 1)
    table = label_table_named(config.label_table)
    assert class_values_for(config, table) == [0, 1, 2]
    dataset = TrainingData(config, table, class_values_for(config, table), recipe.seed)
    seen = set().union(*(torch.unique(dataset.labeled_item(i)["label"]).tolist() for i in range(6)))
    assert seen == {0, 1, 2}, seen


def test_kill_9_then_rerun_gives_the_uninterrupted_curve(tmp_path, toy_dataset):
    """SIGKILL mid-run: the rerun restarts from the last checkpoint and repeats no logged step."""
    import signal
    import time

    data = toy_recipe(toy_dataset, iterations=150)
    data["stages"][0]["checkpoint_every"] = 40
    data["data"]["validation"] = None
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    command = [sys.executable, str(REPO / "ToothSegTraining" / "train.py"), str(recipe), "--device", "cpu", "-q"]
    straight = subprocess.run(command + ["--output", str(tmp_path / "straight")], capture_output=True, text=True,
                              timeout=300)
    assert straight.returncode == 0, straight.stderr
    log = tmp_path / "killed" / "0_supervised" / "log.csv"
    process = subprocess.Popen(command + ["--output", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 50):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert (tmp_path / "killed" / "0_supervised" / "checkpoint.pt").exists()
    assert not (tmp_path / "killed" / "model").exists(), "the run finished before it could be killed"
    rerun = subprocess.run(command + ["--output", str(tmp_path / "killed")],
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    np.testing.assert_allclose(losses(tmp_path / "killed"), losses(tmp_path / "straight"), rtol=1e-5, atol=1e-6)


def test_log_rows_keep_one_value_per_named_column_when_a_term_starts_later(tmp_path):
    """A term that appears mid-stage (a consistency weight after its ramp starts) widens the header
    instead of leaving unnamed cells, and a resumed run's truncation keeps the widened file readable."""
    from toothseg.train.engine.run_logs import append_csv as _append_csv, truncate_csv as _truncate_csv

    path = tmp_path / "log.csv"
    _append_csv(path, {"step": 0, "loss": 1.5, "supervised": 1.5})
    _append_csv(path, {"step": 1, "loss": 1.25, "supervised": 1.0, "consistency": 0.25, "weight": 3.0})
    _append_csv(path, {"step": 2, "loss": 1.0, "supervised": 1.0})
    with open(path, newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == ["step", "loss", "supervised", "consistency", "weight"]
    assert all(len(line) == len(lines[0]) for line in lines)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["consistency"] for row in rows] == ["", "0.25", ""] and rows[1]["weight"] == "3"
    _truncate_csv(path, 2)
    with open(path, newline="", encoding="utf-8") as handle:
        assert [row["step"] for row in csv.DictReader(handle)] == ["0", "1"]
    _append_csv(path, {"step": 2, "loss": 0.5, "supervised": 0.5})
    assert b"\r" not in path.read_bytes()  # one line ending throughout (csv's default is CRLF)


def test_sigterm_to_the_whole_process_group_stops_cleanly_with_loader_workers(tmp_path, toy_dataset):
    """``timeout``, SLURM's ``scancel`` and ``kill -- -PGID`` signal every process of the job: the
    loader workers died of it and the trainer ended with an internal error instead of its own stop."""
    data = toy_recipe(toy_dataset, iterations=5000)
    data["data"]["workers"] = 1
    data["data"]["validation"] = None
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    command = [sys.executable, str(REPO / "ToothSegTraining" / "train.py"), str(recipe), "--device", "cpu", "-q",
               "--output", str(tmp_path / "run")]
    log = tmp_path / "run" / "0_supervised" / "log.csv"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 5):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert "internal error" not in stderr and "killed by signal" not in stderr, stderr
    assert "run the same command again to resume" in stderr, stderr
    assert (tmp_path / "run" / "0_supervised" / "checkpoint.pt").exists()
