"""Shared by the active-learning tests: the toy cases, the CLI runner, a toy fine-tuning recipe."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from toothseg.core import LabelTable, Volume
from toothseg.core.io import write_volume
from toothseg.core.pool.store import CasePool

from ..conftest import blob_case, toy_recipe

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


def toy_recipe_file(tmp_path: Path, iterations: int = 6) -> Path:
    recipe = toy_recipe(tmp_path, iterations=iterations)  # a ResEnc U-Net: the parent's U-Net must win
    recipe["name"] = "al-toy"
    recipe["stages"][0]["checkpoint_every"] = 1
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def corrected_pool(tmp_path: Path, model: Path, corrected: int = 5, total: int = 7) -> CasePool:
    cases = make_cases(tmp_path / "data", total)
    pool = CasePool.create(tmp_path / "pool", current_model=str(model))
    pool.add_images([(c, p[0]) for c, p in cases.items()])
    for case in list(cases)[:corrected]:
        pool.accept(case, cases[case][1])
    return pool
