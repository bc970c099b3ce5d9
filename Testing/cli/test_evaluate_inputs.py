"""`toothseg evaluate` on awkward inputs: other grids, `--strict`, unreadable and missing files, the
`.seg.nrrd` files `toothseg segment` writes, and cases with more than one file."""

from __future__ import annotations

import json
import logging

import numpy as np
import SimpleITK as sitk

from toothseg.cli import main
from toothseg.core.io import write_volume
from toothseg.core.io.images import volume_to_sitk

from ..conftest import ellipsoid_teeth


def _padded(path, margin: int = 3) -> None:
    """The ground truth on a larger grid with another origin: the same teeth in the same place."""
    image = volume_to_sitk(ellipsoid_teeth())
    sitk.WriteImage(sitk.ConstantPad(image, [margin] * 3, [margin + 1] * 3, 0), str(path))


def _scores(path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_a_prediction_on_another_grid_is_resampled_with_a_warning(tmp_path, caplog):
    write_volume(ellipsoid_teeth(), tmp_path / "gt.nii.gz")
    _padded(tmp_path / "pred.nii.gz")
    with caplog.at_level(logging.WARNING, logger="toothseg"):
        assert main(["evaluate", str(tmp_path / "gt.nii.gz"), str(tmp_path / "pred.nii.gz"), "--protocol",
                     "sts2024", "--json", str(tmp_path / "m.json")]) == 0
    assert "resampled onto the ground-truth grid" in caplog.text
    scores = _scores(tmp_path / "m.json")
    assert scores["image_dsc"] == 1.0 and scores["instance_dsc"] == 1.0 and scores["problems"] == []


def test_strict_refuses_one_pair_and_writes_nothing(tmp_path, capsys):
    write_volume(ellipsoid_teeth(), tmp_path / "gt.nii.gz")
    _padded(tmp_path / "pred.nii.gz")
    assert main(["evaluate", str(tmp_path / "gt.nii.gz"), str(tmp_path / "pred.nii.gz"), "--strict",
                 "--json", str(tmp_path / "m.json")]) == 1
    assert "does not match the ground truth" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_one_pair_with_a_missing_or_unreadable_prediction_is_an_error(tmp_path, capsys):
    write_volume(ellipsoid_teeth(), tmp_path / "gt.nii.gz")
    assert main(["evaluate", str(tmp_path / "gt.nii.gz"), str(tmp_path / "typo.nii.gz")]) == 1
    assert "typo.nii.gz: no such file" in capsys.readouterr().err
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    assert main(["evaluate", str(tmp_path / "gt.nii.gz"), str(tmp_path / "broken.nii.gz")]) == 1
    assert "broken.nii.gz" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), str(tmp_path / "gt.nii.gz")]) == 1  # folder against a file
    assert "must be" in capsys.readouterr().err


