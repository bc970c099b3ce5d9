"""Output layers for new classes taken row by row from a trained network's classes (``init_classes``).

A network that refines another's classes (a binary tooth map into tooth and tooth contact) can start as that
network exactly: each new class takes the weights of the old class it is part of, and a class that shares
an old class with an earlier one starts with its logit lowered by an offset (``[1, -4]``: the old class's
row, 4 logits down, so about 2 % of that class's probability). With the old classes' arg-max unchanged,
the first step's loss is about the new distinction alone, instead of new last layers drawn at random whose
gradients reach the whole network (one suspect for the map ``instance3d_from_binary_lopo`` lost; the map of
``contact3d_from_binary_lopo``, started so, fell too: the benchmarks README, "Contacts only").
"""

from __future__ import annotations

from typing import Any

import torch

from ...core.errors import InputError

__all__ = ["parse_init_classes", "class_rows"]


def parse_init_classes(entries: list[Any], where: str = "init_classes") -> list[tuple[int, float]]:
    """``[0, 1, [1, -4]]`` -> ``[(0, 0.0), (1, 0.0), (1, -4.0)]``: per new class, (old class, logit offset)."""
    if not isinstance(entries, list) or len(entries) < 2:
        raise InputError(f"{where}: a list with one entry per class of the new network (at least 2), got {entries!r}")
    parsed = []
    for k, entry in enumerate(entries):
        source, offset = (entry if len(entry) == 2 else (None, None)) if isinstance(entry, list) else (entry, 0.0)
        if isinstance(source, bool) or not isinstance(source, int) or source < 0 \
                or isinstance(offset, bool) or not isinstance(offset, (int, float)):
            raise InputError(f"{where}[{k}]: expected an old class index (0, 1, ...) or [index, logit offset], "
                             f"got {entry!r}")
        parsed.append((source, float(offset)))
    return parsed


def class_rows(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor],
               classes: list[tuple[int, float]]) -> dict[str, torch.Tensor]:
    """The tensors of ``new`` (a state dict) that ``old`` holds for other classes, built from its rows.

    An output layer's tensor is one whose first dimension is the class count: ``len(classes)`` in ``new``,
    more than every source class in ``old``, the other dimensions alike (the head's convolution weights and
    bias, deep-supervision heads included). Biases (1-D) take the offsets; weights are copied.

    Raises:
        InputError: no tensor of ``new`` fits (the classes or the checkpoint are not the ones meant).
    """
    highest = max(source for source, _ in classes)
    index = torch.tensor([source for source, _ in classes])
    out = {}
    for key, target in new.items():
        source = old.get(key)
        if source is None or source.shape == target.shape or target.ndim == 0:
            continue
        if target.shape[0] != len(classes) or source.shape[0] <= highest or source.shape[1:] != target.shape[1:]:
            continue
        rows = source.index_select(0, index).to(target.dtype).clone()
        if rows.ndim == 1:
            rows += torch.tensor([offset for _, offset in classes], dtype=rows.dtype)
        out[key] = rows
    if not out:
        raise InputError(f"init_classes: no output layer fits: it needs one of more than {highest} classes in the "
                         f"network it starts from and one of {len(classes)} classes in the new network")
    return out
