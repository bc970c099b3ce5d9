"""Label tables: what each value of a label map means (FDI teeth, pulp, jaws), with names,
colours, DICOM/SNOMED CT terminology and the left⇄right swap used by every sagittal mirror.

FDI (ISO 3950) two-digit notation: the first digit is the quadrant seen from the patient
(1 upper right, 2 upper left, 3 lower left, 4 lower right; 5–8 the same for deciduous teeth), the
second the position from the midline (1 central incisor … 8 third molar). Mirroring an image
across the sagittal plane turns a right tooth into a left one, so labels must be swapped
(1x⇄2x, 3x⇄4x, 5x⇄6x, 7x⇄8x) — :meth:`LabelTable.swap_left_right` does it for arrays.

SNOMED CT codes of individual teeth are those of DICOM CID 4018 (permanent) and CID 4019
(deciduous dentition); jaw codes are SNOMED CT body structures. Classes without an established
code (pulp of one tooth, the mandibular canal) carry no code rather than a made-up one.
"""

from __future__ import annotations

import colorsys
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, LabelError

__all__ = [
    "Code",
    "Terminology",
    "LabelInfo",
    "LabelTable",
    "fdi_name",
    "fdi_of_segment_name",
    "standard_value_of_class_name",
    "is_fdi_tooth",
    "label_table_named",
    "TERMINOLOGY_CONTEXT",
    "TOOTH_BOUNDARY",
    "TOOTH_CONTACT",
    "TOOTH_TYPE_BOUNDARY",
    "INSTANCE_TABLES",
    "TOOTH_JAW",
    "UPPER_TOOTH",
    "LOWER_TOOTH",
    "jaw_classes",
]

#: Context name written into Slicer ``TerminologyEntry`` tags.
TERMINOLOGY_CONTEXT = "Segmentation category and type - ToothSeg dental"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"

_QUADRANT_NAMES = {1: "upper right", 2: "upper left", 3: "lower left", 4: "lower right",
                   5: "upper right", 6: "upper left", 7: "lower left", 8: "lower right"}
_PERMANENT_POSITIONS = {1: "central incisor", 2: "lateral incisor", 3: "canine", 4: "first premolar",
                        5: "second premolar", 6: "first molar", 7: "second molar", 8: "third molar"}
_DECIDUOUS_POSITIONS = {1: "central incisor", 2: "lateral incisor", 3: "canine", 4: "first molar",
                        5: "second molar"}

# SNOMED CT concept ids, DICOM CID 4018 (permanent dentition), keyed by FDI number.
_SCT_PERMANENT = {
    18: "68085002", 17: "863902006", 16: "865995000", 15: "36492000", 14: "57826002", 13: "860767006",
    12: "424877001", 11: "422653006", 21: "424399000", 22: "423185002", 23: "860780009", 24: "61897005",
    25: "23226009", 26: "865988009", 27: "863901004", 28: "87704003", 38: "74344005", 37: "863898000",
    36: "866006002", 35: "24573005", 34: "2400006", 33: "860782001", 32: "423331005", 31: "425106001",
    41: "424575004", 42: "423937004", 43: "860785004", 44: "80140008", 45: "8873007", 46: "866005003",
    47: "863899008", 48: "38994002",
}
# SNOMED CT concept ids, DICOM CID 4019 (deciduous dentition), keyed by FDI number.
_SCT_DECIDUOUS = {
    51: "88824007", 52: "65624003", 53: "30618001", 54: "17505006", 55: "27855007",
    61: "51678005", 62: "43622005", 63: "73937000", 64: "45234009", 65: "51943008",
    71: "89552004", 72: "14770005", 73: "43281008", 74: "38896004", 75: "49330006",
    81: "67834006", 82: "22445006", 83: "6062009", 84: "58646007", 85: "61868007",
}
_SCT_CATEGORY_ANATOMY = ("SCT", "123037004", "Anatomical Structure")

#: Extra (non-tooth) classes, with values that cannot collide with FDI numbers.
MAXILLA, MANDIBLE, CANAL_LEFT, CANAL_RIGHT, PULP_ANY, TOOTH_ANY = 1, 2, 3, 4, 5, 9
PULP_OFFSET = 100  # pulp of tooth FDI n has value 100 + n (e.g. 111 = pulp of 11)


