"""Tooth instances from a tooth/boundary segmentation: the instance-first design's separation step.

A network that predicts three classes — background, tooth interior, tooth boundary — learns what every
tooth has in common and where one tooth stops, not which of 32 teeth it sees: far less to learn from two
patients. Touching teeth are separated because the boundary class runs between them; each connected
piece of interior (face connectivity, so a diagonal leak through a thin boundary does not merge two
teeth) is one tooth's seed, and every tooth voxel near a seed joins the nearest one. Where the boundary
was missed and teeth merged, a seed larger than any tooth is split at its narrowest necks
(:func:`split_oversized_seeds`). FDI numbers then come from the arch (:mod:`.arch_numbering`).

The typed variant (label table ``tooth-type-boundary``) paints each tooth's interior with its type —
incisor (1), canine (3), premolar (4), molar (5) — so that the network also says which group a tooth
belongs to; the interior's votes are the numbering's type cue (on the two real dentitions with true
instances, true types number 0.94 of Validation_0001's teeth right against 0.61 from geometry alone:
``bench_arch_numbering.py --type-accuracy 1``). Boundary stays 2 in both tables, interior is every other
tooth class.

A tooth-jaw model (label table ``tooth-jaw``: upper tooth 1, lower tooth 2) has no boundary class; its
:func:`teeth_from_jaws` separates each jaw's teeth on their own, so that upper and lower crowns a coarse map
joined across the occlusal plane come apart, and numbers them with the jaw the network gave them.

:func:`boundary_classes` makes the training targets from an instance or FDI label map; the same function
on the ground truth is what validation compares against.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..labels import INSTANCE_TABLES, LOWER_TOOTH, TOOTH_CONTACT, TOOTH_TYPE_BOUNDARY, UPPER_TOOTH
from ..volume import Volume
from .arch_numbering import POSITION_TYPES, TOOTH_TYPES, number_teeth_from_arch
from .arch_split import split_along_arch
from .dentition import DENTITION_RADIUS_MM, pieces_off_the_dentition
from .occlusion import occlusal_surface, roots_contradict_the_sides, split_at_occlusal_surface
from .steps import register_step

__all__ = ["BACKGROUND", "INTERIOR", "BOUNDARY", "TYPE_CLASSES", "tooth_type_class", "boundary_classes",
           "CONTACT_WIDTH_MM", "instance_classes",
           "split_oversized_seeds", "separate_instances", "type_votes", "teeth_from_boundary"]

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
#: Interior class of each of :data:`~.arch_numbering.TOOTH_TYPES` in the typed table (incisor keeps 1).
TYPE_CLASSES = (1, 3, 4, 5)
#: Tooth type (index into TOOTH_TYPES) of positions 1-5 of a deciduous quadrant (no premolars).
_DECIDUOUS_TYPES = (0, 0, 1, 3, 3)
#: A merged seed is split only into pieces of at least this share of ``max_tooth_mm3`` (50 mm³ at the
#: default 800; the smallest of the 50 real teeth we have is 160 mm³): a molar's root tip is not a tooth.
_MIN_PIECE_SHARE = 1 / 16
#: How deep (mm) a merged seed is eroded at most while looking for its necks.
_MAX_ERODE_MM = 4.0
#: Finer maps are split on a grid about this coarse (mm), then every voxel joins its nearest piece: a
#: contact between teeth is still a neck at 0.5 mm, and at 0.25 mm the erosion cost 58 s of a 111 s scan.
_SPLIT_GRID_MM = 0.5


def tooth_type_class(fdi: int) -> int | None:
    """The typed table's interior class of an FDI tooth number (11-48, 51-85), or None for another value."""
    quadrant, position = divmod(int(fdi), 10)
    if 1 <= quadrant <= 4 and 1 <= position <= 8:
        return TYPE_CLASSES[POSITION_TYPES[position - 1]]
    if 5 <= quadrant <= 8 and 1 <= position <= 5:
        return TYPE_CLASSES[_DECIDUOUS_TYPES[position - 1]]
    return None


