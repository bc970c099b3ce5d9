"""Read and write images as :class:`~toothseg.core.volume.Volume` (SimpleITK does the file formats).

Supported inputs: NIfTI (``.nii``, ``.nii.gz``), NRRD, MetaImage (``.mha``, ``.mhd``), a folder with a
DICOM series (GDCM via SimpleITK, slices sorted by position), RAIL-style HDF5 crops (``.h5`` with
``image`` and optional ``label`` datasets, stored ``(x, y, z)``), 2D PNG/JPEG/BMP/TIFF panoramic
X-rays (grey + alpha PNGs, which SimpleITK refuses, through Pillow), and Slicer ``.seg.nrrd``
segmentations (through :mod:`toothseg.core.io.segmentation`).
Outputs: NIfTI, NRRD, MetaImage, and PNG for 2D label maps; geometry is kept exactly.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import logging
import os
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import SimpleITK as sitk
from PIL import Image

from ..errors import InputError, OutputWriteError
from ..volume import Volume, VolumeKind
from .atomic import atomic_output
from .segmentation import read_segmentation

__all__ = [
    "read_volume",
    "holds_dicom_series",
    "input_kind",
    "read_label_map",
    "write_volume",
    "volume_from_sitk",
    "volume_to_sitk",
    "read_h5",
    "read_dicom_series",
    "file_format",
    "WRITABLE_SUFFIXES",
    "check_writable_suffix",
    "READABLE_SUFFIXES",
]

log = logging.getLogger(__name__)

_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_3D_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".tif", ".tiff")
READABLE_SUFFIXES = _3D_SUFFIXES + _2D_SUFFIXES + (".h5", ".hdf5", ".seg.nrrd")
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".png")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for double in (".nii.gz", ".seg.nrrd"):
        if name.endswith(double):
            return double
    return path.suffix.lower()


def file_format(path: str | os.PathLike[str]) -> str:
    """Classify an input: ``dicom``, ``h5``, ``seg.nrrd``, ``2d`` or ``itk``."""
    path = Path(path)
    if path.is_dir():
        return "dicom"
    suffix = _suffix(path)
    if suffix in (".h5", ".hdf5"):
        return "h5"
    if suffix == ".seg.nrrd":
        return "seg.nrrd"
    if suffix in _2D_SUFFIXES:
        return "2d"
    if suffix in _3D_SUFFIXES:
        return "itk"
    raise InputError(
        f"{path}: unsupported file type '{suffix or path.name}' "
        f"(supported: {', '.join(READABLE_SUFFIXES)}, or a DICOM folder)"
    )


def input_kind(path: str | os.PathLike[str]) -> str:
    """``2d`` (panoramic X-ray) or ``3d`` (scan) as :func:`read_volume` will read ``path``, from the
    headers only: a 2D file, a volume of one slice (Slicer saves X-rays as such NRRDs) or a DICOM
    folder whose series is one single-frame image is 2D; HDF5 crops are scans. Picks the default model
    before the image is read."""
    fmt = file_format(path)
    if fmt == "2d":
        return "2d"
    if fmt not in ("itk", "dicom"):
        return "3d"
    reader = sitk.ImageFileReader()
    if fmt == "dicom":
        _, files, _ = _largest_dicom_series(Path(path))
        if len(files) > 1:
            return "3d"
        path = files[0]  # one image: a 2D X-ray, or a single multi-frame file (its header says which)
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read image header ({_first_line(exc)}); the file may be truncated "
                         "or corrupt") from exc
    size = reader.GetSize()
    return "2d" if len(size) == 2 or (len(size) == 3 and size[2] == 1) else "3d"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # ITK messages carry the C++ file and line first; keep the human part.
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("/") and "sitk::ERROR" not in line and ".cxx:" not in line:
            return line.removeprefix("Description: ")
    return text.splitlines()[-1] if text else type(exc).__name__


def volume_from_sitk(image, kind: VolumeKind | None = None, source: str = "") -> Volume:
    """Wrap a SimpleITK image (2D or 3D, scalar) as a Volume; colour 2D images become grey (marked in
    ``metadata["colour"]`` when the channels differ)."""
    dimension = image.GetDimension()
    components = image.GetNumberOfComponentsPerPixel()
    coloured = False  # channels that differ: a colour image, not grey stored as RGB
    if dimension not in (2, 3):
        raise InputError(f"{source or 'image'}: {dimension}D images are not supported (expected 3D, or 2D X-ray)")
    if components > 1:
        # a colour X-ray saved by 3D Slicer is a one-slice vector volume: grey like a colour PNG
        if dimension == 3 and image.GetSize()[2] != 1:
            raise InputError(f"{source or 'image'}: colour/vector volumes ({components} components) are not supported")
        array = sitk.GetArrayFromImage(image).astype(np.float64)
        if components in (3, 4):  # RGB(A) X-ray export: ITU-R BT.601 luma
            red, green, blue = array[..., 0], array[..., 1], array[..., 2]
            coloured = not (np.array_equal(red, green) and np.array_equal(red, blue))
            array = array[..., 0] * 0.299 + array[..., 1] * 0.587 + array[..., 2] * 0.114
        else:
            raise InputError(f"{source or 'image'}: {components}-component images are not supported")
        array = np.round(array).astype(sitk.GetArrayViewFromImage(image).dtype)
    else:
        array = sitk.GetArrayFromImage(image)
    spacing = list(image.GetSpacing())
    origin = list(image.GetOrigin())
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dimension, dimension)
    if dimension == 2:
        spacing.append(1.0)
        origin.append(0.0)
        full = np.eye(3)
        full[:2, :2] = direction
        direction = full
        kind = kind or VolumeKind.PANORAMIC_2D
    elif image.GetSize()[2] == 1:  # one slice: a 2D image in a 3D container (Slicer saves X-rays as NRRD)
        kind = kind or VolumeKind.PANORAMIC_2D
    volume = Volume(array, tuple(spacing), tuple(origin), direction, kind or VolumeKind.CBCT_3D)
    if source:
        volume.metadata["source"] = source
    if coloured:
        volume.metadata["colour"] = "converted to grey"  # read_label_map refuses it: luma is no label value
    return volume


def volume_to_sitk(volume: Volume, as_2d: bool = False):
    """SimpleITK image with the Volume's voxels and geometry (2D when ``as_2d`` and one slice)."""
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if as_2d:
        if array.shape[0] != 1:
            raise InputError(f"cannot write a {array.shape[0]}-slice volume as a 2D image")
        image = sitk.GetImageFromArray(array[0])
        image.SetSpacing(volume.spacing[:2])
        image.SetOrigin(volume.origin[:2])
        image.SetDirection(volume.direction[:2, :2].ravel().tolist())
        return image
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction.ravel().tolist())
    return image


