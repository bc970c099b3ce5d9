"""Per-tooth surfaces: closed, manifold, in millimetres, in the right place (LPS or RAS)."""

from __future__ import annotations

import numpy as np
import pytest

from toothseg.core import InputError, LabelTable, OutputWriteError, Volume
from toothseg.core.export.surfaces import SurfaceOptions, export_surfaces, label_surface, surface_stats

from ..conftest import oblique_direction


def _read_stl(path):
    from vtkmodules.vtkIOGeometry import vtkSTLReader

    reader = vtkSTLReader()
    reader.SetFileName(str(path))
    reader.Update()  # vtkSTLReader merges coincident points, so topology checks see the real mesh
    return reader.GetOutput()


def _label_centroids_lps(volume: Volume, values: list[int]) -> dict[int, np.ndarray]:
    from scipy import ndimage

    kji = np.array(ndimage.center_of_mass(np.ones(volume.shape), volume.array, values))
    return dict(zip(values, volume.index_to_physical(kji[:, ::-1])))


@pytest.fixture(scope="module")
def sts_export(tmp_path_factory, sts_labels):
    out = tmp_path_factory.mktemp("stl")
    return out, export_surfaces(sts_labels, LabelTable.fdi(), out)


def test_sts_case_gives_30_watertight_teeth_in_place(sts_export, sts_labels):
    out, results = sts_export
    files = sorted(out.glob("*.stl"))
    assert len(files) == 30 == len(results)
    voxel_size = max(sts_labels.spacing)
    counts = np.bincount(sts_labels.array.ravel())
    centroids = _label_centroids_lps(sts_labels, [item.value for item in results])
    for item in results:
        assert item.path.name.startswith(f"{item.value}_")
        poly = _read_stl(item.path)  # check the file on disk, not the mesh in memory
        volume_mm3, centroid, watertight, _ = surface_stats(poly)
        assert watertight, item.path.name
        voxels_mm3 = counts[item.value] * sts_labels.voxel_volume_mm3
        assert abs(volume_mm3 - voxels_mm3) / voxels_mm3 < 0.03, item.path.name
        distance = np.linalg.norm(np.asarray(centroid) - centroids[item.value])
        assert distance < voxel_size, (item.path.name, distance)


def test_file_names_and_header(sts_export):
    out, _ = sts_export
    assert (out / "11_upper_right_central_incisor.stl").exists()
    assert (out / "38_lower_left_third_molar.stl").exists()
    header = (out / "36_lower_left_first_molar.stl").read_bytes()[:80]
    assert b"mm, LPS" in header


def test_ras_flips_x_and_y(tmp_path, teeth_volume):
    lps = export_surfaces(teeth_volume, LabelTable.fdi(), tmp_path / "lps")
    ras = export_surfaces(teeth_volume, LabelTable.fdi(), tmp_path / "ras",
                          SurfaceOptions(coordinate_system="RAS"))
    for a, b in zip(lps, ras):
        np.testing.assert_allclose(b.centroid, np.array(a.centroid) * [-1, -1, 1], atol=1e-6)
        assert b.surface_volume_mm3 == pytest.approx(a.surface_volume_mm3, rel=1e-9)


