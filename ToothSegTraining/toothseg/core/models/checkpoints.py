"""Reading weights safely, and converting checkpoints of the original authors' code.

Nothing here unpickles arbitrary objects: ``.safetensors`` files hold tensors only, and
``.pt``/``.pth`` files are opened with ``torch.load(weights_only=True)`` (plus NumPy scalar types,
which nnU-Net stores in its training log; they reconstruct numbers, not code). A pickle that
references any other class or function is refused.

Key mappings (tested on state dicts built from the documented shapes):

* RAIL ``pmt_*.pth`` students: the same module names as ours (``block_one.conv.0.weight`` …,
  ``resencoder.layer1.0.conv1.weight`` …); DataParallel's ``module.`` prefix and RAIL's unused
  ResVNet branches (``block_one`` … ``block_five`` encoder, ``branchs``) are dropped.
* nnU-Net / U-Mamba2 ``checkpoint_final.pth``: ``network_weights`` with dynamic-network-architectures
  names; the duplicate ``…all_modules.N…`` aliases and the decoder's copy of the encoder
  (``decoder.encoder.…``) are dropped; ``mamba_layer.mamba.*`` maps 1:1 onto our Mamba2.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import InputError
from ..io.fingerprint import sha256_file

__all__ = ["sha256_file", "read_state_dict", "safe_torch_load", "check_state_dict_fits", "map_rail_state_dict",
           "map_nnunet_state_dict", "nnunet_architecture_kwargs", "resolve_nnunet_configuration"]


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` restricted to tensors, containers, numbers and NumPy scalars.

    Raises:
        InputError: the file is not a torch checkpoint, or it contains pickled code/objects.
    """
    allowed: list[Any] = [np.dtype, np.ndarray, type(np.dtype(np.float32)), type(np.dtype(np.float64)),
                          type(np.dtype(np.int64))]
    for name in ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
                 "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct"):
        module, _, attr = name.rpartition(".")
        try:
            allowed.append(getattr(__import__(module, fromlist=[attr]), attr))
        except (ImportError, AttributeError):
            continue
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch words both cases alike; only a refused class or function ("GLOBAL module.name") is pickled code
        refused = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line), "")
        if refused:
            raise InputError(f"{path}: refusing to load: the checkpoint contains pickled Python objects other than "
                             f"tensors ({refused[:160]}). Convert it where its code is trusted, or export a state "
                             "dict.") from exc
        raise InputError(f"{path}: not a readable PyTorch checkpoint (damaged, or another kind of file)") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:  # truncated zip, unreadable file: say which
        first = str(exc).splitlines()[0].split(". ")[0][:160] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({first})") from exc
    except Exception as exc:  # noqa: BLE001 - on foreign bytes torch.load fails with any type (KeyError: 174812789)
        raise InputError(f"{path}: not a readable PyTorch checkpoint (damaged, or another kind of file)") from exc


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Tensors from ``.safetensors`` or a (weights-only) ``.pt``/``.pth`` state dict."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read weights ({exc}); the file may be truncated") from exc
    data = safe_torch_load(path)
    return unwrap_state_dict(data, path)


