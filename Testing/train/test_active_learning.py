"""Active-learning pool: CLI workflow, acquisition scores, revisions, migration, faults (kill -9, two writers)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from toothseg.core import LabelTable, Volume
from toothseg.core.errors import InputError
from toothseg.core.inference.predictor import InferenceOptions, Predictor
from toothseg.core.io import read_label_map, write_volume
from toothseg.core.networks import build_network
from toothseg.core.models.card import IntensityNormalization, ModelCard
from toothseg.core.models.folder import read_card, save_model_folder
from toothseg.core.pool.ranking import case_score, rank_cases
from toothseg.core.pool.store import MANIFEST_VERSION, CasePool, describe_pool, stopped_finetune
from toothseg.train.active_learning.acquisition import ensemble_disagreement, tta_disagreement
from toothseg.train.active_learning.loop import finetune_pool, holdout_cases
from toothseg.train.data.cases import Case, write_manifest

from ..core.inference.helpers import HalfImage, IntensityToClass, loaded
from .conftest import blob_case, toy_recipe

TABLE = LabelTable.fdi().subset([11, 21])


def run(*args, env=None, **kwargs):
    env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    return subprocess.run([sys.executable, "-m", "toothseg.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600, **kwargs)


def popen(*args):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "toothseg.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    network = build_network("unet2d", num_classes=3, base_channels=4)
    card = ModelCard(id="tiny-al", architecture="unet2d", kwargs={"base_channels": 4}, spatial_dims=2,
                     label_table=TABLE, class_values=[0, 11, 21], input_kind="2d", patch_size=[32, 32],
                     mirror_axes=[1], intensity=IntensityNormalization("percentile_zscore"))
    return save_model_folder(network, card, tmp_path_factory.mktemp("al-model") / "tiny-al")


def make_cases(folder: Path, count: int, seed: int = 0) -> dict[str, tuple[Path, Path]]:
    """``count`` toy panoramic cases: id → (image PNG, label PNG)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "truth").mkdir(exist_ok=True)
    cases = {}
    for i in range(count):
        image, labels = blob_case(rng)
        cases[f"c{i:02d}"] = (write_volume(Volume(image, kind="2d"), folder / "images" / f"c{i:02d}.png"),
                              write_volume(Volume(labels, kind="2d"), folder / "truth" / f"c{i:02d}.png"))
    return cases


def manifest(pool: Path) -> dict:
    return json.loads((pool / "pool.json").read_text())


