"""Export of results: per-tooth surface meshes (VTK)."""

from .surfaces import CoordinateSystem, ExportedSurface, SurfaceOptions, export_surfaces  # noqa: F401
