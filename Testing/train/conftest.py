"""Tiny 2D datasets (files on disk) and recipes for fast, CPU-only training tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from toothseg.core import Volume
from toothseg.core.io import write_volume
from toothseg.train.data.cases import Case, write_manifest


def blob_case(rng: np.random.Generator, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A panoramic-like toy: tooth 11 on the patient's right (image left), 21 on the left, noise."""
    y, x = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint8)
    for value, cx in ((11, size * 0.3), (21, size * 0.7)):
        cy = size * 0.5 + rng.uniform(-4, 4)
        r = rng.uniform(6, 9)
        labels[((y - cy) / r) ** 2 + ((x - cx - rng.uniform(-3, 3)) / (r * 0.7)) ** 2 <= 1] = value
    image = (labels > 0) * 150 + 50 + rng.normal(0, 15, labels.shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    groups = {"labeled": 4, "unlabeled": 4, "validation": 1}
    for group, count in groups.items():
        cases = []
        for i in range(count):
            image, labels = blob_case(rng)
            (root / "images").mkdir(parents=True, exist_ok=True)
            image_path = write_volume(Volume(image, kind="2d"), root / "images" / f"{group}{i}.png")
            label_path = None
            if group != "unlabeled":
                (root / "labels").mkdir(exist_ok=True)
                label_path = write_volume(Volume(labels, kind="2d"), root / "labels" / f"{group}{i}.png")
            cases.append(Case(f"{group}{i}", image_path, label_path))
        write_manifest(root / f"{group}.json", cases)
    return root


def toy_recipe(root: Path, method: str = "supervised", iterations: int = 4, settings: dict | None = None,
               unlabeled_batch: int = 0, stages: list | None = None, architecture: str = "resenc_unet") -> dict:
    kwargs = {"features_per_stage": [4, 8, 16], "strides": [1, 2, 2], "n_blocks_per_stage": [1, 1, 1]}
    if architecture == "unet2d":
        kwargs = {"base_channels": 4}
    return {
        "name": f"toy-{method}",
        "seed": 0,
        "data": {"kind": "2d", "source": "files", "labeled": str(root / "labeled.json"),
                 "unlabeled": str(root / "unlabeled.json"), "validation": str(root / "validation.json"),
                 "patch_size": [32, 32], "workers": 0, "class_values": [0, 11, 21],
                 "augment": {"rotate_probability": 0.0, "scale_probability": 0.0}},
        "model": {"architecture": architecture, "kwargs": kwargs},
        "stages": stages or [{"method": method, "iterations": iterations, "batch_size": 2,
                              "unlabeled_batch_size": unlabeled_batch, "checkpoint_every": 2,
                              "settings": settings or {},
                              "optimizer": {"name": "adam", "lr": 0.01, "schedule": "constant"}}],
        "export": {"mirror_axes": [1]},
    }


def losses(run: Path, stage: str = "0_supervised") -> list[float]:
    """The training loss per logged step of one stage of a run (its ``log.csv``)."""
    with open(run / stage / "log.csv", encoding="utf-8") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]