@pytest.mark.parametrize("flip", [False, True])
def test_sphere_on_oblique_anisotropic_grid(flip):
    """A left-handed grid (det < 0) must still give outward normals and the right volume."""
    direction = oblique_direction() @ (np.diag([1.0, 1.0, -1.0]) if flip else np.eye(3))
    spacing = (0.3, 0.45, 0.6)
    shape = (70, 60, 80)
    centre_ijk = np.array([40.0, 30.0, 35.0])
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    radius = 8.0
    offsets = (np.stack([i, j, k], -1) - centre_ijk) * spacing
    labels = (np.linalg.norm(offsets, axis=-1) <= radius).astype(np.uint8) * 11
    volume = Volume(labels, spacing, (5.0, -7.0, 12.0), direction)
    poly = label_surface(volume, 11)
    volume_mm3, centroid, watertight, _ = surface_stats(poly)
    assert watertight
    assert volume_mm3 == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.03)
    np.testing.assert_allclose(centroid, volume.index_to_physical(centre_ijk[None])[0], atol=0.05)
    # outward orientation: the signed volume from the triangle order is positive
    from vtkmodules.util import numpy_support

    points = numpy_support.vtk_to_numpy(poly.GetPoints().GetData())
    cells = numpy_support.vtk_to_numpy(poly.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    a, b, c = points[cells[:, 0]], points[cells[:, 1]], points[cells[:, 2]]
    assert np.einsum("ij,ij->i", a, np.cross(b, c)).sum() > 0


def test_smoothing_and_decimation_keep_surfaces_closed(tmp_path, teeth_volume):
    plain = export_surfaces(teeth_volume, LabelTable.fdi(), tmp_path / "plain")
    results = export_surfaces(teeth_volume, LabelTable.fdi(), tmp_path / "smooth",
                              SurfaceOptions(smoothing=0.5, decimate=0.5))
    for before, after in zip(plain, results):
        assert after.watertight
        assert after.triangles < 0.6 * before.triangles
        # small blobs shrink a little
        assert after.surface_volume_mm3 == pytest.approx(before.surface_volume_mm3, rel=0.10)


def test_obj_merged_and_subset(tmp_path, teeth_volume):
    results = export_surfaces(teeth_volume, LabelTable.fdi(), tmp_path, SurfaceOptions(file_format="obj"),
                              values=[21])
    assert [r.value for r in results] == [21]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["21_upper_left_central_incisor.obj"]
    merged = export_surfaces(teeth_volume, LabelTable.fdi(), tmp_path / "m", merged=True)
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["teeth.stl"]
    poly = _read_stl(tmp_path / "m" / "teeth.stl")
    assert surface_stats(poly)[0] == pytest.approx(sum(r.surface_volume_mm3 for r in merged), rel=1e-6)


def test_existing_files_are_not_touched(tmp_path, teeth_volume):
    export_surfaces(teeth_volume, LabelTable.fdi(), tmp_path)
    stamp = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with pytest.raises(OutputWriteError, match="--overwrite"):
        export_surfaces(teeth_volume, LabelTable.fdi(), tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamp


def test_bad_requests(tmp_path, teeth_volume):
    with pytest.raises(InputError, match="36"):
        export_surfaces(teeth_volume, LabelTable.fdi(), tmp_path, values=[36])
    with pytest.raises(InputError, match="smoothing"):
        SurfaceOptions(smoothing=2.0)
    with pytest.raises(InputError, match="LPS or RAS"):
        SurfaceOptions(coordinate_system="XYZ")
    flat = Volume(np.ones((1, 4, 4), np.uint8) * 11, kind="2d")
    with pytest.raises(InputError, match="2D"):
        export_surfaces(flat, LabelTable.fdi(), tmp_path)


def test_empty_map_and_file_as_folder_are_refused_before_writing(tmp_path, teeth_volume):
    empty = Volume(np.zeros_like(teeth_volume.array), teeth_volume.spacing, teeth_volume.origin,
                   teeth_volume.direction)
    with pytest.raises(InputError, match="nothing to export"):
        export_surfaces(empty, LabelTable.fdi(), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # no empty folder for the user to wonder about
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputWriteError, match="is a file"):
        export_surfaces(teeth_volume, LabelTable.fdi(), tmp_path / "file")


def test_exporting_the_whole_map_again_removes_the_surfaces_of_teeth_it_no_longer_has(tmp_path, teeth_volume,
                                                                                   caplog):
    """A tooth deleted in the Segment Editor kept its STL from the earlier export beside the new ones."""
    table = LabelTable.fdi()
    values = sorted(int(v) for v in np.unique(teeth_volume.array) if v)
    export_surfaces(teeth_volume, table, tmp_path)
    gone = values[-1]
    (tmp_path / "notes.stl").write_text("the user's own file")
    export_surfaces(teeth_volume, table, tmp_path, SurfaceOptions(file_format="obj"))  # an OBJ set beside it
    edited = teeth_volume.with_array(np.where(teeth_volume.array == gone, 0, teeth_volume.array))
    export_surfaces(edited, table, tmp_path, values=values[:1], overwrite=True)  # a chosen subset: others stay
    assert (tmp_path / f"{table[gone].file_stem}.stl").exists()
    with caplog.at_level("WARNING", logger="toothseg"):
        export_surfaces(edited, table, tmp_path, overwrite=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([f"{table[v].file_stem}.stl" for v in values[:-1]] + ["notes.stl"]
                           + [f"{table[v].file_stem}.obj" for v in values])  # the other format is not touched
    assert "removed 1 surface(s) of an earlier export" in caplog.text and table[gone].file_stem in caplog.text


@pytest.mark.parametrize("earlier", [False, True])
def test_a_failure_half_way_leaves_the_folder_as_it_was(tmp_path, teeth_volume, monkeypatch, earlier):
    """A full disk (or a cancel) at the second tooth: no mix of two exports, no partial set blocking the rerun."""
    import errno

    from toothseg.core.export import surfaces

    table = LabelTable.fdi()
    if earlier:
        export_surfaces(teeth_volume, table, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    write, calls = surfaces._write_poly, {"n": 0}

    def fails_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(*args, **kwargs)

    monkeypatch.setattr(surfaces, "_write_poly", fails_second)
    smoother = SurfaceOptions(smoothing=0.6)  # other bytes than the earlier export
    with pytest.raises(OSError, match="No space"):
        export_surfaces(teeth_volume, table, tmp_path, smoother, overwrite=earlier)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no hidden staging folder either
    monkeypatch.setattr(surfaces, "_write_poly", write)
    written = export_surfaces(teeth_volume, table, tmp_path, smoother, overwrite=earlier)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(item.path.name for item in written)
    if earlier:
        assert any(before[item.path.name] != item.path.read_bytes() for item in written)
