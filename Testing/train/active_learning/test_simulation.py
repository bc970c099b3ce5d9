"""The active-learning simulation benchmark on toy data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from toothseg.core.pool.store import CasePool
from toothseg.train.data.cases import Case, write_manifest

from ..conftest import toy_recipe
from .helpers import make_cases


def test_the_simulation_benchmark_runs_end_to_end_on_toy_data(tmp_path):
    """The UFBA-425 benchmark's code path, on 12 toy images with a few training steps (figures meaningless)."""
    bench = _bench_active_learning()
    cases = make_cases(tmp_path / "data", 12)
    write_manifest(tmp_path / "train.json", [Case(c, i, lab) for c, (i, lab) in list(cases.items())[:9]])
    write_manifest(tmp_path / "test.json", [Case(c, i, lab) for c, (i, lab) in list(cases.items())[9:]])
    recipe = toy_recipe(tmp_path)
    recipe["name"] = "toy-sim"
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    arguments = ["--train-manifest", str(tmp_path / "train.json"), "--test-manifest", str(tmp_path / "test.json"),
                 "--strategies", "entropy,random", "--start", "2", "-k", "2", "--rounds", "2",
                 "--recipe", str(tmp_path / "recipe.yaml"), "--iterations", "2", "--first-iterations", "3",
                 "--device", "cpu", "--out", str(out), "--set", "seed=3"]
    assert bench.main(arguments) == 0
    results = json.loads((out / "active_learning.json").read_text())
    assert results["settings"]["recipe_overrides"] == ["seed=3"]
    for strategy in ("entropy", "random"):
        points = results["curves"][strategy]["points"]
        assert [p[0] for p in points] == [2, 4, 6] and all(0.0 <= p[1] <= 1.0 for p in points)
        state = CasePool(out / strategy).read()
        assert sum(c.status == "corrected" for c in state.cases.values()) == 6
    assert results["curves"]["entropy"]["points"][0] == results["curves"]["random"]["points"][0]  # same start
    assert set(results["corrections_to_reach_random_final"]) == {"entropy", "random"}
    assert results["corrections_to_reach_random_final"]["random"] <= 6
    assert (out / "active_learning.png").stat().st_size > 1000
    assert bench.corrections_to_reach([(5, 0.5), (10, 0.7), (15, 0.8)], 0.7) == 10
    # a stopped run resumes: finished strategies are kept, the unfinished one is run again
    partial = json.loads((out / "partial.json").read_text())
    partial["curves"]["entropy"]["points"][-1][1] = 0.123  # a mark no training would give
    del partial["curves"]["random"]
    (out / "partial.json").write_text(json.dumps(partial))
    assert bench.main(arguments) == 0
    again = json.loads((out / "active_learning.json").read_text())
    assert again["curves"]["entropy"]["points"][-1][1] == 0.123
    assert [p[0] for p in again["curves"]["random"]["points"]] == [2, 4, 6]
    assert list(again["curves"]) == ["entropy", "random"]
    # another setting: nothing of the earlier run is taken
    assert bench.main([*arguments, "--iterations", "1"]) == 0
    other = json.loads((out / "active_learning.json").read_text())
    assert other["settings"]["iterations"] == 1 and other["curves"]["entropy"]["points"][-1][1] != 0.123
    assert bench.corrections_to_reach([(5, 0.5)], 0.7) is None


def test_simulation_runs_with_other_seeds_are_averaged_and_unlike_runs_refused(tmp_path, capsys):
    bench = _bench_active_learning()
    a = _simulation_result(0, {"entropy": [0.2, 0.3, 0.4], "random": [0.2, 0.4, 0.5]})
    b = _simulation_result(1, {"entropy": [0.4, 0.5, 0.7], "random": [0.4, 0.5, 0.6]})
    combined = bench.combine([a, b])
    assert combined["settings"]["seed"] == [0, 1]
    assert combined["curves"]["entropy"]["points"] == [(5, 0.3), (10, 0.4), (15, 0.55)]
    assert combined["curves"]["random"]["std"] == [0.1, 0.05, 0.05]
    assert combined["random_final_dice"] == 0.55
    assert combined["corrections_to_reach_random_final"] == {"entropy": 15, "random": 15}
    # paired by seed: entropy - random is (0, -0.1, -0.1) and (0, 0, 0.1); t(0.975, 1 df) = 12.706
    gain = combined["gain_over_random"]["entropy"]
    assert [g["labeled"] for g in gain] == [5, 10, 15] and "random" not in combined["gain_over_random"]
    assert [g["mean"] for g in gain] == pytest.approx([0.0, -0.05, 0.0], abs=1e-4)
    assert gain[1]["ci95"] == pytest.approx([-0.05 - 0.6353, -0.05 + 0.6353], abs=1e-3)
    assert gain[2]["ci95"] == pytest.approx([-1.2706, 1.2706], abs=1e-3)
    files = []
    for i, run in enumerate((a, b)):
        files.append(tmp_path / f"run{i}.json")
        files[-1].write_text(json.dumps(run))
    assert bench.main(["--combine", *map(str, files), "--out", str(tmp_path / "both")]) == 0
    written = json.loads((tmp_path / "both" / "active_learning_seeds.json").read_text())
    assert written["curves"]["entropy"]["per_seed"]["1"] == b["curves"]["entropy"]["points"]
    assert (tmp_path / "both" / "active_learning_seeds.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "entropy: reaches random's final Dice 0.5500 after 15" in printed
    assert "entropy minus random, mean over seeds [95 % interval]: 5: +0.000" in printed
    with pytest.raises(ValueError, match="more than the seed"):
        bench.combine([a, _simulation_result(1, {"entropy": [0.4, 0.5, 0.7], "random": [0.4, 0.5, 0.6]},
                                             iterations=300)])
    with pytest.raises(ValueError, match="same seed"):
        bench.combine([a, a])
    with pytest.raises(ValueError, match="other rounds"):
        bench.combine([a, _simulation_result(1, {"entropy": [0.4, 0.5], "random": [0.4, 0.5, 0.6]})])
    with pytest.raises(ValueError, match="different strategies"):
        bench.combine([a, _simulation_result(1, {"entropy": [0.4, 0.5, 0.7]})])
    not_a_result = tmp_path / "list.json"
    not_a_result.write_text("[1, 2]")
    for other in (tmp_path / "missing.json", not_a_result):  # a usage error, not a traceback
        with pytest.raises(SystemExit):
            bench.main(["--combine", str(files[0]), str(other), "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    assert bench.main(["--combine", *map(str, files), "--out", str(blocker / "out")]) == 1
    assert "cannot write to" in capsys.readouterr().err and blocker.read_text() == "not a folder"
    assert json.loads(files[0].read_text()) == a  # the inputs are never touched


def _bench_active_learning():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_active_learning", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_active_learning.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _simulation_result(seed: int, curves: dict[str, list[float]], **settings) -> dict:
    return {"settings": {"start": 5, "k": 5, "rounds": 2, "iterations": 150, "seed": seed, "test_cases": 66,
                         **settings},
            "curves": {s: {"points": [[5 + 5 * i, d] for i, d in enumerate(dice)], "seconds": 1.0}
                       for s, dice in curves.items()}}