@dataclass(frozen=True)
class Code:
    """A coded concept: coding scheme designator, code value, code meaning."""

    scheme: str
    value: str
    meaning: str

    def as_list(self) -> list[str]:
        return [self.scheme, self.value, self.meaning]


@dataclass(frozen=True)
class Terminology:
    """DICOM segmentation terminology (category, type, modifier) of one class."""

    category: Code
    type: Code
    type_modifier: Code | None = None

    def to_slicer(self) -> dict[str, Any]:
        """The dict form that ``slicerio`` turns into a Slicer ``TerminologyEntry`` tag."""
        entry: dict[str, Any] = {
            "contextName": TERMINOLOGY_CONTEXT,
            "category": self.category.as_list(),
            "type": self.type.as_list(),
            "anatomicContextName": ANATOMIC_CONTEXT,
        }
        if self.type_modifier is not None:
            entry["typeModifier"] = self.type_modifier.as_list()
        return entry

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Terminology":
        modifier = data.get("type_modifier")
        return cls(Code(**data["category"]), Code(**data["type"]), Code(**modifier) if modifier else None)


@dataclass(frozen=True)
class LabelInfo:
    """One class of a label map.

    Attributes:
        value: the integer stored in the label map.
        key: stable machine name (``tooth_11``, ``pulp_11``, ``mandible``).
        name: English name shown to people (``upper right central incisor``).
        color: RGB in [0, 1].
        group: ``tooth``, ``pulp``, ``jaw``, ``canal`` or ``other``.
        fdi: FDI tooth number for teeth and pulps, else None.
        terminology: coded meaning, when a standard code exists.
    """

    value: int
    key: str
    name: str
    color: tuple[float, float, float]
    group: str = "other"
    fdi: int | None = None
    terminology: Terminology | None = None

    @property
    def segment_name(self) -> str:
        """Segment name in Slicer, e.g. ``Tooth 11 (upper right central incisor)``."""
        if self.group == "tooth" and self.fdi is not None:
            return f"Tooth {self.fdi} ({self.name})"
        if self.group == "pulp" and self.fdi is not None:
            return f"Pulp {self.fdi} ({self.name.removeprefix('pulp of ')})"
        return self.name[:1].upper() + self.name[1:]

    @property
    def file_stem(self) -> str:
        """File-name stem starting with the label value, e.g. ``11_upper_right_central_incisor``."""
        safe = "".join(c if c.isalnum() else "_" for c in self.name.lower()).strip("_")
        while "__" in safe:
            safe = safe.replace("__", "_")
        safe = safe.encode("utf-8")[:120].decode("utf-8", errors="ignore").rstrip("_")  # file names: 255 bytes
        return f"{self.value}_{safe}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["color"] = [round(c, 4) for c in self.color]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LabelInfo":
        terminology = data.get("terminology")
        return cls(
            value=int(data["value"]),
            key=str(data["key"]),
            name=str(data["name"]),
            color=tuple(float(c) for c in data["color"]),  # type: ignore[arg-type]
            group=str(data.get("group", "other")),
            fdi=None if data.get("fdi") is None else int(data["fdi"]),
            terminology=Terminology.from_dict(terminology) if terminology else None,
        )


def is_fdi_tooth(value: int) -> bool:
    """True for permanent (11–48) and deciduous (51–85) FDI tooth numbers."""
    quadrant, position = divmod(int(value), 10)
    if 1 <= quadrant <= 4:
        return 1 <= position <= 8
    if 5 <= quadrant <= 8:
        return 1 <= position <= 5
    return False


_FDI_SEGMENT_NAME = re.compile(r"^\s*(?:tooth|fdi)\s*(\d{2})\b", re.IGNORECASE)


def fdi_of_segment_name(name: str) -> int | None:
    """The FDI tooth number a segment's name gives (``Tooth 36 (lower left first molar)``, ``tooth 36``,
    ``FDI 36``), else None (pulp, jaws, a user's own segment). The one reading of names that the
    ``.seg.nrrd`` reader and *Renumber tooth* share."""
    match = _FDI_SEGMENT_NAME.match(name)
    if match is None or not is_fdi_tooth(int(match.group(1))):
        return None
    return int(match.group(1))


