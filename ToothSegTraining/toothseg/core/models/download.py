"""Install a catalogue model from a published archive, checksummed ("Get weights…").

A catalogue entry may carry ``source.archive = {"url": ..., "sha256": ...}``: a zip of one model
folder. The archive is streamed to a temporary file beside the user's model folder while its
SHA-256 is computed; it is unpacked only if the hash matches the catalogue's, only into a staging
folder (members that would land outside it, links and absolute paths are refused), and installed
only after the model folder itself verifies (card, weights hash, architecture). An entry without
a checksum cannot be downloaded: a file nobody can check is not installed silently.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from ..errors import InputError, OutputWriteError
from ..io.atomic import describe_os_error
from ..progress import Progress
from .catalog import Catalog, CatalogEntry, user_models_dir
from .folder import read_card

__all__ = ["archive_of", "download_model"]

_SCHEMES = ("https://", "http://", "file://")  # http is safe here only because the hash is checked
_CHUNK = 1 << 20


def archive_of(entry: CatalogEntry) -> dict[str, str] | None:
    """The entry's downloadable archive (``url`` and ``sha256``), or None."""
    archive = entry.source.get("archive") if isinstance(entry.source, dict) else None
    if not isinstance(archive, dict) or not archive.get("url"):
        return None
    return archive


def _fetch(url: str, target: Path, sha256: str, progress: Progress) -> None:
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            size = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                progress.update(done / size if size else 0.0, f"downloading {done / 1e6:.1f} MB")
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise InputError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from exc
    except OSError as exc:
        raise OutputWriteError(f"cannot save the download: {describe_os_error(exc)}") from exc
    if digest.hexdigest() != sha256.lower():
        raise InputError(f"the file downloaded from {url} does not match the catalogue's SHA-256 "
                         f"({digest.hexdigest()[:12]}… instead of {sha256[:12]}…); nothing was installed")


def _safe_extract(archive: Path, into: Path) -> Path:
    """Unpack a zip into ``into`` refusing escaping members and links; return the model folder."""
    root = into.resolve()
    try:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.infolist():
                target = (root / member.filename).resolve()
                if member.filename.startswith(("/", "\\")) or not target.is_relative_to(root):
                    raise InputError(f"the archive member {member.filename!r} would be written outside the model "
                                     "folder; refused")
                if stat.S_ISLNK(member.external_attr >> 16):
                    raise InputError(f"the archive member {member.filename!r} is a link; refused")
            zipped.extractall(root)
    except zipfile.BadZipFile as exc:
        raise InputError(f"the downloaded archive is not a valid zip file ({exc})") from exc
    candidates = [p.parent for p in root.rglob("model.json")]
    if len(candidates) != 1:
        raise InputError(f"the archive holds {len(candidates)} model folders (model.json); expected one")
    return candidates[0]


def download_model(catalog: Catalog, model_id: str, progress: Progress | None = None,
                   overwrite: bool = False) -> CatalogEntry:
    """Download, check and install catalogue model ``model_id``; return its installed entry."""
    entry = catalog.get(model_id)
    archive = archive_of(entry)
    if archive is None:
        how = entry.source.get("how", "") if isinstance(entry.source, dict) else ""
        raise InputError(f"model {entry.id!r} has no downloadable archive" + (f"; {how}" if how else ""))
    url, sha256 = str(archive["url"]), archive.get("sha256")
    if not sha256:
        raise InputError(f"model {entry.id!r}: the catalogue records no SHA-256 for {url}; refusing to install an "
                         "unchecked download (fetch it yourself and use 'toothseg models add')")
    if not url.startswith(_SCHEMES):
        raise InputError(f"model {entry.id!r}: unsupported address {url!r} (https, http or file only)")
    progress = progress or Progress()
    parent = user_models_dir()
    try:
        parent.mkdir(parents=True, exist_ok=True)
        workspace = Path(tempfile.mkdtemp(prefix=".download-", dir=parent))
    except OSError as exc:
        raise OutputWriteError(f"cannot write to {parent}: {describe_os_error(exc)}") from exc
    try:
        _fetch(url, workspace / "archive.zip", sha256, progress.sub(0.0, 0.9))
        progress.update(0.92, "unpacking")
        (workspace / "unpacked").mkdir()
        folder = _safe_extract(workspace / "archive.zip", workspace / "unpacked")
        card_id = read_card(folder).id
        if card_id != entry.id:
            raise InputError(f"the archive for {entry.id!r} holds model {card_id!r}; nothing was installed")
        progress.update(0.95, "verifying")
        installed = catalog.add_folder(folder, overwrite=overwrite)
        progress.update(1.0, f"installed {installed.id}")
        return installed
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
