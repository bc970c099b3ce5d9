"""The pool manifest (migration, refusals) and faults: two writers, kill -9 during accept and predict, crashes."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from toothseg.core.errors import InputError
from toothseg.core.io import read_label_map, write_volume
from toothseg.core.pool.store import MANIFEST_VERSION, CasePool
from toothseg.train.data.cases import Case, write_manifest

from .helpers import make_cases, manifest, popen, run, sha


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
