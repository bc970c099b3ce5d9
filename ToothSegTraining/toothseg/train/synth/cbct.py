"""Label-driven synthetic CBCT: CBCT-like intensities painted onto a real tooth label map.

No real CBCT image is available to this project, so models for the demo, the tests and the 3D
benchmarks learn from images synthesised on real tooth *shapes* (STS-2024 label maps), with strong
domain randomisation in the spirit of SynthSeg. Every figure obtained on such images must say that
the intensities are synthetic.

Anatomy derived from the labels (:class:`SynthesisAnatomy`, computed once per label map):

* per tooth, the depth below its surface (mm) → **enamel** (a thin shell on the crown),
  **dentine**, and **pulp** (the deep core, narrower towards the apex);
* crowns versus roots from each jaw's occlusal level (upper crowns point down, lower ones up);
* **alveolar bone** grown around the roots (cancellous inside a cortical shell), a jaw-shaped
  envelope of **soft tissue**, **air** outside, and a cylindrical field of view.

Per sample (:func:`synthesize`): teeth turned, resized, shifted or taken from another patient at the
same FDI position (:mod:`.tooth_moves`, off unless asked), random intensities per tissue (HU-like
ranges, random global gamma/affine mapping), texture noise, random missing teeth (replaced by healed
bone), metal fillings with streak artefacts, ring artefacts, cupping, blur (point-spread) and noise.

With ``synthseg_probability`` a sample is instead drawn fully SynthSeg-style (Billot et al., 2023):
every tissue class gets an intensity drawn independently from one wide range (no HU order: enamel may
be darker than bone), its own texture strength, then a smooth multiplicative bias field, a random
resolution (thick slices along a random axis), and Gaussian or signal-dependent (Poisson-like) noise.
Such images teach the network shapes and contrasts, not one generator's grey values.

With ``distractor_probability`` a sample also gets bone that is not the jaw in the air and soft tissue
away from the teeth (:func:`add_distractors`): curved plates with a diploë (skull vault, skull base), rods and
blobs with a cortical shell (vertebrae, hyoid, styloid, the mandible's ramus), each in a sleeve of soft
tissue, kept clear of the teeth, and some painted as bright as dentine or enamel. The label maps hold
teeth only, so nothing dense is ever shown outside the jaws otherwise; on a real head CT such a model
calls the skull teeth. They are background in the labels: bone, however bright, is not a tooth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ...core.errors import InputError
from ...core.labels import is_fdi_tooth
from ...core.volume import Volume
from .tooth_moves import ToothMoveOptions, move_teeth, tooth_centroids, tooth_placements

__all__ = ["SynthesisAnatomy", "SynthesisOptions", "add_distractors", "prepare_anatomy", "synthesize"]

AIR, SOFT, BONE_CANCELLOUS, BONE_CORTICAL, DENTINE, ENAMEL, PULP = range(7)


@dataclass
class SynthesisOptions:
    """Ranges of the random draws (HU-like units; distances in mm)."""

    soft: tuple[float, float] = (-50.0, 150.0)
    cancellous: tuple[float, float] = (250.0, 700.0)
    cortical: tuple[float, float] = (800.0, 1500.0)
    dentine: tuple[float, float] = (1300.0, 2100.0)
    enamel: tuple[float, float] = (2200.0, 3200.0)
    pulp: tuple[float, float] = (0.0, 350.0)
    air: float = -1000.0
    noise_sigma: tuple[float, float] = (15.0, 90.0)
    texture_sigma: tuple[float, float] = (10.0, 80.0)
    blur_mm: tuple[float, float] = (0.15, 0.6)
    missing_teeth: tuple[int, int] = (0, 4)
    metal_probability: float = 0.5
    ring_probability: float = 0.4
    gamma: tuple[float, float] = (0.7, 1.4)
    intensity_scale: tuple[float, float] = (0.8, 1.25)
    intensity_shift: tuple[float, float] = (-150.0, 150.0)
    # SynthSeg-style domain randomisation (share of samples; ranges of its draws). Off by default: a
    # probability of 0 draws nothing, so scans synthesised before these existed come out the same.
    synthseg_probability: float = 0.0
    synthseg_range: tuple[float, float] = (-1000.0, 4000.0)  # each tissue's mean, drawn independently
    synthseg_texture: tuple[float, float] = (0.0, 250.0)  # each tissue's own texture strength
    bias_field: tuple[float, float] = (0.0, 0.35)  # peak relative amplitude of a smooth multiplicative field
    bias_field_probability: float = 0.0
    thick_slices: tuple[float, float] = (1.0, 4.0)  # resolution loss factor along one random axis
    thick_slices_probability: float = 0.0
    poisson_noise_probability: float = 0.0  # else Gaussian: noise grows with the signal (photon counts)
    # Tooth-level anatomy augmentation (synth.tooth_moves), per tooth and sample; off by default.
    tooth_jitter_probability: float = 0.0  # turn, resize and shift a tooth in place
    tooth_rotate_deg: float = 6.0
    tooth_shift_mm: float = 0.8
    tooth_scale: tuple[float, float] = (0.9, 1.1)
    tooth_exchange_probability: float = 0.0  # take the same FDI tooth from another patient (a donor)
    # Bone that is not the jaw (add_distractors), share of samples; off by default.
    distractor_probability: float = 0.0
    distractors: tuple[float, float] = (2.0, 8.0)  # structures per sample (a block: those that reach it)
    distractor_clearance_mm: float = 6.0  # kept this far from every tooth voxel
    distractor_bright_probability: float = 0.3  # per structure: painted with dentine/enamel intensities

    @classmethod
    def from_dict(cls, values: dict | None) -> "SynthesisOptions":
        """Options from a recipe's ``data.synthesis`` mapping (unknown names are an error)."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"data.synthesis: unknown option(s) {unknown} (known: {', '.join(sorted(known))})")
        converted = {k: tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else v for k, v in values.items()}
        return cls(**converted)

    @property
    def tooth_moves(self) -> ToothMoveOptions:
        return ToothMoveOptions(self.tooth_jitter_probability, self.tooth_rotate_deg, self.tooth_shift_mm,
                                tuple(self.tooth_scale), self.tooth_exchange_probability)


