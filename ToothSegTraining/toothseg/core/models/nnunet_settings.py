"""What a model card records of an nnU-Net plan, so that inference can do nnU-Net's arithmetic.

An imported nnU-Net model is only as accurate as its preprocessing is faithful: nnU-Net normalises
*before* it resamples, resamples images with cubic splines (and thick slices separately, by nearest
neighbour across them), works in a transposed axis order, crops to the non-zero region, blends logits
(not probabilities) and resamples logits back linearly. A card with an ``nnunet`` entry asks the
predictor for exactly that (:mod:`toothseg.core.inference.nnunet_pipeline`); its ``spacing_zyx`` and
``patch_size`` are then in nnU-Net's transposed axis order, as in the plans.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InputError

__all__ = ["NnUNetSettings", "NnUNetResampling", "nnunet_settings_from_plans"]

_NORMALIZATIONS = ("CTNormalization", "ZScoreNormalization", "NoNormalization")
_RESAMPLING_FUNCTION = "resample_data_or_seg_to_shape"


@dataclass
class NnUNetResampling:
    """``resample_data_or_seg_to_shape`` keyword arguments: spline order in-plane (or everywhere),
    order across the thick axis, and nnU-Net's rule for when the thick axis is resampled apart."""

    order: int = 3
    order_z: int = 0
    force_separate_z: bool | None = None
    anisotropy_threshold: float = 3.0

    def __post_init__(self) -> None:
        if not (0 <= int(self.order) <= 5 and 0 <= int(self.order_z) <= 5):
            raise InputError(f"nnU-Net resampling orders must be 0..5, got {self.order} and {self.order_z}")
        if self.force_separate_z is not None and not isinstance(self.force_separate_z, bool):
            raise InputError(f"force_separate_z must be true, false or null, got {self.force_separate_z!r}")


@dataclass
class NnUNetSettings:
    """The parts of ``plans.json`` (and the dataset fingerprint) that inference needs."""

    transpose_forward: list[int] = field(default_factory=lambda: [0, 1, 2])
    transpose_backward: list[int] = field(default_factory=lambda: [0, 1, 2])
    normalization: str = "CTNormalization"
    use_mask_for_norm: bool = False
    #: CTNormalization's dataset statistics: mean, std, percentile_00_5, percentile_99_5
    intensity_properties: dict[str, float] = field(default_factory=dict)
    resampling_data: NnUNetResampling = field(default_factory=NnUNetResampling)
    resampling_probabilities: NnUNetResampling = field(default_factory=lambda: NnUNetResampling(order=1))
    tile_step_size: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.resampling_data, dict):
            self.resampling_data = NnUNetResampling(**self.resampling_data)
        if isinstance(self.resampling_probabilities, dict):
            self.resampling_probabilities = NnUNetResampling(**self.resampling_probabilities)
        self.transpose_forward = [int(a) for a in self.transpose_forward]
        self.transpose_backward = [int(a) for a in self.transpose_backward]
        problems = []
        for name, axes in (("transpose_forward", self.transpose_forward),
                           ("transpose_backward", self.transpose_backward)):
            if sorted(axes) != [0, 1, 2]:
                problems.append(f"{name} must be a permutation of 0, 1, 2, got {axes}")
        if not problems and [self.transpose_forward[a] for a in self.transpose_backward] != [0, 1, 2]:
            problems.append("transpose_backward does not undo transpose_forward")
        if self.normalization not in _NORMALIZATIONS:
            problems.append(f"normalisation {self.normalization!r} is not supported ({', '.join(_NORMALIZATIONS)})")
        if self.normalization == "CTNormalization":
            missing = [k for k in ("mean", "std", "percentile_00_5", "percentile_99_5")
                       if not isinstance(self.intensity_properties.get(k), (int, float))]
            if missing:
                problems.append(f"CTNormalization needs the dataset's intensity properties ({', '.join(missing)})")
        if not 0 < self.tile_step_size <= 1:
            problems.append(f"tile_step_size must be in (0, 1], got {self.tile_step_size}")
        if problems:
            raise InputError("nnU-Net settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NnUNetSettings":
        if not isinstance(data, dict):
            raise InputError("the model card's 'nnunet' entry must be an object")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"the model card's 'nnunet' entry has unknown field(s): {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise InputError(f"the model card's 'nnunet' entry is malformed: {exc}") from exc


def _resampling(config: dict[str, Any], which: str) -> NnUNetResampling:
    function = config.get(f"resampling_fn_{which}", _RESAMPLING_FUNCTION)
    if function != _RESAMPLING_FUNCTION:
        raise InputError(f"the plan resamples {which} with {function!r}; ToothSeg reproduces nnU-Net's default "
                         f"{_RESAMPLING_FUNCTION!r} only")
    kwargs = dict(config.get(f"resampling_fn_{which}_kwargs", {}))
    return NnUNetResampling(order=int(kwargs.get("order", 3 if which == "data" else 1)),
                            order_z=int(kwargs.get("order_z", 0)), force_separate_z=kwargs.get("force_separate_z"))


def nnunet_settings_from_plans(plans: dict[str, Any], config: dict[str, Any]) -> NnUNetSettings:
    """Settings of one resolved plans configuration (``inherits_from`` already merged in)."""
    schemes = list(config.get("normalization_schemes", ["CTNormalization"]))
    if len(schemes) != 1:
        raise InputError(f"the plan has {len(schemes)} input channels; ToothSeg models take one image")
    properties = plans.get("foreground_intensity_properties_per_channel", {}).get("0", {})
    return NnUNetSettings(
        transpose_forward=list(plans.get("transpose_forward", [0, 1, 2])),
        transpose_backward=list(plans.get("transpose_backward", [0, 1, 2])),
        normalization=schemes[0], use_mask_for_norm=bool(list(config.get("use_mask_for_norm", [False]))[0]),
        intensity_properties={k: float(v) for k, v in properties.items() if isinstance(v, (int, float))},
        resampling_data=_resampling(config, "data"), resampling_probabilities=_resampling(config, "probabilities"))
