"""The committed UFBA-425 split: stratified by category, disjoint, order-free, and what the function
that made it gives on the real file names (so nobody can edit it by hand unnoticed)."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from toothseg.train.data.cases import UFBA_SPLIT_FILE, make_ufba_split, ufba_cases

from ..conftest import shared_data_dir

UFBA_IMAGES = shared_data_dir() / "ufba425" / "images"


def test_split_is_stratified_disjoint_and_order_free():
    ids = [f"cate{c}-{i:05d}" for c in range(1, 4) for i in range(30 + 10 * c)]
    split = make_ufba_split(ids)
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(ids)
    assert not set(split["train"]) & set(split["test"]) and not set(split["val"]) & set(split["test"])
    for category, count in Counter(i.split("-")[0] for i in ids).items():
        in_test = sum(i.startswith(category + "-") for i in split["test"])
        assert in_test == round(0.2 * count)  # every category is in the test set, in proportion
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    assert make_ufba_split(shuffled) == split
    grown = make_ufba_split(ids + ["cate4-00000", "cate4-00001"])  # a tiny category: one test case, no val
    assert sum(i.startswith("cate4-") for i in grown["test"]) == 1
    assert not any(i.startswith("cate4-") for i in grown["val"])


def test_labeled_fractions_are_nested(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOTHSEG_SHARED_DATA", str(tmp_path))  # paths only: no file is read
    ten, quarter = (set(c.id for c in ufba_cases("train", f)) for f in (0.1, 0.25))
    everything = set(json.loads(UFBA_SPLIT_FILE.read_text(encoding="utf-8"))["train"])
    assert ten < quarter < everything and len(ten) == round(0.1 * len(everything))
    rest = {c.id for c in ufba_cases("train", 0.1, part="unlabeled")}
    assert rest == everything - ten and all(c.label is None for c in ufba_cases("train", 0.1, part="unlabeled"))


@pytest.mark.skipif(not UFBA_IMAGES.is_dir(), reason="needs ../shared/data/ufba425")
def test_committed_split_is_what_the_function_gives_on_the_real_files():
    committed = json.loads(UFBA_SPLIT_FILE.read_text(encoding="utf-8"))
    ids = sorted(p.name[: -len(".png")] for p in UFBA_IMAGES.glob("*.png"))
    assert len(ids) == 325
    assert {k: committed[k] for k in ("train", "val", "test")} == make_ufba_split(ids)
