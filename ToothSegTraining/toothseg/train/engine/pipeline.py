"""Runs a recipe's stages in order, chaining weights with ``init_from``, and exports the final model."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from ...core.errors import InputError
from ...core.progress import CancelToken
from ..config import Recipe
from ..data.dataset import TrainingData, label_table_for
from ..methods.base import Method, unwrap
from .trainer import StageResult, Trainer, distributed_context

__all__ = ["run_recipe", "RunResult"]

log = logging.getLogger("toothseg.train")


class RunResult:
    def __init__(self, model: Path | None, stages: list[StageResult], interrupted: bool) -> None:
        self.model, self.stages, self.interrupted = model, stages, interrupted


def _initializer(init_from: str, previous: Path | None):
    """A function that loads weights into every network of a method, or None."""
    if init_from in ("", "none"):
        return None
    if init_from in ("previous", "previous.encoder"):
        if previous is None:
            raise InputError(f"init_from: {init_from} needs an earlier stage")
        folder, encoder_only = previous, init_from.endswith(".encoder")
    else:
        folder, encoder_only = Path(init_from), False
        if not (folder / "model.json").exists():
            raise InputError(f"init_from: {init_from!r} is not a model folder")

    def load(method: Method) -> None:
        from ...core.models.folder import read_card
        from ...core.models.checkpoints import read_state_dict

        card = read_card(folder)
        state = read_state_dict(folder / card.weights_file)
        for name, network in method.nets.items():
            module = unwrap(network)
            own = module.state_dict()
            if encoder_only:
                keys = [k for k in state if k.startswith(getattr(module, "encoder_prefixes", ()))]
            else:
                keys = [k for k in state if k in own]
            usable = {k: state[k] for k in keys if k in own and own[k].shape == state[k].shape}
            if not usable:
                raise InputError(f"init_from {folder}: no weights fit network {name!r}")
            module.load_state_dict(usable, strict=False)
            log.info("init_from %s: %d/%d tensors of %s", folder, len(usable), len(own), name)

    return load


def run_recipe(recipe: Recipe, raw: dict[str, Any], output: str | Path | None = None, device: str = "auto",
               restart: bool = False, quiet: bool = False, token: CancelToken | None = None) -> RunResult:
    """Train every stage (resuming finished/interrupted ones) and return the final model folder."""
    import yaml

    rank, world, _ = distributed_context()
    out = Path(output or recipe.output_dir or Path("runs") / recipe.name)
    saved = out / "recipe.yaml"
    if rank == 0:
        if restart and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(raw, sort_keys=False)
        if saved.exists() and saved.read_text(encoding="utf-8") != text:
            raise InputError(f"{out} holds a run of a different recipe; use --restart or another --output")
        saved.write_text(text, encoding="utf-8")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    table = label_table_for(recipe.data.label_table)
    class_values = recipe.data.class_values or [0, *table.values]
    data = TrainingData(recipe.data, table, class_values, recipe.seed)
    previous: Path | None = None
    results: list[StageResult] = []
    token = token or CancelToken()
    for index, stage in enumerate(recipe.stages):
        stage_dir = out / stage.name
        if (stage_dir / "model" / "model.json").exists():
            previous = stage_dir / "model"
            continue
        trainer = Trainer(recipe, index, stage_dir, data, table, class_values, device, token, quiet)
        result = trainer.fit(resume=True, init_weights=_initializer(stage.init_from, previous))
        results.append(result)
        if result.interrupted:
            return RunResult(None, results, True)
        previous = stage_dir / "model"
    final = out / "model"
    if rank == 0 and previous is not None:
        staging = out / ".model.incoming"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(previous, staging)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    return RunResult(final, results, False)