#: Other names public datasets give ToothSeg's non-tooth classes (ToothFairy2/3's dataset.json).
_CLASS_NAME_ALIASES = {
    "upper jaw": "maxilla", "upper jawbone": "maxilla", "lower jaw": "mandible", "lower jawbone": "mandible",
    "left inferior alveolar canal": "left mandibular canal", "right inferior alveolar canal": "right mandibular canal",
}


def _normalised_class_name(name: str) -> str:
    text = re.sub(r"\(wisdom tooth\)|\(wisdom\)", " ", name.lower().replace("_", " "))
    text = re.sub(r"\b1st\b", "first", re.sub(r"\b2nd\b", "second", re.sub(r"\b3rd\b", "third", text)))
    text = re.sub(r"\bprimary\b", "deciduous", text)
    text = " ".join(text.split())
    if text.endswith(" pulp"):  # ToothFairy3: "Upper Right Central Incisor Pulp"
        text = "pulp of " + text.removesuffix(" pulp")
    return _CLASS_NAME_ALIASES.get(text, text)


@lru_cache(maxsize=1)
def _standard_values_by_name() -> dict[str, int]:
    return {info.name: value for value, info in LabelTable.fdi(deciduous=True, pulp=True, jaws=True).entries.items()}


def standard_value_of_class_name(name: str) -> int | None:
    """The value of ToothSeg's standard table that a dataset's class name stands for, else None.

    Reads the standard table's own names (``upper right central incisor``, ``pulp of …``,
    ``maxilla``), ``Tooth 36``-style segment names, and the names public datasets use (ToothFairy2/3's
    ``dataset.json``: ``Upper Right Third Molar (Wisdom Tooth)``, ``Upper Right Central Incisor Pulp``,
    ``Lower Jawbone``, ``Left Inferior Alveolar Canal``). Datasets number these classes their own way
    (ToothFairy's lower jaw is 1, our maxilla is 1), so values are matched through names only."""
    text = _normalised_class_name(name)
    return fdi_of_segment_name(text) or _standard_values_by_name().get(text)


def fdi_name(fdi: int) -> str:
    """English name of an FDI tooth number, e.g. ``fdi_name(36) == 'lower left first molar'``."""
    if not is_fdi_tooth(fdi):
        raise LabelError(f"{fdi} is not an FDI tooth number (11–48 permanent, 51–85 deciduous)")
    quadrant, position = divmod(int(fdi), 10)
    positions = _PERMANENT_POSITIONS if quadrant <= 4 else _DECIDUOUS_POSITIONS
    prefix = "" if quadrant <= 4 else "deciduous "
    return f"{prefix}{_QUADRANT_NAMES[quadrant]} {positions[position]}"


def _mirror_fdi(fdi: int) -> int:
    quadrant, position = divmod(int(fdi), 10)
    partner = {1: 2, 2: 1, 3: 4, 4: 3, 5: 6, 6: 5, 7: 8, 8: 7}[quadrant]
    return partner * 10 + position


def _tooth_color(fdi: int) -> tuple[float, float, float]:
    """Deterministic colour: hue by position along the arch, shade by quadrant.

    Neighbouring teeth differ in hue, and the two teeth facing each other across the midline
    (e.g. 11 and 21) differ in saturation/brightness, so every boundary is visible in Slicer.
    """
    quadrant, position = divmod(int(fdi), 10)
    deciduous = quadrant > 4
    base_quadrant = quadrant - 4 if deciduous else quadrant
    hue = ((position - 1) * 0.13 + 0.08) % 1.0
    saturation, value = {1: (0.45, 0.98), 2: (0.70, 0.90), 3: (0.45, 0.80), 4: (0.70, 0.72)}[base_quadrant]
    if deciduous:
        saturation *= 0.6
    return tuple(round(c, 4) for c in colorsys.hsv_to_rgb(hue, saturation, value))  # type: ignore[return-value]


def _sct_meaning(fdi: int) -> str:
    """Code meaning in the style of DICOM CID 4018/4019, e.g. 'Permanent maxillary right canine tooth'."""
    quadrant = fdi // 10
    side_and_kind = fdi_name(fdi).replace("deciduous ", "").split(" ", 1)[1]
    jaw = "maxillary" if quadrant in (1, 2, 5, 6) else "mandibular"
    if quadrant >= 5:
        return f"Deciduous {jaw} {side_and_kind} tooth"
    return f"Permanent maxillary {side_and_kind} tooth" if jaw == "maxillary" else f"Mandibular {side_and_kind} tooth"


