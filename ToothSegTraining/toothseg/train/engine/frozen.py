"""Train a network's last layers only (``train_only``): the rest keeps the weights it started with.

A new class learnt on top of a trained network (tooth contacts on the binary default) moved the whole
network when every weight trained: ``contact3d_from_binary_lopo`` started as the default's exact tooth map and
lost 0.08 of its whole-dentition Dice on the unseen patient in 300 steps, while the new class never won a
voxel. With the body frozen, the tooth map can move only as far as the trained layers reach, and a higher
rate can go to the new class. Names are parameter names of the network as its weights file stores them
(``decoder.seg_layers``); a prefix names a module and everything in it.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from ...core.errors import InputError

__all__ = ["check_train_only", "matches", "train_only"]


def matches(name: str, prefixes: Iterable[str]) -> bool:
    """Whether parameter ``name`` is one of ``prefixes`` or lies in a module one of them names
    (``decoder.seg_layers`` holds ``decoder.seg_layers.0.weight``, not ``decoder.seg_layers_extra.weight``)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def check_train_only(entries: object, parameter_names: Iterable[str], where: str = "train_only") -> list[str]:
    """``entries`` as a list of prefixes, each naming at least one of ``parameter_names``; else InputError
    with the network's top-level modules, so that a typo is refused before any step trains."""
    if not isinstance(entries, list) or not entries or not all(isinstance(e, str) and e for e in entries):
        raise InputError(f"{where}: a non-empty list of parameter names or module prefixes "
                         f"(e.g. [decoder.seg_layers]), got {entries!r}")
    names = list(parameter_names)
    missing = [e for e in entries if not any(matches(n, [e]) for n in names)]
    if missing:
        modules = sorted({".".join(n.split(".")[:2]) for n in names})
        raise InputError(f"{where}: {', '.join(map(repr, missing))} names no parameter of the network "
                         f"(its modules: {', '.join(modules)})")
    if all(matches(n, entries) for n in names):
        raise InputError(f"{where}: {entries} names every parameter of the network: leave train_only out")
    return list(entries)


def train_only(net: nn.Module, prefixes: list[str], name: str = "the network") -> tuple[int, int]:
    """Freeze every parameter of ``net`` outside ``prefixes``; (trainable, all) parameter counts. A network
    with nothing left to train (a method's second network, e.g. a reconstruction head, whose names the
    prefixes miss) is refused before the first step."""
    trainable = total = 0
    for parameter_name, parameter in net.named_parameters():
        keep = matches(parameter_name, prefixes)
        parameter.requires_grad_(keep)
        trainable += parameter.numel() if keep else 0
        total += parameter.numel()
    if trainable == 0:
        raise InputError(f"train_only {prefixes} leaves no parameter of {name} to train")
    return trainable, total
