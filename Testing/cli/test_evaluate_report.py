"""`toothseg evaluate --report`: the HTML page says what the metrics say, and finds the worst case."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from toothseg.cli import main
from toothseg.core import Volume
from toothseg.core.io import write_volume
from toothseg.evaluation_report import crop_to_content, tooth_group, worst_slice

from ..conftest import ellipsoid_teeth

pytest.importorskip("matplotlib")  # a dev dependency: always present under `make test`

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _with(volume: Volume, array: np.ndarray) -> Volume:
    return Volume(array, volume.spacing, volume.origin, volume.direction)


@pytest.fixture
def folders(tmp_path):
    """Three cases: perfect, tooth 21 shifted by 6 voxels, no prediction at all."""
    gt = ellipsoid_teeth()
    shifted = np.zeros_like(gt.array)
    shifted[gt.array == 11] = 11
    shifted[:, :, 6:][gt.array[:, :, :-6] == 21] = 21
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    for name in ("perfect", "shifted", "missing"):
        write_volume(gt, tmp_path / "gt" / f"{name}.nii.gz")
    write_volume(gt, tmp_path / "pred" / "perfect.nii.gz")
    write_volume(_with(gt, shifted), tmp_path / "pred" / "shifted.nii.gz")
    return tmp_path / "gt", tmp_path / "pred", shifted


def test_report_tables_plots_and_worst_cases(tmp_path, folders, capsys):
    gt_dir, pred_dir, shifted = folders
    out = tmp_path / "report"
    assert main(["evaluate", str(gt_dir), str(pred_dir), "--protocol", "sts2024", "--report", str(out),
                 "--report-note", "intensities are synthetic"]) == 0
    assert f"report: {out / 'index.html'}" in capsys.readouterr().out
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "intensities are synthetic" in page and "missing: no prediction" in page.replace("</td><td>", ": ")
    # Every plot is embedded (self-contained page) and also written as a PNG file.
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == ["dental_chart.png", "dice_by_tooth_type.png", "worst_1.png", "worst_2.png", "worst_3.png"]
    assert len(embedded) == len(files)
    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for data in embedded)
    # Per-tooth row of 21: Dice is the mean over the 3 cases (1, shifted overlap, 0 for the missing case).
    gt = ellipsoid_teeth().array
    overlap = 2 * np.logical_and(gt == 21, shifted == 21).sum() / ((gt == 21).sum() + (shifted == 21).sum())
    expected = (1.0 + overlap + 0.0) / 3
    row = re.search(r"<tr><td>21</td><td>([^<]*)</td><td>3</td><td>2</td><td>0</td><td>([0-9.]+)</td>", page)
    assert row, page
    assert "upper left central incisor" in row.group(1).lower()
    assert float(row.group(2)) == pytest.approx(expected, abs=1e-4)
    # Worst cases in order: the missing one, then the shifted one (the perfect one last).
    titles = re.findall(r'alt="(perfect|shifted|missing)"', page)
    assert titles == ["missing", "shifted", "perfect"]
    # the same folder again for one case: the earlier report's other worst cases are not left beside it
    (gt_dir / "perfect.nii.gz").unlink(), (gt_dir / "missing.nii.gz").unlink()
    assert main(["evaluate", str(gt_dir), str(pred_dir), "--report", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["dental_chart.png", "dice_by_tooth_type.png", "worst_1.png"]


def test_report_compares_methods_on_the_same_ground_truth(tmp_path, folders):
    gt_dir, pred_dir, _ = folders
    out = tmp_path / "report"
    assert main(["evaluate", str(gt_dir), str(pred_dir), "--report", str(out), "--method-name", "ours",
                 "--compare", f"same={gt_dir}"]) == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "of <i>ours</i>" in page
    # The ground truth compared with itself scores 1 everywhere; ours is lower (shifted and missing cases).
    same = re.search(r"<tr><td>same</td><td>([0-9.]+)</td><td>([0-9.]+)</td>", page)
    ours = re.search(r"<tr><td>ours</td><td>([0-9.]+)</td>", page)
    assert same and ours and float(same.group(1)) == 1.0 and float(same.group(2)) == 1.0
    assert float(ours.group(1)) < 0.75
    with pytest.raises(SystemExit):
        main(["evaluate", str(gt_dir), str(pred_dir), "--compare", "no-equals-sign"])


def test_report_refuses_an_unwritable_place(tmp_path, folders, capsys):
    gt_dir, pred_dir, _ = folders
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["evaluate", str(gt_dir / "perfect.nii.gz"), str(pred_dir / "perfect.nii.gz"),
                 "--report", str(blocker / "sub")]) == 1
    err = capsys.readouterr().err
    assert "cannot create" in err and "Traceback" not in err
    assert main(["evaluate", str(gt_dir / "perfect.nii.gz"), str(pred_dir / "perfect.nii.gz"),
                 "--report", str(blocker)]) == 1
    assert "is a file; --report writes a folder" in capsys.readouterr().err


def test_worst_slice_and_crop():
    gt = np.zeros((5, 20, 20), np.uint8)
    gt[:, 5:10, 6:12] = 11
    pred = gt.copy()
    assert worst_slice(gt, pred) == 2  # full agreement: the middle of the teeth
    pred[3, 5:8, 6:12] = 0
    pred[1, 5:6, 6:12] = 0
    assert worst_slice(gt, pred) == 3  # the most disagreeing slice
    rows, columns = crop_to_content(gt[3], pred[3], margin=2)
    assert (rows.start, rows.stop, columns.start, columns.stop) == (3, 12, 4, 14)
    assert crop_to_content(np.zeros((4, 4))) == (slice(None), slice(None))


@pytest.mark.parametrize("fdi, group", [(11, "incisor"), (42, "incisor"), (33, "canine"), (24, "premolar"),
                                        (45, "premolar"), (16, "molar"), (38, "molar"), (54, "molar"),
                                        (63, "canine"), (111, None), (1, None)])
def test_tooth_groups(fdi, group):
    assert tooth_group(fdi) == group


def test_worst_case_slice_is_shown_in_patient_orientation():
    """The same anatomy stored with the x axis reversed gives the same picture."""
    from toothseg.cli.evaluate import _case_view

    gt = ellipsoid_teeth()
    pred = gt.array.copy()
    pred[pred == 21] = 22  # wrong number
    n = gt.shape[2]
    flipped_origin = (gt.origin[0] + (n - 1) * gt.spacing[0], gt.origin[1], gt.origin[2])
    mirrored = Volume(gt.array[:, :, ::-1].copy(), gt.spacing, flipped_origin, np.diag([-1.0, 1.0, 1.0]))
    direct = _case_view("a", gt, pred, [])
    stored_reversed = _case_view("b", mirrored, pred[:, :, ::-1].copy(), [])
    assert direct.slice_index == stored_reversed.slice_index
    np.testing.assert_array_equal(direct.gt_slice, stored_reversed.gt_slice)
    np.testing.assert_array_equal(direct.pred_slice, stored_reversed.pred_slice)
    assert not direct.planar
    from toothseg.core.volume import VolumeKind

    panoramic = Volume(gt.array[20], (1.0, 0.3, 0.4), kind=VolumeKind.PANORAMIC_2D)
    view = _case_view("p", panoramic, gt.array[20][None], [])
    assert view.planar and view.slice_index == 0


def test_outputs_and_compare_folders_are_checked_before_any_metric(tmp_path, folders, capsys, monkeypatch):
    import toothseg.cli.evaluate as cli_evaluate

    gt_dir, pred_dir, _ = folders
    monkeypatch.setattr(cli_evaluate, "_tooth_rows", lambda *a: pytest.fail("metrics computed before the check"))
    for extra, message in ((["--json", str(tmp_path / "no" / "m.json")], "does not exist"),
                           (["--report", str(tmp_path / "r"), "--compare", f"x={tmp_path / 'absent'}"],
                            "--compare x"),
                           (["--compare", f"x={gt_dir}"], "add --report"),
                           # two methods under one name would be one box in the plot
                           (["--report", str(tmp_path / "r"), "--compare", f"{pred_dir.name}={gt_dir}"],
                            f"two methods are named '{pred_dir.name}'"),
                           (["--report", str(tmp_path / "r"), "--compare", f"a={gt_dir}", "--compare",
                             f"a={pred_dir}"], "two methods are named 'a'")):
        assert main(["evaluate", str(gt_dir), str(pred_dir), *extra]) == 1
        assert message in capsys.readouterr().err


def test_compared_methods_missing_predictions_are_reported(tmp_path, folders):
    import json as json_module

    gt_dir, pred_dir, _ = folders
    assert main(["evaluate", str(gt_dir), str(gt_dir), "--report", str(tmp_path / "r"), "--json",
                 str(tmp_path / "m.json"), "--compare", f"partial={pred_dir}"]) == 0
    problems = json_module.loads((tmp_path / "m.json").read_text(encoding="utf-8"))["problems"]
    assert problems == [{"case": "missing", "problem": "[partial] no prediction (counted as empty)"}]
