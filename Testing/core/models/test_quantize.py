"""Weight storage as float16 or int8 (``toothseg.core.models.quantize``): smaller files, same network."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from toothseg.core import InputError, LabelTable
from toothseg.core.models.card import ModelCard
from toothseg.core.models.checkpoints import sha256_file
from toothseg.core.models.folder import (ensemble_model_folder, load_model_folder, pack_model_folder, read_card,
                                         save_model_folder)
from toothseg.core.models.quantize import (SCALE_SUFFIX, compress_state_dict, decompress_state_dict, quantize_int8,
                                           stored_dtype)
from toothseg.core.networks import build_network
from toothseg.train.engine.pipeline import _initializer


def card(model_id: str = "q") -> ModelCard:
    return ModelCard(id=model_id, architecture="unet2d", kwargs={"base_channels": 8}, spatial_dims=2,
                     label_table=LabelTable.fdi().subset([11, 21]), class_values=[0, 11, 21], input_kind="2d",
                     patch_size=[64, 64], mirror_axes=[1])


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    network = build_network("unet2d", num_classes=3, base_channels=8)
    return network, save_model_folder(network, card(), tmp_path / "float32")


def test_int8_scales_each_output_channel_on_its_own():
    # one channel a thousand times smaller than the other: a single scale for the tensor would round it to 0
    weight = torch.cat([torch.randn(1, 4, 3, 3) * 1e-3, torch.randn(1, 4, 3, 3) * 10.0])
    q, scale = quantize_int8(weight)
    assert q.dtype == torch.int8 and scale.shape == (2,)
    restored = decompress_state_dict({"w": q, "w" + SCALE_SUFFIX: scale})["w"]
    for channel in range(2):
        error = (restored[channel] - weight[channel]).abs().max()
        assert error <= scale[channel] / 2 + 1e-12  # rounding error only
        assert error < 0.01 * weight[channel].abs().max()
    zero_q, zero_scale = quantize_int8(torch.zeros(3, 2, 2))  # an all-zero channel: no division by zero
    assert torch.equal(zero_q, torch.zeros(3, 2, 2, dtype=torch.int8)) and torch.isfinite(zero_scale).all()


def test_compress_keeps_small_tensors_and_integers_and_undoes_itself():
    state = {"conv.weight": torch.randn(16, 8, 3, 3), "conv.bias": torch.randn(16), "norm.weight": torch.rand(16),
             "steps": torch.tensor(7)}
    int8 = compress_state_dict(state, "int8")
    assert int8["conv.weight"].dtype == torch.int8 and int8["conv.bias"].dtype == torch.float16
    assert torch.equal(int8["steps"], state["steps"]) and stored_dtype(int8) == "int8"
    # re-packing an int8 folder as float16 starts from the dequantised weights, not the integers
    again = compress_state_dict(int8, "float16")
    assert SCALE_SUFFIX not in "".join(again) and stored_dtype(again) == "float16"
    assert (again["conv.weight"].float() - state["conv.weight"]).abs().max() < 0.02 * state["conv.weight"].abs().max()
    with pytest.raises(InputError, match="unknown weight storage"):
        compress_state_dict(state, "int4")


def test_int8_folder_quarters_the_file_and_keeps_the_prediction(folder, tmp_path):
    network, source = folder
    packed = pack_model_folder(source, tmp_path / "int8", weights_dtype="int8")
    size_ratio = (packed / "weights.safetensors").stat().st_size / (source / "weights.safetensors").stat().st_size
    assert size_ratio < 0.32
    loaded = load_model_folder(packed)  # SHA-256 of the new file verified
    assert loaded.card.provenance["weights_dtype"] == "int8"
    assert next(loaded.network.parameters()).dtype == torch.float32
    torch.manual_seed(1)
    x = torch.randn(4, 1, 64, 64)
    with torch.no_grad():
        a, b = network.eval()(x), loaded.network(x)
    assert 0 < (a - b).abs().max() < 0.05 * a.abs().max()
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.99


def _rewrite(folder, change) -> None:
    """Change the stored tensors and record the new SHA-256, as a foreign tool might."""
    weights = folder / "weights.safetensors"
    state = change(load_file(str(weights)))
    save_file(state, str(weights))
    model_card = read_card(folder)
    model_card.weights_sha256 = sha256_file(weights)
    (folder / "model.json").write_text(model_card.to_json())


def test_damaged_int8_weights_are_refused_with_the_reason(folder, tmp_path):
    _, source = folder
    packed = pack_model_folder(source, tmp_path / "int8", weights_dtype="int8")
    key = next(k for k in load_file(str(packed / "weights.safetensors")) if k.endswith(SCALE_SUFFIX))
    tensor = key[: -len(SCALE_SUFFIX)]

    without_scale = pack_model_folder(packed, tmp_path / "a")
    _rewrite(without_scale, lambda s: {k: v for k, v in s.items() if k != key})
    with pytest.raises(InputError, match="without a scale"):  # integers must never run as weights
        load_model_folder(without_scale)

    wrong_scale = pack_model_folder(packed, tmp_path / "b")
    _rewrite(wrong_scale, lambda s: {**s, key: s[key][:1]})
    with pytest.raises(InputError, match="does not match its scale"):
        load_model_folder(wrong_scale)

    orphan = pack_model_folder(packed, tmp_path / "c")
    _rewrite(orphan, lambda s: {k: v for k, v in s.items() if k != tensor})
    with pytest.raises(InputError, match="no such tensor"):
        load_model_folder(orphan)


def test_training_starts_from_an_int8_folder_with_the_real_weights(folder, tmp_path):
    network, source = folder
    packed = pack_model_folder(source, tmp_path / "int8", weights_dtype="int8")
    torch.manual_seed(5)
    student = build_network("unet2d", num_classes=3, base_channels=8)
    method = SimpleNamespace(nets={"student": student}, trainable=("student",), exported="student")
    _initializer(str(packed), None)(method)
    reference = load_model_folder(packed).network.state_dict()
    for key, value in student.state_dict().items():
        assert torch.equal(value, reference[key]), key
    first = "inc.double_conv.0.weight"
    assert (student.state_dict()[first] - network.state_dict()[first]).abs().max() < 0.01


def test_ensemble_and_cli_store_int8(folder, tmp_path):
    _, source = folder
    other = save_model_folder(build_network("unet2d", num_classes=3, base_channels=8), card("q2"), tmp_path / "q2")
    ensemble = ensemble_model_folder([source, other], tmp_path / "ens", "ens", weights_dtype="int8")
    assert [m.card.provenance["weights_dtype"] for _, m in load_model_folder(ensemble).members] == ["int8", "int8"]

    env = dict(os.environ, TOOTHSEG_MODELS_DIR=str(tmp_path / "store"), PYTHONWARNINGS="ignore")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "toothseg.cli", "models", *args], capture_output=True,
                              text=True, env=env, timeout=120)

    packed = run("pack", str(source), str(tmp_path / "cli"), "--int8")
    assert packed.returncode == 0 and "int8 weights" in packed.stdout, packed.stderr
    assert run("verify", str(tmp_path / "cli")).returncode == 0
    both = run("pack", str(source), str(tmp_path / "both"), "--int8", "--half")
    assert both.returncode != 0 and "not allowed with" in both.stderr and not (tmp_path / "both").exists()
