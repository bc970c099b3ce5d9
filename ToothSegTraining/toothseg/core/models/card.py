"""The model card (``model.json``): everything needed to run a network correctly, as data.

A model folder holds ``model.json`` and ``weights.safetensors``. The card says which registered
architecture to build with which arguments, what the output channels mean (label table and the
label value of each channel), how inputs must be prepared (spacing, intensity normalisation,
patch size), which mirror axes test-time augmentation may use, where the model came from and how
well it did, and the SHA-256 of its weights. An ensemble (RAIL's four students) or a
coarse-to-fine cascade is a card whose ``members`` are sub-folders.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InputError
from ..labels import TOOTH_JAW, LabelTable
from ..names import PLAIN_NAME_RULE, is_plain_name, is_plain_relative_path
from ..postprocessing import step_problems
from .nnunet_settings import NnUNetSettings

__all__ = ["ModelCard", "IntensityNormalization", "SCHEMA_VERSION", "MEMBER_ROLES"]

SCHEMA_VERSION = 1
MEMBER_ROLES = ("ensemble", "coarse", "fine")
_INTENSITY_MODES = ("clip_zscore", "clip_scale", "zscore", "percentile_zscore", "none")


def model_id_problem(model_id: str) -> str | None:
    """Why ``model_id`` cannot be a model ID, or None. IDs name folders (``models add`` installs a
    folder under its ID), so a card from elsewhere must not be able to name ``../..``."""
    return None if is_plain_name(model_id) else f"model ID {model_id!r}: {PLAIN_NAME_RULE}"


def check_model_id(model_id: str, where: str) -> None:
    """Refuse a model ID before any work (reading checkpoints, training), naming where it came from."""
    problem = model_id_problem(model_id)
    if problem:
        raise InputError(f"{where}: {problem}")


@dataclass
class IntensityNormalization:
    """How raw intensities become network input.

    Modes: ``clip_zscore`` (clip to ``clip`` then ``(x − mean)/std``, nnU-Net's CT scheme),
    ``clip_scale`` (clip then map ``clip`` to [0, 1], RAIL's [500, 2500]), ``zscore`` (per image),
    ``percentile_zscore`` (clip to the image's 0.5/99.5 percentiles, then per-image z-score, robust to
    unknown scanner calibration), ``none``.
    """

    mode: str = "percentile_zscore"
    clip: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in _INTENSITY_MODES:
            raise InputError(f"unknown intensity normalisation {self.mode!r} (known: {', '.join(_INTENSITY_MODES)})")
        if self.mode in ("clip_zscore", "clip_scale") and (self.clip is None or len(self.clip) != 2):
            raise InputError(f"intensity mode {self.mode!r} needs a clip range [low, high]")
        if self.mode == "clip_zscore" and (self.mean is None or not self.std):
            raise InputError("intensity mode 'clip_zscore' needs mean and a non-zero std")
        if self.clip is not None:
            self.clip = (float(self.clip[0]), float(self.clip[1]))


def _sliding_window_problems(window: Any, dims: int) -> list[str]:
    if not isinstance(window, dict) or set(window) - {"strides", "importance"}:
        return ["sliding_window takes 'strides' and 'importance' only"]
    problems = []
    strides = window.get("strides")
    if strides is not None and (not isinstance(strides, list) or len(strides) != dims
                                or not all(isinstance(s, int) and s > 0 for s in strides)):
        problems.append(f"sliding_window strides must be {dims} positive integers (z, y, x order), got {strides}")
    if window.get("importance", "gaussian") not in ("gaussian", "uniform"):
        problems.append(f"sliding_window importance must be 'gaussian' or 'uniform', got {window.get('importance')!r}")
    return problems


@dataclass
class ModelCard:
    """Contents of ``model.json``. Spatial lists (spacing, patch) are in **array order (z, y, x)**."""

    id: str
    architecture: str
    kwargs: dict[str, Any]
    spatial_dims: int
    label_table: LabelTable
    class_values: list[int]
    input_kind: str = "3d"
    name: str = ""
    description: str = ""
    spacing_zyx: list[float] | None = None
    #: 2D only: the extent (y, x), in the units of ``spacing_zyx``, a whole X-ray is taken to span,
    #: whatever its size and pixel spacing (models trained on X-rays resized to one size); None: the
    #: image's own pixel spacing. See :func:`toothseg.core.preprocessing.whole_image_spacing`.
    image_extent_yx: list[float] | None = None
    intensity: IntensityNormalization = field(default_factory=IntensityNormalization)
    patch_size: list[int] | None = None
    mirror_axes: list[int] = field(default_factory=list)
    members: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    #: True: the network sees the scan reoriented to LPS axes (ToothSeg's models, trained so); False: in
    #: the order the file stores it, as RAIL's and nnU-Net's own code feed their networks
    reorient: bool = True
    #: how its windows are placed and weighted when not ToothSeg's default (half-patch overlap, Gaussian):
    #: ``{"strides": [z, y, x], "importance": "gaussian" | "uniform"}`` (RAIL's test code: fixed strides,
    #: every window weighted 1)
    sliding_window: dict[str, Any] | None = None
    #: post-processing steps its authors apply (:mod:`toothseg.core.postprocessing`); None: ToothSeg's
    #: defaults, ``[]``: none (imported models, run as their own code runs them)
    postprocessing: list[dict[str, Any]] | None = None
    #: an imported nnU-Net model's plan (:class:`NnUNetSettings`): inference then does nnU-Net's arithmetic,
    #: and ``spacing_zyx``/``patch_size``/``mirror_axes`` are in nnU-Net's transposed axis order
    nnunet: dict[str, Any] | None = None
    #: the labels of the *result* when post-processing renumbers the network's classes (a tooth-boundary
    #: network whose teeth are numbered from the arch: ``label_table`` interior/boundary, this one FDI);
    #: None: the result carries ``label_table``'s values
    output_label_table: LabelTable | None = None
    weights_file: str = "weights.safetensors"
    weights_sha256: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        problems = []
        id_problem = model_id_problem(self.id)
        if id_problem:
            problems.append(id_problem)
        if not is_plain_relative_path(self.weights_file) or "/" in self.weights_file:
            problems.append(f"weights_file must be a file name in the model folder, got {self.weights_file!r}")
        if self.spatial_dims not in (2, 3):
            problems.append(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.input_kind not in ("3d", "2d"):
            problems.append(f"input_kind must be '3d' or '2d', got {self.input_kind!r}")
        if not self.class_values or self.class_values[0] != 0:
            problems.append("class_values must start with 0 (background) for channel 0")
        elif len(set(self.class_values)) != len(self.class_values):
            problems.append("class_values has repeated label values")
        else:
            missing = [v for v in self.class_values[1:] if v not in self.label_table]
            if missing:
                problems.append(f"class_values {missing} are not in the label table")
        for name, values in (("spacing_zyx", self.spacing_zyx), ("patch_size", self.patch_size)):
            if values is not None and len(values) != self.spatial_dims:
                problems.append(f"{name} needs {self.spatial_dims} entries (z, y, x order), got {values}")
        extent = self.image_extent_yx
        if extent is not None and (self.spatial_dims != 2 or len(extent) != 2 or min(extent) <= 0):
            problems.append(f"image_extent_yx is for 2D models: two values (y, x) > 0, got {extent}")
        if any(a < 0 or a >= self.spatial_dims for a in self.mirror_axes):
            problems.append(f"mirror_axes must be array axes 0..{self.spatial_dims - 1}, got {self.mirror_axes}")
        for member in self.members:
            if member.get("role") not in MEMBER_ROLES or not member.get("path"):
                problems.append(f"member {member} needs a 'path' and a role in {MEMBER_ROLES}")
            elif not is_plain_relative_path(member["path"]):
                problems.append(f"member path {member['path']!r} must be a sub-folder of the model folder")
        if self.sliding_window is not None:
            problems += _sliding_window_problems(self.sliding_window, self.spatial_dims)
        if self.postprocessing is not None:
            problems += step_problems(self.postprocessing) or self._steps_for_other_classes()
        if self.output_label_table is not None and not self.postprocessing:
            problems.append("output_label_table needs the post-processing steps that make those labels "
                            "(e.g. teeth_from_boundary)")
        if self.nnunet is not None:
            try:
                self.nnunet = NnUNetSettings.from_dict(self.nnunet).to_dict()
            except InputError as exc:
                problems.append(str(exc))
            if any(member.get("role") != "ensemble" for member in self.members):
                problems.append("an nnU-Net model's members must be folds (role 'ensemble')")
        if self.schema_version > SCHEMA_VERSION:
            problems.append(f"schema version {self.schema_version} is newer than this ToothSeg ({SCHEMA_VERSION})")
        if problems:
            raise InputError(f"model card {self.id!r} is invalid: " + "; ".join(problems))

    def _steps_for_other_classes(self) -> list[str]:
        """Steps that read classes this network does not predict: ``teeth_from_boundary`` reads tooth
        interior, boundary and type classes (1-5; FDI teeth would vanish from its result), ``teeth_from_jaws``
        upper and lower tooth (a binary network's teeth would all become upper ones)."""
        names = {step.get("name") for step in self.postprocessing or []}
        problems = []
        if "teeth_from_boundary" in names and (max(self.class_values, default=0) > 5 or any(
                self.label_table[v].fdi is not None for v in self.class_values[1:] if v in self.label_table)):
            problems.append("post-processing teeth_from_boundary reads tooth interior/boundary classes (1-5), "
                            f"but this network predicts label table {self.label_table.name!r} "
                            f"(classes {self.class_values})")
        if "teeth_from_jaws" in names and self.label_table.name != TOOTH_JAW:
            problems.append(f"post-processing teeth_from_jaws reads upper/lower tooth classes ({TOOTH_JAW}), "
                            f"but this network predicts label table {self.label_table.name!r}")
        return problems

    @property
    def num_classes(self) -> int:
        return len(self.class_values)

    @property
    def nnunet_settings(self) -> NnUNetSettings | None:
        """The nnU-Net plan this model must be run with, or None (ToothSeg's own pipeline)."""
        return NnUNetSettings.from_dict(self.nnunet) if self.nnunet is not None else None

    @property
    def input_axes(self) -> str:
        """The axes ``spacing_zyx`` and ``patch_size`` are listed in, in words (model panels, ``models show``)."""
        settings = self.nnunet_settings
        if settings is not None:
            return f"nnU-Net's axes: the stored (z, y, x) transposed by {settings.transpose_forward}"
        return "z, y, x" if self.reorient else "z, y, x as stored"

    @property
    def output_table(self) -> LabelTable:
        """The label table of what the model's prediction (after its post-processing) holds."""
        return self.output_label_table if self.output_label_table is not None else self.label_table

    @property
    def is_composite(self) -> bool:
        """True for ensembles and cascades, whose weights live in member folders."""
        return bool(self.members)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["label_table"] = self.label_table.to_dict()
        if self.output_label_table is None:
            del data["output_label_table"]  # cards without it stay as earlier versions wrote them
        else:
            data["output_label_table"] = self.output_label_table.to_dict()
        data["intensity"] = {k: v for k, v in asdict(self.intensity).items() if v is not None}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        if not isinstance(data, dict):
            raise InputError("model card must be a JSON object")
        required = ("id", "architecture", "kwargs", "spatial_dims", "label_table", "class_values")
        missing = [key for key in required if key not in data]
        if missing:
            raise InputError(f"model card is missing {', '.join(missing)}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"model card has unknown field(s): {', '.join(unknown)}")
        values = dict(data)
        values["label_table"] = LabelTable.from_dict(data["label_table"])
        if data.get("output_label_table") is not None:
            values["output_label_table"] = LabelTable.from_dict(data["output_label_table"])
        values["intensity"] = IntensityNormalization(**data.get("intensity", {}))
        if not isinstance(values["kwargs"], dict):
            raise InputError("model card 'kwargs' must be an object")
        try:
            values["class_values"] = [int(v) for v in data["class_values"]]
            values["spatial_dims"] = int(data["spatial_dims"])
        except (TypeError, ValueError) as exc:
            raise InputError(f"model card has a malformed field: {exc}") from exc
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "ModelCard":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise InputError(f"model.json is not valid JSON: {exc}") from exc
