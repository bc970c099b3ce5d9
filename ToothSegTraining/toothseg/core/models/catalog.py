"""The model catalogue: bundled and known models (``Resources/Models/catalog.json``) plus the
user's own model folders (``$TOOTHSEG_MODELS_DIR``, default ``~/.toothseg/models``).

A catalogue entry either points at a bundled folder, or says where its weights come from (the
original authors' release) and how to import them; the SHA-256 recorded for an entry is that of
the converted ``weights.safetensors``, checked on every load. Entries whose upstream publishes no
checksum say so (``sha256: null``) rather than inventing one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, OutputExistsError, did_you_mean
from ..io.atomic import atomic_folder
from ..resources import resources_dir
from .card import ModelCard
from .folder import CARD_FILE, read_card, verify_model_folder

__all__ = ["CatalogEntry", "Catalog", "user_models_dir", "load_catalog"]

_ENTRY_FIELDS = {"id", "name", "method", "input_kind", "labels", "architecture", "description", "folder", "source",
                 "default_for", "license", "citation"}


def user_models_dir() -> Path:
    return Path(os.environ.get("TOOTHSEG_MODELS_DIR", Path.home() / ".toothseg" / "models"))


@dataclass
class CatalogEntry:
    """One selectable model, bundled, installed by the user, or available upstream."""

    id: str
    name: str
    input_kind: str
    method: str = ""
    labels: str = ""
    architecture: str = ""
    description: str = ""
    folder: Path | None = None
    source: dict[str, Any] = field(default_factory=dict)
    default_for: list[str] = field(default_factory=list)
    license: str = ""
    citation: str = ""
    origin: str = "catalogue"

    @property
    def available(self) -> bool:
        return self.folder is not None and (self.folder / "model.json").is_file()

    def status(self) -> str:
        if self.available:
            return "installed" if self.origin == "user" else "bundled"
        return "not installed"


def _entry_from_json(item: dict[str, Any], base: Path) -> CatalogEntry:
    if not isinstance(item, dict) or not item.get("id") or not item.get("name"):
        raise InputError(f"catalogue entry needs 'id' and 'name': {item!r}")
    unknown = set(item) - _ENTRY_FIELDS
    if unknown:
        raise InputError(f"catalogue entry {item['id']!r} has unknown field(s): {', '.join(sorted(unknown))}")
    if item.get("input_kind") not in ("3d", "2d"):
        raise InputError(f"catalogue entry {item['id']!r}: input_kind must be '3d' or '2d'")
    if not item.get("folder") and not item.get("source"):
        raise InputError(f"catalogue entry {item['id']!r} needs a bundled 'folder' or a 'source'")
    folder = base / item["folder"] if item.get("folder") else None
    values = {k: v for k, v in item.items() if k != "folder"}
    return CatalogEntry(folder=folder, **values)


@dataclass
class Catalog:
    entries: list[CatalogEntry]

    def get(self, model_id: str) -> CatalogEntry:
        for entry in self.entries:
            if entry.id == model_id:
                return entry

        hint = did_you_mean(model_id, [e.id for e in self.entries])
        raise InputError(f"no model {model_id!r} in the catalogue{hint}; see 'toothseg models list'")

    def default(self, input_kind: str) -> CatalogEntry:
        for entry in self.entries:
            if input_kind in entry.default_for and entry.available:
                return entry
        raise InputError(f"no installed default model for {input_kind} inputs; pass --model ID or DIR")

    def resolve(self, model: str | os.PathLike[str]) -> Path:
        """A model folder from a catalogue ID or a path."""
        text = os.fspath(model)
        if not text.strip():
            raise InputError("no model given: pass a catalogue ID (see 'toothseg models list') or a model folder")
        path = Path(text)
        if (path / CARD_FILE).is_file():
            return path
        if path.is_dir():
            raise InputError(f"{path} is a folder but not a model folder: it has no {CARD_FILE} (a model folder "
                             f"holds {CARD_FILE} and its weights; see 'toothseg models import-checkpoint')")
        if path.is_file():
            raise InputError(f"{path} is a file; a model is a folder holding {CARD_FILE} and its weights "
                             "(a training checkpoint is converted with 'toothseg models import-checkpoint')")
        if os.sep in text or (os.altsep and os.altsep in text) or text.startswith("."):
            raise InputError(f"no model folder {text}: it does not exist")
        entry = self.get(text)
        if not entry.available:
            how = entry.source.get("how", "see 'toothseg models show " + entry.id + "'")
            raise InputError(f"model {entry.id!r} is not installed: {how}")
        return entry.folder  # type: ignore[return-value]

    def add_folder(self, folder: str | os.PathLike[str], overwrite: bool = False) -> CatalogEntry:
        """Verify a model folder and copy it into the user's model folder under its card ID."""
        folder = Path(folder)
        verify_model_folder(folder)
        card = read_card(folder)
        bundled = [e for e in self.entries if e.id == card.id and e.origin != "user" and e.available]
        if bundled:  # the bundled folder would win on the next start; say so now
            raise OutputExistsError(f"{card.id!r} is the ID of a bundled model; give the model another ID "
                                    f"('toothseg models pack {folder} NEW_FOLDER --id NEW_ID')")
        target = user_models_dir() / card.id
        if target.exists() and not overwrite:
            raise OutputExistsError(f"a model {card.id!r} is already installed at {target} (use --overwrite)")
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_folder(target, overwrite=True) as staging:  # the installed copy is replaced only once whole
            shutil.copytree(folder, staging, dirs_exist_ok=True)
        for known in self.entries:
            if known.id == card.id and known.origin != "user":  # an upstream catalogue model, now installed
                known.folder, known.origin = target, "user"
                return known
        self.entries = [e for e in self.entries if e.id != card.id]  # replaced (--overwrite)
        entry = _user_entry(card, target)
        self.entries.append(entry)
        return entry


def _user_entry(card: ModelCard, folder: Path) -> CatalogEntry:
    return CatalogEntry(id=card.id, name=card.name or card.id, input_kind=card.input_kind,
                        method=str(card.provenance.get("method", "")),
                        labels=f"{card.num_classes - 1} classes ({card.label_table.name})" + (
                            f", numbered as {card.output_table.name}" if card.output_label_table else ""),
                        architecture=card.architecture, description=card.description, folder=folder,
                        license=card.license, origin="user")


def load_catalog(path: str | os.PathLike[str] | None = None, include_user: bool = True) -> Catalog:
    """The bundled catalogue plus every valid model folder in :func:`user_models_dir`."""
    path = Path(path) if path else resources_dir() / "Models" / "catalog.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read the model catalogue ({exc})") from exc
    entries = [_entry_from_json(item, path.parent) for item in data.get("models", [])]
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise InputError(f"{path}: duplicate model IDs")
    if include_user and user_models_dir().is_dir():
        by_id = {e.id: e for e in entries}
        for folder in sorted(user_models_dir().iterdir()):
            if folder.name.startswith(".") or not (folder / "model.json").is_file():
                continue  # hidden: a copy being installed (or left by a killed install), never a model
            known = by_id.get(folder.name)
            if known is not None:
                if not known.available:  # a catalogue model the user installed (models get / add)
                    known.folder, known.origin = folder, "user"
                continue
            try:
                entries.append(_user_entry(read_card(folder), folder))
            except InputError:
                continue  # a broken user folder must not hide the others; 'models verify' reports it
    return Catalog(entries)