@dataclass
class SynthesisAnatomy:
    """Everything about a label map that does not change between samples."""

    labels: Volume
    tissue: np.ndarray  # (Z, Y, X) uint8 tissue class
    depth: np.ndarray  # (Z, Y, X) float32 mm below the tooth surface (0 outside teeth)
    teeth: list[int] = field(default_factory=list)
    bone_shell: np.ndarray | None = None  # cortical mask
    centroids: dict = field(default_factory=dict)  # tooth value → tooth_moves.ToothSite


def _downsampled_distance(mask: np.ndarray, spacing: tuple[float, ...], inside: bool) -> np.ndarray:
    """Euclidean distance (mm) to the mask's boundary, in or out of it."""
    return ndimage.distance_transform_edt(mask if inside else ~mask, sampling=spacing).astype(np.float32)


def prepare_anatomy(labels: Volume, bone_margin_mm: float = 4.0, soft_margin_mm: float = 14.0) -> SynthesisAnatomy:
    """Tissue classes and tooth depth maps of an FDI label map (seconds on a 20 M-voxel grid)."""
    array = labels.array
    spacing = labels.spacing_zyx
    teeth = sorted(int(v) for v in np.unique(array) if v and is_fdi_tooth(int(v)))
    tooth_mask = np.isin(array, teeth)
    tissue = np.full(array.shape, AIR, dtype=np.uint8)
    depth = np.zeros(array.shape, dtype=np.float32)
    crown = np.zeros(array.shape, dtype=bool)
    boxes = ndimage.find_objects(array)
    upper = [v for v in teeth if v // 10 in (1, 2, 5, 6)]
    lower = [v for v in teeth if v // 10 in (3, 4, 7, 8)]

    def z_extent(values: list[int]) -> tuple[float, float] | None:
        zs = [(boxes[v - 1][0].start, boxes[v - 1][0].stop) for v in values]
        return (float(np.median([a for a, _ in zs])), float(np.median([b for _, b in zs]))) if zs else None

    upper_z, lower_z = z_extent(upper), z_extent(lower)
    # which end of the z axis holds the crowns: between the two jaws (occlusal plane)
    if upper_z and lower_z:
        upper_crowns_low = np.mean(upper_z) > np.mean(lower_z)
    else:
        upper_crowns_low = True
    for value in teeth:
        box = boxes[value - 1]
        grown = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(box, array.shape))
        mask = array[grown] == value
        d = _downsampled_distance(mask, spacing, inside=True)
        depth[grown][mask] = d[mask]
        zs = np.nonzero(mask.any(axis=(1, 2)))[0]
        z0, z1 = zs[0], zs[-1] + 1
        is_upper = value in upper
        crown_low = upper_crowns_low if is_upper else not upper_crowns_low
        length = z1 - z0
        cut = z0 + int(0.4 * length) if crown_low else z1 - int(0.4 * length)
        local_crown = np.zeros_like(mask)
        if crown_low:
            local_crown[:cut] = True
        else:
            local_crown[cut:] = True
        crown[grown] |= mask & local_crown
    # tooth tissues from depth: enamel shell on crowns, pulp core, dentine between
    max_depth = np.zeros(array.shape, dtype=np.float32)
    for value in teeth:
        box = boxes[value - 1]
        region = array[box] == value
        max_depth[box][region] = depth[box][region].max()
    tissue[tooth_mask] = DENTINE
    tissue[tooth_mask & crown & (depth <= max(1.0, max(spacing)))] = ENAMEL  # ~1 mm, at least one voxel
    tissue[tooth_mask & (depth >= 0.55 * max_depth) & (max_depth > 1.2)] = PULP
    # bone around the roots (not the crowns), cortical outer shell; soft tissue envelope; air
    roots = tooth_mask & ~crown
    dist_roots = (_downsampled_distance(roots, spacing, inside=False) if roots.any()
                  else np.full(array.shape, 1e9, np.float32))
    dist_teeth = _downsampled_distance(tooth_mask, spacing, inside=False) if tooth_mask.any() else dist_roots
    near_crown = crown_neighbourhood(crown, spacing, 1.5)
    bone = (dist_roots <= bone_margin_mm) & ~tooth_mask & ~(near_crown & (dist_roots > 1.0))  # crowns stand free
    soft = (dist_teeth <= soft_margin_mm) & ~tooth_mask & ~bone
    tissue[soft] = SOFT
    tissue[bone] = BONE_CANCELLOUS
    shell = bone & (ndimage.distance_transform_edt(bone, sampling=spacing) <= 1.2)
    tissue[shell] = BONE_CORTICAL
    centroids = {v: c for v, c in tooth_centroids(array, spacing).items() if v in teeth}
    return SynthesisAnatomy(labels, tissue, depth, teeth, shell, centroids)


def crown_neighbourhood(crown: np.ndarray, spacing: tuple[float, ...], reach_mm: float = 2.0) -> np.ndarray:
    """Voxels within ``reach_mm`` of a crown (kept free of bone: crowns stand out of the jaw)."""
    if not crown.any():
        return np.zeros(crown.shape, dtype=bool)
    return ndimage.distance_transform_edt(~crown, sampling=spacing) <= reach_mm


def _smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, sigma_vox: float) -> np.ndarray:
    noise = rng.standard_normal(shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, sigma_vox)
    return noise / (noise.std() + 1e-6)


