"""``toothseg segment``: single scans, batches (resumable, failures isolated), cancel, bad inputs."""

from __future__ import annotations

import json
import os
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from toothseg.core import LabelTable, Volume
from toothseg.core.io import read_label_map, read_volume, write_volume
from toothseg.core.networks import build_network
from toothseg.core.models.card import IntensityNormalization, ModelCard
from toothseg.core.models.catalog import load_catalog
from toothseg.core.models.folder import save_model_folder

from ..conftest import ellipsoid_teeth, oblique_direction


def make_model(folder: Path, dims: int = 3) -> Path:
    torch.manual_seed(0)
    table = LabelTable.fdi().subset([11, 21])
    if dims == 3:
        network = build_network("resenc_unet", num_classes=3, features_per_stage=[4, 8], strides=[1, 2],
                                n_blocks_per_stage=[1, 1])
        kwargs = {"features_per_stage": [4, 8], "strides": [1, 2], "n_blocks_per_stage": [1, 1]}
        card = ModelCard(id="tiny3d", architecture="resenc_unet", kwargs=kwargs, spatial_dims=3, label_table=table,
                         class_values=[0, 11, 21], spacing_zyx=[0.8, 0.8, 0.8], patch_size=[16, 16, 16],
                         mirror_axes=[2], intensity=IntensityNormalization("percentile_zscore"))
    else:
        network = build_network("unet2d", num_classes=3, base_channels=4)
        card = ModelCard(id="tiny2d", architecture="unet2d", kwargs={"base_channels": 4}, spatial_dims=2,
                         label_table=table, class_values=[0, 11, 21], input_kind="2d", patch_size=[256, 256],
                         mirror_axes=[1])
    return save_model_folder(network, card, folder)


def scan(seed: int = 0) -> Volume:
    teeth = ellipsoid_teeth(direction=oblique_direction())
    rng = np.random.default_rng(seed)
    image = teeth.array.astype(np.float32) * 40 + rng.normal(0, 5, teeth.shape)
    return teeth.with_array(image.astype(np.int16))


