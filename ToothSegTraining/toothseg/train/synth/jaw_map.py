"""Synthetic scans on a real jaw-level map: real maxilla, skull and mandible around the teeth.

The STS-2024 maps hold teeth only, so the bone of their synthetic scans is grown around the roots and
nothing else dense is ever shown: a model trained on them calls any bone a tooth (on the real head CT
most of its "teeth" lie over the skull and the spine). ``shared/data/dentalsegmentator`` holds a real
jaw-level map of another patient (3D Slicer's ``PostDentalSurgery`` sample: 1 maxilla and upper skull,
2 mandible, 3 upper teeth, 4 lower teeth, 5 mandibular canal). Its teeth carry no FDI numbers, so it
can teach only a binary tooth model — the cascade's coarse stage, the one that decides where teeth
are — and it teaches what is *not* a tooth: skull, maxilla, mandible, the canal.

:func:`prepare_jaw_anatomy` turns it into the same :class:`~toothseg.train.synth.cbct.SynthesisAnatomy`
the synthesiser paints: teeth (label 1) as dentine with an enamel shell where they stand out of the
bone and a pulp core, bone as cancellous with a cortical shell, the canal as soft tissue, a head of
soft tissue (each axial slice filled), air outside. Its ``teeth`` list is empty: no tooth can be
"missing" or moved, and the labels are binary.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ...core.errors import LabelError
from ...core.volume import Volume
from .cbct import AIR, BONE_CANCELLOUS, BONE_CORTICAL, DENTINE, ENAMEL, PULP, SOFT, SynthesisAnatomy

__all__ = ["JAW_MAP_VALUES", "prepare_jaw_anatomy"]

#: The jaw-level map's values (DentalSegmentator's convention).
JAW_MAP_VALUES = {"maxilla": 1, "mandible": 2, "upper_teeth": 3, "lower_teeth": 4, "canal": 5}


def prepare_jaw_anatomy(jaw: Volume, soft_margin_mm: float = 8.0) -> SynthesisAnatomy:
    """Tissue classes and binary tooth labels (1 = tooth) of a jaw-level map."""
    array = jaw.array
    spacing = jaw.spacing_zyx
    teeth = np.isin(array, (JAW_MAP_VALUES["upper_teeth"], JAW_MAP_VALUES["lower_teeth"]))
    bone = np.isin(array, (JAW_MAP_VALUES["maxilla"], JAW_MAP_VALUES["mandible"]))
    canal = array == JAW_MAP_VALUES["canal"]
    dense = teeth | bone | canal
    if not teeth.any() or not bone.any():
        raise LabelError("a jaw-level map needs teeth (3, 4) and bone (1, 2); values found: "
                         f"{sorted(int(v) for v in np.unique(array))}")
    # head: soft tissue within a margin of the skeleton, every axial slice's holes filled
    near = ndimage.distance_transform_edt(~dense, sampling=spacing) <= soft_margin_mm
    head = np.stack([ndimage.binary_fill_holes(s) for s in near])
    tissue = np.full(array.shape, AIR, dtype=np.uint8)
    tissue[head] = SOFT
    tissue[bone] = BONE_CANCELLOUS
    shell = bone & (ndimage.distance_transform_edt(bone, sampling=spacing) <= 1.2)
    tissue[shell] = BONE_CORTICAL
    tissue[canal] = SOFT
    # teeth: dentine; enamel on the surface that stands out of the bone (crowns); pulp as the deep core
    depth = ndimage.distance_transform_edt(teeth, sampling=spacing).astype(np.float32)
    in_bone = ndimage.distance_transform_edt(~bone, sampling=spacing) <= 1.5
    crown_surface = teeth & ~in_bone & (depth <= max(1.0, max(spacing)))
    components, count = ndimage.label(teeth)
    deepest = np.asarray(ndimage.maximum(depth, components, np.arange(1, count + 1)), dtype=np.float32)
    core = np.zeros(array.shape, dtype=bool)
    core[teeth] = depth[teeth] >= 0.55 * np.minimum(deepest[components[teeth] - 1], 4.0)
    tissue[teeth] = DENTINE
    tissue[teeth & core & (depth > 1.2)] = PULP
    tissue[crown_surface] = ENAMEL
    labels = Volume(teeth.astype(np.uint8), jaw.spacing, jaw.origin, jaw.direction)
    return SynthesisAnatomy(labels, tissue, depth, [], shell, {})