def _chance(rng: np.random.Generator, probability: float) -> bool:
    """A draw with ``probability``; none at all when it is 0 (the random stream stays as it was)."""
    return probability > 0 and bool(rng.random() < probability)


def _bias_field(image: np.ndarray, rng: np.random.Generator, strength: tuple[float, float],
                offset: list[int], full_shape: tuple[int, ...]) -> np.ndarray:
    """A smooth multiplicative field over the whole scan (a 4x4x4 random grid, trilinear), applied to
    this block: the same scan's blocks see the same field."""
    amplitude = rng.uniform(*strength)
    grid = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(1, 1, 4, 4, 4)).astype(np.float32))
    whole = F.interpolate(grid, size=tuple(full_shape), mode="trilinear", align_corners=True)[0, 0]
    block = tuple(slice(o, o + n) for o, n in zip(offset, image.shape))
    field_ = whole[block].numpy()
    field_ = field_ / (np.abs(field_).max() + 1e-6)
    base = float(np.percentile(image[::2, ::2, ::2], 1))
    return base + (image - base) * (1.0 + amplitude * field_).astype(np.float32)


def _thick_slices(image: np.ndarray, rng: np.random.Generator, factor: tuple[float, float]) -> np.ndarray:
    """Resolution lost along one random axis (thick slices, anisotropic reconstruction): averaged over
    ``factor`` voxels there, then linearly interpolated back."""
    axis = int(rng.integers(3))
    f = rng.uniform(*factor)
    n = image.shape[axis]
    coarse_n = max(2, int(round(n / f)))
    if coarse_n >= n:
        return image
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    coarse_size = [coarse_n if a == axis else m for a, m in enumerate(image.shape)]
    coarse = F.adaptive_avg_pool3d(tensor, coarse_size)
    return F.interpolate(coarse, size=image.shape, mode="trilinear", align_corners=False)[0, 0].numpy()


