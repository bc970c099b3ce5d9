"""The one prediction path of ToothSeg (Slicer, CLI, pseudo-labels, active-learning scores).

``Predictor(model_folder).predict(volume)`` reorients the scan, resamples it to the model's
spacing, normalises intensities, runs sliding windows (with mirrored test-time augmentation that
swaps left/right FDI labels, and averaging over ensemble members), maps the class probabilities
back onto the input grid slab by slab, arg-maxes them into FDI values, post-processes, checks the
numbering, and returns the labels in the input's own geometry — plus, on request, a voxel-wise
uncertainty map (normalised entropy) and the mean uncertainty per tooth.

A model imported from nnU-Net is run with nnU-Net's own arithmetic instead (:mod:`.nnunet_pipeline`),
so that it segments as ``nnUNetv2_predict`` does.

A coarse-to-fine cascade runs its coarse member on the whole scan at low resolution, crops the
region that holds teeth (plus a margin), and runs the fine member only there, skipping windows
that the coarse result says are empty.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..errors import InputError
from ..handedness import handedness_of
from ..labels import LabelTable
from ..metrics.protocols import present_labels
from ..models.folder import LoadedModel, load_model_folder
from ..progress import Progress
from ..volume import Volume, dental_input_warnings
from ..preprocessing import (
    channel_argmax,
    image_statistics,
    iter_resampled_argmax,
    iter_resampled_slabs,
    normalize_intensities,
    resample_array,
    resampled_shape,
    restore_orientation,
    to_canonical,
    whole_image_spacing,
)
from ..postprocessing import JAWS_IN_VIEW, apply_steps, check_numbering, takes_jaws_in_view
from .cascade import EmptyWindowSkipper, roi_from_foreground
from .nnunet_pipeline import segment_like_nnunet
from .sliding_window import SlidingWindowConfig, sliding_window_predict
from .tta import WindowRunner

__all__ = ["InferenceOptions", "Prediction", "Predictor", "resolve_device", "auto_batch_size", "DEFAULT_POSTPROCESSING"]

log = logging.getLogger(__name__)

DEFAULT_POSTPROCESSING: list[dict[str, Any]] = [
    {"name": "merge_fragments"},
    {"name": "remove_small", "min_mm3": 8.0},
    {"name": "fill_holes"},
]


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto`` → CUDA if available else CPU; ``cuda`` without a GPU falls back with a warning.

    Under ``torchrun`` (``LOCAL_RANK`` set) each process takes its own GPU of the node, made the current
    one, so that eight shards of ``segment`` do not all run on GPU 0."""
    if requested not in ("auto", "cpu", "cuda"):
        raise InputError(f"device must be auto, cpu or cuda, not {requested!r}")
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        local_rank = os.environ.get("LOCAL_RANK", "").strip()
        if not local_rank.isdigit():
            return torch.device("cuda")
        index = int(local_rank) % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if requested == "cuda":
        log.warning("CUDA was requested but no GPU is available; running on the CPU")
    return torch.device("cpu")


CPU_BATCH_VOXELS = 2**20
"""Voxels per forward pass that automatic batching aims at on a CPU (one 128 x 128 x 64 window)."""


