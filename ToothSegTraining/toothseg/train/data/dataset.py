"""Training data: cases prepared exactly as inference prepares them, and deterministic patch sampling.

Every sample is a pure function of ``(seed, index)``: the sampler draws index ``step * batch + k``,
so resuming at step *s* replays exactly the samples an uninterrupted run would have seen, and a
distributed run splits the same global batch across its processes.

Sources:

* ``files``: manifests of image/label files (NIfTI, NRRD, MHA, DICOM folders, RAIL ``.h5``, PNG);
* ``ufba425``: the committed split of the real panoramic X-rays in ``shared/data/ufba425``;
* ``synthetic``: synthetic CBCT painted on real tooth label maps (:mod:`toothseg.train.synth`),
  a new random image for every sample.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...core.errors import InputError, LabelError
from ...core.handedness import handedness_of, mirror_label_numbers
from ...core.io.images import read_label_map, read_volume
from ...core.labels import INSTANCE_TABLES, TOOTH_JAW, LabelTable, jaw_classes
from ...core.models.card import IntensityNormalization
from ...core.postprocessing.instances import instance_classes
from ...core.preprocessing import (
    image_statistics,
    normalize_intensities,
    resample_array,
    resampled_shape,
    to_canonical,
    whole_image_spacing,
)
from ...core.volume import Volume, check_same_geometry
from ..config.schema import DataConfig
from ..synth import SynthesisOptions, prepare_anatomy, synthesize
from ..synth.jaw_map import prepare_jaw_anatomy
from .augment import check_extra_flips, intensity_augment, spatial_augment
from .cases import Case, apply_label_values, read_manifest, shared_data_dir, ufba_cases

__all__ = ["PreparedCase", "TrainingData", "patient_of", "prepare_volume", "nearest_resample",
           "drop_small_labels", "read_training_labels", "BUILTIN_LABEL_MAPS", "BUILTIN_JAW_MAPS"]

log = logging.getLogger(__name__)

IGNORE = 255  # label value (and class index) of voxels that give no loss: unconfident pseudo-labels


def patient_of(case: Case) -> str:
    """Which patient a synthetic source's label map shows: STS-2024's ``_gt`` and ``_pred`` maps of one
    scan are one patient."""
    stem = Path(str(case.label)).name.split(".")[0]
    return re.sub(r"_(gt|pred)$", "", stem)


#: The real label maps of ``shared/data/sts2024`` by recipe name. Both patients' maps are mirrored
#: (``shared/data/README.md``, "Side convention"): they are always read with left/right swapped.
#: Values that are no FDI tooth are read as background (``Validation_0001_pred`` holds 167 voxels of 3).
BUILTIN_NON_TEETH = {"Validation_0001_pred": ((3, 0),)}
BUILTIN_LABEL_MAPS = {
    "sts2024": "Validation_0002_gt", "sts2024-pred": "Validation_0002_pred",
    "sts2024-0002": "Validation_0002_gt", "sts2024-0002-pred": "Validation_0002_pred",
    "sts2024-0001": "Validation_0001_gt", "sts2024-0001-pred": "Validation_0001_pred",
}
#: Real jaw-level maps (maxilla, mandible, teeth without FDI numbers, canal): binary tooth models only.
BUILTIN_JAW_MAPS = {"dentalsegmentator": "dentalsegmentator/PostDentalSurgery_Segmentation.nii.gz"}


def _read_case_labels(case: Case) -> Volume:
    """A case's label map with its manifest's ``label_values`` applied (datasets that number classes
    their own way, e.g. ToothFairy's lower jaw 1 → our mandible 2), then its left/right numbers
    swapped when the manifest marks it ``mirror_labels``."""
    labels = read_label_map(case.label)
    if not case.label_values and not case.mirror_labels:
        return labels
    array = apply_label_values(labels.array, case.label_values)
    if case.mirror_labels:
        array = mirror_label_numbers(array)
    return Volume(array, labels.spacing, labels.origin, labels.direction, labels.kind)


def read_training_labels(case: Case, handedness: str = "check") -> Volume:
    """A labeled case's label map as training reads it, with the handedness contract applied.

    A 3D map whose left/right numbering is mirrored (:func:`toothseg.core.handedness.handedness_of`)
    is refused (``check``), corrected (``fix``) or read as stored (``off``): a model trained on it
    would number the patient's right teeth as left ones on every correctly oriented scan."""
    labels = _read_case_labels(case)
    if handedness == "off" or labels.is_2d:
        return labels
    verdict = handedness_of(labels)
    if verdict.sign >= 0:
        if verdict.sign == 0:
            log.info("case %s: %s", case.id, verdict.message())
        return labels
    if handedness == "fix":
        log.warning("case %s: %s; its left/right numbers are swapped (data.handedness: fix)", case.id,
                    verdict.message())
        return labels.with_array(mirror_label_numbers(labels.array))
    raise LabelError(f"case {case.id} ({case.label}): {verdict.message()}. Mark it \"mirror_labels\": true in its "
                     "manifest (toothseg data manifest --mirror-labels), or set data.handedness: fix")


def drop_small_labels(labels: np.ndarray, min_voxels: int) -> tuple[np.ndarray, list[int]]:
    """Labels with fewer than ``min_voxels`` voxels set to background, and the values dropped.

    Annotation fragments (a tooth cut by the field of view, a stray click) teach a tooth where there
    is none; the coarse-to-fine method drops labels under 36 voxels. 255 (ignore) is never dropped.
    """
    if min_voxels <= 0:
        return labels, []
    values, counts = np.unique(labels, return_counts=True)
    small = [int(v) for v, n in zip(values, counts) if v != 0 and v != IGNORE and n < min_voxels]
    if not small:
        return labels, []
    return np.where(np.isin(labels, small), 0, labels).astype(labels.dtype, copy=False), small


def class_values_for(config: DataConfig, table: LabelTable) -> list[int]:
    """The label value of each output channel: the recipe's ``class_values``, else every table entry."""
    return list(config.class_values or [0, *table.values])


def nearest_resample(labels: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resampling with the same voxel-centre convention as image resampling."""
    index = []
    for n_in, n_out in zip(labels.shape, out_shape):
        position = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        index.append(np.clip(np.round(position).astype(np.int64), 0, n_in - 1))
    return labels[np.ix_(*index)]


@dataclass
class PreparedCase:
    """A case on the training grid: normalised image (1, *spatial) and class-index labels (*spatial)."""

    id: str
    image: np.ndarray
    labels: np.ndarray | None
    spacing: tuple[float, ...]
    foreground: dict[int, np.ndarray] | None = None  # class index → voxel coordinates (sub-sampled)


def prepare_volume(volume: Volume, data: DataConfig) -> tuple[np.ndarray, tuple[float, ...], tuple[int, ...]]:
    """Canonical orientation, resampling to ``data.spacing`` and normalisation, as at inference."""
    canonical, _ = to_canonical(volume)
    array = canonical.array
    spacing = canonical.spacing_zyx
    if data.kind == "2d":
        array, spacing = array[0], spacing[1:]
        if data.image_extent:
            spacing = whole_image_spacing(array.shape, data.image_extent)
    target = data.spacing or list(spacing)
    shape = resampled_shape(array.shape, spacing, target) if data.spacing else array.shape
    stats = image_statistics(array)
    image = resample_array(array[None] if array.ndim == 2 else array, (1, *shape) if array.ndim == 2 else shape)
    image = image[0] if array.ndim == 2 else image
    normalize_intensities(image, IntensityNormalization(**data.intensity), stats)
    return image.numpy()[None], tuple(float(t) for t in target), tuple(shape)


class TrainingData:
    """Labeled, unlabeled and validation cases of a recipe, with per-process caches."""

    def __init__(self, data: DataConfig, table: LabelTable, class_values: list[int], seed: int = 0) -> None:
        self.config, self.table, self.seed = data, table, seed
        self.class_values = list(class_values)
        size = max(max(class_values), max(table.values, default=0), IGNORE) + 1
        self.to_class = np.full(size, -1, dtype=np.int64)
        for index, value in enumerate(class_values):
            self.to_class[value] = index
        check_extra_flips(data.augment, table, self.class_values, 2 if data.kind == "2d" else 3)
        swapped = [table.swap_partner(v) for v in class_values]
        self.lr_classes = np.array([class_values.index(v) if v in class_values else i for i, v in enumerate(swapped)])
        if np.all(self.lr_classes == np.arange(len(class_values))):
            self.lr_classes = None
        self.labeled, self.unlabeled, self.validation = self._cases()
        self._cache: dict[str, PreparedCase] = {}
        self._anatomy: dict[str, Any] = {}
        self.dims = 2 if data.kind == "2d" else 3
        jaw_maps = [c.label.name for c in self.labeled if c.anatomy == "jaws"]
        if jaw_maps and data.label_table != "binary":
            raise InputError(f"synthetic data: {', '.join(jaw_maps)} is a jaw-level map whose teeth carry no FDI "
                             "numbers; only a binary tooth model (label_table: binary, e.g. a cascade's coarse "
                             "stage) can learn from it")
        if data.source != "synthetic" and not self.labeled:
            raise InputError("the recipe's labeled set is empty")

    # ------------------------------------------------------------------ sources
    def _cases(self) -> tuple[list[Case], list[Case], list[Case]]:
        d = self.config
        if d.source == "files":
            labeled = read_manifest(d.labeled, d.root, require_labels=True) if d.labeled else []
            unlabeled = read_manifest(d.unlabeled, d.root) if d.unlabeled else []
            validation = read_manifest(d.validation, d.root, require_labels=True) if d.validation else []
            if d.labeled_fraction < 1.0:
                keep = max(1, round(d.labeled_fraction * len(labeled)))
                unlabeled = unlabeled + [Case(c.id, c.image) for c in labeled[keep:]]
                labeled = labeled[:keep]
            return labeled, [Case(c.id, c.image) for c in unlabeled], validation
        if d.source == "ufba425":
            labeled = ufba_cases(d.labeled or "train", d.labeled_fraction, "labeled")
            unlabeled = (ufba_cases(d.labeled or "train", d.labeled_fraction, "unlabeled")
                         if d.unlabeled != "none" else [])
            validation = ufba_cases(d.validation or "val") if d.validation != "none" else []
            return labeled, unlabeled, validation
        if d.source == "synthetic":
            labeled = [self._label_map_case(p) for p in (d.labeled or "sts2024").split(",")]
            validation = [replace(labeled[i % len(labeled)], id=f"synthetic-val-{i}")
                          for i in range(int(d.validation or 2))] if d.validation != "none" else []
            return labeled, [], validation
        raise InputError(f"unknown data source {d.source!r} (files, ufba425, synthetic)")

    @staticmethod
    def _label_map_case(name: str) -> Case:
        """A synthetic source's label map: a built-in STS-2024 name (read mirrored back) or a file."""
        name = name.strip()
        if name in BUILTIN_JAW_MAPS:
            path = shared_data_dir() / BUILTIN_JAW_MAPS[name]
            return Case(f"synthetic-{path.name.split('.')[0]}", path, path, anatomy="jaws")
        if name in BUILTIN_LABEL_MAPS:
            stem = BUILTIN_LABEL_MAPS[name]
            path = shared_data_dir() / "sts2024" / f"{stem}.nii.gz"
            return Case(f"synthetic-{stem}", path, path, BUILTIN_NON_TEETH.get(stem, ()), mirror_labels=True)
        path = Path(name)
        if not path.exists():
            known = ", ".join([*BUILTIN_LABEL_MAPS, *BUILTIN_JAW_MAPS])
            raise InputError(f"synthetic data: label map {name!r} not found (a file, or one of {known})")
        return Case(f"synthetic-{path.stem.split('.')[0]}", path, path)

    # ------------------------------------------------------------------ preparation
    def _labels_to_classes(self, values: np.ndarray, where: str, spacing: Sequence[float]) -> np.ndarray:
        """Label values → class indices; 255 (pseudo-label "ignore") stays 255; a binary table takes any tooth,
        ``tooth-boundary`` makes interior/boundary classes from the teeth (``spacing``: of ``values``, in mm),
        ``tooth-type-boundary`` the same with the tooth type in the interior."""
        if self.config.label_table == "binary":
            return np.where(values == IGNORE, IGNORE, values > 0).astype(np.uint8)
        if self.config.label_table in INSTANCE_TABLES:
            try:
                return instance_classes(values, spacing[-values.ndim:], self.config.label_table, ignore=IGNORE)
            except InputError as exc:
                raise LabelError(f"{where}: {exc}") from exc
        if self.config.label_table == TOOTH_JAW:
            try:
                return jaw_classes(values, ignore=IGNORE)
            except InputError as exc:
                raise LabelError(f"{where}: {exc}") from exc
        present = np.unique(values)
        unknown = [int(v) for v in present if v != IGNORE and (v >= len(self.to_class) or self.to_class[v] < 0)]
        if unknown:
            raise LabelError(f"{where}: label value(s) {unknown[:10]} are not among the model's classes "
                             f"{self.class_values[1:][:10]}…; fix the labels or the recipe's label_table/class_values")
        classes = self.to_class[np.minimum(values, len(self.to_class) - 1)].astype(np.uint8)
        classes[values == IGNORE] = IGNORE
        return classes

    def prepare(self, case: Case, with_labels: bool = True) -> PreparedCase:
        key = f"{case.id}:{with_labels}"
        if key in self._cache:
            return self._cache[key]
        volume = read_volume(case.image)
        image, spacing, shape = prepare_volume(volume, self.config)
        labels = foreground = None
        if with_labels and case.label is not None:
            label_volume = read_training_labels(case, self.config.handedness)
            check_same_geometry(volume, label_volume, f"image of {case.id}", "label map")
            canonical, _ = to_canonical(label_volume)
            array = canonical.array[0] if self.dims == 2 else canonical.array
            array, dropped = drop_small_labels(array, self.config.min_label_voxels)
            if dropped:
                log.info("case %s: label(s) %s under %d voxels read as background", case.id, dropped,
                         self.config.min_label_voxels)
            if array.shape != shape:
                array = nearest_resample(array, shape)
            labels = self._labels_to_classes(array, f"case {case.id}", spacing)
            foreground = self._foreground(labels)
        prepared = PreparedCase(case.id, image, labels, spacing, foreground)
        if self.config.cache_cases:
            self._cache[key] = prepared
        return prepared

    @staticmethod
    def _foreground(labels: np.ndarray, limit: int = 20000) -> dict[int, np.ndarray]:
        rng = np.random.default_rng(0)
        out = {}
        for value in np.unique(labels):
            if value == 0 or value == IGNORE:
                continue
            coords = np.argwhere(labels == value)
            if len(coords) > limit:
                coords = coords[rng.choice(len(coords), limit, replace=False)]
            out[int(value)] = coords.astype(np.int32)
        return out

    # ------------------------------------------------------------------ sampling
    def _rng(self, stream: str, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, {"labeled": 1, "unlabeled": 2, "synthetic": 3}[stream], index])

    def _crop(self, prepared: PreparedCase, rng: np.random.Generator, labeled: bool, size: tuple[int, ...]):
        spatial = prepared.image.shape[1:]
        centre = None
        if labeled and prepared.foreground and rng.random() < self.config.foreground_oversample:
            value = list(prepared.foreground)[rng.integers(len(prepared.foreground))]
            coords = prepared.foreground[value]
            centre = coords[rng.integers(len(coords))]
        if centre is None:
            centre = [rng.integers(0, max(1, s)) for s in spatial]
        start = [int(c) - p // 2 for c, p in zip(centre, size)]
        start = [min(max(s, min(0, n - p)), max(0, n - p)) if n >= p else (n - p) // 2
                 for s, n, p in zip(start, spatial, size)]
        return start

    @staticmethod
    def _extract(array: np.ndarray, start: list[int], size: tuple[int, ...], fill: float) -> np.ndarray:
        lead = array.ndim - len(size)
        out = np.full(array.shape[:lead] + tuple(size), fill, dtype=array.dtype)
        src, dst = [], []
        for s, p, n in zip(start, size, array.shape[lead:]):
            a, b = max(0, s), min(n, s + p)
            src.append(slice(a, b))
            dst.append(slice(a - s, b - s))
        out[(slice(None),) * lead + tuple(dst)] = array[(slice(None),) * lead + tuple(src)]
        return out

    def _sample(self, prepared: PreparedCase, rng: np.random.Generator, labeled: bool) -> dict[str, torch.Tensor]:
        patch = tuple(self.config.patch_size)
        augment = self.config.augment
        spatial_aug = augment.rotate_probability > 0 or augment.scale_probability > 0 or augment.elastic_probability > 0
        margin = tuple(int(p * 1.25) if spatial_aug else p for p in patch)
        start = self._crop(prepared, rng, labeled, margin)
        image = self._extract(prepared.image, start, margin, float(prepared.image.min()))
        labels = self._extract(prepared.labels, start, margin, 0) if labeled and prepared.labels is not None else None
        image, labels = spatial_augment(image, labels, augment, rng, self.table, prepared.spacing, self.lr_classes)
        if margin != patch:
            offset = [(m - p) // 2 for m, p in zip(margin, patch)]
            region = tuple(slice(o, o + p) for o, p in zip(offset, patch))
            image = image[(slice(None), *region)]
            labels = labels[region] if labels is not None else None
        image = intensity_augment(np.ascontiguousarray(image), augment, rng)
        sample = {"image": torch.from_numpy(np.ascontiguousarray(image))}
        if labels is not None:
            sample["label"] = torch.from_numpy(np.ascontiguousarray(labels).astype(np.int64))
        return sample

    def labeled_item(self, index: int) -> dict[str, torch.Tensor]:
        rng = self._rng("labeled", index)
        if self.config.source == "synthetic":
            return self._synthetic_item(rng)
        case = self.labeled[index % len(self.labeled)]
        return self._sample(self.prepare(case), rng, labeled=True)

    def unlabeled_item(self, index: int) -> dict[str, torch.Tensor]:
        rng = self._rng("unlabeled", index)
        if self.config.source == "synthetic":
            item = self._synthetic_item(rng)
            item.pop("label")
            return item
        if not self.unlabeled:
            raise InputError("this method needs unlabeled data, but the recipe's unlabeled set is empty")
        case = self.unlabeled[index % len(self.unlabeled)]
        return self._sample(self.prepare(case, with_labels=False), rng, labeled=False)

    # ------------------------------------------------------------------ synthetic
    def _anatomy_for(self, case: Case):
        key = f"{case.label}:{case.mirror_labels}"  # validation scans share their training map's anatomy
        if key not in self._anatomy:
            labels = read_label_map(case.label) if case.anatomy == "jaws" else read_training_labels(
                case, self.config.handedness)  # no FDI numbers, no sides to check
            canonical, _ = to_canonical(labels)
            if self.config.spacing:
                shape = resampled_shape(canonical.shape, canonical.spacing_zyx, self.config.spacing)
                array = nearest_resample(canonical.array, shape)
                spacing = tuple(self.config.spacing)
                canonical = Volume(array, spacing[::-1], canonical.origin, canonical.direction)
            prepare = prepare_jaw_anatomy if case.anatomy == "jaws" else prepare_anatomy
            self._anatomy[key] = prepare(canonical)
        return self._anatomy[key]

    def _donors_for(self, case: Case) -> list:
        """Anatomies of the other patients (a map and a prediction of one scan are one patient), whose
        teeth ``tooth_exchange_probability`` may lend this one."""
        own = patient_of(case)
        return [self._anatomy_for(c) for c in self.labeled if patient_of(c) != own and c.anatomy == "teeth"]

    def synthetic_volume(self, case: Case, rng: np.random.Generator, region: tuple[slice, ...] | None = None,
                         tooth_moves: bool = True) -> tuple[Volume, Volume]:
        """A synthetic scan (image, labels) on the training grid, or just ``region`` of it; without
        ``tooth_moves`` the patient's teeth stay as they are (validation scans)."""
        options = SynthesisOptions.from_dict(self.config.synthesis)
        if not tooth_moves:
            options = replace(options, tooth_jitter_probability=0.0, tooth_exchange_probability=0.0)
        donors = self._donors_for(case) if options.tooth_exchange_probability > 0 else []
        return synthesize(self._anatomy_for(case), rng, options, region=region, donors=donors)

    def _synthetic_item(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Only the block around the sampled patch is synthesised (15x less work than the whole scan);
        intensities are normalised with statistics of that block plus its surroundings."""
        case = self.labeled[int(rng.integers(len(self.labeled)))]
        anatomy = self._anatomy_for(case)
        if case.id not in self._cache:
            classes = self._labels_to_classes(anatomy.labels.array, case.id, anatomy.labels.spacing_zyx)
            self._cache[case.id] = PreparedCase(case.id, np.zeros((1, 1, 1, 1), np.float32), classes,
                                                anatomy.labels.spacing_zyx, self._foreground(classes, 4000))
        layout = self._cache[case.id]
        patch = tuple(self.config.patch_size)
        margin = tuple(int(p * 1.5) for p in patch)  # room for rotation/scaling and for statistics
        start = self._crop(PreparedCase(case.id, np.zeros((1, *layout.labels.shape), np.uint8), layout.labels,
                                        layout.spacing, layout.foreground), rng, True, margin)
        region = tuple(slice(max(0, s), min(n, s + m)) for s, m, n in zip(start, margin, layout.labels.shape))
        image, labels = self.synthetic_volume(case, rng, region)
        stats = image_statistics(image.array, step=2)
        tensor = torch.from_numpy(image.array.astype(np.float32))
        normalize_intensities(tensor, IntensityNormalization(**self.config.intensity), stats)
        classes = self._labels_to_classes(labels.array, case.id, labels.spacing_zyx)
        prepared = PreparedCase(case.id, tensor.numpy()[None], classes, image.spacing_zyx,
                                self._foreground(classes, 4000))
        return self._sample(prepared, rng, labeled=True)

    def reference_values(self, labels: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Ground-truth label values as the model predicts them (any tooth → 1 for a binary model; interior and
        boundary classes for a tooth-boundary one, at ``spacing``, the map's own; upper/lower for tooth-jaw)."""
        if self.config.label_table in INSTANCE_TABLES:
            return instance_classes(labels, spacing[-labels.ndim:], self.config.label_table, ignore=IGNORE)
        if self.config.label_table == TOOTH_JAW:
            return jaw_classes(labels)
        return (labels > 0).astype(np.uint8) if self.config.label_table == "binary" else labels

    def probe_cases(self, count: int = 8) -> list[PreparedCase]:
        """The first ``count`` unlabeled cases that have labels training never reads, on the training grid: what a
        semi-supervised method's pseudo-labels are measured against (``Trainer.probe``). Those are the labeled
        cases a ``labeled_fraction`` below 1 hides (UFBA-425's "unlabeled" X-rays all have maps); truly
        unlabeled cases have none, and without hidden ones the list is empty."""
        d = self.config
        if not self.unlabeled or d.labeled_fraction >= 1.0:
            return []
        if d.source == "ufba425":
            hidden = ufba_cases(d.labeled or "train")
        elif d.source == "files" and d.labeled:
            hidden = read_manifest(d.labeled, d.root, require_labels=True)
        else:
            return []
        by_id = {case.id: case for case in hidden}
        return [self.prepare(by_id[case.id]) for case in self.unlabeled if case.id in by_id][:count]

    def validation_volumes(self) -> list[tuple[str, Volume, Volume]]:
        """(case id, image, label map) in native geometry, for sliding-window validation."""
        out = []
        for index, case in enumerate(self.validation):
            if self.config.source == "synthetic":
                image, labels = self.synthetic_volume(case, np.random.default_rng([self.seed, 99, index]),
                                                      tooth_moves=False)
            else:
                image, labels = read_volume(case.image), read_training_labels(case, self.config.handedness)
            out.append((case.id, image, labels))
        return out
