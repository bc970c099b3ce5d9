"""The trainer: one loop for every method, on one device or many (torchrun / DDP).

It owns device placement, AMP (CUDA), optimisers and learning-rate schedules, gradient
accumulation and clipping, checkpoints (every N steps, atomic, exact resume: networks, optimisers,
grad scaler, teachers, method state, RNG states and the step — the data stream is a function of the
step), sliding-window validation with the core ``Predictor``, best-model selection, logging (console
progress bar with ETA, CSV, TensorBoard when installed) and the export of a model folder.

Ctrl-C or SIGTERM finishes the current step, writes a checkpoint and stops (exit 130): rerunning the
same command continues the same loss curve. If a checkpoint cannot be written (full disk), the
previous one is kept and training goes on with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ...core.errors import InputError, ToothSegError
from ...core.inference import InferenceOptions, Predictor
from ...core.inference.predictor import resolve_device
from ...core.labels import LabelTable
from ...core.metrics import mean_dice
from ...core.models.card import ModelCard
from ...core.models.folder import LoadedModel, load_model_folder
from ...core.networks import build_network
from ...core.progress import CancelToken
from ..config.schema import Recipe, StageConfig
from ..data.dataset import TrainingData
from ..methods import get_method
from ..methods.base import Method, MethodContext, StepOutput, running_statistics_kept, unwrap
from .checkpointing import load_checkpoint, save_checkpoint
from .export import Member, export_model_folder, exported_members, loaded_model, stage_card
from .frozen import train_only
from .run_logs import StepLog, all_reduce_mean, append_csv, truncate_csv
from .schedules import build_optimizer, learning_rate

__all__ = ["Trainer", "StageResult", "distributed_context", "selection_score"]

log = logging.getLogger("toothseg.train")


class StageResult:
    def __init__(self, folder: Path, metrics: dict[str, Any], interrupted: bool = False) -> None:
        self.folder, self.metrics, self.interrupted = folder, metrics, interrupted


def selection_score(metrics: dict[str, Any]) -> float:
    """What the best snapshot is chosen by: the network's own classes where post-processing renumbers them
    (``val_network_dice``), else the result's ``val_dice``."""
    return float(metrics.get("val_network_dice", metrics.get("val_dice", -math.inf)))


#: Probe images are padded to a multiple of this many voxels per axis (any network's down-sampling fits it).
_PROBE_MULTIPLE = 32


def _same_shape_groups(cases: list) -> list[list]:
    """Cases grouped by image shape, in order of first appearance (one batch per group)."""
    groups: dict[tuple[int, ...], list] = {}
    for case in cases:
        groups.setdefault(tuple(case.image.shape), []).append(case)
    return list(groups.values())


