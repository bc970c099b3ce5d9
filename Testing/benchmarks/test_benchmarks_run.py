"""The benchmark scripts still run, at tiny sizes, and write the figures they promise.

These are the commands a GPU session runs for the speed figures, and a benchmark that broke
silently (as ``bench_ssl_ufba.py`` once did) costs that session. No figure here is timed or
compared with a goal: the assertions are about what each script computes (agreement with MONAI,
parameter counts, forward passes), not about how fast it ran on this machine.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from toothseg.core.models.catalog import load_catalog

BENCHMARKS = Path(__file__).resolve().parent


def run_bench(script: str, *args: str, out: Path, timeout: int = 600) -> list | dict:
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args, "--json", str(out)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "|" in proc.stdout or "peak resident memory" in proc.stdout, "the figures are printed"
    return json.loads(out.read_text(encoding="utf-8"))


def test_bench_networks_measures_the_architecture_it_names(tmp_path):
    from toothseg.core.networks import build_network

    report = run_bench("bench_networks.py", "--only", "unet2d", out=tmp_path / "n.json")
    rows = report["results"]
    assert rows and all(row["architecture"] == "unet2d" for row in rows)
    expected = sum(p.numel() for p in build_network("unet2d", num_classes=33).parameters())
    for row in rows:
        assert row["parameters"] == expected
        assert row["seconds"] > 0 and row["peak_rss_gib"] > 0


def test_bench_training_takes_a_real_step(tmp_path):
    report = run_bench("bench_training.py", "--only", "mim_pretrain", "--steps", "1", out=tmp_path / "t.json")
    (row,) = report["results"]
    assert row["method"] == "mim_pretrain" and row["device"] == "cpu"
    assert math.isfinite(row["seconds_per_step"]) and row["seconds_per_step"] > 0
    assert row["trainable_parameters"] > 1_000_000


def test_bench_inference_monai_agrees_with_monai(tmp_path):
    (report,) = run_bench("bench_inference.py", "monai", "--shape", "24", "40", "40", "--patch", "16", "16", "16",
                          "--classes", "5", out=tmp_path / "m.json")
    runs = report["runs"]
    assert set(runs) == {"monai", "exact", "ours"}
    assert report["settings"]["shape"] == [24, 40, 40]
    assert report["max_abs_diff_float32"] < 1e-4  # the "equal within 1e-4"
    assert 0 < report["max_abs_diff_float16"] < 5e-3  # float16 accumulators: float16's resolution, not more
    assert all(run["peak_gib"] > 0 for run in runs.values())


def test_bench_inference_whole_pipelines_run_small(tmp_path):
    (xray,) = run_bench("bench_inference.py", "xray", "--xray-size", "200", "400", out=tmp_path / "x.json")
    assert xray["run"]["size_rows_cols"] == [200, 400] and xray["run"]["peak_gib"] > xray["run"]["baseline_gib"]
    (large,) = run_bench("bench_inference.py", "large", "--size", "64", "64", "40", out=tmp_path / "l.json")
    assert large["run"]["size_xyz"] == [64, 64, 40] and large["run"]["forward_passes"] >= 1


def test_bench_inference_fullfield_runs_small(tmp_path):
    """The clinician's full-field benchmark on a small field (the goal figures come from 640 x 640 x 400):
    the bundled model as segment runs it, scored, its peak memory its own."""
    (report,) = run_bench("bench_inference.py", "fullfield", "--size", "96", "96", "64", "--spacing", "1.5",
                          out=tmp_path / "f.json", timeout=900)
    run = report["run"]
    assert report["settings"]["size_xyz"] == [96, 96, 64] and run["shape_zyx"] == [64, 96, 96]
    assert run["peak_gib"] > run["baseline_gib"] > 0 and run["seconds"] >= run["read_seconds"]
    assert 0 <= run["postprocessing_seconds"] <= run["seconds"] - run["read_seconds"]
    assert report["settings"]["model"] == run["model"] == load_catalog(include_user=False).default("3d").id
    assert set(run["metrics"]) >= {"instance_dsc", "ia"}


@pytest.mark.slow
def test_bench_inference_cascade_runs_fewer_windows_and_scores_both_paths(tmp_path):
    """About 80 s here: the bundled models work at their own spacing whatever the scan's."""
    (report,) = run_bench("bench_inference.py", "cascade", "--spacing", "1.5", out=tmp_path / "c.json", timeout=1200)
    full, cascade = report["runs"]["full"], report["runs"]["cascade"]
    assert cascade["forward_passes"] < full["forward_passes"]
    assert 0 < cascade["coarse"]["roi_fraction"] < 1
    for run in (full, cascade):
        assert set(run["metrics"]) >= {"image_dsc", "instance_dsc", "ia"}
    assert report["time_ratio"] == pytest.approx(full["seconds"] / cascade["seconds"])