def add_distractors(tissue: np.ndarray, labels: np.ndarray, offset: Sequence[int], full_shape: Sequence[int],
                    spacing: Sequence[float], rng: np.random.Generator, options: SynthesisOptions) -> int:
    """Paint bone that is not the jaw over the air and soft tissue of ``tissue`` away from the teeth (a block
    at ``offset`` of a scan of ``full_shape``, in place); returns how many structures reach the block. Labels
    are not changed: every structure is background. Structures are placed in the whole scan's frame, so a
    block sees the parts of them that fall in it."""
    shape = tissue.shape
    spacing = np.asarray(spacing, dtype=float)
    extent = np.asarray(full_shape) * spacing
    teeth = labels > 0
    if teeth.any():  # clearance on a half-resolution grid (the distance transform is the cost; 2 mm for its error)
        before = [int(o) % 2 for o in offset]  # 2x2x2 cells aligned with the scan's, whatever the block
        even = np.pad(teeth, [(b, (n + b) % 2) for b, n in zip(before, shape)])
        coarse = even.reshape(even.shape[0] // 2, 2, even.shape[1] // 2, 2, even.shape[2] // 2, 2).any((1, 3, 5))
        far = ndimage.distance_transform_edt(~coarse, sampling=2 * spacing) > options.distractor_clearance_mm + 2.0
        free = np.repeat(np.repeat(np.repeat(far, 2, 0), 2, 1), 2, 2)
        free = free[tuple(slice(b, b + n) for b, n in zip(before, shape))]
    else:
        free = np.ones(shape, dtype=bool)
    free &= (tissue == AIR) | (tissue == SOFT)  # never the teeth or the bone grown around their roots
    if not free.any():
        return 0
    axes = [(np.arange(n) + o) * d for n, o, d in zip(shape, offset, spacing)]  # mm in the scan's frame
    zz, yy, xx = np.meshgrid(*axes, indexing="ij", sparse=True)
    reached = 0
    for _ in range(int(rng.integers(int(options.distractors[0]), int(options.distractors[1]) + 1))):
        centre = rng.uniform(0, 1, 3) * extent
        kind = rng.choice(["plate", "rod", "blob"], p=[0.4, 0.35, 0.25])
        axis = rng.standard_normal(3)
        axis /= np.linalg.norm(axis) + 1e-9
        if kind == "plate":  # a piece of a sphere's shell: a vault or a skull base
            radius = rng.uniform(30.0, 120.0)
            thickness = rng.uniform(2.0, 9.0)
            middle = centre - axis * radius  # the sphere's centre, so the shell passes through ``centre``
            r = np.sqrt((zz - middle[0]) ** 2 + (yy - middle[1]) ** 2 + (xx - middle[2]) ** 2)
            along = ((zz - middle[0]) * axis[0] + (yy - middle[1]) * axis[1] + (xx - middle[2]) * axis[2])
            cap = along > r * np.cos(np.radians(rng.uniform(20.0, 60.0)))
            depth = thickness / 2 - np.abs(r - radius)
            inside = (depth > 0) & cap
        else:  # a rod (vertebra, styloid, ramus) or a blob (hyoid, condyle): an ellipsoid with a shell
            # semi-axes (mm): along ``axis`` first (a rod is long there), then across it
            radii = (np.array([rng.uniform(10, 35), rng.uniform(3, 12), rng.uniform(3, 12)]) if kind == "rod"
                     else rng.uniform(4, 14, 3))
            basis = np.linalg.qr(np.column_stack([axis, rng.standard_normal((3, 2))]))[0]  # column 0 ∥ axis
            offsets = (zz - centre[0], yy - centre[1], xx - centre[2])
            scaled = [sum(basis[i, k] * offsets[i] for i in range(3)) / radii[k] for k in range(3)]
            norm = np.sqrt(scaled[0] ** 2 + scaled[1] ** 2 + scaled[2] ** 2)
            depth = (1.0 - norm) * float(radii.min())  # roughly mm below the surface
            inside = depth > 0
        # every draw before the block is consulted: a block's structures are then the whole scan's
        grow = max(1, int(round(rng.uniform(2.0, 8.0) / spacing.min())))  # a sleeve of soft tissue around it
        bright = rng.random() < options.distractor_bright_probability  # as bright as a tooth, but not one
        shell_mm = rng.uniform(0.6, 1.5) if bright else rng.uniform(0.8, 2.0)
        inside = inside & free
        if not inside.any():
            continue
        reached += 1
        found = ndimage.find_objects(inside.astype(np.uint8))[0]
        box = tuple(slice(max(0, b.start - grow), b.stop + grow) for b in found)
        sleeve = ndimage.binary_dilation(inside[box], iterations=grow)
        tissue[box][sleeve & free[box] & (tissue[box] == AIR)] = SOFT
        tissue[inside] = DENTINE if bright else BONE_CANCELLOUS
        tissue[inside & (depth < shell_mm)] = ENAMEL if bright else BONE_CORTICAL
    return reached


def synthesize(anatomy: SynthesisAnatomy, rng: np.random.Generator, options: SynthesisOptions | None = None,
               region: tuple[slice, ...] | None = None,
               donors: tuple[SynthesisAnatomy, ...] | list[SynthesisAnatomy] = ()) -> tuple[Volume, Volume]:
    """One random synthetic CBCT and its label map (teeth removed from the labels when "missing").

    ``region`` (array slices) synthesises only that block — a training patch — with the rings,
    cupping and field of view still placed relative to the whole scan; the returned volumes then
    cover just the block (origin moved accordingly). ``donors``: other patients' anatomies, in the
    same orientation, whose teeth ``tooth_exchange_probability`` may put in place of this one's.
    """
    o = options or SynthesisOptions()
    full_shape = anatomy.labels.shape
    region = region or tuple(slice(0, n) for n in full_shape)
    labels = anatomy.labels.array[region].copy()
    tissue = anatomy.tissue[region].copy()
    spacing = anatomy.labels.spacing_zyx
    shape = labels.shape
    offset = [s.start for s in region]
    moves = o.tooth_moves
    if moves.active:  # teeth turned, resized, shifted or exchanged before anything is painted
        for donor in donors:
            if not np.allclose(donor.labels.direction, anatomy.labels.direction, atol=1e-3):
                raise InputError("synthesis donors must share the scan's orientation (read both canonical)")
        placements = tooth_placements(anatomy.centroids, [d.centroids for d in donors], rng, moves)
        move_teeth(labels, tissue, region, spacing, anatomy.centroids, (anatomy.labels.array, anatomy.tissue),
                   [(d.labels.array, d.tissue, d.labels.spacing_zyx, d.centroids) for d in donors], placements)
    # missing teeth become bone (healed sockets)
    n_missing = int(rng.integers(o.missing_teeth[0], o.missing_teeth[1] + 1)) if anatomy.teeth else 0
    for value in rng.choice(anatomy.teeth, size=min(n_missing, len(anatomy.teeth)), replace=False) if n_missing else []:
        mask = labels == value
        tissue[mask] = BONE_CANCELLOUS
        labels[mask] = 0
    if _chance(rng, o.distractor_probability):
        add_distractors(tissue, labels, offset, full_shape, spacing, rng, o)
    synthseg = _chance(rng, o.synthseg_probability)
    if synthseg:  # every class on its own, from one wide range, with its own texture
        lut = rng.uniform(*o.synthseg_range, size=7).astype(np.float32)
        texture_of = rng.uniform(*o.synthseg_texture, size=7).astype(np.float32)
        image = lut[tissue]
        image += _smooth_noise(shape, rng, rng.uniform(0.5, 2.0)) * texture_of[tissue]
    else:
        means = {
            AIR: o.air, SOFT: rng.uniform(*o.soft), BONE_CANCELLOUS: rng.uniform(*o.cancellous),
            BONE_CORTICAL: rng.uniform(*o.cortical), DENTINE: rng.uniform(*o.dentine),
            ENAMEL: rng.uniform(*o.enamel), PULP: rng.uniform(*o.pulp),
        }
        means[ENAMEL] = max(means[ENAMEL], means[DENTINE] + 300.0)  # keep the anatomy's order
        lut = np.array([means[k] for k in range(7)], dtype=np.float32)
        image = lut[tissue]
        texture = _smooth_noise(shape, rng, 1.5) * rng.uniform(*o.texture_sigma)
        image += np.where(tissue == AIR, 0.0, texture).astype(np.float32)
    # metal fillings with streaks in the axial plane
    if anatomy.teeth and rng.random() < o.metal_probability:
        crowns = np.argwhere((tissue == ENAMEL) & (labels > 0))
        for _ in range(int(rng.integers(1, 3))):
            if len(crowns) == 0:
                break
            centre = crowns[rng.integers(len(crowns))]
            radius = rng.uniform(0.8, 2.0) / np.asarray(spacing)
            zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
            blob = (((zz - centre[0]) / radius[0]) ** 2 + ((yy - centre[1]) / radius[1]) ** 2 +
                    ((xx - centre[2]) / radius[2]) ** 2) <= 1.0
            image[blob] = rng.uniform(3500, 6000)
            angles = np.arctan2(yy - centre[1], xx - centre[2])
            streak = np.cos(angles[0] * rng.integers(4, 12) + rng.uniform(0, math.pi)) * rng.uniform(100, 500)
            distance = np.hypot(yy - centre[1], xx - centre[2])[0] + 1.0
            falloff = np.clip(30.0 / distance, 0, 1)
            near = slice(max(0, centre[0] - int(3 * radius[0])), min(shape[0], centre[0] + int(3 * radius[0]) + 1))
            image[near] += (streak * falloff)[None].astype(np.float32)
    # ring artefacts and cupping around the rotation axis (z) of the whole scan
    yy, xx = np.mgrid[:shape[1], :shape[2]].astype(np.float32)
    yy += offset[1]
    xx += offset[2]
    r = np.hypot((yy - full_shape[1] / 2) * spacing[1], (xx - full_shape[2] / 2) * spacing[2])
    r_max = float(np.hypot(full_shape[1] / 2 * spacing[1], full_shape[2] / 2 * spacing[2]))
    if rng.random() < o.ring_probability:
        rings = np.sin(r * rng.uniform(1.0, 4.0) + rng.uniform(0, 6.3)) * rng.uniform(10, 60)
        image += rings[None].astype(np.float32)
    cupping = 1.0 - rng.uniform(0.0, 0.12) * (r / (r_max + 1e-6)) ** 2
    image = image * cupping[None].astype(np.float32)
    # random monotonic intensity mapping (domain randomisation)
    low, high = -1000.0, 4000.0
    unit = np.clip((image - low) / (high - low), 0, 1)
    image = low + (high - low) * unit ** rng.uniform(*o.gamma)
    image = image * rng.uniform(*o.intensity_scale) + rng.uniform(*o.intensity_shift)
    if _chance(rng, o.bias_field_probability):
        image = _bias_field(image, rng, o.bias_field, offset, full_shape)
    # point-spread blur, resolution loss and noise
    blur = rng.uniform(*o.blur_mm) / np.asarray(spacing)
    image = ndimage.gaussian_filter(image, blur)
    if _chance(rng, o.thick_slices_probability):
        image = _thick_slices(image, rng, o.thick_slices)
    noise = rng.standard_normal(shape).astype(np.float32) * rng.uniform(*o.noise_sigma)
    if _chance(rng, o.poisson_noise_probability):  # photon noise: stronger where more signal (relative to air)
        level = np.clip(image - image.min(), 0, None)
        noise *= np.sqrt(level / (float(level.mean()) + 1e-6)).astype(np.float32)
    image += noise
    # cylindrical field of view: outside it CBCT reconstructions are empty
    fov = r > 0.49 * min(full_shape[1] * spacing[1], full_shape[2] * spacing[2])
    image[:, fov] = o.air
    origin = tuple(anatomy.labels.index_to_physical(np.array([offset[::-1]], dtype=float))[0])
    geometry = dict(spacing=anatomy.labels.spacing, origin=origin, direction=anatomy.labels.direction)
    out = Volume(np.clip(image, -1024, 8000).astype(np.int16), **geometry)
    out.metadata["synthetic"] = True
    return out, Volume(labels, **geometry)
