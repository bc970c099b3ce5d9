"""The command line: same results as the library, and one clear line (no traceback) on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import slicerio

from toothseg import __version__
from toothseg.cli import main
from toothseg.core import Volume
from toothseg.core.io import read_label_map, write_volume

from ..conftest import ellipsoid_teeth

TOOTHSEG = [sys.executable, "-m", "toothseg.cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real console entry point in a fresh interpreter."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([*TOOTHSEG, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str, code: int = 1) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def labels_file(tmp_path) -> Path:
    return write_volume(ellipsoid_teeth(), tmp_path / "teeth.nii.gz")


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"toothseg {__version__}"
    help_text = run("--help").stdout
    for command in ("convert", "export-stl", "demo"):
        assert command in help_text
    assert "--coordinate-system" in run("export-stl", "--help").stdout


def test_convert_sts_case_to_segmentation(tmp_path, sts_gt_path, sts_labels):
    out = tmp_path / "case.seg.nrrd"
    result = run("convert", str(sts_gt_path), str(out))
    assert result.returncode == 0, result.stderr
    assert "30 segments" in result.stdout
    segmentation = slicerio.read_segmentation(str(out))
    assert len(segmentation["segments"]) == 30
    back = tmp_path / "back.nii.gz"
    assert main(["convert", str(out), str(back)]) == 0
    np.testing.assert_array_equal(read_label_map(back).array, sts_labels.array)


def test_existing_output_is_kept_unless_overwrite(tmp_path, labels_file):
    out = tmp_path / "out.seg.nrrd"
    out.write_text("precious")
    assert_clean_error(run("convert", str(labels_file), str(out)), "already exists", "--overwrite")
    assert out.read_text() == "precious"
    assert run("convert", str(labels_file), str(out), "--overwrite").returncode == 0
    assert out.read_bytes().startswith(b"NRRD")


@pytest.mark.parametrize("policy, expected", [("keep", {11, 21, 99}), ("drop", {11, 21})])
def test_unknown_label_values(tmp_path, labels_file, policy, expected):
    volume = read_label_map(labels_file)
    array = volume.array.copy()
    array[0, 0, :3] = 99
    odd = write_volume(volume.with_array(array), tmp_path / "odd.nii.gz")
    assert_clean_error(run("convert", str(odd), str(tmp_path / "x.seg.nrrd")), "99", "label table")
    assert not (tmp_path / "x.seg.nrrd").exists()
    out = tmp_path / f"{policy}.seg.nrrd"
    assert main(["convert", str(odd), str(out), "--unknown-labels", policy]) == 0
    segments = slicerio.read_segmentation(str(out))["segments"]
    assert {s["labelValue"] for s in segments} == expected


def test_label_map_that_does_not_match_its_image(tmp_path, labels_file):
    image = Volume(np.zeros((40, 48, 57), np.int16), (0.4, 0.3, 0.5))
    image_path = write_volume(image, tmp_path / "scan.nii.gz")
    result = run("export-stl", str(labels_file), "--out-dir", str(tmp_path / "stl"), "--reference", str(image_path))
    assert_clean_error(result, "does not match", "size")
    assert not any((tmp_path / "stl").glob("*.stl")) if (tmp_path / "stl").exists() else True


def test_export_stl_subset_ras_and_progress(tmp_path, labels_file):
    result = run("export-stl", str(labels_file), "-o", str(tmp_path / "stl"), "--labels", "21",
                 "--coordinate-system", "ras", "--smoothing", "0.2")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "stl").iterdir()] == ["21_upper_left_central_incisor.stl"]
    assert "mm, RAS" in result.stdout
    header = (tmp_path / "stl" / "21_upper_left_central_incisor.stl").read_bytes()[:80]
    assert b"RAS" in header


@pytest.mark.parametrize("args, fragments", [
    (["convert", "missing.nii.gz", "out.nii.gz"], ["missing.nii.gz", "no such file"]),
    (["convert", ".", "out.nii.gz"], ["no DICOM series"]),
    (["export-stl", "teeth.nii.gz", "--out-dir", "s", "--smoothing", "3"], ["smoothing"]),
    (["export-stl", "teeth.nii.gz", "--out-dir", "s", "--labels", "1x"], ["--labels"]),
    (["export-stl", "teeth.nii.gz", "--out-dir", "s", "--labels", ""], ["--labels"]),  # not "all labels"
    (["convert", "teeth.nii.gz", "no/such/folder/out.nrrd"], ["does not exist"]),
    (["convert", "teeth.nii.gz", "out.vtk"], ["cannot write"]),
])
def test_bad_input_gives_one_line(tmp_path, labels_file, args, fragments):
    (tmp_path / "sub").mkdir()
    assert_clean_error(run(*args, cwd=tmp_path), *fragments)


def test_convert_output_names_are_checked_before_reading(tmp_path, labels_file, capsys):
    image = tmp_path / "scan.nii.gz"
    write_volume(Volume(np.full((3, 4, 5), -1000, np.int16), (0.5, 0.5, 0.5)), image)
    # the list of writable kinds names .seg.nrrd, which convert writes; a name without extension is said so
    assert main(["convert", str(tmp_path / "missing.nii.gz"), str(tmp_path / "out.vtk")]) == 1
    assert "(supported: .nii, .nii.gz, .nrrd, .mha, .mhd, .png, .seg.nrrd)" in capsys.readouterr().err
    assert main(["convert", str(image), str(tmp_path / "out")]) == 1
    assert "needs a file extension" in capsys.readouterr().err
    # a 3-slice volume to PNG: the slices are the problem, not its int16 voxels
    assert main(["convert", str(image), str(tmp_path / "out.png")]) == 1
    assert "cannot write a 3-slice volume as a 2D image" in capsys.readouterr().err
    # an intensity image to .seg.nrrd: the message says why it was read as a label map
    assert main(["convert", str(image), str(tmp_path / "out.seg.nrrd")]) == 1
    assert "a .seg.nrrd holds a segmentation, so the input is read as a label map" in capsys.readouterr().err
    assert main(["export-stl", str(image), "-o", str(tmp_path / "stl")]) == 1
    assert "negative values (min -1000); is this an intensity image?" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz", "teeth.nii.gz"]


def test_a_batch_with_two_files_of_one_case_is_refused_before_anything_runs(tmp_path, labels_file, capsys):
    """a.nii.gz and a.nrrd were both case 'a': the second was skipped as 'already done'."""
    cases = tmp_path / "cases"
    cases.mkdir()
    for name in ("a.nii.gz", "a.nrrd", "b.nii.gz"):
        write_volume(ellipsoid_teeth(), cases / name)
    assert main(["segment", str(cases), "-o", str(tmp_path / "out")]) == 1
    assert "1 case(s) have more than one file (a.nii.gz, a.nrrd)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_batch_whose_results_lie_inside_the_scan_folder(tmp_path, labels_file, capsys):
    """-o cases/out: the next run took out/ for a DICOM series and failed; -o cases with --format nii.gz and
    --overwrite replaced each scan by its labels."""
    cases = tmp_path / "cases"
    cases.mkdir()
    scan = write_volume(ellipsoid_teeth(), cases / "a.nii.gz")
    before = scan.read_bytes()
    assert main(["-q", "segment", str(cases), "-o", str(cases), "--format", "nii.gz", "--overwrite"]) == 1
    assert f"OUTPUT {cases} is also INPUT; write it elsewhere" in capsys.readouterr().err
    assert scan.read_bytes() == before
    # one scan: the labels (or the uncertainty map) written over the scan itself, or over each other
    for extra in (["-o", str(scan)], ["-o", str(tmp_path / "l.nii.gz"), "--uncertainty", str(scan)],
                  ["-o", str(tmp_path / "l.nii.gz"), "--uncertainty", str(tmp_path / "l.nii.gz")]):
        assert main(["-q", "segment", str(scan), *extra, "--overwrite"]) == 1
        assert "write it elsewhere" in capsys.readouterr().err
    assert scan.read_bytes() == before and not (tmp_path / "l.nii.gz").exists()
    for _ in range(2):  # the second run finds its own result folder inside the scans and leaves it alone
        assert main(["-q", "segment", str(cases), "-o", str(cases / "out"), "--fast"]) == 0
    assert "1 already done, 0 failed" in capsys.readouterr().out


def test_usage_errors_exit_2(tmp_path):
    assert_clean_error(run("export-stl", "x.nii.gz"), "--out-dir", code=2)
    assert_clean_error(run("frobnicate"), "invalid choice", code=2)


def test_demo_with_an_unknown_model_fails_cleanly_before_writing(tmp_path):
    result = run("demo", "--out-dir", str(tmp_path / "demo"), "--model", "no-such-model")
    assert_clean_error(result, "no-such-model", code=1)
    assert not (tmp_path / "demo").exists()


def test_demo_with_a_panoramic_model_says_so_before_writing(tmp_path):
    result = run("demo", "--out-dir", str(tmp_path / "demo"), "--model", "toothseg-panoramic-demo")
    assert result.returncode == 1 and "model toothseg-panoramic-demo is for 2d panoramic X-rays" in result.stderr
    assert "toothseg segment XRAY.png" in result.stderr
    assert not (tmp_path / "demo").exists()


def test_demo_into_a_file_says_it_needs_a_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run("demo", "--out-dir", str(tmp_path / "notes.txt"), "--model", "toothseg-cbct-synthetic-demo")
    assert result.returncode == 1 and "notes.txt is a file; the demo writes into a folder" in result.stderr
    assert "with model toothseg-cbct-synthetic-demo" in result.stdout  # the banner names the model used
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_demo_runs_offline(tmp_path):
    result = run("demo", "--out-dir", str(tmp_path / "demo"), "--fast")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "demo" / "sample_teeth.seg.nrrd").exists()
    picture = tmp_path / "demo" / "overview.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import SimpleITK as sitk

    pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(picture)))
    assert pixels.std() > 10  # a real picture, not a blank buffer
    report = json.loads((tmp_path / "demo" / "demo_report.json").read_text())
    assert "SYNTHETIC" in report["note"]
    stl_files = list((tmp_path / "demo" / "stl").glob("*.stl"))
    assert report["stl_files"] == len(stl_files) == len(report["teeth_found"]) >= 5  # one file per tooth found
    assert len(report["teeth_expected"]) == 30
    if report["model"] != "none":  # a bundled model was used: its score on the sample is reported
        assert 0.0 <= report["metrics"]["instance_dsc"] <= 1.0
    if report["model"] != "none":  # whether the sample's patient is training anatomy, from the model's card
        from toothseg.core.models.catalog import load_catalog
        from toothseg.core.models.folder import read_card
        from toothseg.demo import sample_seen_in_training

        catalog = load_catalog(include_user=False)
        default = read_card(catalog.resolve(catalog.default("3d").id))
        assert report["sample_seen_in_training"] == sample_seen_in_training(default)
        assert report["sample_seen_in_training"] is not None  # the bundled defaults name their training anatomy
        assert ("is in this model's training anatomy" if report["sample_seen_in_training"]
                else "left out of this model's training") in result.stdout
    if report["model"] != "none":  # the bundled default numbers the sample's sides right
        assert report["handedness"]["verdict"] == "correct", report["handedness"]
        assert not any("mirrored" in w for w in report["warnings"])
    import nrrd

    header = nrrd.read_header(str(tmp_path / "demo" / "sample_teeth.seg.nrrd"))
    if report["model"] != "none":
        assert header["ToothSeg_Handedness"].startswith("correct")
    # a rerun replaces its own files: an STL the earlier run wrote and this one does not is removed,
    # a file the demo never wrote is kept
    stale, users = tmp_path / "demo" / "stl" / "18_from_an_earlier_run.stl", tmp_path / "demo" / "stl" / "mine.stl"
    stale.write_text("solid old")
    users.write_text("solid mine")
    report["stl_names"].append(stale.name)
    (tmp_path / "demo" / "demo_report.json").write_text(json.dumps(report))
    again = run("demo", "--out-dir", str(tmp_path / "demo"), "-q", "--fast", "--no-picture")
    assert again.returncode == 0, again.stderr
    assert not stale.exists() and users.read_text() == "solid mine"
    assert not picture.exists()  # the earlier run's picture would be taken for this run's


def test_the_demo_says_whether_the_sample_patient_was_training_anatomy():
    """A model trained on synthetic scans of the sample's patient scores it as no new patient; the card's
    ``training_anatomy`` says which, and a card without it says nothing either way."""
    import dataclasses

    from toothseg.core.models.catalog import load_catalog
    from toothseg.core.models.folder import read_card
    from toothseg.demo import sample_seen_in_training

    bundled = read_card(load_catalog(include_user=False).resolve("toothseg-cbct-synthetic-demo"))

    def card(provenance):
        return dataclasses.replace(bundled, provenance=provenance)

    assert sample_seen_in_training(card({"training_anatomy": ["Validation_0001", "Validation_0002"]})) is True
    assert sample_seen_in_training(card({"training_anatomy": ["Validation_0001",
                                                              "PostDentalSurgery_Segmentation"]})) is False
    assert sample_seen_in_training(card({"recipe": "x"})) is None


def test_the_bundled_sample_and_its_source_map_are_numbered_on_the_right_sides():
    """Both bundled label maps were corrected from the mirrored STS-2024 numbering (shared/data/README.md)."""
    from toothseg.core.handedness import handedness_of
    from toothseg.core.io.images import read_label_map
    from toothseg.core.postprocessing.numbering import check_numbering
    from toothseg.core.resources import sample_label_map, sample_scan_labels

    for path in (sample_scan_labels(), sample_label_map()):
        labels = read_label_map(path)
        verdict = handedness_of(labels)
        assert verdict.verdict == "correct" and verdict.determinant > 0.9, (path, verdict.to_dict())
        assert not any("mirrored" in w for w in check_numbering(labels))


def test_output_piped_into_a_reader_that_stops_early_ends_quietly():
    """'toothseg models list | head -1': the closed pipe is no error worth a message."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([*TOOTHSEG, "models", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert err == ""
