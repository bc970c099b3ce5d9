"""The shipped recipes parse, name known methods with valid settings, and chain their stages."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from toothseg.train.config import stage_data
from toothseg.train.config.loader import load_recipe

RECIPE_FOLDER = Path(__file__).resolve().parents[2] / "ToothSegTraining" / "toothseg" / "train" / "recipes"
RECIPES = sorted(RECIPE_FOLDER.glob("*.yaml"))


def test_every_method_family_has_a_recipe():
    names = {p.stem for p in RECIPES}
    assert {"supervised_ufba", "mean_teacher_ufba", "bcp_ufba", "mim_ufba", "rail_cbct", "umamba2_ssl",
            "coarse_to_fine", "demo3d_synthetic"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_valid(path):
    recipe, raw = load_recipe(path)
    assert recipe.name == path.stem
    for index, stage in enumerate(recipe.stages):
        data = stage_data(recipe, index)
        assert len(data.patch_size) == (2 if data.kind == "2d" else 3)
        if index == 0:  # nothing before it; a continuation starts from a model folder that exists
            assert stage.init_from == "none" or (RECIPE_FOLDER.parents[3] / stage.init_from / "model.json").is_file()


def _benchmark(name: str):
    """A script of Testing/benchmarks imported as a module (they are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench_ssl_ufba():
    return _benchmark("bench_ssl_ufba")


def test_ssl_benchmark_recipes_differ_only_in_the_method():
    """bench_ssl_ufba.py compares methods: their recipes must see the same data, split and augmentation."""
    bench = _bench_ssl_ufba()
    blocks = {}
    for method, name in bench.METHODS.items():
        recipe, raw = load_recipe(bench.RECIPES / name)
        data = dict(raw["data"])
        data.pop("labeled_fraction")
        blocks[method] = data
        assert raw["model"]["architecture"].startswith("unet2d"), method
        assert recipe.export.mirror_axes == [1], method
    reference = blocks.pop("supervised")
    for method, data in blocks.items():
        assert data == reference, f"{method}'s data block differs from supervised_ufba.yaml"


def test_ssl_benchmark_scales_every_stage_and_sets_the_fraction(tmp_path):
    import argparse

    bench = _bench_ssl_ufba()
    args = argparse.Namespace(runs=tmp_path, scale=0.1, set=["model.kwargs.base_channels=8"], device="cpu",
                              ramp_share=None)
    command, run_dir = bench.train_command("bcp", 0.25, args)
    assert run_dir == tmp_path / "bcp_25"
    overrides = [command[i + 1] for i, c in enumerate(command) if c == "--set"]
    assert overrides[0] == "data.labeled_fraction=0.25" and overrides[-1] == "model.kwargs.base_channels=8"
    full, _ = load_recipe(bench.RECIPES / bench.METHODS["bcp"])
    scaled, _ = load_recipe(bench.RECIPES / bench.METHODS["bcp"], overrides)
    assert [s.iterations for s in scaled.stages] == [round(s.iterations * 0.1) for s in full.stages]
    assert all(s.checkpoint_every <= s.iterations // 4 for s in scaled.stages)
    assert all(s.validate_every <= s.iterations // 2 for s in scaled.stages)
    assert scaled.data.labeled_fraction == 0.25 and scaled.model.kwargs["base_channels"] == 8
    assert bench.scaled_overrides(bench.RECIPES / bench.METHODS["bcp"], 1.0) == []
    command, _ = bench.train_command("supervised", 0.1, args, scale=0.05)
    assert "stages.0.iterations=200" in command
    rail_recipe = bench.RECIPES / bench.METHODS["rail"]
    rail, _ = load_recipe(rail_recipe, bench.scaled_overrides(rail_recipe, 0.1))
    assert rail.stages[0].optimizer.warmup_iterations == 50 and rail.stages[0].iterations == 400
    # the methods' own step counts follow (RAIL's first turn, BCP's static teacher); EMA horizons and
    # ramp lengths stay the papers' steps: the learning rate per step does not change with the schedule
    assert rail.stages[0].settings["group_steps"] == 20  # 195 of 4000 steps
    assert rail.stages[0].settings["ema_decay"] == pytest.approx(0.999)
    assert not any("ema_decay" in o or "rampup" in o for o in bench.scaled_overrides(rail_recipe, 0.1))
    assert scaled.stages[1].settings["static_interval"] == 100
    assert scaled.stages[1].settings["ema_decay"] == pytest.approx(0.99)
    assert bench.scaled_setting("steps", 3, 0.01) == 1


def test_ssl_benchmark_states_ramps_as_a_share_of_the_stage_on_request(tmp_path):
    """--ramp-share: every ramp-up length becomes that share of its (scaled) stage, in a run folder of its
    own; without it the papers' lengths in steps stay, and methods without a ramp keep their folder."""
    import argparse

    bench = _bench_ssl_ufba()
    args = argparse.Namespace(runs=tmp_path, scale=0.15, set=[], device="cpu", ramp_share=0.2)
    for method in ("mean_teacher", "umamba2_ssl", "rail"):
        command, run_dir = bench.train_command(method, 0.1, args)
        assert run_dir == tmp_path / f"{method}_10_ramp0.2"
        overrides = [command[i + 1] for i, c in enumerate(command) if c == "--set"]
        recipe, _ = load_recipe(bench.RECIPES / bench.METHODS[method], overrides)
        original, _ = load_recipe(bench.RECIPES / bench.METHODS[method])
        ramped = [s for s in recipe.stages if bench.ramp_settings(bench.get_method(s.method).Settings)]
        assert ramped, method
        for stage in ramped:
            assert stage.settings["rampup_steps"] == round(0.2 * stage.iterations), (method, stage.name)
        # nothing else changes: the same overrides as without --ramp-share, plus the ramps
        args.ramp_share = None
        plain, _ = bench.train_command(method, 0.1, args)
        args.ramp_share = 0.2
        assert [o for o in overrides if "rampup_steps" not in o] == [plain[i + 1] for i, c in enumerate(plain)
                                                                     if c == "--set"]
        assert len(original.stages) == len(recipe.stages)
    for method in ("supervised", "bcp"):  # no ramp: the folder of a run without --ramp-share
        _, run_dir = bench.train_command(method, 0.1, args)
        assert run_dir == tmp_path / f"{method}_10"
    assert any("rampup_steps=1" in o for o in bench.scaled_overrides(bench.RECIPES / "mean_teacher_ufba.yaml",
                                                                     0.001, 0.01))  # at least one step
    for bad in ("0", "1.5", "a fifth"):  # a usage error before any training
        with pytest.raises(SystemExit):
            bench.main(["--ramp-share", bad, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x.json").exists()


def test_ssl_benchmark_reads_training_time_from_every_call_of_a_run(tmp_path):
    bench = _bench_ssl_ufba()
    (tmp_path / "bench_train.log").write_text(
        "toothseg: INFO: stage pretrain: 150 steps in 403 s\nnoise\n"
        "toothseg: INFO: stage self_train: 450 steps in 657.5 s\n")
    assert bench.logged_training_seconds(tmp_path) == 1060.5
    assert bench.logged_training_seconds(tmp_path / "missing") == 0.0
    # a run resumed after the log moved beside its folder: both logs count
    bench.training_log(tmp_path).write_text("toothseg: INFO: stage self_train: 10 steps in 9.5 s\n")
    assert bench.logged_training_seconds(tmp_path) == 1070.0


def test_ssl_benchmark_leaves_a_new_run_folder_empty_for_the_trainer(tmp_path):
    """train.py refuses a new run folder that holds files; the bench's own log must not be one of them
    (it was, and every fresh run failed with 'holds files but no recipe.yaml')."""
    bench = _bench_ssl_ufba()
    run_dir = tmp_path / "runs" / "bcp_10"
    probe = ("import os, sys; d = sys.argv[1]; print('log line'); "
             "sys.exit(1 if os.path.exists(d) and os.listdir(d) else 0)")
    bench.train([sys.executable, "-c", probe, str(run_dir)], run_dir)
    assert "log line" in bench.training_log(run_dir).read_text()
    with pytest.raises(bench.ToothSegError, match="training failed: boom"):
        bench.train([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], run_dir)


def test_ssl_benchmark_reports_a_failed_training_in_one_line_and_keeps_the_run(tmp_path, monkeypatch, capsys):
    """A run folder holding another recipe's run is refused by train.py; the bench says why, writes no
    result and leaves the earlier run untouched."""
    bench = _bench_ssl_ufba()
    monkeypatch.setenv("TOOTHSEG_SHARED_DATA", str(tmp_path / "data"))
    earlier = tmp_path / "runs" / "supervised_10" / "recipe.yaml"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("name: another run\n")
    (earlier.parent / "0_supervised").mkdir()  # it has trained: a stage folder besides its recipe
    (earlier.parent / "0_supervised" / "log.csv").write_text("step,loss\n1,0.5\n")
    out = tmp_path / "result.json"
    assert bench.main(["--fraction", "0.1", "--method", "supervised", "--scale", "0.01", "--device", "cpu",
                       "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert "supervised 10%: training failed:" in error and "different recipe" in error
    assert earlier.read_text() == "name: another run\n" and not out.exists()


def test_ssl_benchmark_keeps_the_finished_runs_when_a_later_one_fails(tmp_path, monkeypatch):
    """The table is written after every run, marked incomplete until the last: a multi-session comparison
    whose run folders are lost halfway still has what finished."""
    from toothseg.core.errors import ToothSegError

    bench = _bench_ssl_ufba()
    monkeypatch.setattr(bench, "ufba_cases", lambda subset: [])

    def train(command, run_dir):
        if run_dir.name.startswith("bcp"):
            raise ToothSegError("training failed: disk full")
        return 0.0

    monkeypatch.setattr(bench, "train", train)
    monkeypatch.setattr(bench, "score_model", lambda name, folder, cases, device, tta: (
        {"folder": folder, "mean_tooth_dice": 0.5, "incisors": 0.5, "canines": 0.5, "premolars": 0.5, "molars": 0.5,
         "teeth_with_iou_over_0.5": 0.5}, [{"model": name, "case": "x", "dice": 0.5, "in_gt": True}]))
    monkeypatch.setattr(bench, "plot", lambda rows, names, path: None)
    out = tmp_path / "result.json"
    arguments = ["--fraction", "0.1", "--method", "bcp", "--runs", str(tmp_path / "runs"), "--out", str(out)]
    assert bench.main(arguments) == 1
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and list(partial["models"]) == ["supervised 10%"]
    assert partial["teeth"] == [{"model": "supervised 10%", "case": "x", "dice": 0.5, "in_gt": True}]
    monkeypatch.setattr(bench, "train", lambda command, run_dir: 0.0)
    assert bench.main(arguments) == 0
    final = json.loads(out.read_text())
    assert final["complete"] is True and list(final["models"]) == ["supervised 10%", "bcp 10%"]


def test_ssl_benchmark_runs_a_method_or_fraction_named_twice_once(tmp_path, monkeypatch):
    bench = _bench_ssl_ufba()
    trained = []
    monkeypatch.setattr(bench, "ufba_cases", lambda subset: [])
    monkeypatch.setattr(bench, "train", lambda command, run_dir: trained.append(run_dir.name) or 0.0)
    monkeypatch.setattr(bench, "score_model", lambda name, folder, cases, device, tta: (
        {"folder": folder, "mean_tooth_dice": 0.5, "incisors": 0.5, "canines": 0.5, "premolars": 0.5, "molars": 0.5,
         "teeth_with_iou_over_0.5": 0.5}, [{"model": name, "case": "x", "dice": 0.5, "in_gt": True}]))
    monkeypatch.setattr(bench, "plot", lambda rows, names, path: None)
    assert bench.main(["--fraction", "0.1", "--fraction", "0.1", "--method", "bcp", "--method", "bcp",
                       "--method", "supervised", "--runs", str(tmp_path / "runs"),
                       "--out", str(tmp_path / "result.json")]) == 0
    assert trained == ["supervised_10", "bcp_10"]


def test_ssl_benchmark_pairs_each_seed_with_supervised_training_of_the_same_seed(tmp_path, monkeypatch):
    """--seed: every method runs once per seed (seed 0 in its old folder, so earlier runs resume as seed 0),
    its gain is taken against supervised training of the same seed, and the summary gives the mean gain
    with a Student-t interval across seeds."""
    bench = _bench_ssl_ufba()
    commands = []
    monkeypatch.setattr(bench, "ufba_cases", lambda subset: [])
    monkeypatch.setattr(bench, "train", lambda command, run_dir: commands.append((run_dir.name, command)) or 0.0)
    dice = {"supervised 10% seed 0": 0.50, "bcp 10% seed 0": 0.53, "supervised 10% seed 1": 0.40,
            "bcp 10% seed 1": 0.44, "supervised 10% seed 2": 0.45, "bcp 10% seed 2": 0.47}
    monkeypatch.setattr(bench, "score_model", lambda name, folder, cases, device, tta: (
        {"folder": folder, "mean_tooth_dice": dice[name], "incisors": 0.5, "canines": 0.5, "premolars": 0.5,
         "molars": 0.5, "teeth_with_iou_over_0.5": 0.5}, []))
    monkeypatch.setattr(bench, "plot", lambda rows, names, path: None)
    out = tmp_path / "result.json"
    assert bench.main(["--fraction", "0.1", "--method", "bcp", "--seed", "0", "--seed", "1", "--seed", "2",
                       "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert [name for name, _ in commands] == ["supervised_10", "bcp_10", "supervised_10_seed1", "bcp_10_seed1",
                                              "supervised_10_seed2", "bcp_10_seed2"]
    assert "seed=2" in commands[-1][1] and not any(c.startswith("seed=") for c in commands[0][1])
    result = json.loads(out.read_text())
    gains = [0.03, 0.04, 0.02]  # each against its own seed's supervised run, not seed 0's
    assert [result["models"][f"bcp 10% seed {s}"]["gain_over_supervised"] for s in range(3)] == pytest.approx(gains)
    summary = result["across_seeds"]["bcp 10%"]
    half = 4.302653 * np.std(gains, ddof=1) / np.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert summary["seeds"] == 3 and summary["mean_gain"] == pytest.approx(0.03)
    assert summary["ci95"] == pytest.approx([0.03 - half, 0.03 + half], abs=1e-4)
    assert bench.seed_gain_interval([0.01]) == {"seeds": 1, "mean_gain": 0.01}  # no interval from one seed


def test_ssl_benchmark_from_supervised_starts_every_method_from_the_baseline(tmp_path, monkeypatch):
    """--from-supervised: the baseline is trained first; every method (supervised too) then starts from its
    model folder in a run folder of its own, and gains are measured against supervised continued."""
    bench = _bench_ssl_ufba()
    commands = []
    monkeypatch.setattr(bench, "ufba_cases", lambda subset: [])
    monkeypatch.setattr(bench, "train", lambda command, run_dir: commands.append((run_dir.name, command)) or 0.0)
    dice = {"supervised 10%": 0.5, "supervised 10% from supervised": 0.6, "mean_teacher 10% from supervised": 0.65}
    monkeypatch.setattr(bench, "score_model", lambda name, folder, cases, device, tta: (
        {"folder": folder, "mean_tooth_dice": dice[name], "incisors": 0.5, "canines": 0.5, "premolars": 0.5,
         "molars": 0.5, "teeth_with_iou_over_0.5": 0.5}, []))
    monkeypatch.setattr(bench, "plot", lambda rows, names, path: None)
    out = tmp_path / "result.json"
    assert bench.main(["--fraction", "0.1", "--method", "mean_teacher", "--from-supervised", "--scale", "0.1",
                       "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert [name for name, _ in commands] == ["supervised_10", "from_start_supervised_10", "from_start_mean_teacher_10"]
    start = f"stages.0.init_from={tmp_path / 'runs' / 'supervised_10' / 'model'}"
    assert start not in commands[0][1] and all(start in command for _, command in commands[1:])
    models = json.loads(out.read_text())["models"]
    assert "gain_over_supervised" not in models["supervised 10% from supervised"]
    assert models["mean_teacher 10% from supervised"]["gain_over_supervised"] == pytest.approx(0.05)


def test_ssl_benchmark_start_scale_trains_the_start_longer_in_a_folder_of_its_own(tmp_path, monkeypatch):
    """--start-scale: the supervised start runs at its own length (a start whose validation has levelled off),
    in a folder named for it; every schedule from it keeps --scale; each run's validation history is kept."""
    bench = _bench_ssl_ufba()
    commands = []
    monkeypatch.setattr(bench, "ufba_cases", lambda subset: [])

    def fake_train(command, run_dir):
        commands.append((run_dir.name, command))
        (run_dir / "0_supervised").mkdir(parents=True, exist_ok=True)
        (run_dir / "0_supervised" / "validation.csv").write_text("step,val_dice,pl_dice\n300,0.7,\n600,0.71234,0.5\n")
        return 0.0

    monkeypatch.setattr(bench, "train", fake_train)
    monkeypatch.setattr(bench, "score_model", lambda name, folder, cases, device, tta: (
        {"folder": folder, "mean_tooth_dice": 0.5, "incisors": 0.5, "canines": 0.5, "premolars": 0.5,
         "molars": 0.5, "teeth_with_iou_over_0.5": 0.5}, []))
    monkeypatch.setattr(bench, "plot", lambda rows, names, path: None)
    out = tmp_path / "result.json"
    assert bench.main(["--fraction", "0.1", "--method", "mean_teacher", "--from-supervised", "--scale", "0.1",
                       "--start-scale", "0.5", "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert [name for name, _ in commands] == ["supervised_10_scale0.5", "from_start_supervised_10",
                                              "from_start_mean_teacher_10"]
    assert "stages.0.iterations=2000" in commands[0][1]  # 4000 x 0.5
    assert all("stages.0.iterations=400" in command for _, command in commands[1:])  # 4000 x 0.1
    start = f"stages.0.init_from={tmp_path / 'runs' / 'supervised_10_scale0.5' / 'model'}"
    assert all(start in command for _, command in commands[1:])
    runs = json.loads(out.read_text())["runs"]
    assert runs["supervised 10%"]["scale"] == 0.5 and runs["mean_teacher 10% from supervised"]["scale"] == 0.1
    assert runs["supervised 10%"]["validation"] == [{"stage": "0_supervised", "step": 300, "val_dice": 0.7},
                                                    {"stage": "0_supervised", "step": 600, "val_dice": 0.7123,
                                                     "pl_dice": 0.5}]
    with pytest.raises(SystemExit):  # a start scale without a start to train
        bench.main(["--start-scale", "0.5", "--runs", str(tmp_path / "runs"), "--out", str(out)])


def test_ssl_benchmark_from_a_start_drops_the_pretraining_stages(tmp_path):
    """From trained weights U-Mamba2-SSL's denoising stage is dropped (the start replaces it) and its
    consistency stage begins from the start; a recipe that starts with segmentation keeps every stage."""
    from toothseg.train.config.loader import load_recipe

    bench = _bench_ssl_ufba()
    start = tmp_path / "model"
    for method, stages in (("umamba2_ssl", ["consistency", "pseudo_label"]), ("mean_teacher", ["mean_teacher"])):
        recipe = bench.RECIPES / bench.METHODS[method]
        loaded, _ = load_recipe(recipe, [*bench.scaled_overrides(recipe, 0.2), *bench.start_overrides(recipe, start)])
        assert [stage.method for stage in loaded.stages] == stages
        assert loaded.stages[0].init_from == str(start)
        assert all(stage.init_from == "previous" for stage in loaded.stages[1:])
    umamba, _ = load_recipe(bench.RECIPES / bench.METHODS["umamba2_ssl"], bench.scaled_overrides(
        bench.RECIPES / bench.METHODS["umamba2_ssl"], 0.2))
    assert [stage.iterations for stage in umamba.stages] == [200, 533, 267]  # 800 steps once the 200 are dropped


@pytest.mark.parametrize("rows", [[], [{"model": "a", "tooth": 11, "dice": 0.5, "hd95": float("inf")},
                                       {"model": "a", "tooth": 12, "dice": 0.25, "hd95": 3.0}]])
def test_benchmark_result_json_keeps_every_value_with_one_line_per_tooth(tmp_path, rows):
    bench = _bench_ssl_ufba()
    result = {"data": "x", "models": {"a": {"mean_tooth_dice": 0.375, "incisors": None}}, "teeth": rows}
    path = tmp_path / "result.json"
    bench.write_result(path, result)
    assert json.loads(path.read_text()) == result
    lines = path.read_text().splitlines()
    assert [json.loads(line.strip().rstrip(",")) for line in lines if line.lstrip().startswith('{"model"')] == rows


def _bench_ssl_synth3d():
    return _benchmark("bench_ssl_synth3d")


def test_3d_benchmark_reports_each_gain_with_a_paired_interval_over_the_test_scans(tmp_path, monkeypatch):
    """Every method's headline gain over supervised 10 % comes with its paired-bootstrap interval over the
    test scans (here: +0.05 on every scan, so the interval is exactly that); the ceiling row has none."""
    bench = _bench_ssl_synth3d()
    manifests = {key: tmp_path / f"{key}.json" for key in ("train", "val", "test")}
    monkeypatch.setattr(bench, "make_dataset", lambda *a, **k: manifests)
    monkeypatch.setattr(bench, "read_manifest", lambda path, require_labels: ["s1", "s2", "s3"])
    monkeypatch.setattr(bench, "train", lambda command, run_dir: 0.0)
    monkeypatch.setattr(bench, "plot", lambda rows, names, path: None)
    shift = {"supervised 10%": 0.0, "mean_teacher 10%": 0.05, "supervised all": 0.1}

    def score(name, model, cases, device, metrics):
        rows = [{"model": name, "case": c, **{m: 0.5 + 0.1 * i + shift[name] for m in metrics}}
                for i, c in enumerate(cases)]
        return {m: sum(r[m] for r in rows) / len(rows) for m in metrics}, rows

    monkeypatch.setattr(bench, "score_model", score)
    out = tmp_path / "result.json"
    assert bench.main(["--method", "mean_teacher", "--scale", "0.1", "--runs", str(tmp_path / "runs"),
                       "--out", str(out)]) == 0
    models = json.loads(out.read_text())["models"]
    assert models["mean_teacher 10%"]["instance_dsc_gain_over_supervised"] == pytest.approx(0.05)
    assert models["mean_teacher 10%"]["instance_dsc_gain_ci95"] == pytest.approx([0.05, 0.05])
    assert "instance_dsc_gain_ci95" not in models["supervised all"]


def test_3d_benchmark_gives_every_method_the_same_3d_data_and_keeps_its_stages(tmp_path):
    """bench_ssl_synth3d.py swaps the UFBA recipes' 2D data and network for one 3D block; the method
    stages (settings, optimiser, schedule proportions) stay the recipe's own."""
    import argparse

    bench = _bench_ssl_synth3d()
    manifests = {name: tmp_path / f"{name}.json" for name in ("train", "val", "test")}
    args = argparse.Namespace(runs=tmp_path, spacing=1.0, set=[], device="cpu", labels="fdi", ramp_share=None)
    blocks = {}
    for method, name in bench.METHODS_3D.items():
        command, run_dir = bench.train_command(method, 0.1, manifests, args, scale=0.05)
        assert run_dir == tmp_path / f"{method}_10"
        overrides = [command[i + 1] for i, c in enumerate(command) if c == "--set"]
        recipe, raw = load_recipe(bench.RECIPES / name, overrides)
        original, _ = load_recipe(bench.RECIPES / name)
        assert raw["data"]["kind"] == "3d" and raw["data"]["labeled"] == str(manifests["train"])
        assert recipe.data.labeled_fraction == 0.1 and recipe.data.spacing == [1.0, 1.0, 1.0]
        assert recipe.model.architecture == "vnet" and recipe.export.mirror_axes == [2]
        assert [s.method for s in recipe.stages] == [s.method for s in original.stages]
        assert [s.optimizer.name for s in recipe.stages] == [s.optimizer.name for s in original.stages]
        assert [s.iterations for s in recipe.stages] == [max(10, round(s.iterations * 0.05)) for s in original.stages]
        blocks[method] = raw["data"]
    assert all(block == blocks["supervised"] for block in blocks.values())
    args.labels = "binary"  # tooth vs background, as RAIL and BCP train on CBCT
    command, _ = bench.train_command("rail", 0.1, manifests, args, scale=0.05)
    overrides = [command[i + 1] for i, c in enumerate(command) if c == "--set"]
    recipe, _ = load_recipe(bench.RECIPES / bench.METHODS["rail"], overrides)
    assert recipe.data.label_table == "binary" and recipe.data.class_values == [0, 1]
    assert bench.networks("bcp")["kwargs"]["edge_guided"] and not bench.networks("supervised")["kwargs"]["has_dropout"]
    # BCP once more on the plain V-Net: the same recipe and stages, only the network differs
    assert bench.METHODS_3D["bcp_plain"] == bench.METHODS["bcp"]
    assert not bench.networks("bcp_plain")["kwargs"].get("edge_guided", False)
    # and on the edge-guided V-Net with residual CBAMs: a network the recipe's model block builds
    assert bench.METHODS_3D["bcp_residual"] == bench.METHODS["bcp"]
    residual = bench.networks("bcp_residual")
    assert residual["kwargs"]["edge_guided"] and residual["kwargs"]["edge_cbam"] == "residual"
    assert "edge_cbam" not in bench.networks("bcp")["kwargs"]
    from toothseg.core.networks import build_network
    build_network(residual["architecture"], num_classes=2, in_channels=1, **residual["kwargs"])


def test_3d_benchmark_dataset_is_drawn_once_with_test_draws_unseen_in_training(tmp_path):
    from toothseg.core.errors import ToothSegError
    from toothseg.core.io.images import read_label_map, read_volume
    from toothseg.train.data.cases import read_manifest

    bench = _bench_ssl_synth3d()
    manifests = bench.make_dataset(tmp_path, scans=2, test=1, spacing=2.0)
    cases = {name: read_manifest(path, require_labels=True) for name, path in manifests.items()}
    assert [len(cases[n]) for n in ("train", "val", "test")] == [2, 2, 1]
    seeds = {name: {c.id.split("_")[1] for c in subset} for name, subset in cases.items()}
    assert not seeds["test"] & (seeds["train"] | seeds["val"])
    assert {c.id.split("_")[2] for c in cases["train"]} == {"gt", "pred"}  # both real label maps
    image, labels = read_volume(cases["test"][0].image), read_label_map(cases["test"][0].label)
    assert image.shape == labels.shape and image.spacing_zyx == (2.0, 2.0, 2.0)
    assert len(set(labels.array.ravel().tolist()) - {0}) >= 20  # FDI teeth of the real map (some drawn missing)
    before = cases["test"][0].image.stat().st_mtime_ns
    assert bench.make_dataset(tmp_path, scans=2, test=1, spacing=2.0) == manifests  # reused, not redrawn
    assert cases["test"][0].image.stat().st_mtime_ns == before
    with pytest.raises(ToothSegError, match="other settings"):
        bench.make_dataset(tmp_path, scans=3, test=1, spacing=2.0)


def test_benchmark_result_json_can_hold_per_case_rows(tmp_path):
    bench = _bench_ssl_ufba()
    result = {"models": {"a": {"ia": 0.5}}, "cases": [{"model": "a", "case": "c1", "ia": 0.5}]}
    bench.write_result(tmp_path / "r.json", result, rows_key="cases")
    assert json.loads((tmp_path / "r.json").read_text()) == result


def test_both_ssl_benchmarks_read_method_scales_alike():
    import argparse

    bench = _bench_ssl_ufba()
    parser = argparse.ArgumentParser()
    assert bench.method_scales(parser, ["rail=0.05", "bcp=0.1"]) == {"rail": 0.05, "bcp": 0.1}
    for bad in (["rail"], ["rail=x"], ["nope=1"], ["bcp=0"]):
        with pytest.raises(SystemExit):
            bench.method_scales(parser, bad)
    with pytest.raises(SystemExit):  # a 3D-only method is unknown to the panoramic benchmark
        bench.method_scales(parser, ["bcp_plain=0.03"])
    bench3d = _bench_ssl_synth3d()
    assert bench3d.method_scales(parser, ["bcp_plain=0.03"], bench3d.METHODS_3D) == {"bcp_plain": 0.03}


def test_benchmark_json_shows_paths_without_this_machines_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOTHSEG_SHARED_DATA", str(tmp_path / "data"))
    (tmp_path / "data" / "ct").mkdir(parents=True)
    bench = _benchmark("bench_ufba")
    assert bench.shown(tmp_path / "data" / "ct" / "head.nii.gz") == "shared/data/ct/head.nii.gz"
    assert bench.shown(str(bench.REPO / "runs" / "m" / "model")) == "runs/m/model"
    assert bench.shown("runs/relative") == "runs/relative"
    outside = tmp_path / "elsewhere" / "model"
    assert bench.shown(outside) == str(outside)
    # no shared data: repository paths are still shown
    monkeypatch.setenv("TOOTHSEG_SHARED_DATA", str(tmp_path / "missing"))
    assert bench.shown(str(bench.REPO / "runs" / "m")) == "runs/m"


def test_edge_guided_fit_benchmark_ablations_and_dice():
    """bench_edge_guided_fit.py: its ablations remove what they name, and its Dice is the mean tooth Dice."""
    import torch
    from torch import nn

    bench = _benchmark("bench_edge_guided_fit")
    no_dropout = bench.NETWORKS["edge-guided, Kaiming init, no dropout"](2)
    dropouts = [m for m in no_dropout.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    assert dropouts and all(m.p == 0.0 for m in dropouts)
    assert any(m.p > 0 for m in bench.NETWORKS["edge-guided V-Net"](2).modules()
               if isinstance(m, nn.modules.dropout._DropoutNd))
    no_cbam = bench.NETWORKS["edge-guided, Kaiming init, no dropout/CBAM"](2)
    assert len(no_cbam.edge_attention) == 4 and all(isinstance(a.cbam, nn.Identity) for a in no_cbam.edge_attention)
    default, kaiming = bench.NETWORKS["edge-guided V-Net"](2), bench.NETWORKS["edge-guided, Kaiming init"](2)
    assert kaiming.block_five.conv[0].weight.std() > 2 * default.block_five.conv[0].weight.std()
    mask = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    mask[0, :2] = 1  # 32 tooth voxels
    logits = torch.zeros(1, 2, 4, 4, 4)
    logits[0, 1, :1] = 1.0  # 16 voxels found, all inside the tooth
    assert bench.mean_tooth_dice(logits, mask) == pytest.approx(2 * 16 / (16 + 32))
    # two tooth classes: class 1 as above, class 2 (16 voxels) missed entirely → mean of 2/3 and 0
    mask[0, 3] = 2
    logits = torch.cat([logits, torch.zeros(1, 1, 4, 4, 4)], dim=1)
    assert bench.mean_tooth_dice(logits, mask) == pytest.approx((2 * 16 / 48 + 0.0) / 2)


def test_edge_guided_fit_benchmark_2d_ablations_touch_only_the_cbams_they_name():
    import torch
    from toothseg.core.networks.edge import CBAM
    from torch import nn

    bench = _benchmark("bench_edge_guided_fit")
    kinds = {name: [type(a.cbam) for a in build(5).edge_attention]
             for name, build in bench.NETWORKS_2D.items() if name.startswith("edge-guided")}
    assert bench.NETWORKS_2D["plain U-Net"](5).edge_attention is None
    assert bench.NETWORKS_2D["plain U-Net, LeakyReLU features"](5).edge_attention is None
    assert kinds["edge-guided, LeakyReLU features"] == [CBAM] * 4
    assert kinds["edge-guided U-Net"] == [CBAM] * 4
    assert kinds["edge-guided, no CBAM"] == [nn.Identity] * 4
    assert kinds["edge-guided, CBAM channel gate only"] == [bench._ChannelGateOnly] * 4
    assert kinds["edge-guided, CBAM spatial gate only"] == [bench._SpatialGateOnly] * 4
    assert kinds["edge-guided, CBAM reduction 1"] == [CBAM] * 4
    wide = bench.NETWORKS_2D["edge-guided, CBAM reduction 1"](5).edge_attention
    assert [a.cbam.mlp[0].out_features for a in wide] == [a.cbam.mlp[0].in_features for a in wide] == [64, 32, 16, 16]
    seeds = bench.NETWORKS_2D["edge-guided U-Net"](5).edge_attention
    assert [a.cbam.mlp[0].out_features for a in seeds] == [4, 2, 1, 1]
    assert kinds["edge-guided, residual CBAM"] == [CBAM] * 4
    assert {a.cbam_mode for a in bench.NETWORKS_2D["edge-guided, residual CBAM"](5).edge_attention} == {"residual"}
    assert kinds["edge-guided, no CBAM at the output level"] == [CBAM, CBAM, CBAM, nn.Identity]
    assert kinds["edge-guided, CBAM at the output level only"] == [nn.Identity, nn.Identity, nn.Identity, CBAM]
    # the halves are the CBAM's own two gates, and applied in turn they make the whole CBAM
    torch.manual_seed(0)
    cbam, x = CBAM(16, 2), torch.randn(2, 16, 8, 8)
    channel, spatial = bench._ChannelGateOnly(cbam)(x), bench._SpatialGateOnly(cbam)(x)
    assert not torch.allclose(channel, x) and not torch.allclose(spatial, x) and not torch.allclose(channel, spatial)
    torch.testing.assert_close(bench._SpatialGateOnly(cbam)(channel), cbam(x))
    out = bench.NETWORKS_2D["edge-guided, CBAM spatial gate only"](5)(torch.randn(1, 1, 32, 32))
    assert out.shape == (1, 5, 32, 32)


def test_edge_guided_fit_benchmark_leaky_variants_change_only_the_feature_activations():
    import torch
    from torch import nn

    bench = _benchmark("bench_edge_guided_fit")

    def activations(net: nn.Module) -> dict[str, str]:
        return {name: type(m).__name__ for name, m in net.named_modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))}

    for base, leaky in (("plain U-Net", "plain U-Net, LeakyReLU features"),
                        ("edge-guided U-Net", "edge-guided, LeakyReLU features")):
        torch.manual_seed(0)
        relu_net = bench.NETWORKS_2D[base](5)
        torch.manual_seed(0)
        leaky_net = bench.NETWORKS_2D[leaky](5)
        before, after = activations(relu_net), activations(leaky_net)
        changed = {name for name in before if before[name] != after[name]}
        assert changed and all(".double_conv." in name for name in changed)
        assert all(after[name] == "LeakyReLU" for name in after if ".double_conv." in name)
        assert all(before[name] == after[name] == "ReLU" for name in before if ".double_conv." not in name)
        # the same weights (same seed, same parameters), so only the activation separates the two
        for (n1, p1), (n2, p2) in zip(relu_net.state_dict().items(), leaky_net.state_dict().items(), strict=True):
            assert n1 == n2 and torch.equal(p1, p2)
        x = torch.randn(1, 1, 32, 32)
        assert not torch.allclose(relu_net.eval()(x), leaky_net.eval()(x))


def test_edge_guided_fit_benchmark_counts_the_shut_gates_each_network_applies():
    import torch

    bench = _benchmark("bench_edge_guided_fit")
    image = torch.randn(2, 1, 32, 32)
    nets = {name: bench.NETWORKS_2D[name](3).eval() for name in bench.NETWORKS_2D}
    assert bench.shut_gates(nets["plain U-Net"], image) == {}
    assert bench.shut_gates(nets["edge-guided, no CBAM"], image) == {}
    assert set(bench.shut_gates(nets["edge-guided U-Net"], image)) == {"channel_gates_shut", "spatial_gates_shut"}
    assert set(bench.shut_gates(nets["edge-guided, CBAM channel gate only"], image)) == {"channel_gates_shut"}
    assert set(bench.shut_gates(nets["edge-guided, CBAM spatial gate only"], image)) == {"spatial_gates_shut"}
    net = nets["edge-guided U-Net"]
    with torch.no_grad():
        net.edge_attention[3].cbam.mlp[2].bias.fill_(-100.0)  # the output level's channel gates: all shut
        net.edge_attention[2].cbam.spatial.bias.fill_(100.0)  # one level's spatial gates: all open
    shut = bench.shut_gates(net, image)
    # channel gates per (image, channel): levels of 64, 32, 16, 16 channels; the 16 of the last all shut
    assert shut["channel_gates_shut"] >= 16 / (64 + 32 + 16 + 16)
    assert shut["spatial_gates_shut"] <= 1 - (16 * 16) / (4 * 4 + 8 * 8 + 16 * 16 + 32 * 32)
    assert all(a.cbam._forward_hooks == {} for a in net.edge_attention)  # hooks removed


def test_edge_guided_fit_benchmark_2d_batch_is_bcp_recipes_real_patches():
    bench = _benchmark("bench_edge_guided_fit")
    image, mask, classes = bench.fixed_batch_2d(size=2)
    assert image.shape == (2, 1, 256, 256) and mask.shape == (2, 256, 256) and classes == 33
    assert 0 <= int(mask.min()) and int(mask.max()) < classes and len(mask.unique()) > 10  # many teeth per patch
    again, mask_again, _ = bench.fixed_batch_2d(size=2)
    assert (again == image).all() and (mask_again == mask).all()  # fixed: the same patches every run


def test_edge_guided_fit_benchmark_refuses_an_unknown_network(capsys):
    bench = _benchmark("bench_edge_guided_fit")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--dims", "2", "--network", "plain V-Net"])
    assert exit_info.value.code == 2
    assert "unknown --network 'plain V-Net' for --dims 2" in capsys.readouterr().err


def test_edge_guided_fit_benchmark_trains_and_reports_both_modes():
    import torch

    bench = _benchmark("bench_edge_guided_fit")
    image = torch.randn(2, 1, 16, 16, 16)
    mask = (image[:, 0] > 0.5).long()
    result = bench.fit(bench.NETWORKS["plain V-Net"], image, mask, steps=2, seed=0)
    result_2d = bench.fit(bench.NETWORKS_2D["edge-guided U-Net"], image[:, :, 0], mask[:, 0], steps=2, seed=0,
                          classes=2, optimizer="sgd")
    assert set(result_2d) == set(result) | {"channel_gates_shut", "spatial_gates_shut"}
    assert set(result) == {"seconds", "loss_train", "dice_train", "loss_eval", "dice_eval"}
    assert all(0.0 <= result[k] <= 1.0 for k in ("dice_train", "dice_eval"))
    assert bench.fit(bench.NETWORKS["plain V-Net"], image, mask, steps=2, seed=0)["loss_eval"] == result["loss_eval"]


@pytest.mark.parametrize("bench_name", ["bench_ssl_ufba", "bench_ssl_synth3d"])
def test_ssl_benchmarks_refuse_an_unwritable_output_before_training(tmp_path, monkeypatch, capsys, bench_name):
    """The result is written after hours of training; a folder that cannot take it is refused first."""
    bench = _benchmark(bench_name)
    trained = []
    monkeypatch.setattr(bench, "train", lambda command, run_dir: trained.append(run_dir) or 0.0)
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    out = blocker / "result.json"
    assert bench.main(["--scale", "0.01", "--device", "cpu", "--runs", str(tmp_path / "runs"),
                       "--out", str(out)]) == 1
    assert "cannot create folder" in capsys.readouterr().err
    assert trained == [] and blocker.read_text() == "not a folder" and not (tmp_path / "runs").exists()


def test_benchmark_figures_are_written_atomically(tmp_path):
    """save_figure (all benchmark plots): a PNG on success; a failed save leaves the old file as it was."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bench = _benchmark("bench_ufba")
    figure, axis = plt.subplots()
    axis.plot([0, 1], [0, 1])
    path = tmp_path / "plot.png"
    bench.save_figure(figure, path, dpi=50)
    first = path.read_bytes()
    assert first.startswith(b"\x89PNG")
    plt.close(figure)

    def half_written(target, **kwargs):  # a save interrupted after some bytes
        Path(target).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    figure.savefig = half_written
    with pytest.raises(KeyboardInterrupt):
        bench.save_figure(figure, path)
    assert path.read_bytes() == first and sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]


def test_ufba_summary_gives_the_mean_per_tooth_and_per_x_ray():
    bench = _benchmark("bench_ufba")
    rows = [{"case": "a", "tooth": t, "dice": 0.9, "iou": 0.8, "hd95": 1.0, "in_gt": True, "in_pred": True}
            for t in (11, 12, 13)] + \
           [{"case": "b", "tooth": 11, "dice": 0.3, "iou": 0.2, "hd95": 9.0, "in_gt": True, "in_pred": True},
            {"case": "b", "tooth": 48, "dice": 0.0, "iou": 0.0, "hd95": math.inf, "in_gt": False, "in_pred": True}]
    summary = bench.summarize(rows, 1.0, "f")
    assert summary["mean_tooth_dice"] == pytest.approx((3 * 0.9 + 0.3) / 4)  # 0.75: teeth weigh alike
    assert summary["mean_xray_dice"] == pytest.approx((0.9 + 0.3) / 2)  # 0.6: X-rays weigh alike
    assert summary["false_teeth"] == 1 and summary["teeth"] == 4


def test_paired_gain_interval_is_the_bootstrap_of_the_difference_over_x_rays():
    bench = _benchmark("bench_ufba")

    def rows(dice_per_case):
        return [{"case": case, "tooth": 11 + i, "dice": d, "in_gt": True}
                for case, values in dice_per_case.items() for i, d in enumerate(values)] + \
               [{"case": "a", "tooth": 48, "dice": 0.0, "in_gt": False}]  # a false tooth: not in the mean

    baseline = rows({"a": [0.5, 0.7], "b": [0.6], "c": [0.2, 0.4, 0.6]})
    assert bench.paired_gain_interval(baseline, baseline) == (0.0, 0.0)
    better = rows({"a": [0.6, 0.8], "b": [0.7], "c": [0.3, 0.5, 0.7]})  # + 0.1 on every tooth
    assert bench.paired_gain_interval(better, baseline) == pytest.approx((0.1, 0.1))
    mixed = rows({"a": [0.9, 0.9], "b": [0.1], "c": [0.2, 0.4, 0.6]})  # case-dependent: an interval around 0
    low, high = bench.paired_gain_interval(mixed, baseline)
    assert low < 0 < high
    with pytest.raises(ValueError):
        bench.paired_gain_interval(rows({"x": [0.5]}), baseline)
    # one row per case (the 3D bench's scans): the interval of the mean over cases
    scans = [{"case": c, "image_dsc": d} for c, d in (("s1", 0.80), ("s2", 0.85), ("s3", 0.90))]
    shifted = [{**r, "image_dsc": r["image_dsc"] - 0.05} for r in scans]
    assert bench.paired_gain_interval(shifted, scans, value="image_dsc") == pytest.approx((-0.05, -0.05))


def test_ufba_bench_reports_each_models_gain_over_a_named_baseline(tmp_path, monkeypatch, capsys):
    """bench_ufba.py --baseline NAME: every other model gets its gain in mean tooth Dice over NAME and the
    paired interval; a name that is not a --model is refused before anything is scored."""
    bench = _benchmark("bench_ufba")
    dice = {"sup": 0.5, "ssl": 0.6}
    monkeypatch.setattr(bench, "ufba_cases", lambda subset: ["x1", "x2"])
    monkeypatch.setattr(bench, "plot", lambda rows, names, path: None)

    def score(name, folder, cases, device, tta, outlines=False):
        rows = [{"model": name, "case": c, "tooth": 11, "dice": dice[name], "in_gt": True} for c in cases]
        return {"mean_tooth_dice": dice[name], "mean_xray_dice": dice[name], "incisors": 0.5, "canines": 0.5,
                "premolars": 0.5, "molars": 0.5, "teeth_with_iou_over_0.5": 0.5, "median_hd95_px": 3.0,
                "false_teeth": 0}, rows

    monkeypatch.setattr(bench, "score_model", score)
    out = tmp_path / "r.json"
    assert bench.main(["--model", "sup=a", "--model", "ssl=b", "--baseline", "sup", "--out", str(out)]) == 0
    models = json.loads(out.read_text())["models"]
    assert models["ssl"]["gain_over_sup"] == pytest.approx(0.1)
    assert models["ssl"]["gain_ci95"] == pytest.approx([0.1, 0.1])
    assert "gain_ci95" not in models["sup"] and "gain +0.1000 [+0.100, +0.100]" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--model", "sup=a", "--baseline", "other", "--out", str(tmp_path / "s.json")])
    assert not (tmp_path / "s.json").exists()


def test_ssl_benchmark_trains_and_scores_fresh_runs_end_to_end(tmp_path):
    """The whole bench on the real UFBA-425 X-rays, at a tiny scale (one step per stage, 8 channels, 2 test
    X-rays): fresh run folders train, the result JSON holds both models with a gain interval. Unit tests
    of its parts passed while every fresh run failed; this runs it as a user does (about 45 s)."""
    runs, out = tmp_path / "runs", tmp_path / "result.json"
    command = [sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / "bench_ssl_ufba.py"),
               "--method", "mean_teacher", "--fraction", "0.1", "--scale", "0.002",
               "--set", "model.kwargs.base_channels=8", "--device", "cpu", "--limit", "2",
               "--runs", str(runs), "--out", str(out)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["models"]) == {"supervised 10%", "mean_teacher 10%"}
    assert len(result["models"]["mean_teacher 10%"]["gain_ci95"]) == 2
    for name in ("supervised_10", "mean_teacher_10"):
        assert (runs / name / "recipe.yaml").exists() and (runs / name / "model" / "model.json").exists()
        assert "steps in" in (runs / f"{name}.bench_train.log").read_text()
        assert result["runs"][f"{name.split('_10')[0]} 10%"]["train_seconds_logged"] > 0
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