def _tooth_info(fdi: int) -> LabelInfo:
    code = _SCT_PERMANENT.get(fdi) or _SCT_DECIDUOUS[fdi]
    terminology = Terminology(Code(*_SCT_CATEGORY_ANATOMY), Code("SCT", code, _sct_meaning(fdi)))
    return LabelInfo(fdi, f"tooth_{fdi}", fdi_name(fdi), _tooth_color(fdi), "tooth", fdi, terminology)


def _pulp_info(fdi: int) -> LabelInfo:
    r, g, b = _tooth_color(fdi)
    color = (round(0.55 + 0.45 * r * 0.3, 4), round(0.15 + 0.2 * g, 4), round(0.15 + 0.2 * b, 4))
    return LabelInfo(PULP_OFFSET + fdi, f"pulp_{fdi}", f"pulp of {fdi_name(fdi)}", color, "pulp", fdi, None)


def _extra_classes() -> list[LabelInfo]:
    anatomy = Code(*_SCT_CATEGORY_ANATOMY)
    return [
        LabelInfo(MAXILLA, "maxilla", "maxilla", (0.945, 0.839, 0.569), "jaw", None,
                  Terminology(anatomy, Code("SCT", "70925003", "Maxilla"))),
        LabelInfo(MANDIBLE, "mandible", "mandible", (0.871, 0.776, 0.396), "jaw", None,
                  Terminology(anatomy, Code("SCT", "91609006", "Mandible"))),
        LabelInfo(CANAL_LEFT, "canal_left", "left mandibular canal", (0.85, 0.40, 0.31), "canal"),
        LabelInfo(CANAL_RIGHT, "canal_right", "right mandibular canal", (0.31, 0.40, 0.85), "canal"),
    ]


