"""Image I/O: every supported format keeps voxels and geometry; bad files give one clear error."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from toothseg.core import InputError, OutputExistsError, OutputWriteError, Volume, VolumeKind
from toothseg.core.io import read_label_map, read_volume, write_volume
from toothseg.core.io.images import holds_dicom_series, input_kind, volume_to_sitk

from ..conftest import oblique_direction, shared_data_dir


def _cbct_like(shape=(6, 7, 8)) -> Volume:
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 3000, size=shape).astype(np.int16)
    return Volume(array, (0.25, 0.3, 0.5), (-40.2, 12.5, -3.0), oblique_direction())


def _assert_same(a: Volume, b: Volume) -> None:
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=1e-6)
    np.testing.assert_allclose(a.origin, b.origin, atol=1e-5)
    np.testing.assert_allclose(a.direction, b.direction, atol=1e-6)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_round_trip_keeps_voxels_and_geometry(tmp_path, suffix):
    volume = _cbct_like()
    path = write_volume(volume, tmp_path / f"scan{suffix}")
    back = read_volume(path)
    _assert_same(volume, back)
    assert back.kind == VolumeKind.CBCT_3D
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp left


def test_metaimage_header_and_data_land_together(tmp_path):
    write_volume(_cbct_like(), tmp_path / "scan.mhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.mhd", "scan.zraw"]  # compressed MetaImage data


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    path = write_volume(_cbct_like(), tmp_path / "scan.nrrd")
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_volume(_cbct_like((3, 3, 3)), path)
    assert path.read_bytes() == before
    write_volume(_cbct_like((3, 3, 3)), path, overwrite=True)
    assert read_volume(path).shape == (3, 3, 3)


def test_unwritable_destination(tmp_path):
    with pytest.raises(OutputWriteError, match="does not exist"):
        write_volume(_cbct_like(), tmp_path / "missing" / "scan.nrrd")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputWriteError):
        write_volume(_cbct_like(), blocker / "scan.nrrd")
    with pytest.raises(OutputWriteError):  # /proc refuses new files even for root
        write_volume(_cbct_like(), Path("/proc") / "toothseg-test.nrrd")


def test_full_disk_leaves_nothing_behind(tmp_path, monkeypatch):
    def no_space(image, name, *args, **kwargs):
        Path(name).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sitk, "WriteImage", no_space)
    with pytest.raises(OutputWriteError, match="no space left"):
        write_volume(_cbct_like(), tmp_path / "scan.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_atomic_folder_replaces_a_folder_only_when_the_new_one_is_whole(tmp_path, monkeypatch):
    from toothseg.core.io.atomic import atomic_folder

    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError):
        with atomic_folder(target):
            pass
    with pytest.raises(InputError, match="second member"):  # a failure half-way: the old folder stays as it was
        with atomic_folder(target, overwrite=True) as staging:
            (staging / "new.txt").write_text("new")
            raise InputError("second member does not fit")
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and [p.name for p in target.iterdir()] == ["old.txt"]
    with atomic_folder(target, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and [p.name for p in target.iterdir()] == ["new.txt"]
    # Ctrl+C after the old folder was moved aside, before the new one landed: the old one goes back
    import os

    real_replace, calls = os.replace, []

    def interrupted_second_rename(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(source, target)

    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(target, overwrite=True) as staging:
            (staging / "newer.txt").write_text("newer")
            monkeypatch.setattr(os, "replace", interrupted_second_rename)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and [p.name for p in target.iterdir()] == ["new.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputWriteError, match="is a file"):
        with atomic_folder(tmp_path / "file", overwrite=True):
            pass


def _write_dicom_series(folder: Path, volume: Volume) -> None:
    """A CT series written slice by slice (SimpleITK's DICOM writer), files in shuffled name order.
    GDCM's writer leaves the C locale's LC_CTYPE at "C", which would make every later text subprocess and
    ``open()`` in this test process ASCII; it is put back."""
    import locale

    saved = locale.setlocale(locale.LC_CTYPE)
    try:
        _write_slices(folder, volume)
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)


def _write_slices(folder: Path, volume: Volume) -> None:
    image = volume_to_sitk(volume)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.4242"
    order = list(range(image.GetDepth()))
    random.Random(3).shuffle(order)
    for name_index, k in enumerate(order):
        slice_image = image[:, :, k]
        tags = {
            "0008|0060": "CT",
            "0020|000e": series_uid,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1.4243",
            "0020|0037": "\\".join(f"{v:.10f}" for v in (direction[0], direction[3], direction[6],
                                                        direction[1], direction[4], direction[7])),
            "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0013": str(k),
            "0018|0050": str(image.GetSpacing()[2]),
        }
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{name_index:03d}.dcm"))
        writer.Execute(slice_image)


def test_dicom_series_is_sorted_by_position(tmp_path):
    volume = Volume(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), (0.5, 0.6, 0.8),
                    (10.0, -20.0, 30.0), oblique_direction())
    _write_dicom_series(tmp_path, volume)
    back = read_volume(tmp_path)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.spacing, volume.spacing, rtol=1e-4)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-3)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-5)


def test_a_dicom_series_with_a_missing_slice_is_refused(tmp_path, capfd):
    """ITK stacks the slices at the first gap's spacing and only prints a warning: every slice after a
    missing file would sit one slice off, and so would the teeth and their STL files."""
    volume = Volume(np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4), (0.5, 0.5, 0.8), (1.0, 2.0, 3.0),
                    oblique_direction())
    _write_dicom_series(tmp_path, volume)
    heights = {f: sitk.ReadImage(str(f)).GetOrigin() for f in tmp_path.glob("*.dcm")}
    normal = oblique_direction()[:, 2]
    by_height = sorted(heights, key=lambda f: float(np.dot(heights[f], normal)))
    by_height[3].unlink()
    with pytest.raises(InputError, match=r"not evenly spaced \(1.6 mm between slices 3 and 4, 0.8 mm elsewhere\)"):
        read_volume(tmp_path)
    assert "Non uniform sampling" not in capfd.readouterr().err  # ITK's raw warning is not shown as well


def test_a_dicom_folder_of_one_image_is_an_xray(tmp_path):
    """A panoramic X-ray exported as DICOM is one image: 2D, for the panoramic model (by header too)."""
    (tmp_path / "xray").mkdir()
    (tmp_path / "scan").mkdir()
    pixels = np.arange(40 * 60, dtype=np.int16).reshape(1, 40, 60)
    _write_dicom_series(tmp_path / "xray", Volume(pixels, (0.1, 0.1, 1.0)))
    _write_dicom_series(tmp_path / "scan", Volume(np.zeros((3, 8, 8), np.int16)))
    xray = read_volume(tmp_path / "xray")
    assert xray.kind == VolumeKind.PANORAMIC_2D and xray.shape == (1, 40, 60)
    assert input_kind(tmp_path / "xray") == "2d" and input_kind(tmp_path / "scan") == "3d"
    assert read_volume(tmp_path / "scan").kind == VolumeKind.CBCT_3D


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="no DICOM series"):
        read_volume(tmp_path)
    assert not holds_dicom_series(tmp_path)
    (tmp_path / "series").mkdir()
    _write_dicom_series(tmp_path / "series", Volume(np.zeros((4, 6, 6), np.int16), spacing=(1.0, 0.5, 0.5)))
    assert holds_dicom_series(tmp_path / "series")


def test_rail_h5_crop(tmp_path):
    xyz = np.random.default_rng(1).random((12, 10, 8))  # RAIL stores (x, y, z), float64 in [0, 1]
    label = (xyz > 0.5).astype(np.float64)
    path = tmp_path / "CBCT_roi.h5"
    with h5py.File(path, "w") as handle:
        handle["image"] = xyz
        handle["label"] = label
    image = read_volume(path)
    assert image.shape == (8, 10, 12)
    assert image.array[3, 2, 1] == xyz[1, 2, 3]
    labels = read_label_map(path)
    assert labels.array.dtype == np.uint8 and labels.array[3, 2, 1] == label[1, 2, 3]
    with h5py.File(tmp_path / "bad.h5", "w") as handle:
        handle["volume"] = xyz
    with pytest.raises(InputError, match="no dataset 'image'"):
        read_volume(tmp_path / "bad.h5")


def test_panoramic_png_is_a_2d_volume(tmp_path):
    image_path = shared_data_dir() / "ufba425" / "images" / "cate1-00002.png"
    volume = read_volume(image_path)
    assert volume.kind == VolumeKind.PANORAMIC_2D and volume.shape == (1, 512, 512)
    labels = read_label_map(shared_data_dir() / "ufba425" / "labels" / "cate1-00002.png")
    present = set(np.unique(labels.array)) - {0}
    assert present and all(11 <= v <= 48 for v in present)
    out = write_volume(labels, tmp_path / "labels.png")
    np.testing.assert_array_equal(read_label_map(out).array, labels.array)


def test_rgb_xrays_become_grey_and_rgb_volumes_are_refused(tmp_path):
    grey = np.random.default_rng(2).integers(0, 255, (20, 30)).astype(np.uint8)
    rgb = sitk.GetImageFromArray(np.stack([grey] * 3, axis=-1), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "xray.png"))
    volume = read_volume(tmp_path / "xray.png")
    np.testing.assert_allclose(volume.array[0], grey, atol=1)
    vector_volume = sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True)
    sitk.WriteImage(vector_volume, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match="colour"):
        read_volume(tmp_path / "rgb.nrrd")
    # 3D Slicer loads a colour X-ray as a vector volume and saves it as a one-slice vector NRRD
    one_slice = sitk.GetImageFromArray(np.stack([grey[None]] * 3, axis=-1), isVector=True)
    sitk.WriteImage(one_slice, str(tmp_path / "xray_from_slicer.nrrd"))
    from_slicer = read_volume(tmp_path / "xray_from_slicer.nrrd")
    assert from_slicer.kind == VolumeKind.PANORAMIC_2D and from_slicer.shape == (1, 20, 30)
    np.testing.assert_allclose(from_slicer.array[0], grey, atol=1)


@pytest.mark.parametrize("channel", [0, 1, 2])
def test_a_colour_mask_is_refused_as_labels_and_grey_stored_as_rgb_is_not(tmp_path, caplog, channel):
    """A mask painted in red, green or blue has no FDI numbers: its luma (76, 150 or 29) would pass
    for a label value and be stored as a correction."""
    teeth = np.zeros((20, 30), np.uint8)
    teeth[5:10, 5:10], teeth[5:10, 15:20] = 11, 21
    as_rgb = sitk.GetImageFromArray(np.stack([teeth] * 3, axis=-1), isVector=True)  # grey saved as RGB
    sitk.WriteImage(as_rgb, str(tmp_path / "grey_rgb.png"))
    np.testing.assert_array_equal(read_label_map(tmp_path / "grey_rgb.png").array[0], teeth)
    painted = np.zeros((20, 30, 3), np.uint8)
    painted[teeth > 0, channel] = 255
    sitk.WriteImage(sitk.GetImageFromArray(painted, isVector=True), str(tmp_path / "mask.png"))
    with pytest.raises(InputError, match="a colour image .* not a label map"):
        read_label_map(tmp_path / "mask.png")
    with caplog.at_level("WARNING", logger="toothseg"):  # as an image (a colour X-ray) it is read, with a word
        assert read_volume(tmp_path / "mask.png").array.max() > 0
    assert "colour image converted to grey" in caplog.text
    # an indexed (palette) PNG, as many labelling tools write label maps: the indices are the labels
    from PIL import Image

    indexed = Image.fromarray(teeth, mode="L").convert("P")
    indexed.putpalette([int(v) for v in np.random.default_rng(channel).integers(0, 256, 768)])
    indexed.save(tmp_path / "indexed.png")
    assert Image.open(tmp_path / "indexed.png").mode == "P"
    np.testing.assert_array_equal(read_label_map(tmp_path / "indexed.png").array[0], teeth)


def test_grey_and_alpha_png_reads_as_its_grey_channel(tmp_path):
    """SimpleITK refuses grey + alpha PNGs ("Unknown PixelType"); they read exactly as the same pixels
    saved without alpha, rows in the file's order; a truncated one fails with one clear line."""
    from PIL import Image

    grey = np.random.default_rng(3).integers(0, 255, (20, 30)).astype(np.uint8)
    grey[0, :] = 255  # the first row bright: a flipped read would show it last
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp_path / "grey.png"))
    alpha = Image.fromarray(np.full_like(grey, 200))
    Image.merge("LA", (Image.fromarray(grey), alpha)).save(tmp_path / "grey_alpha.png")
    with_alpha, without = read_volume(tmp_path / "grey_alpha.png"), read_volume(tmp_path / "grey.png")
    assert with_alpha.kind == VolumeKind.PANORAMIC_2D and with_alpha.shape == (1, 20, 30)
    np.testing.assert_array_equal(with_alpha.array, without.array)
    assert with_alpha.spacing == without.spacing and with_alpha.origin == without.origin
    data = (tmp_path / "grey_alpha.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.png: cannot read image"):
        read_volume(tmp_path / "cut.png")


