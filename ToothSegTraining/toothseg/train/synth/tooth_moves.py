"""Anatomy augmentation that keeps FDI meaning: teeth moved, turned and resized in place, or exchanged
for the same FDI tooth of another patient.

Two patients' label maps are all the real 3D anatomy this project has, so a network trained on them
sees the same forty-odd tooth shapes at the same places. Per synthetic sample, each tooth may be

* **jittered**: turned by a few degrees about a random axis through its centroid, resized, shifted by
  under a millimetre (crowding, tipping, a larger or smaller patient);
* **exchanged**: replaced by the tooth with the same FDI number from another patient, centred where
  this patient's tooth was (a new shape at a known position, so the number stays right).

A tooth that leaves voxels behind gives them the tissue of the nearest voxel that is no tooth (bone
around a root, soft tissue or air around a crown); a tooth that arrives takes only voxels that no
other tooth holds, so neighbours are never cut. Labels and tissues move together, so the synthetic
image and its labels agree.

Everything works on one block (``region``) of the scan, as :func:`toothseg.train.synth.synthesize`
does, and draws its random numbers per tooth of the whole scan in a fixed order, so a block's
labels are those of the whole scan's sample cut to that block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

__all__ = ["ToothMoveOptions", "ToothPlacement", "ToothSite", "tooth_centroids", "tooth_placements", "move_teeth"]

TOOTH_TISSUES = (4, 5, 6)  # DENTINE, ENAMEL, PULP of synth.cbct (kept in step by a test)
_DENTINE = 4


@dataclass(frozen=True)
class ToothMoveOptions:
    """Probabilities are per tooth and per sample; 0 draws nothing."""

    jitter_probability: float = 0.0
    rotate_deg: float = 6.0
    shift_mm: float = 0.8
    scale: tuple[float, float] = (0.9, 1.1)
    exchange_probability: float = 0.0

    @property
    def active(self) -> bool:
        return self.jitter_probability > 0 or self.exchange_probability > 0


@dataclass(frozen=True)
class ToothPlacement:
    """Where tooth ``value`` comes from (``source``: index into the donors, -1 = this scan) and how it is
    put: ``matrix`` maps millimetres around the source centroid to millimetres around ``centre_mm``."""

    value: int
    source: int
    matrix: np.ndarray
    centre_mm: np.ndarray


@dataclass(frozen=True)
class ToothSite:
    """One tooth of a scan: centroid in millimetres of the array grid (z, y, x), bounding box, volume."""

    centre_mm: np.ndarray
    box: tuple[slice, ...]
    volume_mm3: float


#: A donor's tooth replaces this one only if their volumes are within this ratio (a near-empty mask,
#: such as Validation_0001's tooth 14 of 13 voxels, must not stand in for a whole tooth).
DONOR_VOLUME_RATIO = 0.5


def tooth_centroids(labels: np.ndarray, spacing: tuple[float, ...]) -> dict[int, ToothSite]:
    """Per label value present: its :class:`ToothSite`."""
    out = {}
    voxel_mm3 = float(np.prod(spacing))
    for index, box in enumerate(ndimage.find_objects(labels)):
        if box is None:
            continue
        value = index + 1
        mask = labels[box] == value
        local = ndimage.center_of_mass(mask)
        centre = np.array([b.start + c for b, c in zip(box, local)]) * np.asarray(spacing)
        out[value] = ToothSite(centre, box, float(mask.sum()) * voxel_mm3)
    return out


def _random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis) + 1e-12
    return Rotation.from_rotvec(axis * math.radians(rng.uniform(-max_deg, max_deg))).as_matrix()


def _comparable(a: ToothSite, b: ToothSite) -> bool:
    return DONOR_VOLUME_RATIO <= b.volume_mm3 / max(a.volume_mm3, 1e-9) <= 1.0 / DONOR_VOLUME_RATIO


def tooth_placements(teeth: dict[int, ToothSite], donor_teeth: list[dict[int, ToothSite]],
                     rng: np.random.Generator, options: ToothMoveOptions) -> list[ToothPlacement]:
    """The random draws of one sample: for every tooth of the scan in FDI order, whether it is exchanged
    (for a donor that has the same tooth, of comparable volume) or jittered, and how. Nothing is drawn
    when inactive."""
    if not options.active:
        return []
    placements = []
    for value in sorted(teeth):
        centre = teeth[value].centre_mm
        sources = [i for i, donor in enumerate(donor_teeth)
                   if value in donor and _comparable(teeth[value], donor[value])]
        exchange = bool(sources) and rng.random() < options.exchange_probability
        jitter = rng.random() < options.jitter_probability
        # the transform is drawn for every tooth (used or not), so one tooth's choice never shifts the
        # next tooth's draws
        rotation = _random_rotation(rng, options.rotate_deg)
        scale = rng.uniform(*options.scale)
        shift = rng.uniform(-options.shift_mm, options.shift_mm, size=3)
        donor = int(sources[int(rng.integers(len(sources)))]) if sources else -1
        if exchange:
            matrix = rotation * scale if jitter else np.eye(3)
            placements.append(ToothPlacement(value, donor, matrix, centre + (shift if jitter else 0.0)))
        elif jitter:
            placements.append(ToothPlacement(value, -1, rotation * scale, centre + shift))
    return placements


def _remove(labels: np.ndarray, tissue: np.ndarray, value: int, box: tuple[slice, ...]) -> None:
    """The tooth's voxels become background with the tissue of the nearest voxel that is no tooth."""
    grown = tuple(slice(max(0, b.start - 4), min(n, b.stop + 4)) for b, n in zip(box, labels.shape))
    lab, tis = labels[grown], tissue[grown]
    gone = lab == value
    if not gone.any():
        return
    teeth = lab > 0
    if teeth.all():
        lab[gone] = 0
        return
    _, nearest = ndimage.distance_transform_edt(teeth, return_indices=True)
    tis[gone] = tis[tuple(n[gone] for n in nearest)]
    lab[gone] = 0


