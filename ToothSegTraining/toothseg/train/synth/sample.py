"""The bundled sample scan: synthetic CBCT on the real STS-2024 ``Validation_0002`` tooth shapes.

    python -m toothseg.train.synth.sample OUT_IMAGE OUT_LABELS

builds it reproducibly (seed 2024): the label map is resampled to 0.6 mm, cropped to the teeth with
a margin, and painted with :func:`~toothseg.train.synth.synthesize` (no missing teeth, a metal
filling and ring artefacts allowed). The intensities are synthetic; the tooth shapes are real.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ...core.preprocessing import resampled_shape, to_canonical
from ...core.io.images import write_volume
from ...core.volume import Volume
from ..data.cases import Case
from ..data.dataset import nearest_resample, read_training_labels
from .cbct import SynthesisAnatomy, SynthesisOptions, prepare_anatomy, synthesize

__all__ = ["cropped_anatomy", "make_sample"]


def cropped_anatomy(labels_path: str | Path, spacing_mm: float = 0.6,
                    margin_mm: float = 12.0) -> tuple[SynthesisAnatomy, tuple[slice, ...]]:
    """The synthesis anatomy of a tooth label map resampled to ``spacing_mm``, and the block that
    holds the teeth with ``margin_mm`` around them (the field a dental CBCT would show).

    A map whose left/right numbering is mirrored (both STS-2024 maps as distributed) is read with its
    left/right numbers swapped, so that synthetic scans never teach or test a mirrored dentition.
    Computing the anatomy is the slow part; draw as many scans from it as needed."""
    path = Path(labels_path)
    labels = to_canonical(read_training_labels(Case(path.name, path, path), handedness="fix"))[0]
    shape = resampled_shape(labels.shape, labels.spacing_zyx, [spacing_mm] * 3)
    array = nearest_resample(labels.array, shape)
    coarse = Volume(array, (spacing_mm,) * 3, labels.origin, labels.direction)
    teeth = np.argwhere(array > 0)
    margin = int(round(margin_mm / spacing_mm))
    lo = np.maximum(teeth.min(0) - margin, 0)
    hi = np.minimum(teeth.max(0) + margin + 1, array.shape)
    return prepare_anatomy(coarse), tuple(slice(a, b) for a, b in zip(lo, hi))


def make_sample(labels_path: str | Path, spacing_mm: float = 0.6, margin_mm: float = 12.0,
                seed: int = 2024) -> tuple[Volume, Volume]:
    anatomy, region = cropped_anatomy(labels_path, spacing_mm, margin_mm)
    options = SynthesisOptions(missing_teeth=(0, 0), metal_probability=1.0, ring_probability=1.0)
    return synthesize(anatomy, np.random.default_rng(seed), options, region=region)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print("usage: python -m toothseg.train.synth.sample LABELS OUT_IMAGE OUT_LABELS", file=sys.stderr)
        return 2
    image, labels = make_sample(argv[0])
    write_volume(image, argv[1], overwrite=True)
    write_volume(labels, argv[2], overwrite=True)
    print(f"wrote {argv[1]} ({image.describe()}) and {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
