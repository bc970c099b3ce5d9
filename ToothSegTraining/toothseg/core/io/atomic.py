"""Atomic file output: a reader never sees a half-written file, a failure leaves nothing behind.

Writers produce their file(s) in a private temporary folder next to the destination, with the
destination's own file name (so that formats whose header names a companion file, like MetaImage
``.mhd`` + ``.raw``, stay consistent), and the files are moved into place with ``os.replace`` only
when writing succeeded. Same folder means same file system, so the rename is atomic.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputExistsError, OutputWriteError

__all__ = ["atomic_output", "atomic_folder", "check_writable_output", "check_outputs_apart", "atomic_write_text",
           "describe_os_error", "leftover_temporaries", "TEMP_PREFIX"]

TEMP_PREFIX = ".toothseg-tmp-"


def _process_umask() -> int:
    """The process umask (read by setting and restoring it; done once, at import)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Files get the permissions a plain open() would give them: some writers (safetensors) create
# owner-only files, which another user of a shared model folder then cannot read.
_FILE_MODE = 0o666 & ~_process_umask()
_FOLDER_MODE = 0o777 & ~_process_umask()


def describe_os_error(exc: OSError) -> str:
    """Short, user-facing reason for an OS error."""
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno == errno.ENOENT:
        return "folder does not exist"
    return exc.strerror or str(exc)


def check_writable_output(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Fail early, before any work, if ``path`` cannot be written.

    Raises:
        OutputExistsError: the file exists and ``overwrite`` is False.
        OutputWriteError: the parent folder is missing or not writable.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists (use --overwrite to replace it)")
    if path.is_dir():
        raise OutputWriteError(f"{path} is a folder, expected a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputWriteError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputWriteError(f"cannot write {path}: permission denied for folder {parent}")
    return path


def make_output_folder(path: str | os.PathLike[str], why_a_folder: str) -> Path:
    """Create the folder ``path`` (and its parents) for outputs; ``why_a_folder`` ends the message for a
    file in its place ("surfaces go into a folder").

    Raises:
        OutputWriteError: ``path`` is a file, or the folder cannot be created or written to.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputWriteError(f"{folder} is a file; {why_a_folder}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot create {folder}: {describe_os_error(exc)}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputWriteError(f"cannot write to {folder}: permission denied")
    return folder


def check_outputs_apart(inputs: dict[str, str | os.PathLike[str] | None],
                        outputs: dict[str, str | os.PathLike[str] | None]) -> None:
    """Refuse an output path that is also an input or another output, before any work: with ``--overwrite``
    ``segment scan.nii.gz -o scan.nii.gz`` replaced the scan by its labels, and ``--json`` naming the
    prediction replaced it by the scores. Keys are the option names shown to the user."""
    seen: dict[Path, str] = {}
    for role, path in inputs.items():
        if path is not None:
            seen.setdefault(Path(os.path.abspath(path)), role)
    for role, path in outputs.items():
        if path is None:
            continue
        key = Path(os.path.abspath(path))
        if key in seen:
            raise OutputWriteError(f"{role} {path} is also {seen[key]}; write it elsewhere")
        seen[key] = role


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; move it (and its siblings) to ``path`` on success.

    Every file the writer creates in the temporary folder is moved next to ``path``, which is
    what MetaImage (``.mhd`` + ``.raw``) needs. On any exception the temporary folder is removed
    and the destination is left untouched.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        OutputWriteError: the folder is not writable or the disk is full (wraps the OSError).
    """
    final = check_writable_output(path, overwrite=overwrite)
    parent = final.parent if str(final.parent) else Path(".")
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent))
    except OSError as exc:
        raise OutputWriteError(f"cannot write {final}: {describe_os_error(exc)}") from exc
    try:
        yield tmp_dir / final.name
        produced = sorted(tmp_dir.iterdir())
        if not (tmp_dir / final.name).exists():
            raise OutputWriteError(f"writing {final} produced no file")
        for item in produced:
            target = parent / item.name
            if target.exists() and not overwrite and item.name != final.name:
                raise OutputExistsError(f"{target} already exists (use --overwrite to replace it)")
        # The main file goes last so that a reader that waits for it finds its companions in place.
        for item in sorted(produced, key=lambda p: p.name == final.name):
            if item.is_file():
                os.chmod(item, _FILE_MODE)
            os.replace(item, parent / item.name)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {final}: {describe_os_error(exc)}") from exc
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside ``path`` to fill; it becomes ``path`` only when the block succeeds.

    A failure (a bad second checkpoint of an ensemble, a full disk, Ctrl+C) removes the staging folder
    and leaves ``path`` as it was, so the same command can simply be run again. With ``overwrite`` an
    existing folder is moved aside first and deleted only after the new one is in place.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        OutputWriteError: ``path`` is a file, its parent is missing or not writable, or the disk is full.
    """
    final = Path(path)
    if final.exists() and not final.is_dir():
        raise OutputWriteError(f"{final} is a file, expected a folder name")
    if final.exists() and not overwrite:
        raise OutputExistsError(f"{final} already exists (use --overwrite to replace it)")
    parent = final.parent if str(final.parent) else Path(".")
    if not parent.is_dir():
        raise OutputWriteError(f"cannot write {final}: folder {parent} does not exist")
    try:
        staging = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent))
        os.chmod(staging, _FOLDER_MODE)  # mkdtemp makes it owner-only
    except OSError as exc:
        raise OutputWriteError(f"cannot write {final}: {describe_os_error(exc)}") from exc
    aside = None
    try:
        yield staging
        if final.exists():
            aside = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent)) / final.name
            os.replace(final, aside)
        os.replace(staging, final)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {final}: {describe_os_error(exc)}") from exc
    finally:
        # the new folder did not land (a failed rename, Ctrl+C between the two): the old one goes back
        if aside is not None and aside.exists() and not final.exists():
            os.replace(aside, final)
        shutil.rmtree(staging, ignore_errors=True)
        if aside is not None:
            shutil.rmtree(aside.parent, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike[str], text: str, overwrite: bool = True) -> Path:
    """Write a small text file (JSON, CSV) atomically."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def leftover_temporaries(folder: str | os.PathLike[str], older_than_s: float = 3600.0) -> list[Path]:
    """Temporary folders under ``folder`` that a killed writer left behind.

    A folder counts only when nothing in it changed for ``older_than_s`` seconds, so that a
    write still in progress (a large scan being copied) is not mistaken for debris.
    """
    limit = time.time() - older_than_s
    found = []
    for tmp in Path(folder).rglob(TEMP_PREFIX + "*"):
        if not tmp.is_dir():
            continue
        try:
            newest = max([tmp.stat().st_mtime] + [p.stat().st_mtime for p in tmp.rglob("*")])
        except OSError:  # removed meanwhile by its writer
            continue
        if newest < limit:
            found.append(tmp)
    return sorted(found)