def _footprint(spacing_zyx: Sequence[float], width_mm: float) -> np.ndarray:
    """Voxels within ``width_mm`` of the centre (an ellipsoid in voxels), never less than the face neighbours."""
    radii = [max(1.0, width_mm / float(s)) for s in spacing_zyx]
    grids = np.meshgrid(*[np.arange(-int(r), int(r) + 1) for r in radii], indexing="ij")
    inside = sum((g / r) ** 2 for g, r in zip(grids, radii)) <= 1.0 + 1e-9
    return inside


def boundary_classes(labels: np.ndarray, spacing_zyx: Sequence[float], width_mm: float = 0.8,
                     ignore: int | None = 255, typed: bool = False, against_background: bool = True) -> np.ndarray:
    """0 background, 1 tooth interior, 2 tooth boundary (uint8) from a map with one value per tooth.

    A tooth voxel is boundary when a voxel of another value (background or another tooth) lies within
    ``width_mm``; so between two touching teeth the boundary is about ``2 * width_mm`` thick, and a tooth
    narrower than that is boundary only (its seed then comes from its wider parts). ``ignore`` voxels
    (pseudo-label "don't know") stay ``ignore`` and count as no other value. ``typed``: the interior takes
    the tooth's type class (:func:`tooth_type_class`; the values must then be FDI tooth numbers).
    ``against_background=False`` draws the boundary only near another tooth (the contact classes of
    :data:`~toothseg.core.labels.TOOTH_CONTACT`): a tooth's surface against bone or air stays interior.
    """
    if labels.ndim not in (2, 3):
        raise InputError(f"boundary_classes needs a 2D or 3D label map, not {labels.ndim}D")
    if len(spacing_zyx) != labels.ndim:
        raise InputError(f"spacing {tuple(spacing_zyx)} does not match a {labels.ndim}D label map")
    values = labels.astype(np.int32)
    unknown = values == ignore if ignore is not None else np.zeros(values.shape, bool)
    out = np.zeros(values.shape, np.uint8)
    tooth = (values > 0) & ~unknown
    if not tooth.any():
        out[unknown] = ignore if ignore is not None else 0
        return out
    box = tuple(slice(max(0, s.start - 2), s.stop + 2) for s in ndimage.find_objects(tooth.astype(np.uint8))[0])
    footprint = _footprint(spacing_zyx, width_mm)
    # ignore voxels take the value of the voxel itself in the comparisons: no boundary is drawn against them
    part = values[box].copy()
    part[unknown[box]] = -1
    highest = ndimage.maximum_filter(part, footprint=footprint, mode="nearest")
    masked_low = np.where(part < 0, np.iinfo(np.int32).max, part)
    if not against_background:  # background is no other value: only another tooth makes a boundary
        masked_low = np.where(part == 0, np.iinfo(np.int32).max, masked_low)
    lowest = ndimage.minimum_filter(masked_low, footprint=footprint, mode="nearest")
    t = tooth[box]
    edge = t & ((highest > part) | (lowest < part))
    out[box] = np.where(t, np.where(edge, BOUNDARY, INTERIOR), BACKGROUND)
    if typed:
        present = [int(v) for v in np.unique(part[t])]
        kinds = {v: tooth_type_class(v) for v in present}
        unknown = [v for v, kind in kinds.items() if kind is None]
        if unknown:
            raise InputError(f"tooth types need FDI tooth numbers (11-48, 51-85); the label map also holds "
                             f"{unknown[:10]}")
        lookup = np.zeros(max(present) + 1, np.uint8)
        for value, kind in kinds.items():
            lookup[value] = kind
        region = out[box]
        inside = region == INTERIOR
        region[inside] = lookup[part[inside]]
    if ignore is not None:
        out[unknown] = ignore
    return out


#: Width of the contact class (mm): tooth voxels with another tooth within it. On both STS-2024 maps at the
#: 1.2 mm training grid it marks 8-13 % of the tooth voxels and leaves one seed per tooth (1.2 mm: 3-7 %, the face
#: neighbours only; 2.4 mm: 19-25 %, and thin roots fall out of their seeds, 34 pieces for 30 teeth).
CONTACT_WIDTH_MM = 1.8