def auto_batch_size(device: torch.device, patch: list[int]) -> int:
    """Windows per forward pass when the user did not choose: 2 on a GPU; on a CPU enough windows for
    about :data:`CPU_BATCH_VOXELS` voxels, 1 to 8. On two CPU cores a small nnU-Net plan (patch 28 x 40 x
    40, 8 mirrored passes) ran 6x faster at 8 windows per call than at 1, with the same labels
    (``Testing/benchmarks/bench_nnunet_speed.py``); the bundled cascade (64^3 and 64 x 96 x 96 windows)
    gains little, so the budget stays where its memory stays (1.36 GB at 2 M voxels, 1.0 GB here)."""
    if device.type == "cuda":
        return 2
    return max(1, min(8, CPU_BATCH_VOXELS // max(1, math.prod(int(p) for p in patch))))


@dataclass
class InferenceOptions:
    """How to run a prediction.

    Attributes:
        device: ``auto``, ``cpu`` or ``cuda``.
        tta: mirrored test-time augmentation on the axes the model card allows.
        fast: no TTA and less window overlap (0.25) — several times faster.
        overlap: window overlap (fraction of the patch).
        batch_size: windows per forward pass; 0 = automatic (:func:`auto_batch_size`: 2 on a GPU; on a
            CPU as many windows as make about 1 M voxels, at most 8: small patches gain several-fold
            from fewer, larger calls, large ones nothing).
        use_cascade: for cascade models, run the fine model only where the coarse one found teeth.
        roi_margin_mm: margin around the coarse teeth region.
        coarse_overlap: window overlap of a cascade's coarse member, which only has to find the
            region with teeth (its mask is dilated by ``roi_margin_mm``): less overlap than the fine
            member's, and never mirrored, because it costs as much per window as the fine model.
        uncertainty: also compute the entropy map and per-tooth uncertainty.
        postprocessing: steps (see :mod:`toothseg.core.postprocessing`); None = defaults.
        exact: float32 accumulation (comparisons and tests).
        placement: window placement, ``even`` (nnU-Net) or ``monai``.
        numbering_checks: run (and log) the FDI numbering checks.
        keep_network_labels: also return the network's own classes before post-processing
            (:attr:`Prediction.network_labels`): training validation scores the network on them when
            post-processing turns them into other labels (teeth numbered from a tooth map).
        jaws_in_view: which jaws the scan holds, as its user knows it (``both``, ``upper``, ``lower``;
            None: not said). The steps that number teeth from the dental arch use it: with one jaw, every
            tooth is that jaw's, where the cut along the bite would halve the teeth of a lower jaw alone.
    """

    device: str = "auto"
    tta: bool = True
    fast: bool = False
    overlap: float = 0.5
    batch_size: int = 0
    use_cascade: bool = True
    roi_margin_mm: float = 6.0
    coarse_overlap: float = 0.25
    uncertainty: bool = False
    postprocessing: list[dict[str, Any]] | None = None
    exact: bool = False
    placement: str = "even"
    numbering_checks: bool = True
    keep_network_labels: bool = False
    jaws_in_view: str | None = None


@dataclass
class Prediction:
    """A prediction in the input's geometry."""

    labels: Volume
    table: LabelTable
    uncertainty: Volume | None = None
    tooth_uncertainty: dict[int, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    network_labels: Volume | None = None  # the network's classes before post-processing, on request

    def header_fields(self) -> dict[str, str]:
        """What a ``.seg.nrrd`` of this prediction records of it: the model and the handedness verdict
        (``ToothSeg_Handedness``: ``correct``, ``mirrored`` or ``undetermined``, with the determinant)."""
        fields = {"ToothSeg_Model": str(self.report["model"])} if self.report.get("model") else {}
        hand = self.report.get("handedness")
        if hand:
            det = hand.get("determinant")
            fields["ToothSeg_Handedness"] = hand["verdict"] + (f" {det:+.2f}" if det is not None else "")
        return fields


class Predictor:
    """Runs a model folder on volumes. Load once, predict many."""

    def __init__(self, model: LoadedModel | str | Path, options: InferenceOptions | None = None) -> None:
        self.options = options or InferenceOptions()
        if self.options.jaws_in_view not in (None, *JAWS_IN_VIEW):
            raise InputError(f"jaws in view: {self.options.jaws_in_view!r} is none of {', '.join(JAWS_IN_VIEW)}")
        self.model = model if isinstance(model, LoadedModel) else load_model_folder(model)
        self.device = resolve_device(self.options.device)
        roles = {role for role, _ in self.model.members}
        self.is_cascade = {"coarse", "fine"} <= roles
        self.nnunet = self.model.card.nnunet_settings
        if self.model.members and not self.is_cascade and roles != {"ensemble"}:
            raise InputError(f"model {self.model.card.id!r}: members must be an ensemble or a coarse+fine cascade")

    @property
    def card(self):
        return self.model.card

    @property
    def table(self) -> LabelTable:
        return self.model.card.output_table

    # ------------------------------------------------------------------ helpers
    def _runner(self, role: str | None = None) -> WindowRunner:
        if not self.model.members:
            models = [self.model]
        elif role is None:
            models = [m for r, m in self.model.members if r == "ensemble"]
        else:
            models = [m for r, m in self.model.members if r == role]
        tta = self.options.tta and not self.options.fast and role != "coarse"
        # left/right FDI channels are swapped under a sagittal mirror only in the canonical orientation
        return WindowRunner(models, self.device, tta, swap_sides=self.card.reorient)

    def _window_config(self, runner: WindowRunner, overlap: float | None = None) -> SlidingWindowConfig:
        card = runner.card
        patch = list(card.patch_size or [128] * card.spatial_dims)
        if card.spatial_dims == 2:
            patch = [1, *patch]
        if overlap is None:
            overlap = 0.25 if self.options.fast else self.options.overlap
        batch = self.options.batch_size or auto_batch_size(self.device, patch)
        window = card.sliding_window or {}
        strides = window.get("strides")
        if strides is not None and card.spatial_dims == 2:
            strides = [1, *strides]
        importance = "uniform" if window.get("importance") == "uniform" else "monai"
        return SlidingWindowConfig(patch, overlap, batch, self.options.placement, exact=self.options.exact,
                                   importance=importance, strides=strides)

    def _model_grid(self, runner: WindowRunner, shape: tuple[int, ...],
                    spacing_zyx: tuple[float, ...]) -> tuple[int, ...]:
        target = runner.card.spacing_zyx
        if not target:
            return tuple(shape)
        target = list(target)
        if runner.card.spatial_dims == 2:
            target = [spacing_zyx[0], *target]
        return resampled_shape(shape, spacing_zyx, target)

    def _probabilities(self, runner: WindowRunner, array: np.ndarray, spacing_zyx: tuple[float, ...],
                       stats: dict[str, float], progress: Progress, skip=None,
                       overlap: float | None = None) -> torch.Tensor:
        """Class probabilities (C, *model grid) of a canonical array region."""
        grid = self._model_grid(runner, array.shape, spacing_zyx)
        progress.update(0.0, "resampling")
        image = resample_array(array, grid) if grid != array.shape else torch.from_numpy(array.astype(np.float32))
        normalize_intensities(image, runner.card.intensity, stats)
        config = self._window_config(runner, overlap)
        return sliding_window_predict(image[None], runner, runner.card.num_classes, config, self.device,
                                      progress.sub(0.05, 1.0, progress.prefix), skip)

    # ------------------------------------------------------------------ public
    def predict(self, volume: Volume, progress: Progress | None = None) -> Prediction:
        """Segment ``volume``; see the module docstring.

        Raises:
            InputError: wrong kind of image for the model, NaN voxels, bad options.
            CancelledError: ``progress`` was cancelled (nothing is written by this function).
        """
        progress = progress or Progress()
        started = time.perf_counter()
        volume.check_finite()
        self.model.check_input(volume)
        report: dict[str, Any] = {"model": self.card.id, "device": str(self.device), "input": volume.describe(),
                                  "tta": self.options.tta and not self.options.fast}
        warnings: list[str] = dental_input_warnings(volume.size_xyz, volume.spacing, volume.is_2d, volume.array)
        if self.nnunet is not None or not self.card.reorient:
            # the network sees the array as the file stores it (nnU-Net's and RAIL's code do not reorient);
            # the result is then brought into the canonical orientation like any other, for the checks below
            if self.nnunet is not None:
                labels, entropy = self._segment_like_nnunet(volume, report, progress.sub(0.0, 0.95))
            else:
                labels, entropy = self._segment(volume.array, volume.spacing_zyx, report, warnings, progress)
            canonical, orientation = to_canonical(volume.with_array(labels))
            labels = canonical.array
            if entropy is not None:
                entropy = to_canonical(volume.with_array(entropy))[0].array
            spacing_zyx = canonical.spacing_zyx
            image = None  # the steps that read intensities do without (imported models run none of them)
        else:
            canonical, orientation = to_canonical(volume)
            image = canonical.array
            spacing_zyx = canonical.spacing_zyx
            if self.card.image_extent_yx and canonical.is_2d:  # X-rays as the model saw them: whole-image scale
                spacing_zyx = (spacing_zyx[0],
                               *whole_image_spacing(canonical.array.shape[1:], self.card.image_extent_yx))
            labels, entropy = self._segment(canonical.array, spacing_zyx, report, warnings, progress)
        progress.update(0.95, "post-processing")
        steps = self.options.postprocessing
        if steps is None:  # the card's own (imported models: none, as their code does), else ToothSeg's
            steps = self.card.postprocessing if self.card.postprocessing is not None else DEFAULT_POSTPROCESSING
        network_labels = None
        if self.options.keep_network_labels:
            network_labels = volume.with_array(restore_orientation(labels.copy(), orientation))
        if self.options.jaws_in_view:
            report["jaws_in_view"] = self.options.jaws_in_view
            if not takes_jaws_in_view(steps or []):
                warnings.append(f"the scan was said to hold {self.options.jaws_in_view} jaw(s), but model "
                                f"{self.card.id} numbers the teeth itself: its numbers are not checked against it")
        if steps and labels.any():
            postprocessing_started = time.perf_counter()
            labels = apply_steps(labels, spacing_zyx, steps, image=image, jaws_in_view=self.options.jaws_in_view,
                                 notes=warnings)
            report["postprocessing_seconds"] = round(time.perf_counter() - postprocessing_started, 3)
        if self.options.numbering_checks:
            warnings += self._numbering_warnings(canonical.with_array(labels), report)
        tooth_uncertainty: dict[int, float] = {}
        uncertainty_volume = None
        if entropy is not None:
            tooth_uncertainty = _per_label_mean(labels, entropy)
            uncertainty_volume = volume.with_array(restore_orientation(entropy, orientation))
        output = volume.with_array(restore_orientation(labels, orientation))
        if not output.array.any() and not any("no teeth" in w for w in warnings):
            warnings.append("no teeth were found in this scan; the result is empty")
        report["seconds"] = round(time.perf_counter() - started, 3)
        report["labels_found"] = sorted(v for v in present_labels(output.array) if v)  # boxes: no full sort
        for message in warnings:  # returned to the caller, who shows them (the CLI prints them once)
            log.info("%s", message)
        progress.update(1.0, "done")
        return Prediction(output, self.table, uncertainty_volume, tooth_uncertainty, warnings, report,
                          network_labels)

    def _segment(self, array: np.ndarray, spacing_zyx: tuple[float, ...], report: dict[str, Any],
                 warnings: list[str], progress: Progress) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (and normalised entropy, on request) of a canonical array, before post-processing:
        a cascade's coarse member first finds the region its fine member then segments."""
        stats = image_statistics(array)
        class_values = np.asarray(self.card.class_values)
        labels = np.zeros(array.shape, dtype=np.uint8 if class_values.max() < 256 else np.uint16)
        entropy = np.zeros(array.shape, dtype=np.float32) if self.options.uncertainty else None
        roi: tuple[slice, ...] | None = tuple(slice(0, n) for n in array.shape)
        skip = None
        if self.is_cascade and self.options.use_cascade:
            roi, skip, report["coarse"] = self._coarse_stage(array, spacing_zyx, stats,
                                                             progress.sub(0.0, 0.25, "locating teeth"))
            fine_progress = progress.sub(0.25, 0.9, "segmenting teeth")
        else:
            fine_progress = progress.sub(0.0, 0.9, "segmenting teeth")
        if roi is None:
            warnings.append("no teeth were found in this scan; the result is empty")
            return labels, entropy
        runner = self._runner("fine" if self.is_cascade else None)
        report["tta"] = bool(runner.mirrors)  # a card without mirror axes runs unmirrored whatever was asked
        region = array[roi]
        probs = self._probabilities(runner, region, spacing_zyx, stats, fine_progress, skip)
        report["forward_passes"] = runner.forward_passes
        self._probabilities_to_labels(probs, region.shape, class_values, labels, entropy, roi,
                                      progress.sub(0.9, 0.95, "mapping back"))
        return labels, entropy

    def _segment_like_nnunet(self, volume: Volume, report: dict[str, Any],
                             progress: Progress) -> tuple[np.ndarray, np.ndarray | None]:
        """An imported nnU-Net model run with nnU-Net's arithmetic (:mod:`.nnunet_pipeline`): logits of
        mirrored passes and folds averaged, no left/right channel swap, in the image's own axis order."""
        models = [m for _, m in self.model.members] or [self.model]
        tta = self.options.tta and not self.options.fast
        runner = WindowRunner(models, self.device, tta, logits=True, swap_sides=False)
        patch = list(self.card.patch_size or [128] * self.card.spatial_dims)
        batch = self.options.batch_size or auto_batch_size(self.device, patch)
        report["tta"] = tta and bool(runner.mirrors)
        return segment_like_nnunet(runner, volume, self.nnunet, self.device, batch, self.options.uncertainty,
                                   report, progress.sub(0.0, 1.0, "segmenting"))

    @staticmethod
    def _numbering_warnings(result: Volume, report: dict[str, Any]) -> list[str]:
        """FDI numbering checks on the canonical result; a 3D result's handedness goes into the report."""
        hand = handedness_of(result)
        if not result.is_2d:
            report["handedness"] = hand.to_dict()
        return check_numbering(result, handedness=hand)

    def _probabilities_to_labels(self, probs: torch.Tensor, region_shape: tuple[int, ...], class_values: np.ndarray,
                                 labels: np.ndarray, entropy: np.ndarray | None, roi: tuple[slice, ...],
                                 progress: Progress) -> None:
        """Interpolate probabilities onto the region's native grid slab by slab; arg-max into labels.

        Slabs are slices of a scan and rows of a one-slice X-ray (its only slice would otherwise be one
        slab: every class's probabilities at full resolution at once, 9 GB for a 3000 x 6000 px X-ray).
        Linear interpolation is separable, so both orders give the same numbers."""
        lut = torch.from_numpy(class_values.astype(np.int64))
        log_c = math.log(max(2, probs.shape[0]))
        by_rows = region_shape[0] == 1 and probs.shape[1] == 1
        source = probs.transpose(1, 2) if by_rows else probs
        shape = (region_shape[1], 1, region_shape[2]) if by_rows else tuple(region_shape)
        slab = max(1, int(2**23 // max(1, probs.shape[0] * shape[1] * shape[2])))

        def target_of(a0: int, a1: int) -> tuple[slice, ...]:
            if by_rows:
                return roi[0], slice(roi[1].start + a0, roi[1].start + a1), roi[2]
            return slice(roi[0].start + a0, roi[0].start + a1), roi[1], roi[2]

        if entropy is None:  # only the classes that can win a slab are interpolated (same labels)
            for a0, a1, winner in iter_resampled_argmax(source, shape, slab=slab):
                progress.update(a0 / shape[0], "mapping back")
                labels[target_of(a0, a1)] = lut[winner.transpose(0, 1) if by_rows else winner].numpy()
            return
        for a0, a1, block in iter_resampled_slabs(source, shape, slab=slab):
            progress.update(a0 / shape[0], "mapping back")
            if by_rows:
                block = block.transpose(1, 2)
            target = target_of(a0, a1)
            labels[target] = lut[channel_argmax(block)].numpy().astype(labels.dtype)
            p = block.clamp_min(1e-8)
            entropy[target] = (-(p * p.log()).sum(dim=0) / log_c).numpy()

    def _coarse_stage(self, array: np.ndarray, spacing_zyx: tuple[float, ...], stats: dict[str, float],
                      progress: Progress):
        """Run the coarse member; return (roi slices or None, window skip function, report)."""
        runner = self._runner("coarse")
        probs = self._probabilities(runner, array, spacing_zyx, stats, progress,
                                    overlap=min(self.options.coarse_overlap, self._window_config(runner).overlap))
        foreground = (probs.argmax(dim=0) > 0).numpy()
        report: dict[str, Any] = {"grid": list(foreground.shape), "foreground_voxels": int(foreground.sum()),
                                  "forward_passes": runner.forward_passes}
        margin = self.options.roi_margin_mm
        region = roi_from_foreground(foreground, array.shape, spacing_zyx, margin)
        if region is None:
            return None, None, report
        fine_grid = self._model_grid(self._runner("fine"), region.shape, spacing_zyx)
        skip = EmptyWindowSkipper(foreground, region, spacing_zyx, margin, fine_grid)
        report["roi"] = [[a, b] for a, b in zip(region.lo, region.hi)]
        report["roi_fraction"] = round(float(np.prod(region.shape) / np.prod(array.shape)), 4)
        return region.slices, skip, report


def _per_label_mean(labels: np.ndarray, values: np.ndarray) -> dict[int, float]:
    """Mean of ``values`` over each label, inside its bounding box (no full-scan float64 temporaries)."""
    if not labels.any():
        return {}
    return {value: round(float(values[box][labels[box] == value].mean()), 5)
            for value, box in enumerate(ndimage.find_objects(labels), start=1) if box is not None}
