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

import csv
import io
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...core.errors import InputError, OutputWriteError, ToothSegError
from ...core.io.atomic import atomic_folder, atomic_output, atomic_write_text
from ...core.labels import LabelTable
from ...core.models.card import IntensityNormalization, ModelCard
from ...core.models.folder import LoadedModel, save_model_folder
from ...core.progress import CancelToken
from ..config.schema import Recipe, StageConfig
from ..data.dataset import TrainingData
from ..methods.base import Method, MethodContext, unwrap
from .schedules import build_optimizer, learning_rate

__all__ = ["Trainer", "StageResult", "distributed_context"]

log = logging.getLogger("toothseg.train")


class StageResult:
    def __init__(self, folder: Path, metrics: dict[str, Any], interrupted: bool = False) -> None:
        self.folder, self.metrics, self.interrupted = folder, metrics, interrupted


def distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; starts the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

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
        from ...core.inference.predictor import resolve_device

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
        from ..methods import get_method

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

    # ------------------------------------------------------------------ networks
    def build_network(self, **overrides) -> nn.Module:
        from ...core.networks import build_network

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
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            for name in self.trainable:
                ids = [self.device.index] if self.device.type == "cuda" else None
                self.method.nets[name] = DistributedDataParallel(self.method.nets[name], device_ids=ids,
                                                                 find_unused_parameters=True)
        groups = getattr(self.method, "optimizer_groups", lambda: [list(self.trainable)])()
        self.optimizers = [build_optimizer(self.stage.optimizer,
                                           [p for n in group for p in self.method.nets[n].parameters()
                                            if p.requires_grad]) for group in groups]
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def save_checkpoint(self, step: int, best: float) -> None:
        if self.rank != 0:
            return
        state = {
            "step": step, "best": best, "stage": self.stage_index,
            "networks": {n: unwrap(net).state_dict() for n, net in self.method.nets.items()},
            "optimizers": [o.state_dict() for o in self.optimizers],
            "scaler": self.scaler.state_dict(),
            "method": self.method.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": _python_state()},
        }
        try:
            with atomic_output(self._checkpoint_path(), overwrite=True) as tmp:
                torch.save(state, str(tmp))
        except (OutputWriteError, OSError, RuntimeError) as exc:
            log.warning("could not write a checkpoint at step %d (%s); the previous one is kept", step, exc)

    def load_checkpoint(self) -> tuple[int, float] | None:
        path = self._checkpoint_path()
        if not path.exists():
            return None
        from ...core.models.checkpoints import safe_torch_load

        state = safe_torch_load(path)
        for name, net in self.method.nets.items():
            unwrap(net).load_state_dict(state["networks"][name])
        for optimizer, saved in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)
        self.scaler.load_state_dict(state["scaler"])
        self.method.load_state_dict(state["method"])
        torch.set_rng_state(state["rng"]["torch"])
        _set_numpy_state(state["rng"]["numpy"])
        _set_python_state(state["rng"]["python"])
        return int(state["step"]), float(state["best"])

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
        recipe = self.recipe
        export = recipe.export
        data = self.data.config
        dims = 2 if data.kind == "2d" else 3
        kwargs = {k: v for k, v in recipe.model.kwargs.items() if k not in ("num_classes",)}
        kwargs["spatial_dims"] = dims
        commit = _git_commit()
        return ModelCard(
            id=export.id or recipe.name, name=export.name or recipe.name, description=export.description,
            architecture=recipe.model.architecture, kwargs=kwargs, spatial_dims=dims,
            label_table=self.table.subset(self.class_values[1:]), class_values=self.class_values,
            input_kind=data.kind, spacing_zyx=data.spacing, image_extent_yx=data.image_extent,
            intensity=IntensityNormalization(**data.intensity), patch_size=list(data.patch_size),
            mirror_axes=list(export.mirror_axes), license=export.license,
            provenance={"recipe": recipe.name, "method": self.stage.method, "stage": self.stage.name,
                        "iterations": self.stage.iterations, "data_source": data.source,
                        "labeled_cases": len(self.data.labeled), "unlabeled_cases": len(self.data.unlabeled),
                        "seed": recipe.seed, "commit": commit, "trained": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "synthetic_intensities": data.source == "synthetic"},
            metrics=metrics or {})

    def exported_network(self) -> nn.Module:
        return unwrap(self.method.nets[self.method.exported])

    def _member_cards(self, metrics: dict[str, Any] | None = None) -> list[tuple[str, ModelCard, nn.Module]]:
        """(name, card, network) of each exported network: one, or the method's ensemble."""
        names = list(getattr(self.method, "ensemble", ()) or [self.method.exported])
        members = []
        for name in names:
            card = self.card(metrics)
            override = self.method.member_architecture(name)
            if override is not None:
                card.architecture, card.kwargs = override[0], {**override[1], "spatial_dims": card.spatial_dims}
            if len(names) > 1:
                card.id = f"{card.id}-{name}"
            members.append((name, card, unwrap(self.method.nets[name])))
        return members

    def _loaded(self) -> LoadedModel:
        members = self._member_cards()
        if len(members) == 1:
            return LoadedModel(members[0][1], self.out_dir, network=members[0][2])
        top = LoadedModel(self.card(), self.out_dir)
        top.members = [("ensemble", LoadedModel(card, self.out_dir, network=net)) for _, card, net in members]
        return top

    def validate(self) -> dict[str, float]:
        from ...core.inference import InferenceOptions, Predictor
        from ...core.metrics import mean_dice

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
            options = InferenceOptions(device=str(self.device.type), tta=False, overlap=0.25,
                                       postprocessing=self.recipe.export.postprocessing or [], numbering_checks=False)
            predictor = Predictor(self._loaded(), options)
            scores = [mean_dice(self.data.reference_values(labels.array), predictor.predict(image).labels.array)
                      for _, image, labels in volumes]
        finally:
            for net, (training, deep) in zip(networks, states):
                net.train(training)
                if hasattr(net, "deep_supervision"):
                    net.deep_supervision = deep
        return {"val_dice": float(np.nanmean(scores))}

    def export(self, folder: Path, metrics: dict[str, Any]) -> Path:
        """Write the model folder whole or not at all: ``best/`` is replaced during training, and a run
        killed half-way through that must not leave weights that no longer match their card."""
        members = self._member_cards(metrics)
        with atomic_folder(folder, overwrite=True) as staging:
            if len(members) == 1:
                save_model_folder(members[0][2], members[0][1], staging)
                return folder
            for name, card, network in members:
                save_model_folder(network, card, staging / name)
            top = self.card(metrics)
            top.members = [{"role": "ensemble", "path": name} for name, _, _ in members]
            top.description = (top.description + " " if top.description else "") + \
                f"Ensemble of {len(members)} students (mean softmax)."
            save_model_folder(None, top, staging)
        return folder

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = True, init_weights=None) -> StageResult:
        """Train the stage; ``init_weights(method)`` (``init_from``) runs only when not resuming."""
        self._setup()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        start, best = 0, -math.inf
        loaded = self.load_checkpoint() if resume else None
        if loaded is not None:
            start, best = loaded
            if self.rank == 0:
                log.info("resuming stage %s at step %d", self.stage.name, start)
                _truncate_csv(self.out_dir / "log.csv", start)  # steps after the checkpoint are redone
        elif init_weights is not None:
            init_weights(self.method)
        total = self.stage.iterations
        if start >= total:
            metrics = self._final_metrics(best)
            return StageResult(self.out_dir / "model", metrics)
        for net in self.method.nets.values():
            net.train()
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: self.token.cancel())}
        log_file = self.out_dir / "log.csv"
        writer = _TensorBoard(self.out_dir / "tensorboard") if self.rank == 0 else None
        bar = None
        if not self.quiet:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=start, desc=self.stage.name, unit="it", dynamic_ncols=True, disable=None)
        interrupted = False
        step = start
        accumulate = max(1, self.stage.grad_accumulation)
        batches = self._batches(start)
        started = time.perf_counter()
        try:
            for step in range(start, total):
                lr = learning_rate(self.stage.optimizer, step, total)
                for optimizer in self.optimizers:
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                for optimizer in self.optimizers:
                    optimizer.zero_grad(set_to_none=True)
                logs: dict[str, float] = {}
                for _ in range(accumulate):  # accumulate, then one optimiser step (U-Mamba2's bug U1 fixed)
                    batch = next(batches)
                    with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
                        output = self.method.train_step(batch, step)
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
                    logs = _all_reduce_mean(logs, self.device)
                loss = sum(v for k, v in logs.items() if k in output.terms)
                row = {"step": step, "lr": lr, "loss": loss, **logs}
                if self.rank == 0:
                    _append_csv(log_file, row)
                    if writer:
                        writer.add(row, step)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                    bar.update(1)
                done = step + 1
                if self.on_step is not None and self.rank == 0:
                    self.on_step(done, total, loss)
                validate_now = bool(self.stage.validate_every) and done % self.stage.validate_every == 0
                if validate_now and done < total and self.rank == 0:
                    metrics = self.validate()
                    if metrics:
                        _append_csv(self.out_dir / "validation.csv", {"step": done, **metrics})
                        if metrics["val_dice"] > best:
                            best = metrics["val_dice"]
                            self.export(self.out_dir / "best", {**metrics, "step": done})
                if done % max(1, self.stage.checkpoint_every) == 0 or done == total:
                    self.save_checkpoint(done, best)
                if self.token.cancelled:
                    self.save_checkpoint(done, best)
                    interrupted = True
                    break
        except KeyboardInterrupt:
            self.save_checkpoint(step, best)
            interrupted = True
        finally:
            if bar is not None:
                bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            if writer:
                writer.close()
        if interrupted:
            if self.rank == 0:
                log.warning("training stopped at step %d; run the same command again to resume", step + 1)
            return StageResult(self.out_dir, {}, interrupted=True)
        if self.rank == 0:
            log.info("stage %s: %d steps in %.0f s", self.stage.name, total - start, time.perf_counter() - started)
        return StageResult(self.out_dir / "model", self._final_metrics(best))

    def _final_metrics(self, best: float) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if self.rank == 0:
            final = self.validate()
            metrics = {**final, "step": self.stage.iterations}
            if final:
                _append_csv(self.out_dir / "validation.csv", {"step": self.stage.iterations, **final})
            use_best = final and best > final.get("val_dice", -math.inf) and (self.out_dir / "best").exists()
            if use_best:
                from ...core.models.folder import load_model_folder

                best_model = load_model_folder(self.out_dir / "best")
                sources = [m for _, m in best_model.members] if best_model.members else [best_model]
                for (_, _, network), source in zip(self._member_cards(), sources):
                    network.load_state_dict(source.network.state_dict())
                metrics = dict(best_model.card.metrics)
            self.export(self.out_dir / "model", metrics)
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
        return metrics


