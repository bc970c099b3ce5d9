"""Physically simulated dental CBCT with RTK: an intensity family ToothSeg never trains on.

Runs in its own environment (``make rtk-env`` → ``.venv-rtk``, itk-rtk from PyPI), never in ToothSeg's:

    .venv-rtk/bin/python Testing/benchmarks/rtk_cbct.py --tissue TISSUE.nii.gz --out IMAGE.nii.gz --seed 3

``TISSUE`` is a tissue-class map as :mod:`toothseg.train.synth.cbct` derives it from a tooth label map
(0 air, 1 soft tissue, 2 cancellous bone, 3 cortical bone, 4 dentine, 5 enamel, 6 pulp); the image it
writes has the same grid. What happens in between is a scan, not a painting:

1. **attenuation** (mm⁻¹) per tissue at two energies of the beam (50 and 80 keV, tabulated mass
   attenuation times density, each drawn ±10 % per scan), with tissue texture, and optional amalgam
   fillings in the enamel of the crowns;
2. **cone-beam forward projection** (RTK's Joseph projector) on a circular trajectory about the
   patient's vertical axis, with a random dental geometry (source–isocentre 450–600 mm, magnification
   1.3–1.6, 200–360 views over 360°);
3. **detection**: a two-bin polychromatic beam (beam hardening, dark bands between dense objects),
   scatter as a smooth fraction of the primary (cupping), Poisson photon noise from a random tube
   output, electronic noise, detector blur, and photon starvation behind metal (counts floored at 1
   photon: the streaks of a real scan);
4. **FDK reconstruction** (RTK's Feldkamp–Davis–Kress, Hann-windowed ramp) and water calibration to
   HU-like numbers.

Every random draw comes from ``--seed``: the same tissue map and seed give the same image, bit for
bit (``Testing/benchmarks/test_rtk_cbct.py``). Intensities from this family are SIMULATED, not real.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

AIR, SOFT, BONE_CANCELLOUS, BONE_CORTICAL, DENTINE, ENAMEL, PULP = range(7)  # as toothseg.train.synth.cbct
METAL = 7

#: Linear attenuation (mm⁻¹) at 50 and 80 keV: NIST XCOM mass attenuation × density (soft tissue ICRU-44,
#: cortical bone ICRP, enamel/dentine as hydroxyapatite-rich tissue of density 2.9 / 2.1, amalgam ~11.6).
ATTENUATION = {
    AIR: (0.0, 0.0),
    SOFT: (0.0234, 0.0189),
    BONE_CANCELLOUS: (0.0320, 0.0232),
    BONE_CORTICAL: (0.0814, 0.0428),
    DENTINE: (0.0945, 0.0483),
    ENAMEL: (0.1600, 0.0725),
    PULP: (0.0227, 0.0184),
    METAL: (9.0, 3.6),
}
WATER = (0.02269, 0.01837)


@dataclass
class ScanDraw:
    """One scan's random draws (written beside the image, so a figure can say what it came from)."""

    seed: int
    views: int
    source_isocentre_mm: float
    magnification: float
    photons_per_pixel: float
    low_energy_share: float
    scatter_fraction: float
    electronic_noise: float
    detector_blur_px: float
    fillings: int
    texture: float


def draw_scan(seed: int, enamel_voxels: int, views: int | None = None) -> tuple[ScanDraw, np.random.Generator]:
    rng = np.random.default_rng([seed, 1977])
    draw = ScanDraw(
        seed=seed,
        views=int(views or rng.integers(200, 361)),
        source_isocentre_mm=float(rng.uniform(450.0, 600.0)),
        magnification=float(rng.uniform(1.3, 1.6)),
        photons_per_pixel=float(np.exp(rng.uniform(np.log(2e4), np.log(2e5)))),
        low_energy_share=float(rng.uniform(0.4, 0.6)),
        scatter_fraction=float(rng.uniform(0.02, 0.25)),
        electronic_noise=float(rng.uniform(2.0, 10.0)),
        detector_blur_px=float(rng.uniform(0.3, 1.0)),
        fillings=int(rng.integers(0, 3)) if enamel_voxels else 0,
        texture=float(rng.uniform(0.0, 0.08)),
    )
    return draw, rng