def _largest_dicom_series(folder: Path) -> tuple[str, tuple[str, ...], int]:
    """(UID, sorted files, number of series) of the DICOM series in ``folder`` with the most files."""
    reader = sitk.ImageSeriesReader()
    try:
        series_ids = reader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as exc:
        raise InputError(f"{folder}: cannot scan for DICOM files: {_first_line(exc)}") from exc
    if not series_ids:
        raise InputError(f"{folder}: no DICOM series found in this folder")
    files_by_series = {sid: reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids}
    series_id = max(files_by_series, key=lambda sid: len(files_by_series[sid]))
    return series_id, tuple(files_by_series[series_id]), len(series_ids)


def _check_slice_spacing(folder: Path, reader, image) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing file, mixed thicknesses).

    ITK builds the volume from the first slices' spacing and only prints a warning, so every slice
    after a gap would sit one slice off: teeth, measurements and STL files in the wrong place."""
    count = len(reader.GetFileNames())
    if count < 3:
        return
    normal = np.array(image.GetDirection()).reshape(3, 3)[:, 2]
    heights = []
    for index in range(count):
        if not reader.HasMetaDataKey(index, "0020|0032"):
            return  # no Image Position (Patient) to check against: ITK's own spacing is all there is
        try:
            position = [float(v) for v in reader.GetMetaData(index, "0020|0032").split("\\")]
        except ValueError:
            return
        heights.append(float(np.dot(position, normal)))
    gaps = np.diff(np.sort(heights))
    typical = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - typical)))
    if typical > 0 and abs(gaps[worst] - typical) > max(1e-3, 0.1 * typical):
        raise InputError(f"{folder}: the DICOM slices are not evenly spaced ({gaps[worst]:.3g} mm between slices "
                         f"{worst + 1} and {worst + 2}, {typical:.3g} mm elsewhere): a slice file is missing or "
                         "the series mixes thicknesses; the teeth would be placed wrongly. Export the whole "
                         "series again, or resample it in 3D Slicer first")


def holds_dicom_series(folder: str | os.PathLike[str]) -> bool:
    """Whether GDCM finds a DICOM series directly in ``folder``: a batch of cases leaves other
    sub-folders (notes, results, empty ones) out instead of failing on them."""
    try:
        return bool(sitk.ImageSeriesReader().GetGDCMSeriesIDs(str(folder)))
    except RuntimeError:
        return True  # unreadable: the case is tried, and fails with the reader's own message


def read_dicom_series(folder: str | os.PathLike[str]) -> Volume:
    """Read the largest DICOM series in ``folder`` (GDCM sorts slices by image position)."""
    folder = Path(folder)
    series_id, files, count = _largest_dicom_series(folder)
    if count > 1:
        log.warning("%s holds %d DICOM series; reading the largest (%d slices, UID %s)",
                    folder, count, len(files), series_id)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()  # each slice's position, to check the spacing below
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's raw "missing slices" print: said below instead
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{folder}: cannot read the DICOM series: {_first_line(exc)}") from exc
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)
    _check_slice_spacing(folder, reader, image)
    volume = volume_from_sitk(image, None, str(folder))  # one image (a panoramic X-ray) is 2D
    volume.metadata["dicom_series_uid"] = series_id
    return volume


def read_h5(path: str | os.PathLike[str], key: str = "image") -> Volume:
    """Read one dataset of a RAIL-style HDF5 crop.

    RAIL stores arrays as ``(x, y, z)`` (NiBabel order) without geometry; they are transposed to
    ``(z, y, x)``. Optional attributes ``spacing``/``origin`` (x, y, z) on the dataset or the
    file are used when present, otherwise 1 mm and the origin 0 are assumed (with a warning).
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            if key not in handle:
                raise InputError(f"{path}: no dataset '{key}' (found: {', '.join(handle.keys()) or 'none'})")
            dataset = handle[key]
            data = np.asarray(dataset[()])
            attrs = {**dict(handle.attrs), **dict(dataset.attrs)}
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({_first_line(exc)})") from exc
    if data.ndim != 3:
        raise InputError(f"{path}: dataset '{key}' has shape {data.shape}; expected a 3D (x, y, z) array")
    spacing = tuple(float(s) for s in attrs.get("spacing", (1.0, 1.0, 1.0)))
    if "spacing" not in attrs:
        log.warning("%s: no spacing stored; assuming 1 mm voxels", path)
    origin = tuple(float(o) for o in attrs.get("origin", (0.0, 0.0, 0.0)))
    volume = Volume(np.ascontiguousarray(data.transpose(2, 1, 0)), spacing, origin)
    volume.metadata["source"] = str(path)
    return volume