def test_bench_ufba_says_what_went_wrong_with_each_tooth(tmp_path):
    """Every ground-truth tooth gets an error kind (or none), and the kinds are counted per model; a model
    that numbers every tooth one place off is all ``neighbour_number``, one that finds nothing all ``missed``."""
    sys.path.insert(0, str(BENCHMARKS))
    import numpy as np
    from bench_ufba import error_kind, majority_labels

    truth = np.zeros((1, 10, 40), np.uint8)
    for i, tooth in enumerate((13, 12, 11, 21)):
        truth[0, 2:8, 2 + 9 * i:9 + 9 * i] = tooth
    shifted = np.where(truth == 13, 12, np.where(truth == 12, 11, np.where(truth == 11, 21, truth)))
    majority = majority_labels(truth, shifted)
    assert [error_kind(t, 0.0, majority[t]) for t in (13, 12, 11)] == ["neighbour_number", "neighbour_number",
                                                                     "other_quadrant"]
    assert error_kind(21, 0.0, majority_labels(truth, np.zeros_like(truth))[21]) == "missed"
    assert error_kind(21, 0.0, 37) == "other_number"
    assert (error_kind(21, 0.7, 21), error_kind(21, 0.95, 21)) == ("outline", "")

    out = tmp_path / "u.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "bench_ufba.py"), "--subset", "val", "--limit", "2",
                           "--device", "cpu", "--model", "small=toothseg-panoramic-demo", "--outlines",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    summary = report["models"]["small"]
    truth_rows = [row for row in report["teeth"] if row["in_gt"]]
    assert sum(summary["errors"].values()) == sum(1 for row in truth_rows if row["error"])
    assert all((row["error"] == "") == (row["dice"] >= 0.8) for row in truth_rows)
    outlines = summary["outlines"]
    assert outlines["teeth"] == sum(1 for row in truth_rows if row["dice"] >= 0.8)
    assert outlines["grid"] == [256, 256]  # the demo: 2-unit spacing over a 512-unit whole-image extent
    assert 0.9 < outlines["grid_ceiling_tooth_dice"] <= 1.0
    assert sum(outlines["wrong_pixels_by_third_apex_middle_crown"]) == pytest.approx(1.0, abs=1e-3)


def test_outline_errors_find_the_apex_and_the_neighbour():
    """A tooth drawn short at its apex has its wrong pixels in the apical third, against background, for an
    upper tooth (apex at the top) and a lower one (apex at the bottom) alike; a pixel given to a neighbour
    counts as between teeth; a tooth under Dice 0.8 is left out; an aligned map survives a grid half its
    size, a one-pixel-wide tooth does not."""
    sys.path.insert(0, str(BENCHMARKS))
    import numpy as np
    from bench_ufba import grid_ceiling, outline_errors

    truth = np.zeros((1, 40, 40), np.uint8)
    truth[0, 4:34, 2:10], truth[0, 4:34, 12:20], truth[0, 4:34, 22:30] = 11, 41, 12
    predicted = truth.copy()
    predicted[0, 4:7, 2:10] = 0          # upper tooth 11: three rows short at the top, its apex
    predicted[0, 31:34, 12:20] = 0       # lower tooth 41: three rows short at the bottom, its apex
    predicted[0, 20, 9] = 12             # one pixel of 11 given to its neighbour
    parts = outline_errors(truth, predicted, {11: 0.95, 41: 0.94, 12: 0.99})
    assert parts["by_third"] == [2 * 3 * 8, 2, 0]    # the given pixel: in the middle of 11 and of 12
    assert parts["wrong_pixels"] == [2 * 3 * 8, 2]   # the given pixel is wrong for 11 and for 12
    assert sorted(round(r, 3) for r in parts["area_ratio"]) == [round(215 / 240, 3), round(216 / 240, 3),
                                                                round(241 / 240, 3)]
    assert outline_errors(truth, predicted, {11: 0.5})["area_ratio"] == []
    assert grid_ceiling(truth, (20, 20)) == pytest.approx([1.0, 1.0, 1.0])
    thin = np.zeros((1, 40, 40), np.uint8)
    thin[0, 4:34, 5] = 11
    assert grid_ceiling(thin, (20, 20))[0] < 0.8