def _paste(labels: np.ndarray, tissue: np.ndarray, offset: np.ndarray, spacing: np.ndarray,
           placement: ToothPlacement, source_labels: np.ndarray, source_tissue: np.ndarray,
           source_spacing: np.ndarray, source_centre: np.ndarray, source_box: tuple[slice, ...]) -> None:
    """Resample the source tooth into the block where background is, by the placement's transform."""
    half = (np.array([b.stop - b.start for b in source_box]) * source_spacing) / 2.0
    reach = float(np.linalg.norm(half)) * float(np.abs(placement.matrix).sum(axis=1).max()) + 1.0
    lo = np.floor((placement.centre_mm - reach) / spacing).astype(int) - offset
    hi = np.ceil((placement.centre_mm + reach) / spacing).astype(int) + 1 - offset
    lo, hi = np.maximum(lo, 0), np.minimum(hi, labels.shape)
    if np.any(hi <= lo):
        return
    axes = [np.arange(a, b) + o for a, b, o in zip(lo, hi, offset)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=0).reshape(3, -1).astype(np.float64)
    mm = grid * spacing[:, None] - placement.centre_mm[:, None]
    source_mm = np.linalg.solve(placement.matrix, mm) + source_centre[:, None]
    coords = source_mm / source_spacing[:, None]
    starts = np.array([b.start for b in source_box])
    stops = np.array([b.stop for b in source_box])
    shape = tuple(hi - lo)
    inside = np.all((coords >= starts[:, None] - 1) & (coords <= stops[:, None]), axis=0)
    if not inside.any():
        return
    crop = tuple(slice(max(0, s - 2), min(n, e + 2)) for s, e, n in zip(starts, stops, source_labels.shape))
    local = coords - np.array([c.start for c in crop])[:, None]
    mask_src = (source_labels[crop] == placement.value).astype(np.float32)
    hit = np.zeros(coords.shape[1], dtype=bool)
    hit[inside] = ndimage.map_coordinates(mask_src, local[:, inside], order=1, mode="constant", cval=0.0) >= 0.5
    if not hit.any():
        return
    tissue_new = np.full(coords.shape[1], _DENTINE, dtype=tissue.dtype)
    tissue_new[hit] = ndimage.map_coordinates(source_tissue[crop], local[:, hit], order=0, mode="nearest")
    tissue_new[~np.isin(tissue_new, TOOTH_TISSUES)] = _DENTINE
    block = tuple(slice(a, b) for a, b in zip(lo, hi))
    hit = hit.reshape(shape)
    free = hit & (labels[block] == 0)
    labels[block][free] = placement.value
    tissue[block][free] = tissue_new.reshape(shape)[free]


def move_teeth(labels: np.ndarray, tissue: np.ndarray, region: tuple[slice, ...], spacing: tuple[float, ...],
               teeth: dict[int, ToothSite], source: tuple[np.ndarray, np.ndarray],
               donors: list[tuple[np.ndarray, np.ndarray, tuple[float, ...], dict]],
               placements: list[ToothPlacement]) -> None:
    """Apply ``placements`` in place to the block ``labels``/``tissue`` (cut from ``source`` at ``region``).

    Args:
        teeth: :func:`tooth_centroids` of the whole scan (``source`` labels).
        source: the whole scan's (labels, tissue), where a jittered tooth is read from.
        donors: per donor its whole (labels, tissue, spacing, tooth_centroids).
    """
    if not placements:
        return
    offset = np.array([s.start for s in region])
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    for placement in placements:  # every moved tooth leaves first, so none lands on its own old place
        box = teeth[placement.value].box
        local = tuple(slice(b.start - o, b.stop - o) for b, o in zip(box, offset))
        if all(s.stop > 0 and s.start < n for s, n in zip(local, labels.shape)):
            clipped = tuple(slice(max(0, s.start), min(n, s.stop)) for s, n in zip(local, labels.shape))
            _remove(labels, tissue, placement.value, clipped)
    for placement in placements:
        if placement.source < 0:
            src_labels, src_tissue = source
            site, src_spacing = teeth[placement.value], spacing_arr
        else:
            src_labels, src_tissue, donor_spacing, donor_teeth = donors[placement.source]
            site, src_spacing = donor_teeth[placement.value], np.asarray(donor_spacing, dtype=np.float64)
        _paste(labels, tissue, offset, spacing_arr, placement, src_labels, src_tissue, src_spacing, site.centre_mm,
               site.box)
