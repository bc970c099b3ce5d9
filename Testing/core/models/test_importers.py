"""Importing the original authors' checkpoints: key mappings tested on state dicts built with the
documented module names and shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from toothseg.core import InputError
from toothseg.core.errors import OutputExistsError
from toothseg.core.networks import build_network
from toothseg.core.models.folder import load_model_folder
from toothseg.core.models.importers import import_nnunet_checkpoint, import_rail_students


def test_rail_students_become_an_ensemble(tmp_path):
    torch.manual_seed(0)
    students = {"vnet": [build_network("vnet", has_dropout=True) for _ in range(2)],
                "resvnet": [build_network("resvnet") for _ in range(2)]}
    paths = {"vnet": [], "resvnet": []}
    for kind, networks in students.items():
        for index, network in enumerate(networks):
            # RAIL saves from DataParallel (module. prefix); its ResVNet also carries an unused V-Net
            # encoder and 'branchs' head, which must be dropped
            state = {f"module.{k}": v for k, v in network.state_dict().items()}
            if kind == "resvnet":
                state["module.block_one.conv.0.weight"] = torch.zeros(16, 1, 3, 3, 3)
                state["module.branchs.0.0.conv.0.weight"] = torch.zeros(16, 16, 3, 3, 3)
            path = tmp_path / f"pmt_{kind}_{index}.pth"
            torch.save(state, str(path))
            paths[kind].append(path)
    folder = import_rail_students(paths["vnet"], paths["resvnet"], tmp_path / "rail", model_id="rail-test")
    loaded = load_model_folder(folder)
    assert len(loaded.members) == 4
    assert loaded.card.intensity.mode == "clip_scale" and loaded.card.intensity.clip == (500.0, 2500.0)
    x = torch.randn(1, 1, 32, 32, 16)
    for (_, member), network in zip(loaded.members, students["vnet"] + students["resvnet"]):
        network.eval()
        with torch.no_grad():
            # RAIL's networks see (x, y, z) arrays, ToothSeg's the same voxels as (z, y, x): the imported
            # network on the reversed axes gives RAIL's output with its axes reversed
            reverse = (0, 1, 4, 3, 2)
            torch.testing.assert_close(member.network(x.permute(reverse)), network(x).permute(reverse))


def test_a_failed_rail_import_leaves_nothing_and_the_retry_works(tmp_path):
    good, bad = tmp_path / "vnet.pth", tmp_path / "other.pth"
    torch.save(build_network("vnet", has_dropout=True).state_dict(), str(good))
    torch.save({"w": torch.zeros(2)}, str(bad))
    out = tmp_path / "rail"
    with pytest.raises(InputError, match="do not fit architecture 'resvnet'"):
        import_rail_students([good], [bad], out)
    # the V-Net student converted before the failure is not left behind as a half ensemble
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pth", "vnet.pth"]
    with pytest.raises(InputError, match="--id: model ID '../x'"):
        import_rail_students([good], [], out, model_id="../x")
    assert not out.exists()
    import_rail_students([good], [], out)
    assert load_model_folder(out).card.members == [{"role": "ensemble", "path": "vnet_0"}]
    # --overwrite replaces the whole folder: no student of the earlier import stays
    import_rail_students([good, good], [], out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "vnet_0", "vnet_1"]
    with pytest.raises(OutputExistsError):
        import_rail_students([good], [], out)


def test_import_checkpoint_cli_writes_a_folder_that_verifies(tmp_path):
    import os
    import subprocess
    import sys

    torch.save(build_network("vnet", has_dropout=True).state_dict(), str(tmp_path / "vnet.pth"))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "toothseg.cli", "models", *map(str, args)], capture_output=True,
                              text=True, timeout=120, env=dict(os.environ, TOOTHSEG_MODELS_DIR=str(tmp_path / "s")))

    result = run("import-checkpoint", "rail", "--vnet", tmp_path / "vnet.pth", "--out", tmp_path / "rail", "--id",
                 "my-rail")
    assert result.returncode == 0 and "toothseg models verify" in result.stdout, result.stderr
    assert run("verify", tmp_path / "rail").returncode == 0
    result = run("import-checkpoint", "nnunet", "--out", tmp_path / "nn", "--plans", "p.json")
    assert result.returncode == 1 and "needs --zip, or --checkpoint, --dataset" in result.stderr
    assert not (tmp_path / "nn").exists()


def _nnunet_files(tmp_path, class_name="UMambaBot2"):
    features = [8, 16, 32, 40]  # expand 2 x 40 = one Mamba2 head of 80, as upstream hard-codes
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
    arch_kwargs = {"n_stages": 4, "features_per_stage": features, "conv_op": "torch.nn.modules.conv.Conv3d",
                   "kernel_sizes": [[3, 3, 3]] * 4, "strides": strides, "n_blocks_per_stage": [1, 2, 2, 2],
                   "n_conv_per_stage_decoder": [1, 1, 1], "conv_bias": True,
                   "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                   "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "nonlin": "torch.nn.LeakyReLU"}
    plans = {"dataset_name": "Dataset319_STSR25", "configurations": {
        "3d_fullres": {"spacing": [0.3, 0.25, 0.25], "patch_size": [32, 64, 64],
                       "normalization_schemes": ["CTNormalization"],
                       "architecture": {"network_class_name": "x.y.ResidualEncoderUNet", "arch_kwargs": arch_kwargs}},
        "3d_mamba": {"inherits_from": "3d_fullres",
                     "architecture": {"network_class_name": f"nnunetv2.nets.{class_name}",
                                      "arch_kwargs": arch_kwargs}}},
        "foreground_intensity_properties_per_channel": {"0": {"mean": 1254.8, "std": 530.0,
                                                              "percentile_00_5": -200.0, "percentile_99_5": 3000.0}}}
    dataset = {"name": "STSR25", "channel_names": {"0": "CBCT"},
               "labels": {"background": 0, "Tooth": 1, "Pulp": 2}}
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))
    kwargs = dict(spatial_dims=3, num_classes=3, features_per_stage=features, strides=strides,
                  n_blocks_per_stage=[1, 2, 2, 2], n_conv_per_stage_decoder=[1, 1, 1])
    if class_name == "UMambaBot2":
        return build_network("umamba2", **kwargs), "3d_mamba"
    return build_network("resenc_unet", **kwargs), "3d_fullres"


def _as_nnunet_state(network) -> dict:
    """Our state dict with the aliases dynamic-network-architectures also stores."""
    state = {}
    for key, value in network.state_dict().items():
        state[key] = value
        for attr, index in ((".conv.", "0"), (".norm.", "1")):
            if attr in key and (".convs." in key or ".conv1." in key or ".conv2." in key or ".skip." in key):
                head, _, tail = key.rpartition(attr)
                state[f"{head}.all_modules.{index}.{tail}"] = value
        if key.startswith("encoder."):
            state["decoder." + key] = value  # the decoder keeps a reference to the encoder
    return state


@pytest.mark.parametrize("class_name", ["UMambaBot2", "ResidualEncoderUNet"])
def test_nnunet_checkpoint_with_duplicate_keys_and_numpy_log(tmp_path, class_name):
    torch.manual_seed(0)
    network, configuration = _nnunet_files(tmp_path, class_name)
    checkpoint = {"network_weights": _as_nnunet_state(network), "trainer_name": "nnUNetTrainer_STSR_Task1_accum2",
                  "current_epoch": 1000, "inference_allowed_mirroring_axes": (1, 2),
                  "logging": {"ema_fg_dice": [np.float64(0.91), np.float32(0.93)]}, "init_args": {"fold": 0}}
    torch.save(checkpoint, str(tmp_path / "checkpoint_final.pth"))
    folder = import_nnunet_checkpoint(tmp_path / "checkpoint_final.pth", tmp_path / "plans.json",
                                      tmp_path / "dataset.json", tmp_path / "model", configuration=configuration)
    loaded = load_model_folder(folder)
    card = loaded.card
    assert card.architecture == ("umamba2" if class_name == "UMambaBot2" else "resenc_unet")
    assert card.spacing_zyx == [0.3, 0.25, 0.25] and card.patch_size == [32, 64, 64]
    assert card.mirror_axes == [1, 2] and card.class_values == [0, 1, 2]
    assert card.label_table[2].name == "Pulp" and card.intensity.mode == "clip_zscore"
    network.eval()
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.network(x), network(x))


@pytest.mark.parametrize("saved", [{"inference_allowed_mirroring_axes": None}, {}], ids=["None", "no entry"])
def test_an_nnunet_checkpoint_trained_without_mirroring_is_not_mirrored(tmp_path, saved):
    """nnU-Net's NoMirroring trainers save None (its predictor reads a missing entry as None too): no
    test-time mirroring, which for side-labelled classes would average a tooth with its twin."""
    network, configuration = _nnunet_files(tmp_path)
    torch.save({"network_weights": _as_nnunet_state(network), "trainer_name": "nnUNetTrainerNoMirroring", **saved},
               str(tmp_path / "checkpoint_final.pth"))
    folder = import_nnunet_checkpoint(tmp_path / "checkpoint_final.pth", tmp_path / "plans.json",
                                      tmp_path / "dataset.json", tmp_path / "model", configuration=configuration)
    assert load_model_folder(folder).card.mirror_axes == []


def test_nnunet_checkpoint_that_does_not_fit(tmp_path):
    network, configuration = _nnunet_files(tmp_path)
    state = _as_nnunet_state(network)
    state["decoder.seg_layers.0.weight"] = torch.zeros(5, 16, 1, 1, 1)
    torch.save({"network_weights": state}, str(tmp_path / "bad.pth"))
    with pytest.raises(InputError, match="decoder.seg_layers.0.weight"):
        import_nnunet_checkpoint(tmp_path / "bad.pth", tmp_path / "plans.json", tmp_path / "dataset.json",
                                 tmp_path / "m", configuration=configuration)
