"""Checkpoints that resume a stage exactly: networks, optimisers, grad scaler, the method's own state
(teachers' schedules, competence gates), the step, the best validation score and every RNG state.

The data stream is a function of the step, so restoring these is all an interrupted run needs to
continue the same loss curve. Written atomically: a run killed while writing keeps the previous file.
Read with ``weights_only`` loading (no unpickling of arbitrary objects).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...core.errors import OutputWriteError
from ...core.io.atomic import atomic_output
from ...core.models.checkpoints import safe_torch_load
from ..methods.base import Method, unwrap

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "restore_rng_state"]

log = logging.getLogger("toothseg.train")


def save_checkpoint(path: Path, method: Method, optimizers: list[torch.optim.Optimizer],
                    scaler: torch.amp.GradScaler, step: int, best: float, stage: int) -> bool:
    """Write the training state; on a full disk (or any write error) keep the previous file, warn and
    return False, so that training goes on."""
    state = {
        "step": step, "best": best, "stage": stage,
        "networks": {n: unwrap(net).state_dict() for n, net in method.nets.items()},
        "optimizers": [o.state_dict() for o in optimizers],
        "scaler": scaler.state_dict(),
        "method": method.state_dict(),
        "rng": rng_state(),
    }
    try:
        with atomic_output(path, overwrite=True) as tmp:
            torch.save(state, str(tmp))
    except (OutputWriteError, OSError, RuntimeError) as exc:
        log.warning("could not write a checkpoint at step %d (%s); the previous one is kept", step, exc)
        return False
    return True


def load_checkpoint(path: Path, networks: dict[str, nn.Module], optimizers: list[torch.optim.Optimizer],
                    scaler: torch.amp.GradScaler, method: Method) -> tuple[int, float] | None:
    """Restore the state saved by :func:`save_checkpoint`; (step, best) or None without a checkpoint."""
    if not path.exists():
        return None
    state = safe_torch_load(path)
    for name, net in networks.items():
        unwrap(net).load_state_dict(state["networks"][name])
    for optimizer, saved in zip(optimizers, state["optimizers"]):
        optimizer.load_state_dict(saved)
    scaler.load_state_dict(state["scaler"])
    method.load_state_dict(state["method"])
    restore_rng_state(state["rng"])
    return int(state["step"]), float(state["best"])


def rng_state() -> dict[str, Any]:
    """torch, NumPy and Python RNG states as tensors and numbers (loadable with ``weights_only``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                       "gauss": -1.0 if gauss is None else float(gauss)}}


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached"]))
    python_state = state["python"]
    gauss = None if python_state["gauss"] == -1.0 else python_state["gauss"]
    random.setstate((python_state["version"], tuple(int(v) for v in python_state["internal"].tolist()), gauss))
