"""Sliding-window prediction with Gaussian blending, batching, skipping and memory fall-backs.

The image is covered by overlapping windows; each window's class probabilities are weighted by
the Gaussian importance map and summed, then divided by the summed weights. Several windows go
through the network per call (``batch_size``). Accumulators live on the compute device when they
fit and in reduced precision (float16 probabilities, which are bounded by the number of
overlapping windows) unless ``exact`` is asked for; a CUDA out-of-memory error first halves the
batch, then moves the accumulators to the CPU, then runs the network on the CPU. Windows for
which ``skip`` says there is nothing to find are not run, and count as background.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..progress import Progress
from .windows import gaussian_importance, nnunet_gaussian_importance, symmetric_padding, window_slices

__all__ = ["SlidingWindowConfig", "sliding_window_predict"]

log = logging.getLogger(__name__)

#: ``predictor(batch (B, C_in, *patch)) -> probabilities (B, C, *patch)``
Predictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SlidingWindowConfig:
    """Settings of one sliding-window pass (sizes in array order)."""

    patch_size: Sequence[int]
    overlap: float = 0.5
    batch_size: int = 2
    placement: str = "even"
    sigma_scale: float = 0.125
    exact: bool = False  # float32 accumulators (tests, comparisons); default float16 probabilities
    importance: str = "monai"  # "monai" or "nnunet" (two discretisations of the Gaussian) or "uniform"
    strides: Sequence[int] | None = None  # fixed steps per axis instead of the overlap (RAIL's test code)


def _accumulate_dtype(config: SlidingWindowConfig) -> torch.dtype:
    return torch.float32 if config.exact else torch.float16


@dataclass
class _FallbackState:
    """Where the network runs, where the blend is kept, and how many windows go per call."""

    device: torch.device
    batch: int
    acc_device: torch.device


def _on_gpu(state: _FallbackState) -> bool:
    return state.device.type == "cuda"


def _degrade(state: _FallbackState) -> str | None:
    """Take the next, cheaper step after a GPU out-of-memory error; None when none is left.

    The order costs least speed first: fewer windows per call, then the blend in CPU memory
    (only the windows' probabilities cross the bus), then the network itself on the CPU.
    """
    if state.batch > 1:
        state.batch = max(1, state.batch // 2)
        return f"retrying with {state.batch} window(s) per batch"
    if state.acc_device.type != "cpu":
        state.acc_device = torch.device("cpu")
        return "keeping the blended result in CPU memory"
    if state.device.type != "cpu":
        state.device = torch.device("cpu")
        return "even one window does not fit: continuing on the CPU"
    return None


def sliding_window_predict(image: torch.Tensor, predictor: Predictor, num_classes: int, config: SlidingWindowConfig,
                           device: torch.device | str = "cpu", progress: Progress | None = None,
                           skip: Callable[[tuple[slice, ...]], bool] | None = None) -> torch.Tensor:
    """Blend window predictions over ``image`` (C_in, *spatial) into probabilities (C, *spatial).

    Args:
        predictor: maps a batch of windows to probabilities (softmax already applied).
        skip: called with each window's slices (in the unpadded image); True means "no need to
            run the network here" (e.g. no tooth within reach according to a coarse model).

    Returns:
        Probabilities on the CPU in the accumulator dtype; voxels that no window covered are
        background (probability 1 for class 0).
    """
    progress = progress or Progress()
    device = torch.device(device)
    spatial = tuple(image.shape[1:])
    patch = tuple(int(p) for p in config.patch_size)
    pads = symmetric_padding(spatial, patch)
    if any(sum(p) for p in pads):
        flat = [v for pair in reversed(pads) for v in pair]
        image = F.pad(image[None], flat, mode="constant", value=0.0)[0]
    padded = tuple(image.shape[1:])
    windows = window_slices(padded, patch, config.overlap, config.placement, config.strides)
    if skip is not None:
        offsets = [p[0] for p in pads]
        windows = [w for w in windows if not skip(tuple(slice(max(0, s.start - o), max(0, s.stop - o))
                                                        for s, o in zip(w, offsets)))]
    dtype = _accumulate_dtype(config)
    if config.importance == "uniform":
        weights_np = np.ones(patch, dtype=np.float32)
    elif config.importance == "nnunet":
        weights_np = nnunet_gaussian_importance(patch, config.sigma_scale)
    else:
        weights_np = gaussian_importance(patch, config.sigma_scale)
    state = _FallbackState(device=device, batch=max(1, config.batch_size), acc_device=device)

    def allocate(where: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        acc = torch.zeros((num_classes, *padded), dtype=dtype, device=where)
        norm = torch.zeros(padded, dtype=torch.float32 if config.exact else torch.float16, device=where)
        weights = torch.from_numpy(weights_np).to(where)
        return acc, norm, weights.to(dtype), weights.to(norm.dtype)

    acc, norm, w_acc, w_norm = allocate(state.acc_device)
    index = 0
    total = max(1, len(windows))
    while index < len(windows):
        progress.update(index / total, f"window {index + 1}/{len(windows)}")
        batch_windows = windows[index:index + state.batch]
        try:
            # every allocation of this batch happens here, before anything is added: a retry after
            # an out-of-memory error can never count a window twice
            batch = torch.stack([image[(slice(None), *w)] for w in batch_windows]).to(state.device)
            probs = predictor(batch).to(device=state.acc_device, dtype=dtype)
            del batch
        except torch.cuda.OutOfMemoryError:
            if not _on_gpu(state):  # pragma: no cover - CPU memory errors are MemoryError
                raise
            message = _degrade(state)
            if message is None:
                raise
            log.warning("GPU out of memory: %s", message)
            if acc.device.type != state.acc_device.type:  # "cuda" and "cuda:0" are one place
                acc, norm = acc.to(state.acc_device), norm.to(state.acc_device)
                w_acc, w_norm = w_acc.to(state.acc_device), w_norm.to(state.acc_device)
            torch.cuda.empty_cache()
            continue
        for k, window in enumerate(batch_windows):
            acc[(slice(None), *window)].addcmul_(probs[k], w_acc)  # in place: no full-window temporaries
            norm[window] += w_norm
        del probs
        index += len(batch_windows)
    progress.update(1.0, "blending")
    covered = norm > 0
    acc = acc.cpu()
    norm = norm.cpu()
    covered = covered.cpu()
    # divide in place, class by class, to avoid a float32 copy of the whole result
    safe_norm = torch.where(covered, norm, torch.ones_like(norm))
    for c in range(num_classes):
        acc[c] /= safe_norm.to(acc.dtype)
    if not bool(covered.all()):
        acc[:, ~covered] = 0
        acc[0][~covered] = 1
    if any(sum(p) for p in pads):
        crop = tuple(slice(before, before + size) for (before, _), size in zip(pads, spatial))
        acc = acc[(slice(None), *crop)]
    return acc