def _central_crop(case: Any, patch: tuple[int, ...]) -> Any:
    """A prepared case cut to at most ``patch`` voxels per axis around its middle: what the method sees in
    training (a whole 3D scan through a network would take far more memory than a training step)."""
    if not patch or len(patch) != case.labels.ndim:
        return case
    starts = [max(0, (n - p) // 2) for n, p in zip(case.labels.shape, patch)]
    region = tuple(slice(start, start + min(n, p)) for start, n, p in zip(starts, case.labels.shape, patch))
    return replace(case, image=case.image[(slice(None), *region)], labels=case.labels[region])


def distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; starts the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


class _WorkerFailure:
    """A user-facing error raised while a loader worker prepared an item (a label value the model has
    no class for, an unreadable image), carried back whole: torch's own re-raise would put the
    worker's traceback into the message the user sees."""

    def __init__(self, error: ToothSegError) -> None:
        self.error = error


def _collate(items: list) -> dict[str, torch.Tensor] | _WorkerFailure:
    failed = next((item for item in items if isinstance(item, _WorkerFailure)), None)
    if failed is not None:
        return failed
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def _worker_ignores_sigterm(worker_id: int) -> None:
    """A SIGTERM sent to the whole process group (``timeout``, SLURM's ``scancel``, ``kill -- -PGID``)
    must reach the trainer only, which checkpoints and stops its workers itself: torch's own worker
    handler dies of it, and the trainer then fails with "DataLoader worker ... killed by signal"
    instead of stopping cleanly. (Workers still exit when the trainer is gone: torch watches the parent.)"""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _Stream(torch.utils.data.Dataset):
    """Items ``fn(first + k)``: a finite window of the infinite, deterministic sample stream."""

    def __init__(self, fn, indices: list[int]) -> None:
        self.fn, self.indices = fn, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor] | _WorkerFailure:
        try:
            return self.fn(self.indices[k])
        except ToothSegError as exc:
            if torch.utils.data.get_worker_info() is None:
                raise
            return _WorkerFailure(exc)


class Trainer:
    """Runs one stage of a recipe."""

    def __init__(self, recipe: Recipe, stage_index: int, out_dir: Path, data: TrainingData, table: LabelTable,
                 class_values: list[int], device: str = "auto", token: CancelToken | None = None,
                 quiet: bool = False, on_step: Callable[[int, int, float], None] | None = None) -> None:
        self.recipe, self.stage_index = recipe, stage_index
        self.stage: StageConfig = recipe.stages[stage_index]
        self.out_dir = out_dir
        self.data, self.table, self.class_values = data, table, class_values
        self.rank, self.world, local_rank = distributed_context()
        self.device = resolve_device(device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        self.token = token or CancelToken()
        self.quiet = quiet or self.rank != 0
        self.on_step = on_step  # (steps done, total, loss): the GUI's progress lines; cancelling stays with token

        method_cls = get_method(self.stage.method)
        settings = method_cls.validate_settings(self.stage.settings, f"stages[{stage_index}].settings")
        dims = 2 if data.config.kind == "2d" else 3
        lr_classes = torch.from_numpy(data.lr_classes) if data.lr_classes is not None else None
        context = MethodContext(self.build_network, len(class_values), dims, self.stage.iterations, lr_classes,
                                recipe.seed, self.device)
        self.method: Method = method_cls(settings, context)
        if method_cls.needs_unlabeled and self.stage.unlabeled_batch_size <= 0:
            raise InputError(f"method {self.stage.method!r} needs unlabeled data: set stages[{stage_index}]."
                             "unlabeled_batch_size > 0")
        if method_cls.needs_unlabeled and not data.unlabeled and data.config.source != "synthetic":
            raise InputError(f"method {self.stage.method!r} needs unlabeled data, but the unlabeled set is empty")
        self.use_amp = self.stage.amp and self.device.type == "cuda"
        self._probe_cases: list | None = None  # prepared at the first probe (read, resampled), kept for the stage

    # ------------------------------------------------------------------ networks
    def build_network(self, **overrides) -> nn.Module:
        kwargs = {**self.recipe.model.kwargs, **overrides}
        kwargs.setdefault("num_classes", len(self.class_values))
        kwargs.setdefault("spatial_dims", 2 if self.data.config.kind == "2d" else 3)
        return build_network(self.recipe.model.architecture, **kwargs)

    def _setup(self) -> None:
        torch.manual_seed(self.recipe.seed + 1000 * self.stage_index)
        self.method.nets = {name: net.to(self.device) for name, net in self.method.build_networks().items()}
        self.trainable = {n: self.method.nets[n] for n in self.method.trainable}
        for name, net in self.method.nets.items():
            if name not in self.trainable:
                for p in net.parameters():
                    p.requires_grad_(False)
            elif self.stage.train_only:
                trainable, total = train_only(net, self.stage.train_only, f"network {name!r}")
                log.info("%s: %d of %d parameters train (train_only); the rest keep their start",
                         name, trainable, total)
        if self.world > 1:
            for name in self.trainable:
                ids = [self.device.index] if self.device.type == "cuda" else None
                self.method.nets[name] = DistributedDataParallel(self.method.nets[name], device_ids=ids,
                                                                 find_unused_parameters=True)
        groups = self.method.optimizer_groups()
        self.optimizers = [build_optimizer(self.stage.optimizer,
                                           [p for n in group for p in self.method.nets[n].parameters()
                                            if p.requires_grad]) for group in groups]
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def save_checkpoint(self, step: int, best: float) -> None:
        if self.rank == 0:
            save_checkpoint(self._checkpoint_path(), self.method, self.optimizers, self.scaler, step, best,
                            self.stage_index)

    def load_checkpoint(self) -> tuple[int, float] | None:
        return load_checkpoint(self._checkpoint_path(), self.method.nets, self.optimizers, self.scaler, self.method)

    def restore(self) -> int | None:
        """Build the networks and load the stage's checkpoint without training (a snapshot of a running
        stage); the checkpoint's step, or None when there is none."""
        self._setup()
        loaded = self.load_checkpoint()
        return None if loaded is None else loaded[0]

    # ------------------------------------------------------------------ data
    def _batches(self, start_step: int):
        """Yields batches for steps start_step, start_step+1, …; rank r takes its share of each global batch."""
        stage = self.stage
        local = max(1, stage.batch_size // self.world)
        local_u = stage.unlabeled_batch_size // self.world if stage.unlabeled_batch_size else 0
        chunk = 8  # steps per loader window (keeps workers busy without holding many batches)
        workers = self.data.config.workers if self.data.config.workers > 0 else 0
        step = start_step
        while True:
            steps = range(step, step + chunk)
            lab = [s * stage.batch_size + self.rank * local + k for s in steps for k in range(local)]
            options = {"num_workers": workers, "collate_fn": _collate,
                       "worker_init_fn": _worker_ignores_sigterm if workers else None}
            loaders = [torch.utils.data.DataLoader(_Stream(self.data.labeled_item, lab), batch_size=local, **options)]
            if local_u:
                unl = [s * stage.unlabeled_batch_size + self.rank * local_u + k for s in steps for k in range(local_u)]
                loaders.append(torch.utils.data.DataLoader(_Stream(self.data.unlabeled_item, unl), batch_size=local_u,
                                                           **options))
            for parts in zip(*loaders):
                failed = next((part for part in parts if isinstance(part, _WorkerFailure)), None)
                if failed is not None:
                    raise failed.error
                batch = dict(parts[0])
                if len(parts) > 1:
                    batch["unlabeled_image"] = parts[1]["image"]
                yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            step += chunk

    # ------------------------------------------------------------------ validation and export
    def card(self, metrics: dict[str, Any] | None = None) -> ModelCard:
        return stage_card(self.recipe, self.stage, self.data, self.table, self.class_values, metrics)

    def exported_network(self) -> nn.Module:
        return unwrap(self.method.nets[self.method.exported])

    def _member_cards(self, metrics: dict[str, Any] | None = None) -> list[Member]:
        """(name, card, network) of each exported network: one, or the method's ensemble."""
        return exported_members(self.method, lambda: self.card(metrics))

    def _loaded(self) -> LoadedModel:
        return loaded_model(self._member_cards(), self.card(), self.out_dir)

    def validate(self) -> dict[str, float]:
        """``val_dice``: mean Dice of the model's result (post-processed, as a user gets it) on the validation
        scans. A model whose post-processing makes other labels than its network's (teeth numbered from a
        tooth or tooth-boundary map) also gets ``val_network_dice``, the network's own classes against the
        label maps turned into them: the numbered score depends on the grid and on the numbering as much as
        on the network, and on a coarse training grid it is no signal (0.000-0.001 at 1.2 mm in
        binary3d_lopo), so the best snapshot is chosen by the network's score (:func:`selection_score`)."""
        if not self.method.produces_segmentation:
            return {}  # pretraining: nothing to segment yet
        volumes = self.data.validation_volumes()
        if not volumes:
            return {}
        networks = [net for _, _, net in self._member_cards()]
        states = [(net.training, getattr(net, "deep_supervision", False)) for net in networks]
        for net in networks:
            net.eval()
            if hasattr(net, "deep_supervision"):
                net.deep_supervision = False
        try:
            card = self.card()
            renumbered = card.output_label_table is not None
            options = InferenceOptions(device=str(self.device.type), tta=False, overlap=0.25,
                                       postprocessing=card.postprocessing or [], numbering_checks=False,
                                       keep_network_labels=renumbered)
            predictor = Predictor(self._loaded(), options)
            output_scores, network_scores = [], []
            for _, image, labels in volumes:
                prediction = predictor.predict(image)
                reference = self.data.reference_values(labels.array, labels.spacing_zyx)
                # the result's labels are scored against the label maps as they are when post-processing
                # makes them (teeth numbered from tooth-boundary classes), else against the network's classes
                output_scores.append(mean_dice(labels.array if renumbered else reference, prediction.labels.array))
                if renumbered and prediction.network_labels is not None:
                    network_scores.append(mean_dice(reference, prediction.network_labels.array))
        finally:
            for net, (training, deep) in zip(networks, states):
                net.train(training)
                if hasattr(net, "deep_supervision"):
                    net.deep_supervision = deep
        metrics = {"val_dice": float(np.nanmean(output_scores))}
        if network_scores:
            metrics["val_network_dice"] = float(np.nanmean(network_scores))
        return {**metrics, **self.probe()}

    def probe(self) -> dict[str, float]:
        """How right a semi-supervised method's pseudo-labels are now, on unlabeled cases whose labels training
        never reads (:meth:`TrainingData.probe_cases`; empty elsewhere): ``pl_dice``, the mean Dice of the labels
        it would learn from against the hidden ones (classes of the hidden labels, as ``val_dice``), and where
        its loss uses only some voxels (a confidence gate), ``pl_used_share`` and ``pl_used_dice`` on those.
        This is the evidence for why an unlabeled term helps or not; it never enters a loss."""
        if not self.method.needs_unlabeled:
            return {}
        if self._probe_cases is None:  # the hidden cases do not change within a stage: read them once
            self._probe_cases = self.data.probe_cases()
        cases = self._probe_cases
        if not cases:
            return {}
        scores: dict[str, list[float]] = {"pl_dice": [], "pl_used_share": [], "pl_used_dice": []}
        networks = list(self.method.nets.values())
        with torch.no_grad(), contextlib.ExitStack() as kept:
            for net in networks:
                kept.enter_context(running_statistics_kept(net))
            patch = tuple(self.data.config.patch_size or ())
            for group in _same_shape_groups([_central_crop(case, patch) for case in cases]):
                images = torch.from_numpy(np.stack([case.image for case in group])).to(self.device)
                spatial = images.shape[2:]
                padded = [(-n) % _PROBE_MULTIPLE for n in spatial]
                if any(padded):
                    images = F.pad(images, [p for amount in reversed(padded) for p in (0, amount)])
                result = self.method.probe_pseudo_labels(images)
                if result is None:
                    return {}
                crop = (slice(None), *(slice(0, n) for n in spatial))
                labels = result[0][crop].cpu().numpy()
                used = None if result[1] is None else result[1][crop].cpu().numpy()
                for index, case in enumerate(group):
                    scores["pl_dice"].append(mean_dice(case.labels, labels[index]))
                    if used is not None:
                        mask = used[index]
                        scores["pl_used_share"].append(float(mask.mean()))
                        scores["pl_used_dice"].append(mean_dice(np.where(mask, case.labels, 0),
                                                                np.where(mask, labels[index], 0)))
        # a gate that passes no tooth voxel leaves nothing to score there (nan): such a value is left out
        finite = {name: [v for v in values if np.isfinite(v)] for name, values in scores.items()}
        return {name: float(np.mean(values)) for name, values in finite.items() if values}

    def export(self, folder: Path, metrics: dict[str, Any]) -> Path:
        """Write the model folder whole or not at all (see :func:`.export.export_model_folder`)."""
        return export_model_folder(folder, self._member_cards(metrics), self.card(metrics))

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = True, init_weights=None) -> StageResult:
        """Train the stage; ``init_weights(method)`` (``init_from``) runs only when not resuming."""
        start, best = self._start(resume, init_weights)
        total = self.stage.iterations
        if start >= total:
            return StageResult(self.out_dir / "model", self._final_metrics(best))
        for net in self.method.nets.values():
            net.train()
        previous = signal.signal(signal.SIGTERM, lambda *_: self.token.cancel())
        interrupted = False
        step = start
        batches = self._batches(start)
        started = time.perf_counter()
        try:
            with StepLog(self.out_dir, self.stage.name, start, total, self.rank, self.quiet, self.on_step) as logs:
                for step in range(start, total):
                    logs.step(self._optimisation_step(step, total, batches))
                    best = self._after_step(step + 1, best)
                    if self.token.cancelled:
                        self.save_checkpoint(step + 1, best)
                        interrupted = True
                        break
        except KeyboardInterrupt:
            self.save_checkpoint(step, best)
            interrupted = True
        finally:
            signal.signal(signal.SIGTERM, previous)
        if interrupted:
            if self.rank == 0:
                log.warning("training stopped at step %d; run the same command again to resume", step + 1)
            return StageResult(self.out_dir, {}, interrupted=True)
        if self.rank == 0:
            log.info("stage %s: %d steps in %.0f s", self.stage.name, total - start, time.perf_counter() - started)
        return StageResult(self.out_dir / "model", self._final_metrics(best))

    def _start(self, resume: bool, init_weights) -> tuple[int, float]:
        """(first step, best validation so far): from the checkpoint, else 0 after ``init_weights``."""
        self._setup()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        loaded = self.load_checkpoint() if resume else None
        if loaded is None:
            if init_weights is not None:
                init_weights(self.method)
            return 0, -math.inf
        if self.rank == 0:
            log.info("resuming stage %s at step %d", self.stage.name, loaded[0])
            truncate_csv(self.out_dir / "log.csv", loaded[0])  # steps after the checkpoint are redone
        return loaded

    def _optimisation_step(self, step: int, total: int, batches) -> dict[str, Any]:
        """One optimiser step (over ``grad_accumulation`` batches); its log row."""
        lr = learning_rate(self.stage.optimizer, step, total)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
        accumulate = max(1, self.stage.grad_accumulation)
        logs: dict[str, float] = {}
        output: StepOutput | None = None
        for _ in range(accumulate):  # accumulate, then one optimiser step (U-Mamba2's bug U1 fixed)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
                output = self.method.train_step(next(batches), step)
            if not torch.isfinite(output.loss):
                raise FloatingPointError(f"the loss became {output.loss.item()} at step {step}")
            self.scaler.scale(output.loss / accumulate).backward()
            for key, value in output.terms.items():
                logs[key] = logs.get(key, 0.0) + float(value.detach()) / accumulate
            logs.update(output.logs)
        for optimizer in self.optimizers:
            self.scaler.unscale_(optimizer)
        if self.stage.grad_clip > 0:
            params = [p for net in self.trainable.values() for p in net.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.stage.grad_clip)
        for optimizer in self.optimizers:
            self.scaler.step(optimizer)
        self.scaler.update()
        self.method.after_step(step)
        if self.world > 1:  # log the global-batch mean, as a single process would
            logs = all_reduce_mean(logs, self.device)
        assert output is not None
        loss = sum(v for k, v in logs.items() if k in output.terms)
        return {"step": step, "lr": lr, "loss": loss, **logs}

    def _after_step(self, done: int, best: float) -> float:
        """Validation (keeping the best model) and checkpoints after ``done`` steps; the best score."""
        total = self.stage.iterations
        validate_now = bool(self.stage.validate_every) and done % self.stage.validate_every == 0
        if validate_now and done < total and self.rank == 0:
            metrics = self.validate()
            if metrics:
                append_csv(self.out_dir / "validation.csv", {"step": done, **metrics})
                if selection_score(metrics) > best:
                    best = selection_score(metrics)
                    self.export(self.out_dir / "best", {**metrics, "step": done})
        if done % max(1, self.stage.checkpoint_every) == 0 or done == total:
            self.save_checkpoint(done, best)
        return best

    def _final_metrics(self, best: float) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if self.rank == 0:
            final = self.validate()
            metrics = {**final, "step": self.stage.iterations}
            if final:
                append_csv(self.out_dir / "validation.csv", {"step": self.stage.iterations, **final})
            use_best = final and best > selection_score(final) and (self.out_dir / "best").exists()
            if use_best:
                best_model = load_model_folder(self.out_dir / "best")
                sources = [m for _, m in best_model.members] if best_model.members else [best_model]
                for (_, _, network), source in zip(self._member_cards(), sources):
                    network.load_state_dict(source.network.state_dict())
                metrics = dict(best_model.card.metrics)
            self.export(self.out_dir / "model", metrics)
        if self.world > 1:
            dist.barrier()
        return metrics