def test_four_d_file_is_refused(tmp_path):
    sitk.WriteImage(sitk.Image([4, 4, 4, 3], sitk.sitkInt16), str(tmp_path / "series.nii.gz"))
    with pytest.raises(InputError, match="4D"):
        read_volume(tmp_path / "series.nii.gz")


def test_truncated_and_corrupt_files(tmp_path, sts_gt_path):
    data = sts_gt_path.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="cut.nii.gz"):
        read_volume(tmp_path / "cut.nii.gz")
    plain = write_volume(_cbct_like(), tmp_path / "plain.nii")
    plain.write_bytes(plain.read_bytes()[:-50])
    with pytest.raises(InputError, match="truncated"):
        read_volume(plain)
    mha = write_volume(_cbct_like(), tmp_path / "cut.mha")
    mha.write_bytes(mha.read_bytes()[:-100])
    with pytest.raises(InputError, match="cut.mha"):
        read_volume(mha)
    (tmp_path / "junk.nrrd").write_text("this is not an image\n")
    with pytest.raises(InputError, match="junk.nrrd"):
        read_volume(tmp_path / "junk.nrrd")
    (tmp_path / "empty.mha").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_volume(tmp_path / "empty.mha")
    with pytest.raises(InputError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")
    (tmp_path / "scan.xyz").write_bytes(b"abc")
    with pytest.raises(InputError, match="unsupported file type"):
        read_volume(tmp_path / "scan.xyz")


def test_nan_voxels_in_a_file(tmp_path):
    array = np.ones((3, 4, 5), np.float32)
    array[1, 2, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "nan.nrrd"))
    with pytest.raises(InputError, match="NaN"):
        read_volume(tmp_path / "nan.nrrd")