class _TensorBoard:
    """TensorBoard scalars when the ``tensorboard`` package is installed; otherwise nothing."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder))
        except Exception:  # ImportError (tensorboard not installed) or a broken install
            self.writer = None

    def add(self, row: dict[str, float], step: int) -> None:
        if self.writer:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def _all_reduce_mean(logs: dict[str, float], device: torch.device) -> dict[str, float]:
    import torch.distributed as dist

    keys = sorted(logs)
    values = torch.tensor([logs[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    values /= dist.get_world_size()
    return dict(zip(keys, values.tolist()))


def _truncate_csv(path: Path, step: int) -> None:
    """Drop log rows of steps ≥ ``step`` (a run killed after its last checkpoint repeats them)."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) < step]
    if len(kept) == len(rows):
        return
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(kept)
    atomic_write_text(path, text.getvalue())


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    """Append one row; a key the file's header lacks (a term that starts later in a stage, such as a
    ramped-up consistency weight) widens the header, earlier rows get empty cells, so every line keeps
    one value per named column."""
    fields = list(row)
    if path.exists():
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            added = [k for k in row if k not in header]
            earlier = list(reader) if added else []
        fields = header + added
        if added and header:
            text = io.StringIO()
            rewriter = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
            rewriter.writeheader()
            rewriter.writerows(earlier)
            atomic_write_text(path, text.getvalue())
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached": float(cached)}


def _set_numpy_state(state: dict[str, Any]) -> None:
    np.random.set_state((state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
                         state["cached"]))


def _python_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": -1.0 if gauss is None else float(gauss)}


def _set_python_state(state: dict[str, Any]) -> None:
    gauss = None if state["gauss"] == -1.0 else state["gauss"]
    random.setstate((state["version"], tuple(int(v) for v in state["internal"].tolist()), gauss))


def _git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