def instance_classes(labels: np.ndarray, spacing_zyx: Sequence[float], table: str,
                     ignore: int | None = 255) -> np.ndarray:
    """The training classes of an instance table (:data:`~toothseg.core.labels.INSTANCE_TABLES`) from a map
    with one value per tooth: interior/boundary, typed interior/boundary, or tooth/contact."""
    if table == TOOTH_CONTACT:
        return boundary_classes(labels, spacing_zyx, CONTACT_WIDTH_MM, ignore, against_background=False)
    if table not in INSTANCE_TABLES:
        raise InputError(f"{table!r} is not an instance table ({', '.join(INSTANCE_TABLES)})")
    return boundary_classes(labels, spacing_zyx, ignore=ignore, typed=table == TOOTH_TYPE_BOUNDARY)


def split_oversized_seeds(seeds: np.ndarray, interior: np.ndarray, spacing_zyx: Sequence[float],
                          max_tooth_mm3: float, min_seed_mm3: float, first_new_id: int = 0) -> np.ndarray:
    """Split every seed larger than ``max_tooth_mm3`` where it is narrowest: teeth merged through contacts
    the network did not mark as boundary.

    The seed is eroded step by step (its voxels deeper than ``t`` inside ``interior``, ``t`` growing by half
    a voxel up to 4 mm) until it falls into at least two cores of ``min_seed_mm3`` or more whose pieces
    (every voxel of the seed joins its nearest core) hold 1/16 of ``max_tooth_mm3`` or more; a piece still
    too large is split again. A seed that never
    falls apart (one large tooth) is left whole. Contacts between teeth are necks a few voxels wide, a
    tooth's own body is not, so the split follows the contacts. New pieces are numbered from
    ``first_new_id`` (default: the largest seed + 1). Maps finer than 0.5 mm are split on every n-th voxel
    (about 0.5 mm) and the pieces then drawn at full resolution. Measured on the two real dentitions at
    0.75-0.9 mm with no boundary at all (every tooth interior merged): instance Dice 0.13 -> 0.93
    (Validation_0002) and 0.39 -> 0.94 (Validation_0001); with the true boundary the result is unchanged,
    also with the teeth scaled 1.5x in volume (test in ``Testing/core/test_instances.py``).
    """
    voxel = float(np.prod(spacing_zyx))
    limit = max_tooth_mm3 / voxel
    sizes = np.bincount(seeds.ravel())
    queue = [int(i) for i in np.flatnonzero(sizes > limit) if i > 0]
    if not queue:
        return seeds
    factor = int(_SPLIT_GRID_MM / float(min(spacing_zyx)) + 1e-6)
    if factor > 1:
        return _split_on_a_coarser_grid(seeds, interior, spacing_zyx, max_tooth_mm3, min_seed_mm3, factor, queue)
    out = seeds.copy()
    face = ndimage.generate_binary_structure(seeds.ndim, 1)
    step = 0.5 * float(min(spacing_zyx))
    min_piece = max_tooth_mm3 * _MIN_PIECE_SHARE / voxel
    next_id = max(first_new_id, int(out.max()) + 1)
    while queue:
        seed = queue.pop()
        box = ndimage.find_objects((out == seed).astype(np.uint8))[0]
        grown = tuple(slice(max(0, b.start - 1), min(n, b.stop + 1)) for b, n in zip(box, out.shape))
        region = out[grown] == seed
        depth = ndimage.distance_transform_edt(interior[grown], sampling=spacing_zyx)
        nearest = None
        for t in np.arange(step, _MAX_ERODE_MM + 1e-9, step):
            labelled, count = ndimage.label(region & (depth > t), face)
            if count == 0:
                break
            core_sizes = np.bincount(labelled.ravel()) * voxel
            kept = np.flatnonzero(core_sizes >= min_seed_mm3)
            kept = kept[kept > 0]
            if kept.size == 0:
                break
            if kept.size < 2:
                continue
            nearest = _nearest_core(np.where(np.isin(labelled, kept), labelled, 0), region, spacing_zyx)
            # a core whose share of the seed is a root tip, not a tooth, is no reason to split
            pieces = np.bincount(nearest.ravel(), minlength=labelled.max() + 1)
            kept = kept[pieces[kept] >= min_piece]
            if kept.size >= 2:
                nearest = _nearest_core(np.where(np.isin(labelled, kept), labelled, 0), region, spacing_zyx)
                break
            nearest = None
        if nearest is None:
            continue  # one tooth, however large
        view = out[grown]
        for index, core in enumerate(np.unique(nearest[nearest > 0])):
            value = seed
            if index > 0:  # the first core keeps the seed's number, the others get new ones
                value, next_id = next_id, next_id + 1
            piece = nearest == core
            view[piece] = value
            if piece.sum() > limit:
                queue.append(value)
    return out