def test_zero_spacing_in_a_header(tmp_path):
    path = tmp_path / "flat.nrrd"
    header = ("NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 2 2 2\n"
              "space directions: (0.5,0,0) (0,0,0) (0,0,0.5)\nkinds: domain domain domain\n"
              "endian: little\nencoding: raw\nspace origin: (0,0,0)\n\n")
    path.write_bytes(header.encode() + np.zeros(8, np.int16).tobytes())
    with pytest.raises(InputError):
        read_volume(path)


def test_label_maps_must_hold_whole_non_negative_numbers(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 2, 2), 0.5, np.float32)), str(tmp_path / "prob.nrrd"))
    with pytest.raises(InputError, match="non-integer"):
        read_label_map(tmp_path / "prob.nrrd")
    sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 2, 2), -1, np.int16)), str(tmp_path / "neg.nrrd"))
    with pytest.raises(InputError, match="negative"):
        read_label_map(tmp_path / "neg.nrrd")
    sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 2, 2), 36.0, np.float32)), str(tmp_path / "ok.nrrd"))
    assert read_label_map(tmp_path / "ok.nrrd").array.dtype == np.uint8


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_a_panoramic_image_saved_in_a_3d_container_reads_back_as_2d(tmp_path, suffix):
    """3D Slicer saves a loaded X-ray as a one-slice NRRD; the case pool stores images as NIfTI.
    Either way it is still a 2D image, which a 2D model must accept."""
    image = Volume(np.arange(64 * 80, dtype=np.uint8).reshape(1, 64, 80), kind="2d")
    path = write_volume(image, tmp_path / f"xray{suffix}")
    back = read_volume(path)
    assert back.kind == VolumeKind.PANORAMIC_2D and back.shape == (1, 64, 80)
    np.testing.assert_array_equal(back.array, image.array)
    assert input_kind(path) == "2d"  # from the header alone, as read_volume will read it


def test_input_kind_from_the_header(tmp_path):
    """The default model is chosen before the image is read: the header must give the same answer."""
    scan = write_volume(Volume(np.zeros((2, 8, 8), np.int16)), tmp_path / "scan.nrrd")
    png = write_volume(Volume(np.zeros((1, 8, 8), np.uint8), kind="2d"), tmp_path / "xray.png")
    plain_2d = tmp_path / "xray2d.nrrd"
    sitk.WriteImage(sitk.Image(8, 6, sitk.sitkUInt8), str(plain_2d))
    for path in (scan, png, plain_2d):
        assert input_kind(path) == ("3d" if read_volume(path).kind == VolumeKind.CBCT_3D else "2d"), path
    assert [input_kind(p) for p in (scan, png, plain_2d)] == ["3d", "2d", "2d"]
    truncated = tmp_path / "cut.nrrd"
    truncated.write_bytes(scan.read_bytes()[:40])
    with pytest.raises(InputError, match="truncated"):
        input_kind(truncated)
