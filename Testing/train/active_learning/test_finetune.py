"""Fine-tuning on corrected cases: versions, judging, resume, restart, refusals before anything is recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from toothseg.core.errors import InputError
from toothseg.core.inference.predictor import InferenceOptions, Predictor
from toothseg.core.io import read_label_map, write_volume
from toothseg.core.models.folder import read_card, save_model_folder
from toothseg.core.pool.store import CasePool, describe_pool, stopped_finetune
from toothseg.train.active_learning.loop import finetune_pool

from .helpers import corrected_pool, make_cases, run, sha, toy_recipe_file


def test_finetune_makes_a_version_judges_it_on_held_out_cases_and_registers_it(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("TOOTHSEG_MODELS_DIR", str(tmp_path / "home"))
    pool = corrected_pool(tmp_path, tiny_model)
    result = run("al", "finetune", pool.folder, "--recipe", toy_recipe_file(tmp_path), "--device", "cpu",
                 env={"TOOTHSEG_MODELS_DIR": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr
    state = pool.read()
    version = state.versions[0]
    assert version.version == "v001" and (pool.folder / version.folder / "model.json").is_file()
    held = [c.id for c in state.cases.values() if c.holdout]
    assert len(held) == 1 and version.metrics["held_out"] == held
    new, old = version.metrics["new"]["mean_tooth_dice"], version.metrics["current"]["mean_tooth_dice"]
    assert version.promoted == (new >= old)
    assert (state.current_model == version.folder) == version.promoted
    card = json.loads((pool.folder / version.folder / "model.json").read_text())
    parent = json.loads((tiny_model / "model.json").read_text())
    for key in ("architecture", "class_values", "patch_size", "label_table", "intensity", "mirror_axes"):
        assert card[key] == parent[key], key
    assert {k: v for k, v in card["kwargs"].items() if k != "spatial_dims"} == parent["kwargs"]
    provenance = card["provenance"]["active_learning"]
    assert provenance["parent"] == str(tiny_model) and held[0] not in provenance["trained_on"]
    assert len(provenance["trained_on"]) == 4
    assert state.training is None
    listed = run("models", "list", env={"TOOTHSEG_MODELS_DIR": str(tmp_path / "home")})
    assert version.model_id in listed.stdout


def test_a_bad_recipe_is_refused_before_a_run_is_recorded(tmp_path, tiny_model):
    pool = corrected_pool(tmp_path, tiny_model, corrected=2, total=3)
    result = run("al", "finetune", pool.folder, "--recipe", tmp_path / "missing.yaml", "--device", "cpu")
    assert result.returncode == 1 and "cannot read recipe" in result.stderr
    assert pool.read().training is None and not (pool.folder / "runs" / "v001").exists()
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({"stages": [{"method": "supervised", "iteratons": 3}]}))
    result = run("al", "finetune", pool.folder, "--recipe", tmp_path / "typo.yaml", "--device", "cpu")
    assert result.returncode == 1 and "did you mean 'iterations'" in result.stderr
    assert pool.read().training is None and not (pool.folder / "runs" / "v001").exists()


def test_finetune_without_corrections_says_so(tmp_path, tiny_model):
    pool = corrected_pool(tmp_path, tiny_model, corrected=0, total=2)
    result = run("al", "finetune", pool.folder, "--recipe", toy_recipe_file(tmp_path), "--device", "cpu")
    assert result.returncode == 1 and "no corrected case to train on" in result.stderr


def test_kill_9_during_finetune_resumes_the_same_run(tmp_path, tiny_model):
    pool = corrected_pool(tmp_path, tiny_model, corrected=3, total=4)
    recipe = toy_recipe_file(tmp_path, iterations=150)
    env_home = {"TOOTHSEG_MODELS_DIR": str(tmp_path / "home")}
    job = subprocess.Popen([sys.executable, "-m", "toothseg.cli", "al", "finetune", str(pool.folder), "--recipe",
                            str(recipe), "--device", "cpu", "--no-register"], env=dict(os.environ, **env_home),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoints = pool.folder / "runs" / "v001" / "training"
    deadline = time.time() + 240
    # os.walk, not Path.rglob: the trainer's atomic writes create and remove temporary folders while
    # this polls, and rglob fails on a folder that vanished between listing and entering it
    while time.time() < deadline and not any("checkpoint.pt" in files for _, _, files in os.walk(checkpoints)):
        time.sleep(0.2)
    time.sleep(1.0)
    job.send_signal(signal.SIGKILL)
    job.wait()
    state = pool.read()
    assert state.training and state.training["version"] == "v001" and not state.versions
    result = run("al", "status", pool.folder)
    assert "was interrupted" in result.stdout and "--restart discards it" in result.stdout
    stopped = stopped_finetune(pool.folder)  # Slicer's Fine-tune offers to resume it
    assert stopped.version == "v001" and not stopped.recipe_missing and stopped.recipe == str(recipe.resolve())
    result = run("--debug", "al", "finetune", pool.folder, "--recipe", recipe, "--device", "cpu", "--no-register",
                 env=env_home)
    assert result.returncode == 0, result.stderr
    assert "v001" in result.stdout
    assert "resuming stage" in result.stderr  # continued from its checkpoint, not restarted
    state = pool.read()
    assert [v.version for v in state.versions] == ["v001"] and state.training is None
    assert not (pool.folder / "runs" / "v002").exists()


def test_labels_without_a_class_are_refused_before_a_run_is_recorded(tmp_path, tiny_model):
    """A segment drawn in Slicer and never named as a tooth reaches the pool as an unknown value; found
    mid-run it would stop the training, and the recorded run would resume with the same revision."""
    from toothseg.core.errors import LabelError
    from toothseg.train.active_learning.loop import finetune_pool

    pool = corrected_pool(tmp_path, tiny_model, corrected=2, total=3)
    stray = read_label_map(pool.path(pool.read().cases["c01"].label))
    stray.array[:3, :3] = 99  # the tiny model's classes are 11 and 21
    bad = write_volume(stray, tmp_path / "stray.png")
    pool.accept("c01", bad)
    with pytest.raises(LabelError, match=r"'c01' \(labels/c01/rev-0002.nii.gz\): label value\(s\) \[99\]"):
        finetune_pool(pool, toy_recipe_file(tmp_path), device="cpu", register=False)
    assert pool.read().training is None and not (pool.folder / "runs" / "v001").exists()


class _Stop(Exception):
    pass


def test_a_pool_without_a_model_fine_tunes_the_catalogue_default_not_a_fresh_network(tmp_path, monkeypatch):
    """The pool's predictions came from the catalogue default; training a new network on a few
    corrections instead must be asked for (--from-scratch)."""
    import toothseg.train.active_learning.loop as loop
    from toothseg.core.models.catalog import load_catalog
    from toothseg.train.active_learning.loop import finetune_pool

    seen = []

    def stop(recipe, *args, **kwargs):
        seen.append(recipe)
        raise _Stop

    monkeypatch.setattr(loop, "run_recipe", stop)
    cases = make_cases(tmp_path / "data", 2)
    pool = CasePool.create(tmp_path / "pool")
    pool.add_images([(c, p[0]) for c, p in cases.items()])
    for case, (_, label) in cases.items():
        pool.accept(case, label)
    default = load_catalog().default("2d")
    with pytest.raises(_Stop):
        finetune_pool(pool, toy_recipe_file(tmp_path), device="cpu", register=False)
    run = pool.read().training
    assert run["parent"] == default.id and Path(run["parent_folder"]) == default.folder.resolve()
    assert run["current_folder"] == run["parent_folder"]  # the judge: the model the pool predicts with
    assert seen[0].model.architecture == read_card(default.folder).architecture
    assert seen[0].stages[0].init_from is not None
    with pytest.raises(_Stop):
        finetune_pool(pool, toy_recipe_file(tmp_path), device="cpu", register=False, restart=True,
                      from_scratch=True)
    run = pool.read().training
    assert run["parent"] is None and run["parent_folder"] is None
    assert seen[1].model.architecture == "resenc_unet" and seen[1].stages[0].init_from in (None, "none")
    with pytest.raises(InputError, match="not both"):
        finetune_pool(pool, None, start_from=default.id, restart=True, from_scratch=True)
    # without an installed default, a from-scratch run still trains (nothing to judge it by)
    from toothseg.core.models.catalog import Catalog

    def no_default(self, kind):
        raise InputError(f"no installed default model for {kind} inputs")

    monkeypatch.setattr(Catalog, "default", no_default)
    with pytest.raises(InputError, match="no installed default"):
        finetune_pool(pool, toy_recipe_file(tmp_path), device="cpu", register=False, restart=True)
    with pytest.raises(_Stop):
        finetune_pool(pool, toy_recipe_file(tmp_path), device="cpu", register=False, restart=True,
                      from_scratch=True)
    assert pool.read().training["current_folder"] is None


def test_restart_discards_an_interrupted_fine_tune(tmp_path, tiny_model):
    from toothseg.train.active_learning.loop import finetune_pool

    pool = corrected_pool(tmp_path, tiny_model, corrected=3, total=3)
    with pool.transaction() as state:  # what a killed run leaves: a recorded run whose recipe is gone
        state.training = {"version": "v001", "run": "runs/v001", "recipe": str(tmp_path / "gone.yaml"),
                          "parent": None, "parent_folder": None, "train": ["c00"], "holdout": [], "overrides": []}
    (pool.folder / "runs" / "v001").mkdir(parents=True)
    # what Slicer's Fine-tune asks about first: this run cannot resume, only start afresh
    stopped = stopped_finetune(pool.folder)
    assert stopped is not None and stopped.version == "v001" and stopped.recipe_missing
    assert "Fine-tuning v001 was stopped" in describe_pool(pool.folder)
    with pytest.raises(InputError, match="--restart discards the run"):
        finetune_pool(pool, toy_recipe_file(tmp_path), device="cpu", register=False)
    result = finetune_pool(pool, toy_recipe_file(tmp_path), device="cpu", register=False, restart=True)
    assert result.version.version == "v001" and pool.read().training is None
    assert stopped_finetune(pool.folder) is None and stopped_finetune("") is None
    assert stopped_finetune(tmp_path / "nowhere") is None


def test_a_cascade_parent_gives_a_cascade_version_with_its_coarse_member_kept(tmp_path, tiny_model):
    from toothseg.core.models.folder import read_card
    from toothseg.train.active_learning.loop import _assemble_version, _parent_settings

    parent = tmp_path / "cascade"
    import shutil

    shutil.copytree(tiny_model, parent / "coarse")
    shutil.copytree(tiny_model, parent / "fine")
    top = read_card(tiny_model)
    top.id, top.members = "parent-cascade", [{"role": "coarse", "path": "coarse"}, {"role": "fine", "path": "fine"}]
    save_model_folder(None, top, parent)
    (tmp_path / "run").mkdir()
    settings, trained_from = _parent_settings(parent, tmp_path / "run")
    assert trained_from == parent / "fine" and "model.architecture=unet2d" in settings
    assert not any(s.startswith("data.image_extent") for s in settings)
    shutil.copytree(parent / "fine", tmp_path / "extent-parent")
    fine = read_card(parent / "fine")
    fine.image_extent_yx = [512.0, 512.0]
    (tmp_path / "extent-parent" / "model.json").write_text(fine.to_json())
    extent_settings, _ = _parent_settings(tmp_path / "extent-parent", tmp_path / "run")
    assert "data.image_extent=[512.0, 512.0]" in extent_settings  # a fine-tuned version keeps the X-ray scale
    _assemble_version(tiny_model, parent, tmp_path / "version")
    card = read_card(tmp_path / "version")
    assert [m["role"] for m in card.members] == ["coarse", "fine"]
    weights = Path("coarse") / "weights.safetensors"
    assert sha(tmp_path / "version" / weights) == sha(parent / weights)
    Predictor(tmp_path / "version", InferenceOptions(tta=False, device="cpu"))  # loads as a cascade


def test_a_pool_whose_path_reads_as_yaml_syntax_fine_tunes(tmp_path, tiny_model):
    """The pool's file lists were handed to the recipe as unquoted YAML: a folder 'Patient #3' was cut at
    ' #' (a comment) and 'a: b' became a mapping."""
    base = tmp_path / "Patient #3: jaw"
    pool = corrected_pool(base, tiny_model, corrected=2, total=2)
    result = finetune_pool(pool, toy_recipe_file(base, iterations=1), device="cpu", register=False, holdout_share=0)
    assert (pool.folder / result.version.folder / "model.json").is_file()
    assert result.version.model_id.startswith("toothseg-al-pool-")


def test_an_incomplete_fine_tuning_record_is_refused_with_the_way_out(tmp_path, tiny_model):
    pool = corrected_pool(tmp_path, tiny_model, corrected=3, total=3)
    with pool.transaction() as state:  # a pool.json cut short or edited by hand: no case lists
        state.training = {"version": "v001", "run": "runs/v001"}
    with pytest.raises(InputError, match="incomplete.*--restart discards it"):
        finetune_pool(pool, toy_recipe_file(tmp_path), device="cpu", register=False)
    assert pool.read().training == {"version": "v001", "run": "runs/v001"}  # nothing lost or changed