def _split_on_a_coarser_grid(seeds: np.ndarray, interior: np.ndarray, spacing_zyx: Sequence[float],
                             max_tooth_mm3: float, min_seed_mm3: float, factor: int,
                             oversized: list[int]) -> np.ndarray:
    """:func:`split_oversized_seeds` on every ``factor``-th voxel of a fine map; each voxel of a seed split
    there joins the nearest of its pieces at full resolution (seeds not split keep every voxel as is)."""
    coarse = (slice(None, None, factor),) * seeds.ndim
    fresh = int(seeds.max())  # new pieces are numbered above every fine seed, sampled or not
    split = split_oversized_seeds(seeds[coarse], interior[coarse], [factor * float(s) for s in spacing_zyx],
                                  max_tooth_mm3, min_seed_mm3, first_new_id=fresh + 1)
    out = seeds.copy()
    for seed in oversized:
        pieces_of_seed = (seeds[coarse] == seed) & (split != seed)  # voxels that went to a new piece
        if not pieces_of_seed.any():
            continue  # one tooth, however large
        box = ndimage.find_objects((seeds == seed).astype(np.uint8))[0]
        region = seeds[box] == seed
        sub = tuple(slice(-(-b.start // factor), -(-b.stop // factor)) for b in box)  # coarse voxels inside
        values = split[sub]
        mine = (seeds[coarse][sub] == seed) & ((values == seed) | (values > fresh))
        cores = np.zeros(region.shape, np.int32)
        offset = tuple((-b.start) % factor for b in box)  # first box voxel on the coarse grid, per axis
        target = tuple(slice(o, o + factor * n, factor) for o, n in zip(offset, values.shape))
        cores[target] = np.where(mine, values, 0)
        view = out[box]
        view[region] = _nearest_core(cores, region, spacing_zyx)[region]
    return out


def _nearest_core(cores: np.ndarray, region: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Every voxel of ``region`` labelled with its nearest core (0 outside the region)."""
    _, indices = ndimage.distance_transform_edt(cores == 0, sampling=spacing_zyx, return_indices=True)
    return np.where(region, cores[tuple(indices)], 0)


def separate_instances(classes: np.ndarray, spacing_zyx: Sequence[float], min_seed_mm3: float = 2.0,
                       max_grow_mm: float = 3.0, max_tooth_mm3: float = 800.0) -> np.ndarray:
    """Tooth instances ``1..N`` (int32, ordered by size, largest first) from a class map of
    :data:`INTERIOR`/:data:`BOUNDARY`.

    Seeds are the face-connected pieces of interior of at least ``min_seed_mm3`` (mm³; mm² for a 2D map);
    a seed larger than ``max_tooth_mm3`` is split at its necks (:func:`split_oversized_seeds`; 0 never
    splits; the largest of the 50 real teeth we have is 930 mm³ whole, its interior less); every tooth voxel
    (interior or boundary) within ``max_grow_mm`` of a seed joins the nearest seed, and tooth voxels farther
    from every seed are dropped (boundary fragments with no tooth inside).
    """
    if len(spacing_zyx) != classes.ndim:
        raise InputError(f"spacing {tuple(spacing_zyx)} does not match a {classes.ndim}D class map")
    out = np.zeros(classes.shape, np.int32)
    tooth = (classes > BACKGROUND) & (classes <= max(TYPE_CLASSES))  # interior of any type, or boundary
    if not tooth.any():
        return out
    # work in the teeth's bounding box: the distance transform's indices take 3 ints per voxel
    margin = [int(np.ceil(max_grow_mm / float(s))) + 1 for s in spacing_zyx]
    box = tuple(slice(max(0, s.start - m), min(n, s.stop + m))
                for s, m, n in zip(ndimage.find_objects(tooth.astype(np.uint8))[0], margin, classes.shape))
    interior = tooth[box] & (classes[box] != BOUNDARY)
    seeds, count = ndimage.label(interior, ndimage.generate_binary_structure(interior.ndim, 1))
    if count == 0:
        return out
    voxel = float(np.prod(spacing_zyx))
    sizes = np.bincount(seeds.ravel(), minlength=count + 1) * voxel
    small = sizes < min_seed_mm3
    small[0] = True
    seeds[small[seeds]] = 0
    if max_tooth_mm3 > 0:
        seeds = split_oversized_seeds(seeds, interior, spacing_zyx, max_tooth_mm3, min_seed_mm3)
    sizes = np.bincount(seeds.ravel())
    kept = np.flatnonzero(sizes)
    kept = kept[kept > 0]
    if kept.size == 0:
        return out
    order = kept[np.argsort(-sizes[kept], kind="stable")]
    lookup = np.zeros(sizes.size, np.int32)
    lookup[order] = np.arange(1, order.size + 1, dtype=np.int32)
    seeds = lookup[seeds]
    distance, indices = ndimage.distance_transform_edt(seeds == 0, sampling=spacing_zyx, return_indices=True)
    nearest = seeds[tuple(indices)]
    grown = np.where(tooth[box] & (distance <= max_grow_mm), nearest, 0)
    out[box] = grown
    return out


def type_votes(classes: np.ndarray, instances: np.ndarray) -> dict[int, np.ndarray]:
    """Per instance, the shares of its interior voxels of each type (order of ``TOOTH_TYPES``); instances
    whose interior holds no typed class (an untyped map) get no votes."""
    if not np.isin(classes, TYPE_CLASSES[1:]).any():
        return {}  # an untyped map: class 1 there is "interior", not "incisor"
    count = int(instances.max())
    votes = np.zeros((count + 1, len(TOOTH_TYPES)))
    for kind, value in enumerate(TYPE_CLASSES):
        votes[:, kind] = np.bincount(instances[classes == value], minlength=count + 1)
    totals = votes.sum(1)
    return {i: votes[i] / totals[i] for i in range(1, count + 1) if totals[i] > 0}


def _drop_pieces_off_the_dentition(instances: np.ndarray, spacing_zyx: Sequence[float], image: np.ndarray | None,
                                   radius_mm: float) -> None:
    """Set to 0, in place, the instances that lie off the dentition (:mod:`.dentition`; 0: off)."""
    if radius_mm > 0:
        off = pieces_off_the_dentition(instances, spacing_zyx, image, radius_mm)
        if off:  # in each piece's box: a full field holds 160 M voxels, one pass per piece would be seconds
            boxes = ndimage.find_objects(instances)
            for value in off:
                view = instances[boxes[value - 1]]
                view[view == value] = 0


#: Notes (``notes`` of :func:`teeth_from_boundary`) for a scan whose teeth were given their jaws without the
#: occlusal surface, and without the user saying which jaws it holds; the step then reads each tooth's jaw
#: from its own crown-to-root direction, which a map of crowns gets wrong.
JAWS_NOT_FROM_THE_BITE = {
    "all_across": "upper and lower teeth were not told apart along the bite: every tooth found reaches across "
                  "the level where they would meet, as the teeth of a single jaw do, and as upper and lower teeth "
                  "joined along the whole bite do, so each tooth's jaw was read from its own crown-to-root direction",
    "roots_up": "upper and lower teeth were not told apart along the bite: below the level where they would meet, "
                "the teeth's roots point up, as in a scan of the upper jaw alone, so each tooth's jaw was read from "
                "its own crown-to-root direction",
}
#: What every note of :data:`JAWS_NOT_FROM_THE_BITE` ends with.
SAY_WHICH_JAWS = ("; say which jaws the scan holds (Jaws in the scan: both, upper or lower; segment --jaws) "
                  "and run again")


def _numbered(instances: np.ndarray, spacing_zyx: Sequence[float], min_tooth_mm3: float,
              **numbering_options) -> np.ndarray:
    """The instances of a canonical array with FDI numbers from the arch (unnumbered ones become 0)."""
    canonical = Volume(instances, spacing=tuple(float(s) for s in spacing_zyx[::-1]))  # LPS axes, identity
    numbering = number_teeth_from_arch(canonical, min_mm3=min_tooth_mm3, **numbering_options)
    return numbering.relabel(instances).astype(np.uint8)


@register_step("teeth_from_boundary", maxima={"occlusal_share": 0.5},
               off_or_at_least={"arch_split": 1.2, "dentition_mm": 30.0})
def teeth_from_boundary(labels: np.ndarray, spacing_zyx: Sequence[float], min_seed_mm3: float = 2.0,
                        max_grow_mm: float = 3.0, min_tooth_mm3: float = 20.0,
                        type_weight: float = 100.0, max_tooth_mm3: float = 800.0,
                        occlusal_share: float = 0.0, arch_split: float = 0.0,
                        dentition_mm: float = DENTITION_RADIUS_MM, image: np.ndarray | None = None,
                        jaws_in_view: str | None = None, notes: list[str] | None = None) -> np.ndarray:
    """Post-processing step of a tooth-boundary model: instances (:func:`separate_instances`), then FDI
    numbers from the arch (:func:`~.arch_numbering.number_teeth_from_arch`, with each tooth's type votes
    when the model is typed, weighted by ``type_weight``; teeth it cannot number are dropped). ``labels`` is
    the canonical array (axes towards superior, posterior, left), as every post-processing step receives it.

    ``occlusal_share`` > 0 (for full-dentition scans: both jaws in the field of view) cuts every instance
    with at least that share on each side of the occlusal surface along it, and gives each tooth the jaw
    on whose side it lies (:mod:`.occlusion`) instead of its crown-to-root direction: an upper and a lower
    crown that a coarse map joined come apart, and a map of crowns gets its jaws right. With the jaws known
    that way, ``arch_split`` > 0 (at least 1.2; the binary recipes export 1.4) cuts every piece that spans at
    least that many expected tooth widths along its jaw's arch into as many teeth (:mod:`.arch_split`):
    neighbours a coarse map joined at their contacts, too small together for the neck split.

    ``dentition_mm`` (0: off) first drops the pieces farther than that from the middle of the dentition,
    found from ``image`` (the scan on the same grid; without it nothing is dropped): bone up the skull that
    the network took for teeth (:mod:`.dentition`).

    ``jaws_in_view`` is what the user knows of the scan: ``upper`` or ``lower`` (one jaw: every tooth is
    of that jaw, no occlusal cut, which would halve every tooth of a lower jaw alone, and the arch split
    still runs), ``both`` (the occlusal cut, where ``occlusal_share`` asks for it, is kept even where the
    roots seem to say one jaw, and made even where every piece lies across the bite), or None (not said:
    the checks of :mod:`.occlusion` decide). Where those checks, not the user, left the jaws to each tooth's
    crown-to-root direction, a note from :data:`JAWS_NOT_FROM_THE_BITE` saying why goes to ``notes``: on a map
    that joined upper and lower teeth along the whole bite they take both jaws for one, and only the user can
    tell (13 teeth of 30 found on such a synthetic scan, 28 when told ``both``)."""
    if labels.ndim != 3 or labels.shape[0] == 1:
        raise InputError("teeth_from_boundary numbers teeth from the 3D dental arch; it does not apply to 2D images")
    instances = separate_instances(labels, spacing_zyx, min_seed_mm3, max_grow_mm, max_tooth_mm3)
    _drop_pieces_off_the_dentition(instances, spacing_zyx, image, dentition_mm)
    if not instances.any():
        return np.zeros(labels.shape, np.uint8)
    jaws = None
    box = ndimage.find_objects((instances > 0).view(np.uint8))[0]  # the teeth's block: a full field is 40x it
    if jaws_in_view in ("upper", "lower"):
        jaws = {int(v): jaws_in_view for v in np.unique(instances[box]) if v}
    elif occlusal_share > 0:
        min_piece = max_tooth_mm3 * _MIN_PIECE_SHARE
        surface = occlusal_surface(instances[box], spacing_zyx, occlusal_share, min_piece,
                                   both_jaws=jaws_in_view == "both")
        assumed = None
        if surface is not None:  # else one jaw, or no piece on either side: the crown-to-root direction decides
            cut, jaws = split_at_occlusal_surface(instances[box], surface, spacing_zyx, occlusal_share, min_piece)
            if jaws_in_view != "both" and roots_contradict_the_sides(cut, jaws, spacing_zyx):
                jaws, assumed = None, "roots_up"  # one jaw cut in two: keep the pieces whole
            else:
                instances[box] = cut
        elif jaws_in_view is None and notes is not None and \
                occlusal_surface(instances[box], spacing_zyx, occlusal_share, min_piece, both_jaws=True) is not None:
            assumed = "all_across"  # pieces across the bite and none wholly below (or above) it
        if assumed and notes is not None:
            notes.append(JAWS_NOT_FROM_THE_BITE[assumed] + SAY_WHICH_JAWS)
    if jaws is not None and arch_split > 0:
        instances[box], jaws = split_along_arch(instances[box], jaws, spacing_zyx, arch_split)
    return _numbered(instances, spacing_zyx, min_tooth_mm3, type_votes=type_votes(labels, instances),
                     type_weight=type_weight, jaws=jaws)


@register_step("teeth_from_jaws", off_or_at_least={"dentition_mm": 30.0})
def teeth_from_jaws(labels: np.ndarray, spacing_zyx: Sequence[float], min_seed_mm3: float = 2.0,
                    max_grow_mm: float = 3.0, min_tooth_mm3: float = 20.0, max_tooth_mm3: float = 800.0,
                    dentition_mm: float = DENTITION_RADIUS_MM, image: np.ndarray | None = None,
                    jaws_in_view: str | None = None) -> np.ndarray:
    """Post-processing step of a tooth-jaw model (:data:`~toothseg.core.labels.TOOTH_JAW`: upper tooth 1,
    lower tooth 2): each jaw's teeth are separated on their own (:func:`separate_instances`, split at their
    necks), so an upper and a lower crown that a coarse map joined across the occlusal plane come apart
    along the network's jaw border; then FDI numbers from the arch with each tooth's jaw as the network said
    (teeth it cannot number are dropped). ``labels`` is the canonical array, as every step receives it;
    ``dentition_mm`` and ``image`` as for :func:`teeth_from_boundary`; where ``jaws_in_view`` is ``upper``
    or ``lower`` (one jaw, as the user knows it), both of the network's jaw classes are that jaw's teeth."""
    if labels.ndim != 3 or labels.shape[0] == 1:
        raise InputError("teeth_from_jaws numbers teeth from the 3D dental arch; it does not apply to 2D images")
    instances = np.zeros(labels.shape, np.int32)
    jaws: dict[int, str] = {}
    classes = (((UPPER_TOOTH, LOWER_TOOTH), jaws_in_view),) if jaws_in_view in ("upper", "lower") else \
        (((UPPER_TOOTH,), "upper"), ((LOWER_TOOTH,), "lower"))
    for values, jaw in classes:
        mask = np.isin(labels, values)
        if not mask.any():
            continue
        found = separate_instances(mask.astype(np.uint8) * INTERIOR, spacing_zyx, min_seed_mm3, max_grow_mm,
                                   max_tooth_mm3)
        offset = int(instances.max())
        instances[found > 0] = found[found > 0] + offset
        jaws.update({offset + i: jaw for i in range(1, int(found.max()) + 1)})
    _drop_pieces_off_the_dentition(instances, spacing_zyx, image, dentition_mm)
    if not instances.any():
        return np.zeros(labels.shape, np.uint8)
    return _numbered(instances, spacing_zyx, min_tooth_mm3, jaws=jaws)
