"""Model folders: ``model.json`` + ``weights.safetensors``, written atomically, verified on load.

Loading checks the card's schema, that its architecture is registered, that the weights' SHA-256
matches the card (a tampered or truncated file is refused before it is parsed), and that every
tensor fits the network (the first misfit is named). Composite models (ensembles, cascades) load
their member folders the same way.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from ..errors import InputError, OutputExistsError
from ..io.atomic import atomic_folder, atomic_output, atomic_write_text
from ..networks.build import build_network, get_spec
from ..volume import Volume
from .card import ModelCard, check_model_id
from .checkpoints import check_state_dict_fits, read_state_dict, sha256_file
from .quantize import check_no_raw_int8, compress_state_dict, decompress_state_dict

__all__ = ["LoadedModel", "save_model_folder", "load_model_folder", "read_card", "verify_model_folder",
           "pack_model_folder"]

CARD_FILE = "model.json"


@dataclass
class LoadedModel:
    """A model ready to run: its card, its network (eval mode) or its member models."""

    card: ModelCard
    folder: Path
    network: Any = None
    members: list[tuple[str, "LoadedModel"]] = field(default_factory=list)

    def check_input(self, volume: Volume) -> None:
        """Refuse a 3D scan for a 2D model and the reverse, with a clear message."""
        if self.card.input_kind == "2d" and not volume.is_2d:
            raise InputError(f"model '{self.card.id}' segments 2D panoramic X-rays; the input is a 3D volume "
                             f"({volume.describe()})")
        if self.card.input_kind == "3d" and volume.is_2d:
            raise InputError(f"model '{self.card.id}' segments 3D scans; the input is a 2D image ({volume.describe()})")


def read_card(folder: str | os.PathLike[str]) -> ModelCard:
    folder = Path(folder)
    path = folder / CARD_FILE
    if not path.is_file():
        raise InputError(f"{folder}: not a model folder (no {CARD_FILE})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    return ModelCard.from_json(text)


def save_model_folder(network, card: ModelCard, folder: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``weights.safetensors`` then ``model.json`` (with the weights' SHA-256) into ``folder``."""
    get_spec(card.architecture)
    folder = Path(folder)
    if (folder / CARD_FILE).exists() and not overwrite:
        raise OutputExistsError(f"{folder} already holds a model (use --overwrite to replace it)")
    folder.mkdir(parents=True, exist_ok=True)
    if network is not None:
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        card.weights_file = "weights.safetensors"
        with atomic_output(folder / card.weights_file, overwrite=True) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "toothseg_model": card.id})
        card.weights_sha256 = sha256_file(folder / card.weights_file)
    elif not card.is_composite:
        raise InputError("a model without members needs a network to save")
    atomic_write_text(folder / CARD_FILE, card.to_json() + "\n")
    return folder


def _build(card: ModelCard):
    spec = get_spec(card.architecture)
    if card.spatial_dims not in spec.dims:
        raise InputError(f"model card says {card.spatial_dims}D but '{card.architecture}' is {spec.dims}D only")
    kwargs = {**card.kwargs, "num_classes": card.num_classes}
    if "spatial_dims" in kwargs and kwargs["spatial_dims"] != card.spatial_dims:
        raise InputError("model card spatial_dims and kwargs.spatial_dims disagree")
    kwargs.setdefault("spatial_dims", card.spatial_dims)
    return build_network(card.architecture, **kwargs)