def test_folders_score_every_case_they_can_and_report_the_others(tmp_path, capsys):
    """Perfect case, a prediction on another grid refused by --strict, an unreadable prediction, an
    unreadable ground truth, and a prediction stored as .seg.nrrd (what `toothseg segment` writes)."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    teeth = ellipsoid_teeth()
    for case in ("perfect", "other_grid", "broken_pred", "broken_gt", "segmentation"):
        write_volume(teeth, gt_dir / f"{case}.nii.gz")
    (gt_dir / "broken_gt.nii.gz").write_bytes(b"not an image")
    write_volume(teeth, pred_dir / "perfect.nii.gz")
    write_volume(teeth, pred_dir / "broken_gt.nii.gz")
    _padded(pred_dir / "other_grid.nii.gz")
    (pred_dir / "broken_pred.nii.gz").write_bytes(b"not an image")
    assert main(["convert", str(gt_dir / "segmentation.nii.gz"), str(pred_dir / "segmentation.seg.nrrd")]) == 0

    out = tmp_path / "m.json"
    assert main(["evaluate", str(gt_dir), str(pred_dir), "--protocol", "sts2024", "--strict",
                 "--json", str(out)]) == 0
    scores = _scores(out)
    problems = {p["case"]: p["problem"] for p in scores["problems"]}
    assert set(problems) == {"other_grid", "broken_pred", "broken_gt"}
    assert problems["broken_gt"].startswith("ground truth skipped")
    assert "does not match" in problems["other_grid"] and problems["other_grid"].endswith("(counted as empty)")
    assert problems["broken_pred"].endswith("(counted as empty)")
    by_case = {row["case"]: row for row in scores["cases"]}
    assert set(by_case) == {"perfect", "other_grid", "broken_pred", "segmentation"}
    assert by_case["perfect"]["image_dsc"] == by_case["segmentation"]["image_dsc"] == 1.0
    assert by_case["other_grid"]["image_dsc"] == by_case["broken_pred"]["image_dsc"] == 0.0
    assert np.isclose(scores["image_dsc"], 0.5)
    assert "problems (3):" in capsys.readouterr().out

    # Without --strict the other grid is resampled and scores like the original.
    assert main(["evaluate", str(gt_dir), str(pred_dir), "--protocol", "sts2024", "--json", str(out)]) == 0
    assert {row["case"]: row for row in _scores(out)["cases"]}["other_grid"]["image_dsc"] == 1.0


def test_a_score_file_never_replaces_an_input(tmp_path, capsys):
    gt = write_volume(ellipsoid_teeth(), tmp_path / "gt.nii.gz")
    pred = write_volume(ellipsoid_teeth(), tmp_path / "p.nrrd")
    before = pred.read_bytes()
    for option in ("--json", "--csv"):
        assert main(["evaluate", str(gt), str(pred), option, str(pred)]) == 1
        assert f"{option} {pred} is also PRED; write it elsewhere" in capsys.readouterr().err
    assert pred.read_bytes() == before
    assert main(["evaluate", str(gt), str(pred), "--json", str(tmp_path / "s"), "--csv", str(tmp_path / "s")]) == 1
    assert "--csv" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_a_case_with_two_prediction_files_is_refused(tmp_path, capsys):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    write_volume(ellipsoid_teeth(), gt_dir / "a.nii.gz")
    write_volume(ellipsoid_teeth(), pred_dir / "a.nii.gz")
    write_volume(ellipsoid_teeth(), pred_dir / "a.nrrd")
    assert main(["evaluate", str(gt_dir), str(pred_dir)]) == 1
    assert "a.nii.gz, a.nrrd" in capsys.readouterr().err


def test_a_compared_method_is_the_same_kind_of_path_as_the_ground_truth(tmp_path, capsys):
    """A folder given with one ground-truth file (or a file with a folder) would be scored as an empty
    prediction: refused before any metric, nothing written."""
    write_volume(ellipsoid_teeth(), tmp_path / "gt.nii.gz")
    write_volume(ellipsoid_teeth(), tmp_path / "pred.nii.gz")
    (tmp_path / "other").mkdir()
    write_volume(ellipsoid_teeth(), tmp_path / "other" / "gt.nii.gz")
    report = tmp_path / "report"
    assert main(["evaluate", str(tmp_path / "gt.nii.gz"), str(tmp_path / "pred.nii.gz"), "--report", str(report),
                 "--compare", f"other={tmp_path / 'other'}"]) == 1
    assert "is a folder" in capsys.readouterr().err
    assert not report.exists()  # refused before the report folder is made
    assert main(["evaluate", str(tmp_path / "other"), str(tmp_path / "other"), "--report", str(report),
                 "--compare", f"other={tmp_path / 'pred.nii.gz'}"]) == 1
    assert "is a file" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "gt.nii.gz"), str(tmp_path / "pred.nii.gz"), "--report", str(report),
                 "--compare", f"other={tmp_path / 'other' / 'gt.nii.gz'}"]) == 0
    assert (report / "index.html").exists()


def test_csv_keeps_a_case_id_with_a_comma_in_one_cell(tmp_path):
    import csv

    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for folder in (gt_dir, pred_dir):
        folder.mkdir()
        write_volume(ellipsoid_teeth(), folder / "smith, john.nii.gz")
    assert main(["evaluate", str(gt_dir), str(pred_dir), "--protocol", "sts2024", "--csv",
                 str(tmp_path / "s.csv")]) == 0
    with open(tmp_path / "s.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["case"] for row in rows] == ["smith, john"] and float(rows[0]["image_dsc"]) == 1.0


def test_nothing_to_score_is_an_error_not_a_row_of_nan(tmp_path, capsys):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir(), pred_dir.mkdir()
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(gt_dir), str(pred_dir), "--json", str(out)]) == 1
    assert "no ground-truth label maps" in capsys.readouterr().err
    (gt_dir / "a.nii.gz").write_bytes(b"not a gzip file")  # every ground truth unreadable
    assert main(["evaluate", str(gt_dir), str(pred_dir), "--protocol", "sts2024", "--json", str(out)]) == 1
    err = capsys.readouterr().err
    assert "no case could be scored" in err and "a: ground truth skipped" in err
    assert not out.exists()
    report = tmp_path / "report"  # created for the run, so removed with it; one that was there stays
    assert main(["evaluate", str(gt_dir), str(pred_dir), "--report", str(report)]) == 1
    assert not report.exists()
    report.mkdir()
    assert main(["evaluate", str(gt_dir), str(pred_dir), "--report", str(report)]) == 1
    assert report.is_dir()


def test_a_csv_with_no_tooth_in_any_case_replaces_the_earlier_table(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for folder in (gt_dir, pred_dir):
        folder.mkdir()
        empty = ellipsoid_teeth()
        empty.array[:] = 0
        write_volume(empty, folder / "edentulous.nii.gz")
    table = tmp_path / "teeth.csv"
    table.write_text("case,label,dice\nold,11,0.9\n")
    assert main(["evaluate", str(gt_dir), str(pred_dir), "--csv", str(table)]) == 0
    assert table.read_text() == "case,label\n"
