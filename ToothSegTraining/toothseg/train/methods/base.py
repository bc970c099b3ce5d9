"""The method contract: named networks, data needs and one ``train_step``.

The engine owns devices, AMP, optimisers, schedules, accumulation, checkpoints, logging and DDP;
a method only says which networks it needs (``build_networks``), which of them the optimiser
trains, which one is exported, whether it needs unlabeled data, and how one step's loss is made
(``train_step``) — returning its named terms so tests can check that every unsupervised term
really reaches every trainable network. Teachers are updated in ``after_step``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ...core.errors import InputError

__all__ = ["Method", "MethodContext", "StepOutput", "ema_update", "unwrap", "running_statistics_kept",
           "register_method", "registered_methods", "STEPS", "RAMP", "schedule_settings", "ramp_settings"]

# Field metadata of a setting that is a length of the schedule, so that a shortened or lengthened
# schedule (a benchmark's ``--scale``) can keep the method's proportions: ``STEPS`` counts optimiser
# steps (RAIL's first turn, BCP's static-teacher interval). EMA decays and ramp-up lengths are not
# marked: the learning rate per step does not change with the schedule's length, so a teacher's
# horizon in steps and a ramp's length in steps (started by a competence gate) stay the papers'.
STEPS = {"schedule": "steps"}
# Field metadata of a ramp-up length in steps. A benchmark may state it as a share of the stage
# instead (``bench_ssl_ufba.py --ramp-share``): from a converged start the competence gate opens at
# once, and a paper's 800-step ramp in a 600-step continuation never reaches full weight.
RAMP = {"ramp": "steps"}


def schedule_settings(settings_class: type) -> dict[str, str]:
    """``{setting: 'steps'}`` for the fields of a method's Settings marked as schedule lengths."""
    if not dataclasses.is_dataclass(settings_class):
        return {}
    return {f.name: f.metadata["schedule"] for f in dataclasses.fields(settings_class) if "schedule" in f.metadata}


def ramp_settings(settings_class: type) -> list[str]:
    """The fields of a method's Settings marked as ramp-up lengths (``RAMP``)."""
    if not dataclasses.is_dataclass(settings_class):
        return []
    return [f.name for f in dataclasses.fields(settings_class) if "ramp" in f.metadata]


_METHODS: dict[str, type["Method"]] = {}


def register_method(name: str) -> Callable[[type["Method"]], type["Method"]]:
    def wrap(cls: type["Method"]) -> type["Method"]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return wrap


def registered_methods() -> dict[str, type["Method"]]:
    """The methods registered so far (a copy); :func:`toothseg.train.methods.get_method` looks them up."""
    return dict(_METHODS)


@dataclass
class MethodContext:
    """What a method may know about the run."""

    build_network: Callable[..., nn.Module]  # builds the recipe's architecture; kwargs override
    num_classes: int
    spatial_dims: int
    total_iterations: int
    lr_classes: torch.Tensor | None = None  # class permutation for a left⇄right flip (None: no sides)
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


@dataclass
class StepOutput:
    """``loss`` = sum of ``terms``; ``unsupervised`` names the terms that use no labels."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    unsupervised: tuple[str, ...] = ()
    logs: dict[str, float] = field(default_factory=dict)


def unwrap(network: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (or the module itself)."""
    return getattr(network, "module", network)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, buffers: bool = True) -> None:
    """``θ_T ← decay·θ_T + (1 − decay)·θ_S`` in place, for parameters (and floating buffers).

    Written with ``lerp_`` into the teacher's own tensors, so the update is never lost to an
    out-of-place operation (the PyMIC bug noted in the docs).
    """
    teacher, student = unwrap(teacher), unwrap(student)
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.lerp_(s.detach(), 1.0 - decay)
    if buffers:
        for t, s in zip(teacher.buffers(), student.buffers()):
            if t.dtype.is_floating_point:
                t.lerp_(s.detach(), 1.0 - decay)
            else:
                t.copy_(s)