def load_model_folder(folder: str | os.PathLike[str], device: str = "cpu", verify: bool = True,
                      _depth: int = 0) -> LoadedModel:
    """Load and verify a model folder (and, for ensembles/cascades, its members).

    Raises:
        InputError: missing/invalid card, unknown architecture, hash mismatch, unreadable or
            ill-fitting weights, pickled code in a ``.pt`` file.
    """
    folder = Path(folder)
    if _depth > 3:
        raise InputError(f"{folder}: model members nest too deeply")
    card = read_card(folder)
    loaded = LoadedModel(card, folder)
    if card.is_composite:
        for member in card.members:
            sub = (folder / member["path"]).resolve()
            if folder.resolve() not in sub.parents:
                raise InputError(f"{folder}: member path {member['path']!r} leaves the model folder")
            member_model = load_model_folder(sub, device, verify, _depth + 1)
            # the composite card's class_values number the output: a member that numbers its channels
            # otherwise would put wrong tooth numbers on the result without any other sign
            if member["role"] != "coarse" and member_model.card.class_values != card.class_values:
                raise InputError(f"{folder}: member {member['path']!r} numbers its output channels "
                                 f"{member_model.card.class_values[:6]}…, the model card "
                                 f"{card.class_values[:6]}…; they must be the same")
            loaded.members.append((member["role"], member_model))
        return loaded
    weights = folder / card.weights_file
    if not weights.is_file():
        raise InputError(f"{folder}: weights file {card.weights_file} is missing")
    if verify:
        if not card.weights_sha256:
            raise InputError(f"{folder}: the model card has no weights_sha256 to verify against")
        actual = sha256_file(weights)
        if actual != card.weights_sha256:
            raise InputError(f"{weights}: SHA-256 mismatch (file {actual[:12]}…, card {card.weights_sha256[:12]}…); "
                             "the weights were changed or damaged")
    network = _build(card)
    state = decompress_state_dict(read_state_dict(weights))
    check_state_dict_fits(network, state, card.architecture)
    check_no_raw_int8(state, network.state_dict())
    network.load_state_dict(state, strict=True)
    network.eval()
    loaded.network = network.to(device)
    return loaded


def verify_model_folder(folder: str | os.PathLike[str]) -> list[str]:
    """Full check of a folder (card, hash, weights fit); returns one line per verified part."""
    loaded = load_model_folder(folder)
    lines = []

    def walk(model: LoadedModel, prefix: str) -> None:
        if model.members:
            for role, member in model.members:
                walk(member, f"{prefix}{role}:")
        else:
            params = sum(p.numel() for p in model.network.parameters())
            lines.append(f"{prefix}{model.card.id}: {model.card.architecture}, {params:,} parameters, "
                         f"sha256 {model.card.weights_sha256[:16]}… OK")

    walk(loaded, "")
    return lines


def _model_folders(folder: Path) -> list[Path]:
    """``folder`` and, for a composite model, every member folder below it (depth first)."""
    card = read_card(folder)
    found = [folder]
    for member in card.members:
        found += _model_folders(folder / member["path"])
    return found


def pack_model_folder(source: str | os.PathLike[str], destination: str | os.PathLike[str], half: bool = False,
                      overwrite: bool = False, new_id: str | None = None, new_name: str | None = None,
                      weights_dtype: str | None = None) -> Path:
    """Copy a verified model folder (members included) to ``destination``, for bundling or sharing.

    ``weights_dtype`` ``float16`` (or ``half``) halves the files, ``int8`` quarters the large ones
    (per-output-channel scales, :mod:`.quantize`); the networks still run in float32, so predictions
    move by rounding only — measure the copy's accuracy before publishing it. Each card gets its new
    SHA-256 and says so in ``provenance.weights_dtype``. ``new_id``/``new_name`` rename the copy (e.g. a
    locally changed copy of a bundled model, which cannot be installed under the bundled ID); the card
    keeps the source's ID in ``provenance.packed_from``. The copy is built beside ``destination`` and renamed
    into place.
    """
    source, destination = Path(source), Path(destination)
    if half and weights_dtype not in (None, "float16"):
        raise InputError(f"half=True (float16) and weights_dtype={weights_dtype!r} disagree")
    weights_dtype = "float16" if half else weights_dtype
    if new_id is not None:
        check_model_id(new_id, "--id")
    verify_model_folder(source)
    if destination.resolve().is_relative_to(source.resolve()) and destination.resolve() != source.resolve():
        raise InputError(f"{destination} lies inside the model folder {source}; choose a folder outside it")
    with atomic_folder(destination, overwrite=overwrite) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        for folder in _model_folders(staging):
            card = read_card(folder)
            if weights_dtype is not None and not card.is_composite:
                weights = folder / card.weights_file
                state = compress_state_dict(read_state_dict(weights), weights_dtype)
                with atomic_output(weights.with_suffix(".safetensors"), overwrite=True) as tmp:
                    save_file(state, str(tmp), metadata={"format": "pt", "toothseg_model": card.id})
                if weights.suffix != ".safetensors":
                    weights.unlink()
                card.weights_file = weights.with_suffix(".safetensors").name
                card.weights_sha256 = sha256_file(folder / card.weights_file)
                card.provenance = {**(card.provenance or {}), "weights_dtype": weights_dtype}
                atomic_write_text(folder / CARD_FILE, card.to_json() + "\n")
        if new_id is not None or new_name is not None:
            card = read_card(staging)
            card.provenance = {**(card.provenance or {}), "packed_from": card.id}
            card.id = new_id if new_id is not None else card.id
            card.name = new_name if new_name is not None else card.name
            atomic_write_text(staging / CARD_FILE, card.to_json() + "\n")
        verify_model_folder(staging)
    return destination


