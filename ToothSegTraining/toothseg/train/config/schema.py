"""The recipe's schema: typed dataclasses that one YAML file maps onto, and the names it may use.

Only data definitions live here (no YAML, no checks that need methods or data sets), so the data
loaders, methods and engine can import the schema without importing the checks that import them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Recipe", "DataConfig", "ModelConfig", "StageConfig", "OptimizerConfig", "AugmentConfig",
           "ExportConfig", "HANDEDNESS_MODES", "OPTIMIZERS", "SCHEDULES", "SOURCES"]


HANDEDNESS_MODES = ("check", "fix", "off")


@dataclass
class AugmentConfig:
    """On-the-fly augmentation; probabilities per sample. Sagittal flips always swap FDI labels."""

    flip_lr: float = 0.5
    other_flip_axes: list[int] = field(default_factory=list)  # only for label sets without sides
    rotate_deg: float = 15.0
    rotate_probability: float = 0.3
    scale: tuple[float, float] = (0.85, 1.15)
    scale_probability: float = 0.3
    elastic_mm: float = 0.0
    elastic_probability: float = 0.0
    gamma: tuple[float, float] = (0.7, 1.5)
    gamma_probability: float = 0.3
    noise_std: tuple[float, float] = (0.0, 0.1)
    noise_probability: float = 0.15
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    blur_probability: float = 0.2
    contrast: tuple[float, float] = (0.75, 1.25)
    contrast_probability: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    brightness_probability: float = 0.15
    low_resolution: tuple[float, float] = (0.5, 1.0)
    low_resolution_probability: float = 0.25


@dataclass
class DataConfig:
    """Where cases come from and how patches are made (spatial lists in array order z, y, x)."""

    kind: str = "3d"  # 3d or 2d
    source: str = "files"  # files, ufba425, synthetic
    labeled: str | None = None  # manifest JSON (files), split name (ufba425), or label-map list (synthetic)
    unlabeled: str | None = None
    validation: str | None = None  # manifest (files), split name (ufba425), number of scans (synthetic); none
    root: str | None = None  # folder the manifest paths are relative to (default: the manifest's folder)
    labeled_fraction: float = 1.0  # keep this share of the labeled training cases (the rest: unlabeled)
    label_table: str = "fdi"  # fdi, fdi-deciduous, binary (every tooth → 1), tooth-boundary, or a JSON file
    class_values: list[int] | None = None  # output channels' label values; default: all in the table
    spacing: list[float] | None = None
    # 2D only: the extent (y, x), in the units of ``spacing``, that a whole X-ray is taken to span,
    # whatever its size and pixel spacing (UFBA-425's X-rays come resized to 512 x 512 px without
    # spacing: [512, 512]); None: the image's own pixel spacing
    image_extent: list[float] | None = None
    patch_size: list[int] = field(default_factory=lambda: [96, 96, 96])
    intensity: dict[str, Any] = field(default_factory=lambda: {"mode": "percentile_zscore"})
    foreground_oversample: float = 0.33
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    workers: int = 2
    cache_cases: bool = True
    pseudo_labels: str | None = None  # earlier stage whose model labels the unlabeled set, or "cascade"
    # (export.cascade.coarse + the stage just before this one)
    pseudo_max_uncertainty: float = 0.25  # keep predicted teeth whose mean normalised entropy is below this
    # labels with fewer voxels than this in a training label map (as read) become background: the
    # coarse-to-fine method drops such "small teeth" (36 voxels); 0 keeps every label
    min_label_voxels: int = 0
    # 3D label maps whose left/right numbering is mirrored (toothseg.core.handedness): "check" refuses
    # them (a model would learn to number every correct scan mirror-wise), "fix" swaps their left/right
    # numbers, "off" reads them as stored. The built-in STS-2024 maps are always corrected.
    handedness: str = "check"
    # synthetic source: options of the synthesiser (toothseg.train.synth.SynthesisOptions), e.g.
    # {synthseg_probability: 0.5, bias_field_probability: 0.5}
    synthesis: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    architecture: str = "resenc_unet"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd, adam, adamw
    lr: float = 0.01
    weight_decay: float = 3e-5
    momentum: float = 0.99
    nesterov: bool = True
    schedule: str = "poly"  # poly, cosine, linear, constant, warmup_cosine (RAIL)
    warmup_iterations: int = 0
    warmup_start_lr: float | None = None  # where the warm-up starts (default min_lr; U-Mamba2's DAE: 5e-7)
    min_lr: float = 0.0
    power: float = 0.9
    # no weight decay on 1-D parameters (norm weights, biases), as timm/MAE-style pretraining does
    no_decay_norm_bias: bool = False


@dataclass
class StageConfig:
    method: str = "supervised"
    name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # method-specific, validated by the method
    iterations: int = 1000
    batch_size: int = 2  # labeled samples per step
    unlabeled_batch_size: int = 0  # unlabeled samples per step (semi-supervised methods)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    amp: bool = True  # autocast + grad scaling on CUDA (ignored on CPU)
    grad_accumulation: int = 1
    grad_clip: float = 12.0
    checkpoint_every: int = 100
    validate_every: int = 0  # 0: only at the end
    init_from: str = "none"
    # per class of this stage's network, the class of init_from's network whose output weights it takes, or
    # [class, logit offset] (engine/class_init.py): a refinement of the old classes starts as the old network
    init_classes: list[Any] | None = None
    # parameter names or module prefixes (decoder.seg_layers) of the only weights that train; the rest stay
    # as init_from left them (engine/frozen.py); None: all train
    train_only: list[str] | None = None
    data: dict[str, Any] = field(default_factory=dict)  # overrides of the recipe's data section for this stage


@dataclass
class ExportConfig:
    id: str = ""
    name: str = ""
    description: str = ""
    mirror_axes: list[int] = field(default_factory=list)
    license: str = ""
    # post-processing steps written into the model card (None: ToothSeg's defaults) and, when they renumber
    # the network's classes, the label table of the result (e.g. fdi for a tooth-boundary network numbered
    # by teeth_from_boundary); both apply to the stages that train the recipe's own data.label_table
    postprocessing: list[dict[str, Any]] | None = None
    output_label_table: str | None = None
    cascade: dict[str, str] | None = None  # {"coarse": stage name, "fine": stage name}: export a cascade


@dataclass
class Recipe:
    name: str
    data: DataConfig
    model: ModelConfig
    stages: list[StageConfig]
    seed: int = 0
    output_dir: str = ""
    export: ExportConfig = field(default_factory=ExportConfig)


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("poly", "cosine", "linear", "constant", "warmup_cosine")
SOURCES = ("files", "ufba425", "synthetic")