# ---------------------------------------------------------------------------------------- workflow
def test_cli_workflow_init_predict_next_accept_status(tmp_path, tiny_model):
    cases = make_cases(tmp_path / "data", 6)
    pool = tmp_path / "pool"
    result = run("al", "init", pool, "--images", tmp_path / "data" / "images", "--model", tiny_model)
    assert result.returncode == 0, result.stderr
    assert "6 case(s) added" in result.stdout
    result = run("al", "predict", pool, "--scores", "entropy,tta", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    data = manifest(pool)
    assert data["version"] == MANIFEST_VERSION
    for record in data["cases"]:
        assert record["status"] == "predicted" and (pool / record["prediction"]).is_file()
        assert set(record["scores"]) == {"entropy", "tta"}
        assert all(0.0 <= v <= 1.0 for v in record["scores"].values())
    # a second predict with the same model does nothing (resumable)
    result = run("al", "predict", pool, "--scores", "entropy,tta", "--device", "cpu")
    assert result.returncode == 0 and "predicted 0, skipped 6" in result.stdout
    # next: the two highest entropy scores, marked in_review
    scores = {r["id"]: r["scores"]["entropy"] for r in data["cases"]}
    expected = sorted(scores, key=lambda c: (-scores[c], c))[:2]
    result = run("al", "next", pool, "-k", "2", "--strategy", "entropy")
    assert result.returncode == 0, result.stderr
    chosen = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert chosen == expected
    status = {r["id"]: r["status"] for r in manifest(pool)["cases"]}
    assert [c for c, s in status.items() if s == "in_review"] == sorted(expected)
    # accept twice: two revisions, the first kept byte for byte
    case = expected[0]
    assert run("al", "accept", pool, case, cases[case][1]).returncode == 0
    first = pool / "labels" / case / "rev-0001.nii.gz"
    before = sha(first)
    edited = read_label_map(cases[case][1])
    edited.array[edited.array == 21] = 0
    write_volume(edited, tmp_path / "edited.nii.gz")
    result = run("al", "accept", pool, case, tmp_path / "edited.nii.gz", "--note", "removed 21")
    assert result.returncode == 0, result.stderr
    record = next(r for r in manifest(pool)["cases"] if r["id"] == case)
    assert record["status"] == "corrected"
    assert record["labels"] == [f"labels/{case}/rev-0001.nii.gz", f"labels/{case}/rev-0002.nii.gz"]
    assert sha(first) == before
    assert [h["event"] for h in record["history"]][-2:] == ["accepted", "accepted"]
    assert record["history"][-1]["note"] == "removed 21" and record["history"][-1]["who"]
    # predict never touches corrected or in-review cases
    result = run("al", "predict", pool, "--redo", "--device", "cpu")
    assert result.returncode == 0 and "predicted 4, skipped 2" in result.stdout
    result = run("al", "status", pool, "--json")
    summary = json.loads(result.stdout)
    assert summary["status"] == {"unlabeled": 0, "predicted": 4, "in_review": 1, "corrected": 1}


def test_accept_refuses_a_label_map_on_another_grid_and_changes_nothing(tmp_path, tiny_model):
    cases = make_cases(tmp_path / "data", 2)
    pool = tmp_path / "pool"
    assert run("al", "init", pool, "--images", *[c[0] for c in cases.values()]).returncode == 0
    before = (pool / "pool.json").read_bytes()
    wrong = Volume(np.zeros((40, 40), np.uint8), kind="2d")
    write_volume(wrong, tmp_path / "wrong.png")
    result = run("al", "accept", pool, "c00", tmp_path / "wrong.png")
    assert result.returncode == 1
    assert "does not match" in result.stderr and "Traceback" not in result.stderr
    assert (pool / "pool.json").read_bytes() == before
    assert not (pool / "labels").exists()
    assert run("al", "accept", pool, "nope", cases["c00"][1]).returncode == 1


def test_accept_adds_a_new_case_with_its_image_copied(tmp_path, tiny_model):
    from toothseg.train.active_learning.loop import predict_pool

    cases = make_cases(tmp_path / "data", 2)
    pool = CasePool.create(tmp_path / "pool", current_model=str(tiny_model))
    pool.accept("fromslicer", cases["c01"][1], image=cases["c01"][0])
    record = pool.read().cases["fromslicer"]
    assert record.status == "corrected" and record.image == "images/fromslicer.nii.gz"
    assert (pool.folder / record.image).is_file()
    # --image for a known case: the original file again is fine (the pool holds a NIfTI copy of the PNG);
    # another patient's image under that ID is refused, not filed under the first patient
    second = pool.accept("fromslicer", cases["c01"][1], image=cases["c01"][0])
    assert second.name != Path(pool.folder / pool.read().cases["fromslicer"].labels[0]).name
    before = (pool.folder / "pool.json").read_bytes()
    with pytest.raises(InputError, match="already in the pool with another image"):
        pool.accept("fromslicer", cases["c00"][1], image=cases["c00"][0])
    assert (pool.folder / "pool.json").read_bytes() == before
    # the copied panoramic X-ray is still a 2D image for the pool's 2D model
    pool.add_images([("other", cases["c00"][0])], copy=True)
    summary = predict_pool(pool, device="cpu")
    assert summary.predicted == ["other"] and not summary.failed


def test_init_with_an_unreadable_image_adds_none_and_leaves_no_pool(tmp_path):
    """--copy reads every image; a truncated one used to leave copies no case named, which made the
    corrected second attempt fail ("already exists"), and an empty pool."""
    cases = make_cases(tmp_path / "data", 3)
    folder = tmp_path / "scans"
    folder.mkdir()
    for case_id, (image, _) in cases.items():
        write_volume(read_label_map(image), folder / f"{case_id}.nii.gz")
    whole = (folder / "c01.nii.gz").read_bytes()
    (folder / "c01.nii.gz").write_bytes(whole[: len(whole) // 2])  # the gzip header reads; the voxels do not
    result = run("al", "init", tmp_path / "pool", "--images", folder, "--copy")
    assert result.returncode == 1 and "1 of 3 image(s) cannot be read, so none was added" in result.stderr
    assert "c01.nii.gz" in result.stderr and not (tmp_path / "pool").exists()
    (folder / "c01.nii.gz").write_bytes(whole)
    result = run("al", "init", tmp_path / "pool", "--images", folder, "--copy")
    assert result.returncode == 0, result.stderr
    assert sorted(CasePool(tmp_path / "pool").read().cases) == ["c00", "c01", "c02"]


@pytest.mark.parametrize("copy", [False, True])
def test_init_again_on_a_growing_folder_adds_only_the_new_scans(tmp_path, copy):
    """Giving the same folder again (new scans arrived) failed with 'the pool already has case(s) …'; a
    pool made inside that folder was then added as a DICOM case of itself."""
    cases = make_cases(tmp_path / "data", 3)
    folder = tmp_path / "data" / "images"
    (folder / "c02.png").rename(tmp_path / "c02.png")  # arrives later
    pool_dir = folder / "pool"
    flags = ["--copy"] if copy else []
    first = run("al", "init", pool_dir, "--images", folder, *flags)
    assert first.returncode == 0 and "2 case(s) added" in first.stdout, first.stderr
    (tmp_path / "c02.png").rename(folder / "c02.png")
    other = CasePool.create(folder / "other-pool")  # another pool beside the scans is no scan either
    (folder / "notes").mkdir()  # nor is a folder of notes: it holds no DICOM series
    (folder / "notes" / "referral.txt").write_text("patient notes")
    second = run("al", "init", pool_dir, "--images", folder, *flags)
    assert second.returncode == 0, second.stderr
    assert "1 case(s) added, 2 already there, 3 in the pool" in second.stdout
    assert f"left out (case pools, not scans): {other.folder}" in second.stderr
    assert "left out (folders without a DICOM series): notes" in second.stderr
    assert sorted(CasePool(pool_dir).read().cases) == ["c00", "c01", "c02"]
    (tmp_path / "elsewhere").mkdir()
    another = write_volume(read_label_map(cases["c00"][1]), tmp_path / "elsewhere" / "c00.png")  # a known ID
    third = run("al", "init", pool_dir, "--images", another, *flags)
    assert third.returncode == 1 and "already has case(s) c00 with another image" in third.stderr
    assert sorted(CasePool(pool_dir).read().cases) == ["c00", "c01", "c02"]


def test_a_copy_no_case_names_is_replaced_and_two_images_with_one_id_are_refused(tmp_path):
    cases = make_cases(tmp_path / "data", 2)
    pool = CasePool.create(tmp_path / "pool")
    leftover = pool.folder / "images" / "c00.nii.gz"  # what a process killed between copy and manifest leaves
    leftover.parent.mkdir()
    leftover.write_bytes(b"half a scan")
    pool.add_images([("c00", cases["c00"][0])], copy=True)
    assert read_label_map(leftover).array.shape == read_label_map(cases["c00"][0]).array.shape
    with pytest.raises(InputError, match=r"'c01' would be given to two images \(.*c01.png and .*c00.png\)"):
        pool.add_images([("c01", cases["c01"][0]), ("c01", cases["c00"][0])])
    assert sorted(pool.read().cases) == ["c00"]
    result = run("al", "init", tmp_path / "other", "--images", cases["c00"][0], cases["c00"][0])
    assert result.returncode == 1 and "would be given to two images" in result.stderr
    assert not (tmp_path / "other").exists()


def test_predicting_ensemble_scores_with_a_single_model_fails_once_and_clearly(tmp_path, tiny_model):
    make_cases(tmp_path / "data", 3)
    pool = tmp_path / "pool"
    assert run("al", "init", pool, "--images", tmp_path / "data" / "images", "--model", tiny_model).returncode == 0
    before = (pool / "pool.json").read_bytes()
    result = run("al", "predict", pool, "--scores", "ensemble", "--device", "cpu")
    assert result.returncode == 1 and "is not an ensemble" in result.stderr
    assert result.stderr.count("not an ensemble") == 1 and (pool / "pool.json").read_bytes() == before


def test_missing_image_is_reported_and_the_other_cases_go_on(tmp_path, tiny_model):
    cases = make_cases(tmp_path / "data", 3)
    pool = tmp_path / "pool"
    assert run("al", "init", pool, "--images", tmp_path / "data" / "images", "--model", tiny_model).returncode == 0
    cases["c01"][0].unlink()
    result = run("al", "predict", pool, "--device", "cpu")
    assert result.returncode == 1
    assert "predicted 2" in result.stdout and "c01" in result.stderr
    result = run("al", "status", pool)
    assert "missing on disk (1): c01" in result.stderr


def test_another_scan_written_over_a_referenced_image_is_noticed(tmp_path, tiny_model, monkeypatch, caplog):
    """Labels belong to the scan they were drawn on: a file replaced at a referenced path must not pair
    earlier corrections with another patient, nor keep a prediction of the earlier scan."""
    from toothseg.train.active_learning.loop import predict_pool
    from toothseg.train.engine import pipeline

    cases = make_cases(tmp_path / "data", 4)
    pool = CasePool.create(tmp_path / "pool", current_model=str(tiny_model))
    pool.add_images([(c, p[0]) for c, p in cases.items()])
    assert all(r.image_fingerprint for r in pool.read().cases.values())
    pool.accept("c00", cases["c00"][1])
    pool.accept("c01", cases["c01"][1])
    predict_pool(pool, device="cpu")
    assert pool.changed_labeled_images() == []

    # same grid, another patient: geometry checks cannot tell
    cases["c00"][0].write_bytes(cases["c03"][0].read_bytes())
    cases["c02"][0].write_bytes(cases["c03"][0].read_bytes())
    assert pool.changed_labeled_images() == ["c00"]
    with pytest.raises(InputError, match="has changed since its earlier corrected labels"):
        pool.accept("c00", cases["c00"][1])
    assert pool.read().cases["c00"].labels == ["labels/c00/rev-0001.nii.gz"]
    status = json.loads(run("al", "status", pool.folder, "--json").stdout)
    assert status["changed_images"] == ["c00"]
    assert "changed since their corrected labels were accepted (1" in run("al", "status", pool.folder).stderr
    summary = describe_pool(pool.folder)  # Slicer's Active learning line
    assert summary.startswith("0 unlabeled, 2 predicted, 0 in review, 2 corrected.")
    assert summary.endswith("Scans replaced since their labels were saved (left out of fine-tuning): c00.")
    cases["c03"][0].unlink()
    assert "Images missing: c03." in describe_pool(pool.folder)
    assert describe_pool("") == describe_pool(tmp_path / "nowhere") \
        == "No pool here yet: Save as corrected case creates one."
    cases["c03"][0].write_bytes(cases["c02"][0].read_bytes())

    # its old prediction is not offered for review (the CLI and Slicer's "Load next case" ask choose_next)
    offered = run("al", "next", pool.folder, "--dry-run")
    assert [line.split("\t")[0] for line in offered.stdout.splitlines()] == ["c03"]
    assert "not offered (1; their scans were replaced" in offered.stderr and "c02" in offered.stderr
    # an uncorrected case is predicted again without --redo; the unchanged one is not
    summary = predict_pool(pool, device="cpu")
    assert summary.predicted == ["c02"]
    record = pool.read().cases["c02"]
    assert [h["event"] for h in record.history][-2:] == ["image changed", "predicted"]
    assert predict_pool(pool, device="cpu").predicted == []

    # fine-tuning leaves the changed case out, and says so
    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(pipeline, "run_recipe", stop)
    with caplog.at_level("WARNING"), pytest.raises(Stop):
        finetune_pool(pool, _toy_recipe_file(tmp_path), device="cpu", holdout_share=0)
    assert pool.read().training["train"] == ["c01"]
    assert "labels of another scan): c00" in caplog.text


def test_a_version_1_manifest_is_migrated_and_kept(tmp_path):
    cases = make_cases(tmp_path / "pool", 3)
    write_manifest(tmp_path / "pool" / "pool.json", [Case("c00", cases["c00"][0], cases["c00"][1]),
                                                     Case("c01", cases["c01"][0])])
    old = (tmp_path / "pool" / "pool.json").read_text()
    pool = CasePool(tmp_path / "pool")
    state = pool.read()
    assert state.cases["c00"].status == "corrected" and state.cases["c00"].label == "truth/c00.png"
    assert state.cases["c01"].status == "unlabeled"
    pool.set_status(["c01"], "in_review", "test")
    assert manifest(pool.folder)["version"] == MANIFEST_VERSION
    assert (tmp_path / "pool" / "pool.json.v1").read_text() == old
    # the migrated corrected labels are never replaced: a new correction is a pool revision
    pool.accept("c00", cases["c00"][1])
    assert pool.read().cases["c00"].labels == ["truth/c00.png", "labels/c00/rev-0001.nii.gz"]


def test_a_newer_or_broken_manifest_is_refused_clearly(tmp_path):
    (tmp_path / "pool.json").write_text(json.dumps({"version": MANIFEST_VERSION + 1, "cases": []}))
    with pytest.raises(InputError, match="newer than this ToothSeg"):
        CasePool(tmp_path).read()
    (tmp_path / "pool.json").write_text("{")
    result = run("al", "status", tmp_path)
    assert result.returncode == 1 and "cannot read the pool manifest" in result.stderr
    result = run("al", "status", tmp_path / "nothing")
    assert result.returncode == 1 and "not a case pool" in result.stderr



def test_names_in_a_manifest_that_would_write_or_delete_outside_the_pool_are_refused(tmp_path):
    """A pool on a shared drive is edited by other hands: a case ID names predictions/<id>.nii.gz (written
    with overwrite) and the fine-tuning record names the folder 'al finetune --restart' deletes."""
    pool = tmp_path / "pool"
    pool.mkdir()
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "data.txt").write_text("precious")
    case = {"id": "../keep/data", "image": "x.nii.gz", "status": "unlabeled"}
    (pool / "pool.json").write_text(json.dumps({"version": MANIFEST_VERSION, "cases": [case]}))
    with pytest.raises(InputError, match="case ID '../keep/data'"):
        CasePool(pool).read()
    training = {"version": "v001", "run": "../keep"}
    (pool / "pool.json").write_text(json.dumps({"version": MANIFEST_VERSION, "cases": [], "training": training}))
    result = run("al", "finetune", pool, "--restart")
    assert result.returncode == 1 and "malformed fine-tuning record" in result.stderr
    assert (keep / "data.txt").read_text() == "precious"


# ---------------------------------------------------------------------------------------- faults
def test_two_processes_accepting_at_once_both_land(tmp_path):
    cases = make_cases(tmp_path / "data", 3)
    pool = CasePool.create(tmp_path / "pool")
    pool.add_images([(c, p[0]) for c, p in cases.items()])
    jobs = [popen("al", "accept", pool.folder, case, cases[case][1]) for case in ("c00", "c01", "c00", "c02")]
    for job in jobs:
        assert job.wait(timeout=300) == 0, job.stderr.read()
    state = pool.read()
    assert state.cases["c00"].labels == ["labels/c00/rev-0001.nii.gz", "labels/c00/rev-0002.nii.gz"]
    assert state.cases["c01"].status == state.cases["c02"].status == "corrected"


@pytest.mark.parametrize("delay", [0.3, 0.9, 1.5, 2.2])
def test_kill_9_during_accept_loses_nothing(tmp_path, delay):
    cases = make_cases(tmp_path / "data", 1)
    pool = CasePool.create(tmp_path / "pool")
    pool.add_images([("c00", cases["c00"][0])])
    pool.accept("c00", cases["c00"][1])
    first = sha(pool.folder / "labels" / "c00" / "rev-0001.nii.gz")
    job = popen("al", "accept", pool.folder, "c00", cases["c00"][1])
    time.sleep(delay)
    job.send_signal(signal.SIGKILL)
    job.wait()
    state = pool.read()  # parses
    assert state.cases["c00"].labels[0] == "labels/c00/rev-0001.nii.gz"
    assert sha(pool.folder / "labels" / "c00" / "rev-0001.nii.gz") == first
    for name in state.cases["c00"].labels:
        read_label_map(pool.folder / name)  # every named revision is whole
    named = len(state.cases["c00"].labels)
    pool.accept("c00", cases["c00"][1])  # and the pool goes on, above any orphan revision
    labels = pool.read().cases["c00"].labels
    assert len(labels) == named + 1 and labels[-1] > labels[-2]
    assert sha(pool.folder / "labels" / "c00" / "rev-0001.nii.gz") == first


def test_status_lists_and_cleans_only_stale_temporary_folders(tmp_path):
    """What a killed writer leaves (a .toothseg-tmp-* folder) is reported and removable; a
    temporary folder still being written (recent) is left alone."""
    pool = CasePool.create(tmp_path / "pool")
    stale = pool.folder / "labels" / "c00" / ".toothseg-tmp-dead"
    fresh = pool.folder / "labels" / "c01" / ".toothseg-tmp-busy"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "rev-0001.nii.gz").write_bytes(b"partial")
    old = time.time() - 2 * 3600
    for path in (stale / "rev-0001.nii.gz", stale):
        os.utime(path, (old, old))
    status = run("al", "status", pool.folder, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["leftover_temporaries"] == ["labels/c00/.toothseg-tmp-dead"]
    assert run("al", "status", pool.folder).stderr.count("temporary folder") == 1
    cleaned = run("al", "status", pool.folder, "--clean", "--json")
    assert cleaned.returncode == 0 and json.loads(cleaned.stdout)["leftover_temporaries"] == []
    assert not stale.exists() and fresh.exists()


def test_kill_9_during_predict_resumes_where_it_stopped(tmp_path, tiny_model):
    make_cases(tmp_path / "data", 8)
    pool = tmp_path / "pool"
    assert run("al", "init", pool, "--images", tmp_path / "data" / "images", "--model", tiny_model).returncode == 0
    job = popen("al", "predict", pool, "--scores", "entropy,tta", "--device", "cpu")
    deadline = time.time() + 240
    while time.time() < deadline and job.poll() is None:
        try:
            done = [r for r in manifest(pool)["cases"] if r["status"] == "predicted"]
        except json.JSONDecodeError:  # would mean a torn manifest: fail below
            done = None
            break
        if done:
            break
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert done is not None
    state = CasePool(pool).read()
    predicted = [c for c in state.cases.values() if c.status == "predicted"]
    assert 1 <= len(predicted) <= 8
    for record in predicted:
        read_label_map(pool / record.prediction)
    result = run("al", "predict", pool, "--scores", "entropy,tta", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert f"predicted {8 - len(predicted)}, skipped {len(predicted)}" in result.stdout
    assert all(c.status == "predicted" for c in CasePool(pool).read().cases.values())


# ---------------------------------------------------------------------------------------- acquisition
def test_tta_disagreement_is_zero_for_a_side_consistent_model_and_one_for_a_side_blind_one():
    """HalfImage labels the image-left half 11 and the right half 21 whatever it sees: mirrored,
    mirrored back and FDI-swapped it agrees with itself. IntensityToClass labels by intensity only:
    on a left-right symmetric image the swap turns every 11 into 21, total disagreement."""
    image = np.zeros((1, 24, 24), np.float32)
    image[:, 4:10, 4:20] = 1.0
    image[:, 14:20, 4:20] = 2.0  # symmetric left-right
    volume = Volume(image)
    consistent = Predictor(loaded(HalfImage(), [0, 11, 21], TABLE, patch=[1, 24, 24]), InferenceOptions(tta=False))
    assert tta_disagreement(consistent, volume) == {11: 0.0, 21: 0.0}
    blind = Predictor(loaded(IntensityToClass(3), [0, 11, 21], TABLE, patch=[1, 24, 24]), InferenceOptions(tta=False))
    assert tta_disagreement(blind, volume) == {11: 1.0, 21: 1.0}
    # given the plain prediction (as predict_pool has it), the same answer from one prediction less
    assert tta_disagreement(blind, volume, blind.predict(volume).labels) == {11: 1.0, 21: 1.0}
    assert tta_disagreement(consistent, volume, consistent.predict(volume).labels) == {11: 0.0, 21: 0.0}


def test_ensemble_disagreement_needs_members_and_measures_them():
    volume = Volume(np.ones((1, 16, 16), np.float32))
    same = loaded(None, [0, 11, 21], TABLE, members=[("ensemble", loaded(HalfImage(), [0, 11, 21], TABLE)),
                                                     ("ensemble", loaded(HalfImage(), [0, 11, 21], TABLE))])
    assert ensemble_disagreement(same, volume, InferenceOptions(tta=False)) == {11: 0.0, 21: 0.0}
    single = loaded(HalfImage(), [0, 11, 21], TABLE)
    with pytest.raises(InputError, match="not an ensemble"):
        ensemble_disagreement(single, volume, InferenceOptions(tta=False))


def test_rank_cases_orders_randomises_and_diversifies():
    scores = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1}
    assert rank_cases(list(scores), scores, 2, "entropy") == ["a", "b"]
    assert rank_cases(list(scores), scores, 3, "random", seed=1) == rank_cases(list(scores), {}, 3, "random", seed=1)
    assert sorted(rank_cases(list(scores), {}, 4, "random")) == sorted(scores)
    # a and b doubt the same tooth; c doubts another: diverse picks a, then c
    features = {"a": {"11": 0.9}, "b": {"11": 0.8}, "c": {"21": 0.7}, "d": {"21": 0.1}}
    assert rank_cases(list(scores), scores, 2, "entropy", diverse=True, features=features) == ["a", "c"]
    with pytest.raises(InputError, match="diverse"):  # a random draw has no doubts to spread over
        rank_cases(list(scores), {}, 2, "random", diverse=True)
    with pytest.raises(InputError, match="no 'tta' score"):
        rank_cases(list(scores), {}, 2, "tta")
    assert case_score({}) == 1.0 and case_score({11: 0.2, 21: 0.4}) == pytest.approx(0.3)


def test_holdout_is_stable_and_grows_with_the_corrections():
    first = holdout_cases([f"c{i}" for i in range(5)], [])
    assert len(first) == 1
    later = holdout_cases([f"c{i}" for i in range(10)], first)
    assert later[0] == first[0] and len(later) == 2
    assert holdout_cases(["only"], []) == []


# ---------------------------------------------------------------------------------------- fine-tuning
def _toy_recipe_file(tmp_path: Path, iterations: int = 6) -> Path:
    recipe = toy_recipe(tmp_path, iterations=iterations)  # a ResEnc U-Net: the parent's U-Net must win
    recipe["name"] = "al-toy"
    recipe["stages"][0]["checkpoint_every"] = 1
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _corrected_pool(tmp_path: Path, model: Path, corrected: int = 5, total: int = 7) -> CasePool:
    cases = make_cases(tmp_path / "data", total)
    pool = CasePool.create(tmp_path / "pool", current_model=str(model))
    pool.add_images([(c, p[0]) for c, p in cases.items()])
    for case in list(cases)[:corrected]:
        pool.accept(case, cases[case][1])
    return pool


def test_finetune_makes_a_version_judges_it_on_held_out_cases_and_registers_it(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("TOOTHSEG_MODELS_DIR", str(tmp_path / "home"))
    pool = _corrected_pool(tmp_path, tiny_model)
    result = run("al", "finetune", pool.folder, "--recipe", _toy_recipe_file(tmp_path), "--device", "cpu",
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
    pool = _corrected_pool(tmp_path, tiny_model, corrected=2, total=3)
    result = run("al", "finetune", pool.folder, "--recipe", tmp_path / "missing.yaml", "--device", "cpu")
    assert result.returncode == 1 and "cannot read recipe" in result.stderr
    assert pool.read().training is None and not (pool.folder / "runs" / "v001").exists()
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({"stages": [{"method": "supervised", "iteratons": 3}]}))
    result = run("al", "finetune", pool.folder, "--recipe", tmp_path / "typo.yaml", "--device", "cpu")
    assert result.returncode == 1 and "did you mean 'iterations'" in result.stderr
    assert pool.read().training is None and not (pool.folder / "runs" / "v001").exists()


def test_finetune_without_corrections_says_so(tmp_path, tiny_model):
    pool = _corrected_pool(tmp_path, tiny_model, corrected=0, total=2)
    result = run("al", "finetune", pool.folder, "--recipe", _toy_recipe_file(tmp_path), "--device", "cpu")
    assert result.returncode == 1 and "no corrected case to train on" in result.stderr


def test_kill_9_during_finetune_resumes_the_same_run(tmp_path, tiny_model):
    pool = _corrected_pool(tmp_path, tiny_model, corrected=3, total=4)
    recipe = _toy_recipe_file(tmp_path, iterations=150)
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

    pool = _corrected_pool(tmp_path, tiny_model, corrected=2, total=3)
    stray = read_label_map(pool.path(pool.read().cases["c01"].label))
    stray.array[:3, :3] = 99  # the tiny model's classes are 11 and 21
    bad = write_volume(stray, tmp_path / "stray.png")
    pool.accept("c01", bad)
    with pytest.raises(LabelError, match=r"'c01' \(labels/c01/rev-0002.nii.gz\): label value\(s\) \[99\]"):
        finetune_pool(pool, _toy_recipe_file(tmp_path), device="cpu", register=False)
    assert pool.read().training is None and not (pool.folder / "runs" / "v001").exists()


class _Stop(Exception):
    pass


def test_a_pool_without_a_model_fine_tunes_the_catalogue_default_not_a_fresh_network(tmp_path, monkeypatch):
    """The pool's predictions came from the catalogue default; training a new network on a few
    corrections instead must be asked for (--from-scratch)."""
    import toothseg.train.engine.pipeline as pipeline
    from toothseg.core.models.catalog import load_catalog
    from toothseg.train.active_learning.loop import finetune_pool

    seen = []

    def stop(recipe, *args, **kwargs):
        seen.append(recipe)
        raise _Stop

    monkeypatch.setattr(pipeline, "run_recipe", stop)
    cases = make_cases(tmp_path / "data", 2)
    pool = CasePool.create(tmp_path / "pool")
    pool.add_images([(c, p[0]) for c, p in cases.items()])
    for case, (_, label) in cases.items():
        pool.accept(case, label)
    default = load_catalog().default("2d")
    with pytest.raises(_Stop):
        finetune_pool(pool, _toy_recipe_file(tmp_path), device="cpu", register=False)
    run = pool.read().training
    assert run["parent"] == default.id and Path(run["parent_folder"]) == default.folder.resolve()
    assert run["current_folder"] == run["parent_folder"]  # the judge: the model the pool predicts with
    assert seen[0].model.architecture == read_card(default.folder).architecture
    assert seen[0].stages[0].init_from is not None
    with pytest.raises(_Stop):
        finetune_pool(pool, _toy_recipe_file(tmp_path), device="cpu", register=False, restart=True,
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
        finetune_pool(pool, _toy_recipe_file(tmp_path), device="cpu", register=False, restart=True)
    with pytest.raises(_Stop):
        finetune_pool(pool, _toy_recipe_file(tmp_path), device="cpu", register=False, restart=True,
                      from_scratch=True)
    assert pool.read().training["current_folder"] is None


def test_restart_discards_an_interrupted_fine_tune(tmp_path, tiny_model):
    from toothseg.train.active_learning.loop import finetune_pool

    pool = _corrected_pool(tmp_path, tiny_model, corrected=3, total=3)
    with pool.transaction() as state:  # what a killed run leaves: a recorded run whose recipe is gone
        state.training = {"version": "v001", "run": "runs/v001", "recipe": str(tmp_path / "gone.yaml"),
                          "parent": None, "parent_folder": None, "train": ["c00"], "holdout": [], "overrides": []}
    (pool.folder / "runs" / "v001").mkdir(parents=True)
    # what Slicer's Fine-tune asks about first: this run cannot resume, only start afresh
    stopped = stopped_finetune(pool.folder)
    assert stopped is not None and stopped.version == "v001" and stopped.recipe_missing
    assert "Fine-tuning v001 was stopped" in describe_pool(pool.folder)
    with pytest.raises(InputError, match="--restart discards the run"):
        finetune_pool(pool, _toy_recipe_file(tmp_path), device="cpu", register=False)
    result = finetune_pool(pool, _toy_recipe_file(tmp_path), device="cpu", register=False, restart=True)
    assert result.version.version == "v001" and pool.read().training is None
    assert stopped_finetune(pool.folder) is None and stopped_finetune("") is None
    assert stopped_finetune(tmp_path / "nowhere") is None


def test_an_orphan_revision_left_by_a_crash_is_skipped_not_replaced(tmp_path):
    """A crash between writing the revision file and the manifest leaves an unnamed revision on disk."""
    cases = make_cases(tmp_path / "data", 1)
    pool = CasePool.create(tmp_path / "pool")
    pool.add_images([("c00", cases["c00"][0])])
    orphan = pool.folder / "labels" / "c00" / "rev-0001.nii.gz"
    orphan.parent.mkdir(parents=True)
    write_volume(read_label_map(cases["c00"][1]), orphan)
    before = sha(orphan)
    target = pool.accept("c00", cases["c00"][1])
    assert target.name == "rev-0002.nii.gz" and sha(orphan) == before
    assert pool.read().cases["c00"].labels == ["labels/c00/rev-0002.nii.gz"]


def test_save_corrected_case_creates_the_pool_and_keeps_every_revision(tmp_path):
    """What the Slicer module's "Save as corrected case" calls, with the files it saved."""
    from toothseg.core.pool.store import save_corrected_case

    cases = make_cases(tmp_path / "data", 1)
    first = save_corrected_case(tmp_path / "pool", "CBCT 2024/03 (1)", cases["c00"][0], cases["c00"][1])
    second = save_corrected_case(tmp_path / "pool", "CBCT 2024/03 (1)", cases["c00"][0], cases["c00"][1])
    assert first.parent.name == "CBCT_2024_03_1" and (first.name, second.name) == ("rev-0001.nii.gz", "rev-0002.nii.gz")
    record = CasePool(tmp_path / "pool").read().cases["CBCT_2024_03_1"]
    assert record.status == "corrected" and len(record.labels) == 2 and record.image.startswith("images/")
    # another scan under the same node name is another case, never a revision of the first
    other = make_cases(tmp_path / "other", 1, seed=5)["c00"]
    third = save_corrected_case(tmp_path / "pool", "CBCT 2024/03 (1)", other[0], other[1])
    assert third.parent.name == "CBCT_2024_03_1_2" and third.name == "rev-0001.nii.gz"
    assert len(CasePool(tmp_path / "pool").read().cases["CBCT_2024_03_1"].labels) == 2
    # the first case's image overwritten by the second scan: its labels stay with the first scan, and the
    # second scan's save goes to the case that has always held it
    pool = CasePool(tmp_path / "pool")
    pool.path("images/CBCT_2024_03_1.nii.gz").write_bytes(pool.path("images/CBCT_2024_03_1_2.nii.gz").read_bytes())
    fourth = save_corrected_case(tmp_path / "pool", "CBCT 2024/03 (1)", other[0], other[1])
    assert fourth.parent.name == "CBCT_2024_03_1_2" and fourth.name == "rev-0002.nii.gz"


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
    assert bench.main(["--train-manifest", str(tmp_path / "train.json"), "--test-manifest", str(tmp_path / "test.json"),
                       "--strategies", "entropy,random", "--start", "2", "-k", "2", "--rounds", "2",
                       "--recipe", str(tmp_path / "recipe.yaml"), "--iterations", "2", "--first-iterations", "3",
                       "--device", "cpu", "--out", str(out), "--set", "seed=3"]) == 0
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
    assert bench.corrections_to_reach([(5, 0.5)], 0.7) is None


def _bench_active_learning():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_active_learning", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_active_learning.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _simulation_result(seed: int, curves: dict[str, list[float]], **settings) -> dict:
    return {"settings": {"start": 5, "k": 5, "rounds": 2, "iterations": 150, "seed": seed, "test_cases": 66,
                         **settings},
            "curves": {s: {"points": [[5 + 5 * i, d] for i, d in enumerate(dice)], "seconds": 1.0}
                       for s, dice in curves.items()}}


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
    files = []
    for i, run in enumerate((a, b)):
        files.append(tmp_path / f"run{i}.json")
        files[-1].write_text(json.dumps(run))
    assert bench.main(["--combine", *map(str, files), "--out", str(tmp_path / "both")]) == 0
    written = json.loads((tmp_path / "both" / "active_learning_seeds.json").read_text())
    assert written["curves"]["entropy"]["per_seed"]["1"] == b["curves"]["entropy"]["points"]
    assert (tmp_path / "both" / "active_learning_seeds.png").stat().st_size > 1000
    assert "entropy: reaches random's final Dice 0.5500 after 15" in capsys.readouterr().out
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


def test_predict_with_a_model_for_the_other_kind_of_image_is_refused_once(tmp_path, tiny_model):
    from toothseg.train.active_learning.loop import predict_pool

    scan = write_volume(Volume(np.zeros((6, 8, 8), np.int16), (0.5, 0.5, 0.5)), tmp_path / "scan.nii.gz")
    pool = CasePool.create(tmp_path / "pool")
    pool.add_images([("scan", scan)])
    before = (pool.folder / "pool.json").read_bytes()
    with pytest.raises(InputError, match="segments 2D panoramic X-rays; the pool holds 3D scans"):
        predict_pool(pool, str(tiny_model), device="cpu")
    assert (pool.folder / "pool.json").read_bytes() == before


def test_a_pool_whose_path_reads_as_yaml_syntax_fine_tunes(tmp_path, tiny_model):
    """The pool's file lists were handed to the recipe as unquoted YAML: a folder 'Patient #3' was cut at
    ' #' (a comment) and 'a: b' became a mapping."""
    base = tmp_path / "Patient #3: jaw"
    pool = _corrected_pool(base, tiny_model, corrected=2, total=2)
    result = finetune_pool(pool, _toy_recipe_file(base, iterations=1), device="cpu", register=False, holdout_share=0)
    assert (pool.folder / result.version.folder / "model.json").is_file()
    assert result.version.model_id.startswith("toothseg-al-pool-")