def attenuation_volumes(tissue: np.ndarray, spacing: float, draw: ScanDraw,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """μ at the two energies (mm⁻¹), float32, same (z, y, x) grid as ``tissue``."""
    from scipy import ndimage

    scale = rng.uniform(0.9, 1.1, size=len(ATTENUATION))
    low = np.array([ATTENUATION[k][0] * scale[k] for k in range(len(ATTENUATION))], np.float32)
    high = np.array([ATTENUATION[k][1] * scale[k] for k in range(len(ATTENUATION))], np.float32)
    classes = tissue.astype(np.int64)
    enamel = np.argwhere(classes == ENAMEL)
    for _ in range(draw.fillings):
        centre = enamel[rng.integers(len(enamel))]
        radius = rng.uniform(0.8, 1.8) / spacing
        zz, yy, xx = np.ogrid[:tissue.shape[0], :tissue.shape[1], :tissue.shape[2]]
        blob = ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= radius ** 2
        classes[blob & (classes >= DENTINE)] = METAL
    texture = ndimage.gaussian_filter(rng.standard_normal(tissue.shape).astype(np.float32), 1.5)
    texture = 1.0 + draw.texture * texture / (texture.std() + 1e-6)
    texture[classes == METAL] = 1.0
    return low[classes] * texture, high[classes] * texture


def _itk_volume(array_zyx: np.ndarray, spacing: float):
    """The (z, y, x) volume as an ITK image whose y axis is the patient's vertical axis (RTK rotates the
    source about y), centred on the isocentre."""
    import itk

    rotated = np.ascontiguousarray(array_zyx.transpose(1, 0, 2))  # (y, z, x): ITK axes x, z→y, y→z
    image = itk.image_from_array(rotated.astype(np.float32))
    image.SetSpacing([spacing] * 3)
    image.SetOrigin([-(n - 1) * spacing / 2.0 for n in rotated.shape[::-1]])
    return image


def simulate(tissue: np.ndarray, spacing: float, seed: int, views: int | None = None) -> tuple[np.ndarray, ScanDraw]:
    """The reconstructed scan (HU-like float32, the tissue map's grid) and its draws."""
    import itk
    from itk import RTK as rtk
    from scipy import ndimage

    draw, rng = draw_scan(seed, int((tissue == ENAMEL).sum()), views)
    mu_low, mu_high = attenuation_volumes(tissue, spacing, draw, rng)
    geometry = rtk.ThreeDCircularProjectionGeometry.New()
    sdd = draw.source_isocentre_mm * draw.magnification
    for view in range(draw.views):
        geometry.AddProjection(draw.source_isocentre_mm, sdd, view * 360.0 / draw.views)
    # detector: one pixel per voxel at the isocentre (magnified), covering the volume's diagonal
    z, y, x = tissue.shape
    pixel = spacing * draw.magnification
    width = int(np.ceil(np.hypot(x, y) * 1.05 * draw.magnification * spacing / pixel)) + 2
    height = int(np.ceil(z * 1.15 * draw.magnification * spacing / pixel)) + 2
    image_type = itk.Image[itk.F, 3]

    def empty_stack():
        origin = [-(width - 1) * pixel / 2, -(height - 1) * pixel / 2, 0.0]
        return rtk.constant_image_source(ttype=[image_type], origin=origin, size=[width, height, draw.views],
                                         spacing=[pixel, pixel, 1.0], constant=0.0)

    def project(mu: np.ndarray) -> np.ndarray:
        projector = rtk.JosephForwardProjectionImageFilter[image_type, image_type].New()  # fills its input in place
        projector.SetInput(0, empty_stack())
        projector.SetInput(1, _itk_volume(mu, spacing))
        projector.SetGeometry(geometry)
        projector.Update()
        return itk.array_from_image(projector.GetOutput()).astype(np.float64)  # (views, v, u), line integrals

    line_low, line_high = project(mu_low), project(mu_high)
    share = draw.low_energy_share
    primary = draw.photons_per_pixel * (share * np.exp(-line_low) + (1 - share) * np.exp(-line_high))
    scatter = ndimage.gaussian_filter(primary, (0, 25, 25)) * draw.scatter_fraction  # smooth, per view
    expected = ndimage.gaussian_filter(primary + scatter, (0, draw.detector_blur_px, draw.detector_blur_px))
    counts = rng.poisson(expected) + rng.normal(0.0, draw.electronic_noise, expected.shape)
    counts = np.maximum(counts, 1.0)  # photon starvation: behind metal a detector counts next to nothing
    attenuation = np.log(draw.photons_per_pixel / counts).astype(np.float32)
    projections = itk.image_from_array(np.ascontiguousarray(attenuation))
    projections.CopyInformation(empty_stack())
    template = _itk_volume(np.zeros(tissue.shape, np.float32), spacing)
    fdk = rtk.FDKConeBeamReconstructionFilter[image_type].New()
    fdk.SetInput(0, template)
    fdk.SetInput(1, projections)
    fdk.SetGeometry(geometry)
    fdk.GetRampFilter().SetHannCutFrequency(0.8)
    fdk.Update()
    mu = itk.array_from_image(fdk.GetOutput()).transpose(1, 0, 2)  # back to (z, y, x)
    water = share * WATER[0] + (1 - share) * WATER[1]
    return (1000.0 * (mu - water) / water).astype(np.float32), draw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tissue", type=Path, required=True, help="tissue-class map (NIfTI/MHA, isotropic grid)")
    parser.add_argument("--out", type=Path, required=True, help="reconstructed image (int16 HU-like, same grid)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--views", type=int, help="number of projections (default: drawn, 200-360)")
    args = parser.parse_args(argv)
    import itk

    try:
        tissue_image = itk.imread(str(args.tissue))
    except (RuntimeError, OSError) as exc:  # itk raises RuntimeError with ITK's whole exception text
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        print(f"error: {args.tissue}: cannot read the tissue map ({reason})", file=sys.stderr)
        return 2
    tissue = itk.array_from_image(tissue_image)
    spacing = np.array(tissue_image.GetSpacing(), dtype=float)
    if tissue.ndim != 3 or not np.allclose(spacing, spacing[0], rtol=1e-3):
        print(f"error: {args.tissue}: a 3D tissue map on an isotropic grid is needed "
              f"(got shape {tissue.shape}, spacing {tuple(spacing)})", file=sys.stderr)
        return 2
    if tissue.min() < 0 or tissue.max() > PULP:
        print(f"error: {args.tissue}: tissue classes must be 0-{PULP}", file=sys.stderr)
        return 2
    image, draw = simulate(tissue, float(spacing[0]), args.seed, args.views)
    out = itk.image_from_array(np.clip(np.rint(image), -1024, 8000).astype(np.int16))
    out.CopyInformation(tissue_image)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial" + "".join(args.out.suffixes))
    itk.imwrite(out, str(partial), compression=True)
    partial.replace(args.out)
    record = args.out.with_name(args.out.name.split(".")[0] + ".draw.json")  # its own env: no toothseg helpers
    record_partial = record.with_name(record.name + ".partial")
    record_partial.write_text(json.dumps(asdict(draw), indent=1))
    record_partial.replace(record)
    print(json.dumps(asdict(draw)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