@dataclass
class LabelTable:
    """Ordered mapping ``value -> LabelInfo`` plus the left⇄right swap (0 is always background).

    Build one with :meth:`fdi` (the default dental tables), :meth:`from_json` (model cards) or
    :meth:`custom` (research label sets such as RAIL's binary tooth mask).
    """

    entries: dict[int, LabelInfo]
    name: str = "custom"
    swap_pairs: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if 0 in self.entries:
            raise LabelError("label value 0 is reserved for background")
        for value, info in self.entries.items():
            if value != info.value:
                raise LabelError(f"label table key {value} does not match its entry value {info.value}")
            if value < 0:
                raise LabelError(f"label values must be positive, got {value}")
        for a, b in list(self.swap_pairs.items()):
            if self.swap_pairs.get(b, a) != a:
                raise LabelError(f"left/right swap is not symmetric for {a} and {b}")

    # ----------------------------------------------------------------- builders
    @classmethod
    def fdi(cls, permanent: bool = True, deciduous: bool = False, pulp: bool = False,
            jaws: bool = False) -> "LabelTable":
        """The standard dental table: FDI teeth, optionally pulp per tooth, jaws and canals."""
        teeth = [fdi for fdi in sorted(_SCT_PERMANENT) if permanent] + \
                [fdi for fdi in sorted(_SCT_DECIDUOUS) if deciduous]
        infos = [_tooth_info(fdi) for fdi in teeth]
        if pulp:
            infos += [_pulp_info(fdi) for fdi in teeth]
        if jaws:
            infos += _extra_classes()
        entries = {info.value: info for info in sorted(infos, key=lambda i: i.value)}
        swap: dict[int, int] = {}
        for info in entries.values():
            if info.fdi is not None:
                offset = PULP_OFFSET if info.group == "pulp" else 0
                swap[info.value] = _mirror_fdi(info.fdi) + offset
        if jaws:
            swap[CANAL_LEFT], swap[CANAL_RIGHT] = CANAL_RIGHT, CANAL_LEFT
        parts = ["fdi"] + [p for p, on in (("deciduous", deciduous), ("pulp", pulp), ("jaws", jaws)) if on]
        return cls(entries, "-".join(parts), {a: b for a, b in swap.items() if b in entries})

    @classmethod
    def custom(cls, names: Mapping[int, str], name: str = "custom",
               swap_pairs: Mapping[int, int] | None = None) -> "LabelTable":
        """A table for research label sets; FDI values get their standard entry automatically."""
        infos = {}
        for value, label_name in names.items():
            value = int(value)
            if is_fdi_tooth(value) and label_name in ("", None, fdi_name(value)):
                infos[value] = _tooth_info(value)
            else:
                hue = (value * 0.618034) % 1.0
                color = tuple(round(c, 4) for c in colorsys.hsv_to_rgb(hue, 0.6, 0.9))
                key = "".join(c if c.isalnum() else "_" for c in str(label_name).lower())
                infos[value] = LabelInfo(value, key, str(label_name), color)  # type: ignore[arg-type]
        return cls(infos, name, dict(swap_pairs or {}))

    # ---------------------------------------------------------------- queries
    def __contains__(self, value: object) -> bool:
        return value in self.entries

    def __getitem__(self, value: int) -> LabelInfo:
        try:
            return self.entries[int(value)]
        except KeyError:
            raise LabelError(f"label value {value} is not in the label table '{self.name}'") from None

    def __iter__(self):
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def values(self) -> list[int]:
        return list(self.entries)

    @property
    def max_value(self) -> int:
        return max(self.entries, default=0)

    def unknown_values(self, values: Iterable[int]) -> list[int]:
        """Values (other than background) that the table does not define, sorted."""
        return sorted({int(v) for v in values if int(v) != 0 and int(v) not in self.entries})

    def check_array(self, labels: np.ndarray) -> list[int]:
        """Raise :class:`LabelError` listing undefined values; return the values present."""
        present = [int(v) for v in np.unique(labels)]
        unknown = self.unknown_values(present)
        if unknown:
            shown = ", ".join(str(v) for v in unknown[:12]) + (" ..." if len(unknown) > 12 else "")
            raise LabelError(
                f"the label map has {len(unknown)} value(s) not in the label table '{self.name}': {shown}"
            )
        return [v for v in present if v != 0]

    def swap_partner(self, value: int) -> int:
        """The label a voxel of ``value`` gets after a left⇄right mirror (itself if unpaired)."""
        return self.swap_pairs.get(int(value), int(value))

    def swap_lookup(self) -> np.ndarray:
        """Lookup array ``lut`` with ``lut[v]`` = mirrored label of ``v`` (identity elsewhere)."""
        size = max([self.max_value, *self.swap_pairs.keys(), *self.swap_pairs.values(), 0]) + 1
        lut = np.arange(size, dtype=np.int64)
        for a, b in self.swap_pairs.items():
            lut[a] = b
        return lut

    def swap_left_right(self, labels: np.ndarray) -> np.ndarray:
        """Apply the left⇄right swap to a label array (any shape, integer dtype).

        Use it together with any flip across the sagittal plane, never instead of it.
        """
        lut = self.swap_lookup()
        labels = np.asarray(labels)
        if labels.size and int(labels.max()) >= lut.size:
            return np.where(labels < lut.size, lut[np.minimum(labels, lut.size - 1)], labels).astype(labels.dtype)
        return lut[labels].astype(labels.dtype)

    def channel_swap_permutation(self, class_values: list[int]) -> list[int]:
        """Permutation of network output channels for a sagittal flip.

        ``class_values[c]`` is the label value of channel ``c`` (0 = background). The result ``perm``
        satisfies ``probs_flipped_back[:, c] = probs[:, perm[c]]``.
        """
        index = {v: c for c, v in enumerate(class_values)}
        return [index.get(self.swap_partner(v), c) for c, v in enumerate(class_values)]

    def subset(self, values: Iterable[int]) -> "LabelTable":
        """A table restricted to ``values`` (e.g. the teeth present in one scan)."""
        keep = {int(v) for v in values}
        entries = {v: info for v, info in self.entries.items() if v in keep}
        swap = {a: b for a, b in self.swap_pairs.items() if a in keep and b in keep}
        return LabelTable(entries, self.name, swap)

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "labels": [info.to_dict() for info in self.entries.values()],
            "swap_left_right": {str(a): b for a, b in sorted(self.swap_pairs.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LabelTable":
        try:
            infos = [LabelInfo.from_dict(item) for item in data["labels"]]
            swap = {int(a): int(b) for a, b in data.get("swap_left_right", {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"invalid label table: {exc!r}") from exc
        return cls({info.value: info for info in infos}, str(data.get("name", "custom")), swap)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "LabelTable":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise InputError(f"label table is not valid JSON: {exc}") from exc


#: The instance-first design's classes: tooth interior (1) and tooth boundary (2), numbered afterwards
#: (:mod:`toothseg.core.postprocessing.instances`); the training targets are made from FDI label maps.
TOOTH_BOUNDARY = "tooth-boundary"
#: The same with the tooth's type in the interior: incisor (1), canine (3), premolar (4), molar (5) interior
#: and tooth boundary (2); the types are the numbering step's cue for which group a tooth belongs to.
TOOTH_TYPE_BOUNDARY = "tooth-type-boundary"
#: Tooth (1) and tooth contact (2): the boundary drawn only where a tooth lies near another tooth, not along its
#: surface against bone or air; a binary tooth map with the places to cut it marked, and 1 where a binary one has it.
TOOTH_CONTACT = "tooth-contact"
#: Tables of networks that separate teeth (numbered afterwards) rather than number them.
INSTANCE_TABLES = (TOOTH_BOUNDARY, TOOTH_TYPE_BOUNDARY, TOOTH_CONTACT)
#: Tooth of the upper jaw (1) or of the lower jaw (2): a tooth map that keeps the two jaws apart where a
#: coarse map fills the occlusal gap (upper and lower crowns in one piece), numbered afterwards per jaw.
TOOTH_JAW = "tooth-jaw"
UPPER_TOOTH, LOWER_TOOTH = 1, 2


def jaw_classes(labels: np.ndarray, ignore: int | None = None) -> np.ndarray:
    """FDI tooth numbers -> :data:`UPPER_TOOTH` (quadrants 1, 2, 5, 6) or :data:`LOWER_TOOTH` (3, 4, 7, 8);
    0 stays 0 and ``ignore`` stays itself. A mirror left/right keeps every class (a jaw has no side).

    Raises:
        InputError: a value that is no FDI tooth number (a jaw-level or binary map)."""
    values = [int(v) for v in np.unique(labels) if v and v != ignore]
    bad = [v for v in values if not (1 <= v // 10 <= 8 and 1 <= v % 10 <= (8 if v // 10 <= 4 else 5))]
    if bad:
        raise InputError(f"jaw classes need FDI tooth numbers (11-48, 51-85); the label map also holds {bad[:10]}")
    lookup = np.zeros(max([*values, 0, ignore or 0]) + 1, np.uint8)
    for value in values:
        lookup[value] = UPPER_TOOTH if value // 10 in (1, 2, 5, 6) else LOWER_TOOTH
    if ignore is not None:
        lookup[ignore] = ignore
    return lookup[labels]


def label_table_named(name: str) -> LabelTable:
    """The table a recipe or model names: ``fdi``, ``fdi-deciduous``, ``binary``, ``tooth-boundary``,
    ``tooth-type-boundary``, ``tooth-contact``, ``tooth-jaw``, or a JSON file's path."""
    if name == "fdi":
        return LabelTable.fdi()
    if name == "fdi-deciduous":
        return LabelTable.fdi(deciduous=True)
    if name == "binary":
        return LabelTable.custom({1: "tooth"}, name="binary-tooth")
    if name == TOOTH_BOUNDARY:
        return LabelTable.custom({1: "tooth interior", 2: "tooth boundary"}, name=TOOTH_BOUNDARY)
    if name == TOOTH_CONTACT:
        return LabelTable.custom({1: "tooth", 2: "tooth contact"}, name=TOOTH_CONTACT)
    if name == TOOTH_TYPE_BOUNDARY:
        return LabelTable.custom({1: "incisor interior", 2: "tooth boundary", 3: "canine interior",
                                  4: "premolar interior", 5: "molar interior"}, name=TOOTH_TYPE_BOUNDARY)
    if name == TOOTH_JAW:
        return LabelTable.custom({UPPER_TOOTH: "upper tooth", LOWER_TOOTH: "lower tooth"}, name=TOOTH_JAW)
    path = Path(name)
    if path.is_file():
        return LabelTable.from_json(path.read_text(encoding="utf-8"))
    raise InputError(f"unknown label table {name!r} (fdi, fdi-deciduous, binary, {TOOTH_BOUNDARY}, "
                     f"{TOOTH_TYPE_BOUNDARY}, {TOOTH_CONTACT}, {TOOTH_JAW}, or a JSON file)")