def _scan_nifti(path: Path) -> tuple[bytes, int]:
    """(first 352 bytes, total decompressed length) of a NIfTI file; ``.nii.gz`` is decompressed as
    a stream, which verifies the gzip CRC and length. Raises InputError on a corrupt stream."""
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                header = handle.read(352)
                total = len(header)
                while chunk := handle.read(1 << 24):
                    total += len(chunk)
            return header, total
        with open(path, "rb") as handle:
            return handle.read(352), path.stat().st_size
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: the file is truncated or corrupt ({exc})") from exc


def _check_nifti_complete(path: Path, image, scan: tuple[bytes, int]) -> None:
    """ITK reads a truncated NIfTI without complaint (missing voxels become 0): check it here,
    from the header and length found by :func:`_scan_nifti`."""
    header, total = scan
    expected = int(np.prod(image.GetSize())) * image.GetNumberOfComponentsPerPixel() * \
        image.GetSizeOfPixelComponent()
    if len(header) < 348:
        raise InputError(f"{path}: the file is truncated (incomplete NIfTI header)")
    little = struct.unpack("<i", header[:4])[0] in (348, 540)
    endian = "<" if little else ">"
    if struct.unpack(endian + "i", header[:4])[0] == 540:
        offset = struct.unpack(endian + "q", header[168:176])[0]
    else:
        offset = int(struct.unpack(endian + "f", header[108:112])[0])
    if total < offset + expected:
        raise InputError(f"{path}: the file is truncated ({total} of {offset + expected} bytes)")