#: Card fields every member of an ensemble must share: the ensemble is run with its first member's
#: preprocessing, windows and post-processing, and averages class probabilities channel by channel.
ENSEMBLE_SHARED_FIELDS = ("spatial_dims", "input_kind", "class_values", "spacing_zyx", "image_extent_yx",
                          "intensity", "patch_size", "mirror_axes", "reorient", "sliding_window", "postprocessing",
                          "nnunet")


def ensemble_model_folder(members: list[str | os.PathLike[str]], destination: str | os.PathLike[str],
                          model_id: str, name: str | None = None, half: bool = False,
                          overwrite: bool = False, weights_dtype: str | None = None) -> Path:
    """One model folder whose prediction is the mean class probability of ``members`` (snapshots of one
    run, folds, or other runs of one recipe).

    Each member is a verified, non-composite model folder; they must agree on everything that decides
    what a window sees and what a channel means (:data:`ENSEMBLE_SHARED_FIELDS`: the first field that
    differs is named). The members are copied as sub-folders ``member_0``, ``member_1`` … (stored as
    ``weights_dtype``, or float16 with ``half``); the top card is the first member's with the members
    listed and their IDs and SHA-256 in ``provenance.ensemble_of``. Built beside ``destination`` and renamed into place.
    """
    check_model_id(model_id, "--id")
    if len(members) < 2:
        raise InputError("an ensemble needs at least two member model folders")
    cards = []
    for member in members:
        verify_model_folder(member)
        card = read_card(member)
        if card.is_composite:
            raise InputError(f"{member}: model {card.id!r} is itself an ensemble or cascade; give its plain "
                             "members instead")
        cards.append(card)
    first = cards[0]
    for member, card in zip(members[1:], cards[1:]):
        for field_name in ENSEMBLE_SHARED_FIELDS:
            if getattr(card, field_name) != getattr(first, field_name):
                raise InputError(f"{member}: its {field_name} ({getattr(card, field_name)!r}) differs from "
                                 f"{members[0]}'s ({getattr(first, field_name)!r}); ensemble members must be "
                                 "run alike")
        if card.label_table.to_dict() != first.label_table.to_dict():
            raise InputError(f"{member}: its label table differs from {members[0]}'s")
    destination = Path(destination)
    with atomic_folder(destination, overwrite=overwrite) as staging:
        entries = []
        for index, member in enumerate(members):
            path = f"member_{index}"
            pack_model_folder(member, staging / path, half=half, weights_dtype=weights_dtype)
            entries.append({"role": "ensemble", "path": path})
        top = ModelCard(**{**{f: getattr(first, f) for f in first.__dataclass_fields__},
                           "id": model_id, "name": name or f"ensemble of {len(members)} ({first.name or first.id})",
                           "members": entries, "metrics": {}, "weights_sha256": "",
                           "provenance": {"ensemble_of": [{"id": c.id, "weights_sha256": c.weights_sha256,
                                                           "provenance": c.provenance} for c in cards]}})
        save_model_folder(None, top, staging, overwrite=True)
        verify_model_folder(staging)
    return destination
