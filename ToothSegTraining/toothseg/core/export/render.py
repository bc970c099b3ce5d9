"""Offscreen pictures of segmented teeth (VTK), for reports, the demo and the README.

No window is opened: on a machine without a display VTK renders through EGL (or OSMesa), so the
same code runs on servers, in CI and inside Slicer's Python.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import OutputWriteError
from ..io.atomic import atomic_output
from ..labels import LabelTable
from ..volume import Volume
from .surfaces import SurfaceOptions, label_boxes, label_surface

__all__ = ["render_teeth", "render_teeth_rgb", "write_rgb_png"]

log = logging.getLogger(__name__)


def _load_opengl_backend() -> None:
    """Register VTK's OpenGL classes; must run before any renderer, mapper or actor is made."""
    if not os.environ.get("DISPLAY") and "VTK_DEFAULT_OPENGL_WINDOW" not in os.environ:
        os.environ["VTK_DEFAULT_OPENGL_WINDOW"] = "vtkEGLRenderWindow"  # no X server: skip the X attempt
    import vtkmodules.vtkRenderingFreeType  # noqa: PLC0415, F401  (text)
    import vtkmodules.vtkRenderingOpenGL2  # noqa: PLC0415, F401


def _offscreen_window(width: int, height: int):
    from vtkmodules.vtkRenderingCore import vtkRenderWindow  # noqa: PLC0415 (offscreen rendering, loaded only to draw)

    window = vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(width, height)
    return window


def render_teeth_rgb(labels: Volume, table: LabelTable, values: list[int] | None = None,
                     size: tuple[int, int] = (900, 600), smoothing: float = 0.4,
                     title: str | None = None) -> np.ndarray:
    """Render the labelled teeth as coloured surfaces, seen from the front (anterior); ``(H, W, 3)`` uint8.

    The view direction follows the patient frame of ``labels`` (LPS): the camera looks along +y
    (from anterior to posterior) with superior up, so the patient's right appears on the left of
    the picture, as in a clinical frontal view.
    """
    _load_opengl_backend()
    from vtkmodules.util.numpy_support import vtk_to_numpy  # noqa: PLC0415 (offscreen rendering, loaded only to draw)
    from vtkmodules.vtkRenderingCore import (  # noqa: PLC0415 (offscreen rendering, loaded only to draw)
        vtkActor,
        vtkPolyDataMapper,
        vtkRenderer,
        vtkTextActor,
        vtkWindowToImageFilter,
    )

    present = table.check_array(labels.array)
    values = present if values is None else values
    boxes = label_boxes(labels.array)
    renderer = vtkRenderer()
    renderer.SetBackground(1.0, 1.0, 1.0)
    options = SurfaceOptions(smoothing=smoothing)
    for value in values:
        poly = label_surface(labels, value, options, box=boxes[value - 1])
        if poly is None:
            continue
        mapper = vtkPolyDataMapper()
        mapper.SetInputData(poly)
        actor = vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*table[value].color)
        actor.GetProperty().SetSpecular(0.3)
        actor.GetProperty().SetSpecularPower(20)
        renderer.AddActor(actor)
    if title:
        text = vtkTextActor()
        text.SetInput(title)
        text.GetTextProperty().SetFontSize(18)
        text.GetTextProperty().SetColor(0.1, 0.1, 0.1)
        text.SetDisplayPosition(12, 12)
        renderer.AddViewProp(text)
    renderer.ResetCamera()
    camera = renderer.GetActiveCamera()
    focal = np.array(camera.GetFocalPoint())
    distance = camera.GetDistance()
    camera.SetPosition(*(focal + np.array([0.0, -distance, 0.0])))  # in front of the face (LPS: -y)
    camera.SetViewUp(0.0, 0.0, 1.0)
    renderer.ResetCamera()
    camera.Zoom(1.3)
    renderer.ResetCameraClippingRange()

    window = _offscreen_window(*size)
    window.AddRenderer(renderer)
    window.Render()
    grabber = vtkWindowToImageFilter()
    grabber.SetInput(window)
    grabber.SetInputBufferTypeToRGB()
    grabber.ReadFrontBufferOff()  # offscreen buffers have no front buffer
    grabber.Update()
    image = grabber.GetOutput()
    width, height, _ = image.GetDimensions()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[:, :, :3]
    window.Finalize()
    return np.ascontiguousarray(pixels[::-1])  # VTK's first row is the bottom one


def write_rgb_png(pixels: np.ndarray, path: str | os.PathLike[str], overwrite: bool = True) -> Path:
    """Write an ``(H, W, 3)`` uint8 picture as PNG, atomically."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 picture, got {pixels.shape} {pixels.dtype}")
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        sitk.WriteImage(sitk.GetImageFromArray(pixels, isVector=True), str(tmp))
        if not tmp.exists():
            raise OutputWriteError(f"cannot write {path}")
    return path


def render_teeth(labels: Volume, table: LabelTable, path: str | os.PathLike[str], values: list[int] | None = None,
                 size: tuple[int, int] = (900, 600), smoothing: float = 0.4, overwrite: bool = True,
                 title: str | None = None) -> Path:
    """:func:`render_teeth_rgb` written to a PNG file."""
    pixels = render_teeth_rgb(labels, table, values=values, size=size, smoothing=smoothing, title=title)
    return write_rgb_png(pixels, path, overwrite=overwrite)
