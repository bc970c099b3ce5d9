"""What every command shares: exit statuses, the one-line parser, progress bars and ``--progress-lines``,
label-list and label-table options."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..core.errors import InputError

__all__ = ["EXIT_ERROR", "EXIT_USAGE", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "Parser", "add_progress_lines_option",
           "progress_bar", "parse_label_list", "label_table_from", "apply_unknown_policy", "read_labels_with_reference",
           "add_unknown_labels_options", "silence_library_warnings"]

log = logging.getLogger("toothseg")

EXIT_ERROR, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 2, 70, 130


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as argparse does, without the usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def add_progress_lines_option(parser: argparse.ArgumentParser) -> None:
    """``--progress-lines``: the machine-readable progress the Slicer module reads (one option text everywhere)."""
    parser.add_argument("--progress-lines", action="store_true",
                        help="print 'progress FRACTION STAGE' lines on stdout (for the Slicer module)")


def progress_bar(description: str, quiet: bool):
    """A :class:`Progress` that drives a tqdm bar on stderr.

    The bar appears on the first update, only on a terminal (tqdm's ``disable=None``), so that logs
    and error output stay clean; ``--quiet`` turns it off.
    """
    from ..core.progress import Progress

    if quiet:
        return Progress(), None
    from tqdm import tqdm

    holder: list = []

    def callback(fraction: float, stage: str) -> None:
        if not holder:
            holder.append(tqdm(total=100, desc=description, unit="%", leave=False, file=sys.stderr, disable=None,
                               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}"))
        bar = holder[0]
        bar.n = round(fraction * 100, 1)
        bar.set_postfix_str(stage[:60], refresh=False)
        bar.refresh()

    class _Closer:
        def close(self) -> None:
            if holder:
                holder[0].close()

    return Progress(callback), _Closer()


def parse_label_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        values = []
    if not values:  # '--labels ""' (an empty shell variable) must not mean "all labels"
        raise InputError(f"--labels expects comma-separated integers like 11,12,21, got '{text}'")
    return values


def label_table_from(path: str | None):
    from ..core.labels import LabelTable

    if path is None:
        return LabelTable.fdi(deciduous=True, pulp=True, jaws=True)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read label table ({exc.strerror})") from exc
    return LabelTable.from_json(text)


def apply_unknown_policy(labels, table, policy: str):
    """Return (labels, table) after handling values the table does not define."""
    import numpy as np

    from ..core.labels import LabelTable

    unknown = table.unknown_values(np.unique(labels.array))
    if not unknown or policy == "error":
        return labels, table
    if policy == "drop":
        log.warning("removing %d unknown label value(s): %s", len(unknown), ", ".join(map(str, unknown)))
        array = labels.array.copy()
        array[np.isin(array, unknown)] = 0
        return labels.with_array(array), table
    extra = LabelTable.custom({v: f"label {v}" for v in unknown})
    merged = LabelTable({**table.entries, **extra.entries}, table.name, dict(table.swap_pairs))
    return labels, merged


def read_labels_with_reference(path: str, reference: str | None):
    from ..core.io.images import file_format, read_label_map, read_volume
    from ..core.io.segmentation import read_segmentation
    from ..core.volume import check_same_geometry

    ref = read_volume(reference) if reference else None
    if file_format(path) == "seg.nrrd":
        seg = read_segmentation(path, reference=ref)
        return seg.labels, seg.table
    labels = read_label_map(path)
    if ref is not None:
        check_same_geometry(ref, labels, f"image {reference}", f"label map {path}")
    return labels, None


def add_unknown_labels_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label-table", metavar="JSON",
                        help="label table (names, colours, codes); default: FDI teeth, pulp, jaws")
    parser.add_argument("--unknown-labels", choices=("error", "keep", "drop"), default="error",
                        help="values not in the label table: refuse (default), keep as 'label N', or remove")
    parser.add_argument("--reference", metavar="IMAGE",
                        help="the image the labels belong to; refuse labels on another grid")


def silence_library_warnings() -> None:
    """ITK/VTK print multi-line C++ warnings to stderr; our own messages say what matters."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        from vtkmodules.vtkCommonCore import vtkObject

        vtkObject.GlobalWarningDisplayOff()
    except ImportError:  # pragma: no cover - VTK is a dependency
        pass