def run(*args, env=None, **kwargs):
    env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    return subprocess.run([sys.executable, "-m", "toothseg.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def model3d(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("models") / "tiny3d")


def test_single_scan_to_segmentation_with_stl_and_uncertainty(tmp_path, model3d):
    source = write_volume(scan(), tmp_path / "scan.nii.gz")
    out = tmp_path / "scan_teeth.seg.nrrd"
    result = run("segment", source, "-o", out, "--model", model3d, "--uncertainty", tmp_path / "u.nii.gz",
                 "--stl-dir", tmp_path / "stl", "--report", tmp_path / "report.json", "--no-tta",
                 "--overlay", tmp_path / "overview.png")
    assert result.returncode == 0, result.stderr
    labels = read_label_map(out)
    image = read_volume(source)
    assert labels.shape == image.shape
    np.testing.assert_allclose(labels.origin, image.origin, atol=1e-4)
    np.testing.assert_allclose(labels.direction, image.direction, atol=1e-5)
    assert set(np.unique(labels.array)) <= {0, 11, 21}
    uncertainty = read_volume(tmp_path / "u.nii.gz")
    assert uncertainty.shape == image.shape and 0 <= uncertainty.array.min() and uncertainty.array.max() <= 1
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["output"] == str(out)
    assert len(list((tmp_path / "stl").glob("*.stl"))) == len(report["labels"])
    assert report["overlay"] == str(tmp_path / "overview.png") and (tmp_path / "overview.png").stat().st_size > 1000


def test_the_jaws_the_user_names_reach_the_report_and_a_model_that_cannot_use_them_says_so(tmp_path, model3d):
    """``--jaws lower`` goes to the post-processing (the report records it); this model numbers its teeth itself
    (FDI classes, no arch numbering), so the user is told that the jaws were not used; a bad value is a usage
    error before anything runs."""
    source = write_volume(scan(), tmp_path / "scan.nii.gz")
    result = run("segment", source, "-o", tmp_path / "out.nii.gz", "--model", model3d, "--no-tta", "--jaws", "lower",
                 "--report", tmp_path / "report.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["jaws_in_view"] == "lower"
    assert any("said to hold lower jaw(s)" in w and "numbers the teeth itself" in w for w in report["warnings"])
    plain = run("segment", source, "-o", tmp_path / "plain.nii.gz", "--model", model3d, "--no-tta",
                "--report", tmp_path / "plain.json")
    assert plain.returncode == 0 and "jaws_in_view" not in json.loads((tmp_path / "plain.json").read_text())
    bad = run("segment", source, "-o", tmp_path / "bad.nii.gz", "--model", model3d, "--jaws", "left")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr and not (tmp_path / "bad.nii.gz").exists()


def test_outputs_of_an_earlier_run_are_refused_before_the_labels_are_written(tmp_path, model3d):
    """The label file was written first and the STL, uncertainty or overlay refused after it: exit 1 with a result
    left behind, and the same command then refused for that result."""
    source = write_volume(scan(), tmp_path / "scan.nii.gz")
    (tmp_path / "stl").mkdir()
    (tmp_path / "stl" / f"{LabelTable.fdi()[11].file_stem}.stl").write_text("an earlier export")
    result = run("segment", source, "-o", tmp_path / "out.nii.gz", "--model", model3d, "--no-tta",
                 "--stl-dir", tmp_path / "stl")
    assert result.returncode == 1 and "holds 1 tooth surface(s) of an earlier export" in result.stderr
    assert not (tmp_path / "out.nii.gz").exists()
    for option, name in (("--uncertainty", "u.nii.gz"), ("--overlay", "overview.png")):  # the same for these
        (tmp_path / name).write_bytes(b"an earlier result")
        result = run("segment", source, "-o", tmp_path / "out.nii.gz", "--model", model3d, "--no-tta", option,
                     tmp_path / name)
        assert result.returncode == 1 and f"{name} already exists" in result.stderr, result.stderr
        assert not (tmp_path / "out.nii.gz").exists()


def test_bundled_panoramic_model_on_a_test_split_xray(tmp_path):
    """The issue's 2D main job: the default (bundled) model on an X-ray it never saw in training."""
    split = json.loads((Path(__file__).resolve().parents[2] / "ToothSegTraining" / "toothseg" / "train" / "splits"
                        / "ufba425.json").read_text())
    shared = Path(os.environ.get("TOOTHSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    source = shared / "ufba425" / "images" / f"{split['test'][0]}.png"
    result = run("segment", source, "-o", tmp_path / "labels.png", "--fast", "--overlay", tmp_path / "overlay.png")
    assert result.returncode == 0, result.stderr
    labels = read_label_map(tmp_path / "labels.png")
    found = set(np.unique(labels.array).tolist()) - {0}
    assert found and found <= set(LabelTable.fdi().values)
    assert len(found) >= 8, found  # a working model finds many teeth on a full panoramic
    assert (tmp_path / "overlay.png").stat().st_size > 1000


def test_an_xray_saved_by_slicer_gets_the_panoramic_model_and_named_teeth(tmp_path):
    """The Slicer module saves a loaded X-ray as a one-slice NRRD and asks for a .seg.nrrd: the default
    model must be the panoramic one (the file's extension says 3D, its header 2D), and the segments
    must carry FDI names and keys on the X-ray's own one-slice grid."""
    import slicerio

    split = json.loads((Path(__file__).resolve().parents[2] / "ToothSegTraining" / "toothseg" / "train" / "splits"
                        / "ufba425.json").read_text())
    shared = Path(os.environ.get("TOOTHSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    xray = read_volume(shared / "ufba425" / "images" / f"{split['test'][0]}.png")
    source = write_volume(Volume(xray.array.astype(np.int16), origin=(-20.0, 30.0, 5.0), kind="2d"),
                          tmp_path / "input.nrrd")
    result = run("segment", source, "-o", tmp_path / "teeth.seg.nrrd", "--fast", "--report", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["model"] == "toothseg-panoramic-resenc"  # the 2D default
    seg = slicerio.read_segmentation(str(tmp_path / "teeth.seg.nrrd"))
    assert len(seg["segments"]) >= 8
    for segment in seg["segments"]:
        fdi = int(segment["labelValue"])
        assert segment["name"].startswith(f"Tooth {fdi} (") and segment["tags"]["ToothSeg.LabelKey"] == f"tooth_{fdi}"
    labels = read_label_map(tmp_path / "teeth.seg.nrrd")
    assert labels.shape == xray.shape and labels.origin == (-20.0, 30.0, 5.0)


def test_batch_is_resumable_and_isolates_failures(tmp_path, model3d):
    cases = tmp_path / "cases"
    cases.mkdir()
    write_volume(scan(1), cases / "A.nii.gz")
    write_volume(scan(2), cases / "B.nrrd")
    (cases / "C.nii.gz").write_bytes(b"not an image at all")
    out = tmp_path / "out"
    first = run("segment", cases, "-o", out, "--model", model3d, "--fast", "--format", "nii.gz")
    assert first.returncode == 1
    summary = json.loads((out / "summary.json").read_text())
    assert [d["input"] for d in summary["done"]] == [str(cases / "A.nii.gz"), str(cases / "B.nrrd")]
    assert [f["case"] for f in summary["failed"]] == ["C"]
    assert sorted(p.name for p in out.iterdir()) == ["A.nii.gz", "B.nii.gz", "summary.json"]
    (cases / "C.nii.gz").unlink()
    stamp = (out / "A.nii.gz").stat().st_mtime_ns
    second = run("segment", cases, "-o", out, "--model", model3d, "--fast", "--format", "nii.gz")
    assert second.returncode == 0, second.stderr
    assert json.loads((out / "summary.json").read_text())["skipped"] == ["A", "B"]
    assert (out / "A.nii.gz").stat().st_mtime_ns == stamp


def test_a_batch_takes_dicom_folders_and_leaves_other_sub_folders_out(tmp_path, model3d):
    """A case folder often holds more than scans: an empty folder or one of notes is not a case that
    failed (exit status 1 for a batch that segmented every scan), it is left out and reported."""
    from ..core.test_io_images import _write_dicom_series

    cases = tmp_path / "cases"
    (cases / "empty").mkdir(parents=True)
    (cases / "notes").mkdir()
    (cases / "notes" / "referral.txt").write_text("patient notes")
    (cases / "D").mkdir()
    _write_dicom_series(cases / "D", scan(3))
    write_volume(scan(1), cases / "A.nii.gz")
    out = tmp_path / "out"
    result = run("segment", cases, "-o", out, "--model", model3d, "--fast")
    assert result.returncode == 0, result.stderr
    assert "left out 2 sub-folder(s) without a DICOM series: empty, notes" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [d["input"] for d in summary["done"]] == [str(cases / "A.nii.gz"), str(cases / "D")]
    assert summary["failed"] == [] and summary["left_out"] == ["empty", "notes"]
    assert sorted(p.name for p in out.glob("*.seg.nrrd")) == ["A.seg.nrrd", "D.seg.nrrd"]
    # a folder of nothing but such sub-folders names them in its error
    (cases / "A.nii.gz").unlink()
    shutil.rmtree(cases / "D")
    nothing = run("segment", cases, "-o", tmp_path / "out2", "--model", model3d, "--fast")
    assert nothing.returncode != 0 and "sub-folders without a DICOM series: empty, notes" in nothing.stderr


def test_batch_shards_by_rank(tmp_path, model3d):
    cases = tmp_path / "cases"
    cases.mkdir()
    for name in "ABC":
        write_volume(scan(), cases / f"{name}.nii.gz")
    out = tmp_path / "out"
    for rank in (0, 1):
        result = run("segment", cases, "-o", out, "--model", model3d, "--fast",
                     env={"RANK": str(rank), "WORLD_SIZE": "2"})
        assert result.returncode == 0, result.stderr
    rank0 = json.loads((out / "summary.rank0.json").read_text())
    rank1 = json.loads((out / "summary.rank1.json").read_text())
    assert len(rank0["done"]) == 2 and len(rank1["done"]) == 1
    assert sorted(p.name for p in out.glob("*.seg.nrrd")) == ["A.seg.nrrd", "B.seg.nrrd", "C.seg.nrrd"]
    # more processes than cases (torchrun on 8 GPUs, 3 scans): the idle ones end without an error
    idle = run("segment", cases, "-o", out, "--model", model3d, "--fast", env={"RANK": "5", "WORLD_SIZE": "8"})
    assert idle.returncode == 0, idle.stderr
    assert json.loads((out / "summary.rank5.json").read_text())["done"] == []


def test_each_torchrun_process_takes_its_own_gpu(monkeypatch):
    """Without a GPU here, the choice is checked with CUDA's answers replaced: LOCAL_RANK 5 on a node with
    4 GPUs takes (and makes current) GPU 1; without LOCAL_RANK the default CUDA device is kept."""
    import torch

    from toothseg.core.inference import resolve_device

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert resolve_device("auto") == torch.device("cuda", 1) and chosen == [1]
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("cuda") == torch.device("cuda") and chosen == [1]


def test_panoramic_png(tmp_path):
    model = make_model(tmp_path / "tiny2d", dims=2)
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ufba425" / "images"
    source = Path(os.environ.get("TOOTHSEG_SHARED_DATA", shared.parents[1])) / "ufba425" / "images" / "cate1-00002.png"
    result = run("segment", source, "-o", tmp_path / "labels.png", "--model", model, "--fast",
                 "--overlay", tmp_path / "overlay.png")
    assert result.returncode == 0, result.stderr
    labels = read_label_map(tmp_path / "labels.png")
    assert labels.is_2d and labels.shape == (1, 512, 512) and set(np.unique(labels.array)) <= {0, 11, 21}
    import SimpleITK as sitk

    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "overlay.png"))).shape == (512, 512, 3)
    wrong = run("segment", source, "-o", tmp_path / "x.seg.nrrd", "--model", tmp_path / "nope")
    assert wrong.returncode == 1 and "no model" in wrong.stderr


def test_wrong_kind_and_existing_output(tmp_path, model3d):
    image2d = write_volume(Volume(np.zeros((1, 64, 64), np.uint8), kind="2d"), tmp_path / "pano.png")
    result = run("segment", image2d, "-o", tmp_path / "out.png", "--model", model3d)
    assert result.returncode == 1 and "segments 3D scans" in result.stderr and "Traceback" not in result.stderr
    source = write_volume(scan(), tmp_path / "scan.nii.gz")
    (tmp_path / "taken.seg.nrrd").write_text("keep me")
    result = run("segment", source, "-o", tmp_path / "taken.seg.nrrd", "--model", model3d)
    assert result.returncode == 1 and "--overwrite" in result.stderr
    assert (tmp_path / "taken.seg.nrrd").read_text() == "keep me"
    # without --model the bundled 3D default runs (this noise scan has no teeth: an empty result, a warning)
    default = run("segment", source, "-o", tmp_path / "x.seg.nrrd", "--fast", "--report", tmp_path / "x.json",
                  env={"TOOTHSEG_MODELS_DIR": str(tmp_path)})
    assert default.returncode == 0, default.stderr
    assert json.loads((tmp_path / "x.json").read_text())["model"] == load_catalog(include_user=False).default("3d").id


def test_output_types_that_cannot_hold_the_result_are_refused_before_inference(tmp_path, model3d):
    """A scan's labels as PNG, an output without a file type, an uncertainty map as PNG, batch
    --format png for a 3D model and --stl-dir for an X-ray are refused before the image is read
    (here: a file that cannot be read, so an error about reading would mean the check came too late)."""
    broken = tmp_path / "scan.nii.gz"
    broken.write_bytes(b"not a scan")
    for output, extra, message in (("out.png", [], "3D scan's labels are written as .seg.nrrd"),
                                   ("out", [], "give OUTPUT one of these endings"),
                                   ("out.seg.nrrd", ["--uncertainty", tmp_path / "u.png"], "uncertainty map")):
        result = run("segment", broken, "-o", tmp_path / output, "--model", model3d, *extra)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert "cannot read" not in result.stderr and not (tmp_path / output).exists()
    cases = tmp_path / "cases"
    cases.mkdir()
    write_volume(scan(), cases / "a.nii.gz")
    result = run("segment", cases, "-o", tmp_path / "out", "--model", model3d, "--format", "png")
    assert result.returncode == 1 and "--format png" in result.stderr and not (tmp_path / "out").exists()
    broken_xray = tmp_path / "xray.png"  # surfaces of a panoramic X-ray: asked for, and silently not written
    broken_xray.write_bytes(b"not an image")
    result = run("segment", broken_xray, "-o", tmp_path / "x.png", "--model", "toothseg-panoramic-demo",
                 "--stl-dir", tmp_path / "stl")
    assert result.returncode == 1 and "--stl-dir: surfaces need a 3D scan" in result.stderr, result.stderr
    assert not (tmp_path / "stl").exists() and not (tmp_path / "x.png").exists()


def test_sigterm_cancels_without_partial_output(tmp_path, model3d):
    big = Volume(np.random.default_rng(0).normal(0, 1, (96, 96, 96)).astype(np.float32), (0.4, 0.4, 0.4))
    source = write_volume(big, tmp_path / "big.nii.gz")
    out = tmp_path / "big.seg.nrrd"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    process = subprocess.Popen([sys.executable, "-m", "toothseg.cli", "segment", str(source), "-o", str(out),
                                "--model", str(model3d), "--progress-lines", "--batch-size", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        line = process.stdout.readline()
        if "window" in line:
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "cancelled" in stderr
    assert not out.exists() and not any(p.name.startswith(".toothseg-tmp") for p in tmp_path.iterdir())