def unwrap_state_dict(data: Any, path: str | os.PathLike[str] = "checkpoint") -> dict[str, Any]:
    """The state dict inside common checkpoint wrappers, without DataParallel's ``module.``."""
    for key in ("network_weights", "state_dict", "model", "net", "model_state_dict"):
        if isinstance(data, dict) and key in data and isinstance(data[key], dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise InputError(f"{path}: no state dict (name → tensor) found in the checkpoint")
    return {k.removeprefix("module."): v for k, v in data.items()}


def check_state_dict_fits(network, state: dict[str, Any], architecture: str) -> None:
    """Raise :class:`InputError` naming the first tensor that does not fit ``network``."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or mismatched):
        return
    if mismatched:
        key = mismatched[0]
        first = (f"'{key}' has shape {tuple(state[key].shape)} in the weights but {tuple(expected[key].shape)} "
                 "in the network")
    elif missing:
        first = f"'{missing[0]}' is missing from the weights"
    else:
        first = f"'{unexpected[0]}' is not part of the network"
    raise InputError(f"the weights do not fit architecture '{architecture}': {first} "
                     f"({len(mismatched)} shape mismatch(es), {len(missing)} missing, {len(unexpected)} unexpected); "
                     "is this checkpoint for other classes or another configuration?")


_RAIL_UNUSED = re.compile(r"^(block_(one|two|three|four|five)(_dw)?\.|branchs\.)")


def map_rail_state_dict(state: dict[str, Any], student: str) -> dict[str, Any]:
    """Keys of a RAIL student (``vnet`` or ``resvnet``) as ToothSeg names, kernels turned to ToothSeg's axes.

    RAIL's networks see nibabel's arrays, (x, y, z); ToothSeg feeds SimpleITK's, (z, y, x), the same
    voxels with the axes reversed. Every convolution kernel's spatial axes are reversed too, so that the
    network computes RAIL's function on ToothSeg's arrays (all of RAIL's kernels, strides and paddings are
    cubic, so nothing else depends on the axis order)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if student == "resvnet":
        state = {k: v for k, v in state.items() if not _RAIL_UNUSED.match(k)}
    elif student == "vnet":
        state = {k: v for k, v in state.items() if not k.startswith("branchs.")}
    else:
        raise InputError(f"unknown RAIL student type {student!r} (vnet or resvnet)")
    return {k: v.permute(0, 1, 4, 3, 2).contiguous() if getattr(v, "ndim", 0) == 5 else v
            for k, v in state.items()}


def map_nnunet_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """nnU-Net (dynamic-network-architectures) keys as ToothSeg ResEnc/U-Mamba2 names."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.").removeprefix("_orig_mod.")
        if ".all_modules." in key or key.startswith("decoder.encoder."):
            continue  # aliases of tensors that are also stored under their attribute names
        out[key] = value
    return out


def resolve_nnunet_configuration(plans: dict[str, Any], configuration: str) -> dict[str, Any]:
    """A plans configuration with its ``inherits_from`` chain merged in (child keys win)."""
    try:
        config = dict(plans["configurations"][configuration])
        seen = {configuration}
        while "inherits_from" in config:
            parent = config.pop("inherits_from")
            if parent in seen:
                raise InputError(f"plans configurations inherit in a circle at {parent!r}")
            seen.add(parent)
            config = {**plans["configurations"][parent], **config}
    except (KeyError, TypeError) as exc:
        raise InputError(f"plans JSON has no configuration {exc}") from exc
    return config


_NNUNET_CLASSES = {"PlainConvUNet": "plain_conv_unet", "ResidualEncoderUNet": "resenc_unet", "UMambaBot2": "umamba2"}
"""nnU-Net network classes (``dynamic_network_architectures`` names) and the ToothSeg architecture of each."""


def nnunet_architecture_kwargs(plans: dict[str, Any], configuration: str, dataset: dict[str, Any]) -> tuple[str, dict]:
    """(architecture, kwargs) of a ToothSeg network equivalent to an nnU-Net plans entry."""
    try:
        config = resolve_nnunet_configuration(plans, configuration)
        arch = config["architecture"]
        kwargs = arch["arch_kwargs"]
        class_name = arch["network_class_name"].rsplit(".", 1)[-1]
        labels = dataset["labels"]
    except (KeyError, TypeError) as exc:
        raise InputError(f"plans/dataset JSON lacks {exc} for configuration {configuration!r}") from exc
    architecture = _NNUNET_CLASSES.get(class_name)
    if architecture is None:
        raise InputError(f"nnU-Net network class {class_name!r} is not supported ({', '.join(_NNUNET_CLASSES)})")
    conv_op = str(kwargs.get("conv_op", "Conv3d"))
    dims = 2 if conv_op.endswith("Conv2d") else 3
    # the plain U-Net's encoder stages are n_conv_per_stage convolutions, the others' residual blocks
    stage_key = "n_conv_per_stage" if architecture == "plain_conv_unet" else "n_blocks_per_stage"
    num_classes = len(labels) if "regions_class_order" not in dataset else len(dataset["regions_class_order"]) + 1
    ours = {
        "spatial_dims": dims,
        "in_channels": len(dataset.get("channel_names", dataset.get("modality", {"0": "CT"}))),
        "num_classes": num_classes,
        "features_per_stage": list(kwargs["features_per_stage"]),
        "strides": [list(s) if isinstance(s, (list, tuple)) else s for s in kwargs["strides"]],
        stage_key: list(kwargs[stage_key]),
        "n_conv_per_stage_decoder": list(kwargs["n_conv_per_stage_decoder"]),
        "kernel_sizes": [list(k) if isinstance(k, (list, tuple)) else k for k in kwargs["kernel_sizes"]],
        "conv_bias": bool(kwargs.get("conv_bias", True)),
    }
    return architecture, ours


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read JSON ({exc})") from exc