def read_volume(path: str | os.PathLike[str], key: str = "image") -> Volume:
    """Read any supported image (file or DICOM folder) as a Volume; NaN/inf voxels are refused.

    Raises:
        InputError: missing, truncated, corrupt or unsupported input (one readable line).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    fmt = file_format(path)
    if fmt == "dicom":
        volume = read_dicom_series(path)
    elif fmt == "h5":
        volume = read_h5(path, key)
    elif fmt == "seg.nrrd":
        volume = read_segmentation(path).labels
    else:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: the file is empty")
        # The NIfTI completeness scan decompresses the file a second time; it runs in a thread
        # while ITK reads (both release the GIL), so the check costs almost no wall time.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            scan = pool.submit(_scan_nifti, path) if _suffix(path) in (".nii", ".nii.gz") else None
            try:
                image = sitk.ReadImage(str(path))
            except RuntimeError as exc:
                if scan is not None:
                    scan.result()  # a corrupt gzip stream explains the failure best
                image = _read_grey_alpha_png(path) if _suffix(path) == ".png" else None
                if image is None:
                    raise InputError(f"{path}: cannot read image ({_first_line(exc)}); the file may be truncated "
                                     "or corrupt") from exc
            if scan is not None:
                _check_nifti_complete(path, image, scan.result())
        kind = VolumeKind.PANORAMIC_2D if fmt == "2d" else None
        volume = volume_from_sitk(image, kind, str(path))
    volume.check_finite()
    if volume.metadata.get("colour") and key != "label":  # read_label_map refuses it instead
        log.warning("%s: colour image converted to grey", path)
    return volume


def _read_grey_alpha_png(path: Path):
    """The grey channel of a grey + alpha PNG (a common export of X-ray viewers), which SimpleITK's PNG
    reader refuses ("Unknown PixelType"), read with Pillow (VTK's PNG reader would crash the process on
    a truncated file); ``None`` for any other PNG, or one Pillow cannot read either. Pixels are 1 mm, as
    SimpleITK gives every PNG."""
    try:
        with Image.open(path) as png:
            if png.format != "PNG" or png.mode != "LA":
                return None
            grey = np.asarray(png.getchannel("L"))  # decodes the whole file: a truncated one fails here
    except (OSError, ValueError, SyntaxError):
        return None
    return sitk.GetImageFromArray(np.ascontiguousarray(grey))


def _png_palette_indices(path: Path) -> np.ndarray | None:
    """The pixel indices of an indexed-colour (palette) PNG, the way many labelling tools store label
    maps (the index is the label, the palette only shows it); ``None`` for any other file. SimpleITK
    expands the palette to RGB, which would lose the labels."""
    if _suffix(path) != ".png":
        return None
    try:
        with Image.open(path) as png:
            if png.format != "PNG" or png.mode != "P":
                return None
            return np.asarray(png).copy()
    except (OSError, ValueError, SyntaxError):
        return None


def read_label_map(path: str | os.PathLike[str]) -> Volume:
    """Read a label map: integer values ≥ 0 (float files with whole numbers are accepted; an indexed
    PNG gives its indices)."""
    volume = read_volume(path, key="label")
    indices = _png_palette_indices(Path(path))
    if indices is not None and indices.shape == volume.shape[1:]:
        volume = volume.with_array(indices[np.newaxis])
        volume.metadata.pop("colour", None)
    if volume.metadata.get("colour"):
        raise InputError(f"{path}: a colour image (its red, green and blue differ), not a label map; a label map "
                         "holds each tooth's FDI number (11-48) as its grey value, e.g. as written by 'toothseg "
                         "segment' or 3D Slicer's 'Export to label map'")
    array = volume.array
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(array == np.round(array)):
            raise InputError(f"{path}: label map has non-integer values; is this an intensity image?")
    if array.size and array.min() < 0:
        raise InputError(f"{path}: label map has negative values (min {array.min()}); is this an intensity image?")
    top = int(array.max()) if array.size else 0
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32
    if array.dtype != dtype:
        volume.array = array.astype(dtype)
    return volume


def check_writable_suffix(path: str | os.PathLike[str], segmentation: bool = False) -> None:
    """Refuse an output name no writer handles, before any reading; ``segmentation`` allows ``.seg.nrrd``."""
    path = Path(path)
    suffix = _suffix(path)
    allowed = WRITABLE_SUFFIXES + ((".seg.nrrd",) if segmentation else ())
    if suffix in allowed:
        return
    supported = ", ".join(allowed) + ("" if segmentation else "; .seg.nrrd for label maps")
    if not suffix:
        raise InputError(f"{path}: the output name needs a file extension (supported: {supported})")
    raise InputError(f"{path}: cannot write '{suffix}' files (supported: {supported})")


def write_volume(volume: Volume, path: str | os.PathLike[str], overwrite: bool = False,
                 compress: bool = True) -> Path:
    """Write a Volume atomically (temporary file, then rename); geometry is kept exactly.

    ``.png`` writes a 2D image (one slice, 8/16-bit integers), e.g. a panoramic label map.

    Raises:
        OutputExistsError, OutputWriteError, InputError (format cannot hold the data).
    """
    path = Path(path)
    suffix = _suffix(path)
    check_writable_suffix(path)
    as_2d = suffix == ".png"
    if as_2d and volume.array.ndim == 3 and volume.array.shape[0] > 1:  # said before a dtype complaint
        raise InputError(f"{path}: cannot write a {volume.array.shape[0]}-slice volume as a 2D image")
    if as_2d and volume.array.dtype not in (np.uint8, np.uint16):
        if np.issubdtype(volume.array.dtype, np.integer) and volume.array.min() >= 0 and volume.array.max() < 65536:
            volume = volume.with_array(volume.array.astype(np.uint8 if volume.array.max() < 256 else np.uint16))
        else:
            raise InputError(f"{path}: PNG holds 8/16-bit unsigned integers, not {volume.array.dtype}")
    image = volume_to_sitk(volume, as_2d=as_2d)
    with atomic_output(path, overwrite=overwrite) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=compress and not as_2d)
        except RuntimeError as exc:
            raise OutputWriteError(f"cannot write {path}: {_first_line(exc)}") from exc
    return path
