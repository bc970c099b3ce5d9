"""The case pool through the CLI and the loop: init, predict, next, accept, status; changed or missing scans."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from toothseg.core import Volume
from toothseg.core.errors import InputError
from toothseg.core.io import read_label_map, write_volume
from toothseg.core.pool.store import MANIFEST_VERSION, CasePool, describe_pool
from toothseg.train.active_learning.loop import finetune_pool

from .helpers import make_cases, manifest, run, sha, toy_recipe_file


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
    from toothseg.train.active_learning import loop
    from toothseg.train.active_learning.loop import predict_pool

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

    monkeypatch.setattr(loop, "run_recipe", stop)
    with caplog.at_level("WARNING"), pytest.raises(Stop):
        finetune_pool(pool, toy_recipe_file(tmp_path), device="cpu", holdout_share=0)
    assert pool.read().training["train"] == ["c01"]
    assert "labels of another scan): c00" in caplog.text


def test_predict_with_a_model_for_the_other_kind_of_image_is_refused_once(tmp_path, tiny_model):
    from toothseg.train.active_learning.loop import predict_pool

    scan = write_volume(Volume(np.zeros((6, 8, 8), np.int16), (0.5, 0.5, 0.5)), tmp_path / "scan.nii.gz")
    pool = CasePool.create(tmp_path / "pool")
    pool.add_images([("scan", scan)])
    before = (pool.folder / "pool.json").read_bytes()
    with pytest.raises(InputError, match="segments 2D panoramic X-rays; the pool holds 3D scans"):
        predict_pool(pool, str(tiny_model), device="cpu")
    assert (pool.folder / "pool.json").read_bytes() == before
