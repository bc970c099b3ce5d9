"""Overview pictures of a result: label colours over the image, for the demo, reports and the README.

A 3D result becomes one PNG with three orthogonal slices through the teeth (radiological
convention: the patient's right on the left of the picture, anterior or superior at the top, with
square millimetres so that nothing looks stretched) beside a 3D rendering of the teeth (VTK,
offscreen). A panoramic result becomes the X-ray with the label colours over it. Only numpy,
SciPy, SimpleITK and VTK are used, so the pictures need no plotting library.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..preprocessing import to_canonical
from ..labels import LabelTable
from ..volume import Volume, check_same_geometry
from .render import render_teeth_rgb, write_rgb_png

__all__ = ["overlay_rgb", "orthogonal_slices", "write_overview", "write_panoramic_overlay"]

log = logging.getLogger(__name__)

_BACKGROUND = 255


def _grey(image: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (image.astype(np.float32) - low) / max(high - low, 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


def overlay_rgb(image: np.ndarray, labels: np.ndarray, table: LabelTable, window: tuple[float, float],
                alpha: float = 0.45) -> np.ndarray:
    """A 2D image in grey with each label's table colour blended over it; ``(H, W, 3)`` uint8."""
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ")
    grey = _grey(image, *window)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    lut = np.zeros((max(int(labels.max(initial=0)), 0) + 1, 3), dtype=np.float32)
    for value in np.unique(labels):
        if value > 0:
            colour = table[int(value)].color if int(value) in table else (1.0, 1.0, 0.0)
            lut[int(value)] = np.asarray(colour, dtype=np.float32) * 255
    mask = labels > 0
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * lut[labels[mask]]
    return rgb.round().astype(np.uint8)


def _window(array: np.ndarray) -> tuple[float, float]:
    sample = array.ravel()[:: max(1, array.size // 2_000_000)]  # percentiles of ≤ 2 M voxels are as good
    low, high = np.percentile(sample, [1.0, 99.5])
    return float(low), float(high if high > low else low + 1)


def _square_pixels(rgb: np.ndarray, row_mm: float, col_mm: float) -> np.ndarray:
    """Resample so a pixel is as tall as it is wide (the finer of the two spacings)."""
    step = min(row_mm, col_mm)
    factors = (row_mm / step, col_mm / step, 1.0)
    if np.allclose(factors, 1.0):
        return rgb
    return ndimage.zoom(rgb, factors, order=0)


def orthogonal_slices(image: Volume, labels: Volume, table: LabelTable) -> list[tuple[str, np.ndarray]]:
    """Axial, coronal and sagittal overlays through the centre of the labelled teeth.

    Falls back to the centre of the scan when nothing is labelled. The image is first brought to
    the canonical LPS axis order, so the views do not depend on how the file stores its axes.
    """
    check_same_geometry(image, labels, "image", "labels")
    canonical_image, _ = to_canonical(image)
    canonical_labels, _ = to_canonical(labels)
    img, lab = canonical_image.array, canonical_labels.array.astype(np.int32)  # [S, P, L] increasing
    sx, sy, sz = canonical_image.spacing
    found = np.argwhere(lab > 0)
    centre = found.mean(axis=0).round().astype(int) if len(found) else np.array(lab.shape) // 2
    k, j, i = (int(c) for c in centre)
    window = _window(img)
    views = [
        ("axial", img[k], lab[k], sy, sx),  # rows anterior→posterior, columns right→left
        ("coronal", img[::-1, j], lab[::-1, j], sz, sx),  # rows superior→inferior
        ("sagittal", img[::-1, :, i], lab[::-1, :, i], sz, sy),  # columns anterior→posterior
    ]
    return [(name, _square_pixels(overlay_rgb(a, b, table, window), row, col)) for name, a, b, row, col in views]


def _fit(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale to fit a ``height`` × ``width`` cell, keeping the aspect ratio, centred on white."""
    scale = min(height / rgb.shape[0], width / rgb.shape[1])
    scaled = ndimage.zoom(rgb, (scale, scale, 1.0), order=1) if abs(scale - 1.0) > 1e-3 else rgb
    scaled = scaled[:height, :width]
    cell = np.full((height, width, 3), _BACKGROUND, dtype=np.uint8)
    top, left = (height - scaled.shape[0]) // 2, (width - scaled.shape[1]) // 2
    cell[top:top + scaled.shape[0], left:left + scaled.shape[1]] = scaled
    return cell


def write_overview(image: Volume, labels: Volume, table: LabelTable, path: str | os.PathLike[str],
                   title: str | None = None, render_3d: bool = True, cell: int = 420,
                   overwrite: bool = True) -> Path:
    """A 2 × 2 picture: axial, coronal and sagittal overlays and a frontal 3D rendering of the teeth.

    Without OpenGL (or with ``render_3d=False``) the fourth cell stays white and a warning is
    logged: the slices alone are still worth writing.
    """
    cells = [_fit(rgb, cell, cell) for _, rgb in orthogonal_slices(image, labels, table)]
    rendering = np.full((cell, cell, 3), _BACKGROUND, dtype=np.uint8)
    if render_3d and labels.array.any():
        try:
            rendering = _fit(render_teeth_rgb(labels, table, size=(cell, cell), title=title), cell, cell)
        except Exception as exc:  # no OpenGL driver: the slices are still useful
            log.warning("no 3D rendering in %s (%s)", path, exc)
    cells.append(rendering)
    gap = 4
    canvas = np.full((2 * cell + gap, 2 * cell + gap, 3), _BACKGROUND, dtype=np.uint8)
    for index, picture in enumerate(cells):
        row, col = divmod(index, 2)
        canvas[row * (cell + gap):row * (cell + gap) + cell, col * (cell + gap):col * (cell + gap) + cell] = picture
    return write_rgb_png(canvas, path, overwrite=overwrite)


def write_panoramic_overlay(image: Volume, labels: Volume, table: LabelTable, path: str | os.PathLike[str],
                            overwrite: bool = True) -> Path:
    """The panoramic X-ray with each tooth's colour blended over it, at the image's own size."""
    check_same_geometry(image, labels, "image", "labels")
    grey = image.array[0]
    if grey.ndim == 3:  # an RGB X-ray: show its luminance
        grey = grey.mean(axis=-1)
    rgb = overlay_rgb(grey, labels.array[0].astype(np.int32), table, _window(grey))
    sx, sy, _ = image.spacing
    return write_rgb_png(_square_pixels(rgb, sy, sx), path, overwrite=overwrite)