def test_smoke_real_ct_reports_the_crown_share_and_draws_where_the_voxels_are(tmp_path):
    """On the real head CT, a 'prediction' of every voxel above 1500 HU in the lowest 6 slices, one slab at root
    height (numbered as a lower tooth) and one far above: the reported shares in the crown slices and within a
    tooth's reach are those of the voxels put there, the lower-jaw number is reported, and the picture is drawn."""
    import numpy as np
    from toothseg.core.io import read_volume, write_volume
    from toothseg.train.data.cases import shared_data_dir

    ct = read_volume(shared_data_dir() / "ct" / "Cranium_ProMED_CT_0051.nii.gz")
    found = np.zeros(ct.array.shape, np.uint8)
    found[:6][ct.array[:6] > 1500] = 1
    found[12:14][ct.array[12:14] > 1000] = 36  # a lower-jaw number on a CT of the upper jaw: a numbering error
    found[50:52][ct.array[50:52] > 1500] = 1
    expected = float((found[:6] > 0).sum()) / float((found > 0).sum())
    reach = float((found[:18] > 0).sum()) / float((found > 0).sum())
    write_volume(ct.with_array(found), tmp_path / "found.nii.gz")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "smoke_real_ct.py"), "--prediction",
                           str(tmp_path / "found.nii.gz"), "--json", str(tmp_path / "s.json"), "--picture",
                           str(tmp_path / "s.png")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "s.json").read_text())
    assert abs(report["share_in_lowest_slices"] - expected) < 1e-3 and 0 < expected < 1
    assert abs(report["share_in_tooth_slices"] - reach) < 1e-3 and expected < reach < 1
    assert report["labels"] == [1, 36] and report["lower_jaw_numbers"] == [36]
    assert (tmp_path / "s.png").stat().st_size > 5000
    refused = subprocess.run([sys.executable, str(BENCHMARKS / "smoke_real_ct.py"), "--prediction",
                              str(tmp_path / "found.nii.gz"), "--tooth-slices", "4"], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 2 and "--tooth-slices 4" in refused.stderr and "Traceback" not in refused.stderr
    # --jaws is the post-processing's: with a prediction made elsewhere it would be ignored silently
    ignored = subprocess.run([sys.executable, str(BENCHMARKS / "smoke_real_ct.py"), "--prediction",
                              str(tmp_path / "found.nii.gz"), "--jaws", "upper"], capture_output=True, text=True,
                             timeout=300)
    assert ignored.returncode == 2 and "--jaws upper" in ignored.stderr and "Traceback" not in ignored.stderr


def test_bench_tooth_separation_splits_the_merged_real_teeth(tmp_path):
    """Validation_0001 (the unit tests use 0002) as a binary map at 1.25 mm: without the split its teeth come
    back as a few instances, with it nearly whole; the true boundary gives the same with or without it."""
    out = tmp_path / "sep.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "bench_tooth_separation.py"), "--spacing", "1.2",
                           "--patient", "sts2024-0001", "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {(r["patient"], r["input"], r["max_tooth_mm3"]): r for r in json.loads(out.read_text())["rows"]}
    for patient in ("sts2024-0001",):
        merged, split = rows[(patient, "binary", 0.0)], rows[(patient, "binary", 800.0)]
        assert merged["instances"] <= 5 and merged["instance_dice"] < 0.35
        assert split["instances"] >= 0.9 * split["teeth"] and split["instance_dice"] > 0.9
        assert rows[(patient, "boundary", 0.0)]["instance_dice"] == rows[(patient, "boundary", 800.0)]["instance_dice"]


def test_bench_cbct_generalisation_tells_missed_roots_from_missed_crowns():
    """An upper tooth points its crown down and a lower one up (LPS, superior last): a map of the crowns only
    is all occlusal recall, and the same map read with the jaws swapped would be all apical."""
    sys.path.insert(0, str(BENCHMARKS))
    import numpy as np
    from bench_cbct_generalisation import half_recalls
    from toothseg.core.volume import Volume

    truth = np.zeros((20, 5, 5), np.uint16)
    truth[2:10, 2, 2], truth[10:18, 2, 2] = 11, 31  # upper incisor below its root, lower one above
    crowns = np.zeros_like(truth)
    crowns[2:6, 2, 2], crowns[14:18, 2, 2] = 11, 31
    assert half_recalls(Volume(truth, spacing=(1, 1, 1)), Volume(crowns, spacing=(1, 1, 1))) == (1.0, 0.0)
    swapped = np.where(truth == 11, 41, np.where(truth == 31, 21, 0)).astype(np.uint16)
    assert half_recalls(Volume(swapped, spacing=(1, 1, 1)), Volume(crowns, spacing=(1, 1, 1))) == (0.0, 1.0)
    flipped = Volume(truth[::-1].copy(), spacing=(1, 1, 1), direction=np.diag([1.0, 1.0, -1.0]))
    assert half_recalls(flipped, Volume(crowns[::-1].copy(), spacing=(1, 1, 1),
                                        direction=np.diag([1.0, 1.0, -1.0]))) == (1.0, 0.0)


def test_bench_cbct_generalisation_says_where_the_instance_dice_is_lost():
    """Two teeth found perfectly but numbered the wrong way round lose everything to the numbering; the same
    two found as one piece lose half to the separation; a map that misses half a tooth caps what any
    separation could reach."""
    sys.path.insert(0, str(BENCHMARKS))
    import numpy as np
    from bench_cbct_generalisation import loss_breakdown

    truth = np.zeros((6, 6, 12), np.uint8)
    truth[1:5, 1:5, 1:5], truth[1:5, 1:5, 7:11] = 11, 12
    swapped = np.where(truth == 11, 12, np.where(truth == 12, 11, 0)).astype(np.uint8)
    parts = loss_breakdown(truth, swapped, truth > 0)
    assert parts["instance_dsc"] == 0.0 and parts["best_numbers_instance_dsc"] == 1.0
    assert parts["map_limit_instance_dsc"] == 1.0
    merged = np.where(truth > 0, 11, 0).astype(np.uint8)
    merged[1:5, 1:5, 5:7] = 11  # the gap between them drawn as tooth too
    parts = loss_breakdown(truth, merged, merged > 0)
    assert parts["best_numbers_instance_dsc"] < 0.5 and parts["map_limit_instance_dsc"] == 1.0
    half = truth.copy()
    half[1:5, 1:5, 9:11] = 0
    parts = loss_breakdown(truth, half, half > 0)
    assert parts["best_numbers_instance_dsc"] == parts["map_limit_instance_dsc"] < 0.95
    assert parts["map_image_dsc"] == pytest.approx(2 * 96 / (128 + 96))


def test_bench_cbct_generalisation_gives_each_mean_and_each_gain_an_interval_over_the_scans():
    """A second model 0.05 better on every scan gains exactly 0.05 with no spread; one better on some scans and
    worse on others gets a gain interval across 0; each mean's interval holds the mean; two models scored on
    different scans are refused rather than compared."""
    sys.path.insert(0, str(BENCHMARKS))
    from bench_cbct_generalisation import with_intervals

    def result(model, values, ia=0.1, prefix="p/hu"):
        return {"model": model, "rows": [{"case": f"{prefix}/{i}", "instance_dsc": v, "ia": ia}
                                         for i, v in enumerate(values)]}

    base = result("base", [0.2, 0.4, 0.3, 0.5])
    better = result("better", [0.25, 0.45, 0.35, 0.55])
    mixed = result("mixed", [0.4, 0.2, 0.5, 0.3])
    results = [base, better, mixed]
    with_intervals(results)
    low, high = base["overall"]["instance_dsc_ci95"]
    assert base["overall"]["scans"] == 4 and base["overall"]["instance_dsc"] == pytest.approx(0.35)
    assert low < 0.35 < high
    assert "compared_with" not in base["overall"]
    assert better["overall"]["compared_with"] == "base"
    assert better["overall"]["instance_dsc_gain"] == pytest.approx(0.05)
    assert better["overall"]["instance_dsc_gain_ci95"] == pytest.approx([0.05, 0.05])
    assert better["overall"]["ia_gain_ci95"] == pytest.approx([0.0, 0.0])
    low, high = mixed["overall"]["instance_dsc_gain_ci95"]
    assert mixed["overall"]["instance_dsc_gain"] == pytest.approx(0.0) and low < 0 < high
    with pytest.raises(ValueError, match="share no scored scan"):
        with_intervals([base, result("elsewhere", [0.3], prefix="q/rtk")])


def test_the_grid_limit_is_what_a_coarser_grid_can_hold():
    """Teeth on even voxels survive a grid twice as coarse but for their corners (trilinear rounds them); a tooth
    one voxel thin does not."""
    sys.path.insert(0, str(BENCHMARKS))
    import numpy as np
    from bench_cbct_generalisation import grid_limit_dsc

    truth = np.zeros((8, 8, 16), np.uint8)
    truth[2:6, 2:6, 2:6], truth[2:6, 2:6, 8:14] = 11, 12
    assert 0.9 < grid_limit_dsc(truth, (0.6, 0.6, 0.6), (1.2, 1.2, 1.2)) < 1.0
    thin = np.zeros((8, 8, 16), np.uint8)
    thin[2:6, 3, 2:14] = 11
    assert grid_limit_dsc(thin, (0.6, 0.6, 0.6), (1.2, 1.2, 1.2)) < 0.5


def test_bench_cbct_generalisation_refuses_an_unknown_model_before_scoring(tmp_path):
    """A typo in the second --model is said at once, in one line, before an hour of scoring the first."""
    command = [sys.executable, str(BENCHMARKS / "bench_cbct_generalisation.py"), "--model",
               "toothseg-cbct-binary-lopo-long", "--model", "no-such-model", "--out", str(tmp_path / "r.json")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no model 'no-such-model' in the catalogue" in proc.stderr
    assert "Traceback" not in proc.stderr and "toothseg-cbct-binary-lopo-long:" not in proc.stdout
    assert not (tmp_path / "r.json").exists()


def test_bench_map_with_contacts_cuts_one_map_with_the_other_models_contacts():
    """The map model decides what is tooth in every variant; the contact model only where its teeth meet
    (map+contacts) or where they are seeded (map+cores). Two teeth joined in the map come apart through the
    contacts, and a contact model that draws no contact leaves the map as it was."""
    sys.path.insert(0, str(BENCHMARKS))
    import numpy as np
    from bench_map_with_contacts import class_maps
    from toothseg.core.postprocessing.instances import separate_instances

    tooth_map = np.zeros((6, 6, 14), np.uint8)
    tooth_map[1:5, 1:5, 1:13] = 1  # two teeth of 6 voxels each, joined
    contacts = np.zeros_like(tooth_map)
    contacts[1:5, 1:5, 1:13] = 1
    contacts[1:5, 1:5, 6:8] = 2  # where they meet
    contacts[0, 0, 0] = 1  # tooth the map does not have: stays background
    maps = class_maps(tooth_map, contacts)
    assert all(maps[name][0, 0, 0] == 0 for name in ("map", "map+contacts", "map+cores"))
    assert np.array_equal(maps["map"] > 0, tooth_map > 0) and np.array_equal(maps["map+contacts"] > 0, tooth_map > 0)
    spacing = (1.0, 1.0, 1.0)
    assert separate_instances(maps["map"], spacing, min_seed_mm3=1, max_tooth_mm3=0).max() == 1
    assert separate_instances(maps["map+contacts"], spacing, min_seed_mm3=1, max_tooth_mm3=0).max() == 2
    assert separate_instances(maps["map+cores"], spacing, min_seed_mm3=1, max_tooth_mm3=0).max() == 2
    none = class_maps(tooth_map, np.where(contacts == 2, 1, contacts).astype(np.uint8))
    assert np.array_equal(none["map+contacts"], maps["map"])