@contextlib.contextmanager
def running_statistics_kept(network: nn.Module) -> Iterator[None]:
    """Batch-norm layers normalise with the batch's statistics and leave their running ones as they were.

    For forward passes on deliberately corrupted inputs or features (U-Mamba2-SSL's strong view with
    dropped channels): the running statistics that inference uses must describe real images. The
    original method runs on nnU-Net's instance norm, which keeps none, so this is what it does there.
    """
    layers = [m for m in unwrap(network).modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training]
    # Not tracking is how a batch-norm layer in training mode leaves its running statistics alone (they
    # are then not inputs of the graph; restoring them in place afterwards would break its backward).
    for layer in layers:
        layer.track_running_stats = False
    try:
        yield
    finally:
        for layer in layers:
            layer.track_running_stats = True


class Method:
    """Base class; subclasses set ``Settings`` (a dataclass) and implement the hooks."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type] = type("Settings", (), {})
    needs_unlabeled: ClassVar[bool] = False
    produces_segmentation: ClassVar[bool] = True  # False: pretraining only (nothing to validate)
    trainable: tuple[str, ...] = ("student",)
    exported: str = "student"
    # networks exported together as an ensemble (mean softmax), e.g. RAIL's four students; empty: ``exported`` alone
    ensemble: tuple[str, ...] = ()
    # labeled image passes through a trainable network per labeled image in the batch: 1 for most methods;
    # BCP mixes pairs, so each mixed image carries half of two labeled images (the budget tests count it)
    labeled_passes_per_image: ClassVar[float] = 1.0

    def __init__(self, settings: Any, context: MethodContext) -> None:
        self.settings = settings
        self.context = context
        self.nets: dict[str, nn.Module] = {}

    # ----------------------------------------------------------------- settings
    @classmethod
    def validate_settings(cls, raw: dict[str, Any], where: str = "settings") -> Any:
        if not dataclasses.is_dataclass(cls.Settings):
            if raw:
                raise InputError(f"{where}: method {cls.name!r} takes no settings")
            return None
        known = {f.name for f in dataclasses.fields(cls.Settings)}
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(known))}"
                raise InputError(f"unknown key '{where}.{key}' for method {cls.name!r}{hint}")
        hints = typing.get_type_hints(cls.Settings)
        values = {}
        for key, value in raw.items():
            expected = hints[key]
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if expected is tuple or typing.get_origin(expected) is tuple:
                value = tuple(value)
            values[key] = value
        return cls.Settings(**values)

    # ----------------------------------------------------------------- hooks
    def build_networks(self) -> dict[str, nn.Module]:
        return {"student": self.context.build_network()}

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> StepOutput:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} does not implement train_step")

    def after_step(self, step: int) -> None:
        """Called after every optimiser step (teachers, schedules of the method)."""

    def active_trainable(self, step: int) -> tuple[str, ...]:
        """Trainable networks that step ``step`` updates (RAIL alternates its groups)."""
        return self.trainable

    def optimizer_groups(self) -> list[list[str]]:
        """Trainable networks grouped by optimiser: one optimiser (and learning-rate schedule) per group."""
        return [list(self.trainable)]

    def exported_members(self) -> list[str]:
        """The networks a model folder gets: the ensemble's, or the one exported network."""
        return list(self.ensemble) or [self.exported]

    def member_architecture(self, name: str) -> tuple[str, dict] | None:
        """(architecture, kwargs) of an exported ensemble member, if not the recipe's."""
        return None

    def ema_teachers_at(self, step: int) -> tuple[str, ...]:
        """Networks that ``after_step(step)`` moves towards a student by EMA (checked by the tests)."""
        return ()

    def probe_pseudo_labels(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """What this method would take as labels for the unlabeled ``images`` (a batch as training gives it) at
        its current state: (class index per voxel, the voxels its loss uses, or None for all), computed as its
        training step does, or None for a method without pseudo-labels. Called without gradients, with the
        networks as training leaves them (batch norm's running statistics kept), and must draw no random
        number, so that probing leaves the training as it was. The trainer compares them with the hidden
        labels of a few unlabeled cases (:meth:`~toothseg.train.engine.trainer.Trainer.probe`)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def main_output(output):
        """Full-resolution logits from a network output (deep supervision returns a list)."""
        return output[0] if isinstance(output, (list, tuple)) else output
