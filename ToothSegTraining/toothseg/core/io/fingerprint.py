"""Content fingerprints of image files and DICOM folders: has a scan been replaced since we last saw it?

A case pool references scans where they lie, and corrected labels belong to the scan they were drawn
on. If another scan is later written to the same path (a re-export, a folder of the same name copied
over), the labels would silently train the network on the wrong anatomy. A fingerprint is the SHA-256
of the bytes (for a folder: of every file's name and digest), taken when a case is added or its labels
are accepted. Size and modification time are kept beside it only to skip re-hashing a file that was
not touched; a touched file with the same bytes still matches.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Fingerprint", "sha256_file", "fingerprint", "same_content"]


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    """``sha256``: the contents; ``stat``: sizes and modification times (a cheap "untouched" test)."""

    sha256: str
    stat: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Fingerprint | None":
        if not isinstance(data, dict) or not isinstance(data.get("sha256"), str):
            return None
        return cls(data["sha256"], str(data.get("stat", "")))


def _files(path: Path) -> list[tuple[str, Path]]:
    """(name, file) pairs: the file itself, or every file under a folder (names relative, sorted)."""
    if path.is_file():
        return [(path.name, path)]
    return sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())


def _stat(files: list[tuple[str, Path]]) -> str:
    lines = []
    for name, file in files:
        info = file.stat()
        lines.append(f"{name}\t{info.st_size}\t{info.st_mtime_ns}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def fingerprint(path: str | os.PathLike[str]) -> Fingerprint:
    """The fingerprint of an image file or a DICOM folder.

    Raises:
        OSError: the path cannot be read.
    """
    files = _files(Path(path))
    if Path(path).is_file():
        content = sha256_file(path)
    else:
        content = hashlib.sha256("".join(f"{name}\0{sha256_file(file)}\n" for name, file in files).encode()).hexdigest()
    return Fingerprint(content, _stat(files))


def same_content(path: str | os.PathLike[str], recorded: Fingerprint) -> bool:
    """Whether ``path`` still holds what ``recorded`` was taken of (hashes only when sizes or times moved).

    Raises:
        OSError: the path cannot be read.
    """
    if _stat(_files(Path(path))) == recorded.stat:
        return True
    return fingerprint(path).sha256 == recorded.sha256
