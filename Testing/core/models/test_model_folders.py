"""Model folders: round trip, verification, and every bad input of the networks issue."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from toothseg.core import InputError, LabelTable, OutputExistsError, Volume
from toothseg.core.networks import build_network
from toothseg.core.models.card import IntensityNormalization, ModelCard
from toothseg.core.models.checkpoints import read_state_dict, safe_torch_load, sha256_file
from toothseg.core.models.folder import load_model_folder, pack_model_folder, save_model_folder, verify_model_folder


def tiny_card(model_id="tiny", architecture="unet2d", dims=2, **extra) -> ModelCard:
    table = LabelTable.fdi().subset([11, 21])
    return ModelCard(id=model_id, architecture=architecture, kwargs={"base_channels": 4} if dims == 2 else {},
                     spatial_dims=dims, label_table=table, class_values=[0, 11, 21],
                     input_kind="2d" if dims == 2 else "3d", patch_size=[32, 48] if dims == 2 else None,
                     mirror_axes=[1] if dims == 2 else [], **extra)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    network = build_network("unet2d", num_classes=3, base_channels=4)
    folder = save_model_folder(network, tiny_card(), tmp_path / "tiny")
    return network, folder


def test_round_trip_gives_identical_outputs(saved):
    network, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "weights.safetensors"]
    loaded = load_model_folder(folder)
    x = torch.randn(2, 1, 32, 48)
    network.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.network(x), network(x), rtol=0, atol=0)
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert card["weights_sha256"] == sha256_file(folder / "weights.safetensors")
    assert card["label_table"]["labels"][0]["terminology"]["type"]["value"] == "422653006"
    assert verify_model_folder(folder)[0].endswith("OK")


def test_saved_files_are_readable_by_others_as_with_a_plain_open(saved):
    # safetensors writes owner-only files; a shared model folder must be readable like any other file.
    _, folder = saved
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("model.json", "weights.safetensors"):
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_existing_folder_is_not_replaced(saved):
    network, folder = saved
    with pytest.raises(OutputExistsError):
        save_model_folder(network, tiny_card(), folder)


def test_tampered_weights_are_refused(saved):
    _, folder = saved
    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="SHA-256 mismatch"):
        load_model_folder(folder)


def test_unknown_architecture_in_card(saved):
    _, folder = saved
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    card["architecture"] = "unet2dd"
    (folder / "model.json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(InputError, match="unknown architecture 'unet2dd'.*did you mean 'unet2d'"):
        load_model_folder(folder)


def test_weights_for_other_classes_name_the_first_misfit(tmp_path):
    network = build_network("unet2d", num_classes=5, base_channels=4)
    card = tiny_card()
    folder = tmp_path / "m"
    folder.mkdir()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(folder / "weights.safetensors"))
    card.weights_sha256 = sha256_file(folder / "weights.safetensors")
    (folder / "model.json").write_text(card.to_json(), encoding="utf-8")
    with pytest.raises(InputError, match=r"'outc.weight' has shape \(5, 4, 1, 1\) in the weights but \(3, 4, 1, 1\)"):
        load_model_folder(folder)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def test_pickled_code_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Exploit()}, str(path))
    with pytest.raises(InputError, match="refusing to load"):
        safe_torch_load(path)
    assert not (tmp_path / "pwned-by-checkpoint").exists()
    with pytest.raises(InputError):
        read_state_dict(path)
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_files_that_are_no_checkpoint_are_not_called_pickled_code(tmp_path):
    # torch.load words a damaged file like a refused one, or fails with a bare KeyError on text
    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    (tmp_path / "noise.pth").write_bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    torch.save({"w": torch.zeros(100)}, str(tmp_path / "good.pth"))
    whole = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[: len(whole) // 2])
    for name in ("text.pth", "noise.pth", "cut.pth"):
        with pytest.raises(InputError, match="not a readable PyTorch checkpoint") as error:
            safe_torch_load(tmp_path / name)
        assert "pickled" not in str(error.value) and "PyTorch 2.6" not in str(error.value)
    torch.save({"w": _Exploit()}, str(tmp_path / "evil.pth"))
    with pytest.raises(InputError, match=r"pickled Python objects other than tensors \(.*GLOBAL posix.system"):
        safe_torch_load(tmp_path / "evil.pth")


def test_plain_state_dict_pth_is_accepted(tmp_path):
    network = build_network("unet2d", num_classes=3, base_channels=4)
    torch.save({"model": {f"module.{k}": v for k, v in network.state_dict().items()}, "epoch": 3,
                "loss": np.float64(0.25)}, str(tmp_path / "ckpt.pth"))
    state = read_state_dict(tmp_path / "ckpt.pth")
    assert set(state) == set(network.state_dict())


def test_truncated_weights_and_missing_files(saved):
    _, folder = saved
    with pytest.raises(InputError, match="not a model folder"):
        load_model_folder(folder.parent)
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(InputError):
        load_model_folder(folder)
    with pytest.raises(InputError, match="truncated"):
        load_model_folder(folder, verify=False)
    weights.unlink()
    with pytest.raises(InputError, match="missing"):
        load_model_folder(folder)


def test_2d_model_refuses_a_3d_volume_and_the_reverse(saved):
    _, folder = saved
    model = load_model_folder(folder)
    with pytest.raises(InputError, match="2D panoramic"):
        model.check_input(Volume(np.zeros((10, 32, 32), np.int16)))
    model.check_input(Volume(np.zeros((32, 48), np.uint8), kind="2d"))
    model.card.input_kind = "3d"
    with pytest.raises(InputError, match="3D scans"):
        model.check_input(Volume(np.zeros((32, 48), np.uint8), kind="2d"))


@pytest.mark.parametrize("change, message", [
    ({"class_values": [11, 21]}, "start with 0"),
    ({"class_values": [0, 11, 99]}, "not in the label table"),
    ({"spatial_dims": 4}, "spatial_dims"),
    ({"mirror_axes": [2]}, "mirror_axes"),
    ({"patch_size": [32, 48, 4]}, "patch_size"),
    ({"schema_version": 99}, "newer"),
    ({"image_extent_yx": [512.0]}, "image_extent_yx"),
    ({"image_extent_yx": [512.0, 0.0]}, "image_extent_yx"),
    # post-processing options are checked when the card is read, before a scan is segmented
    ({"postprocessing": [{"name": "teeth_from_boundary", "type_weight": -100}]}, "type_weight must be a finite"),
    ({"postprocessing": [{"name": "merge_fragments", "max_fraction": 2}]}, "max_fraction must be at most 1.0"),
    ({"postprocessing": [{"name": "remove_small", "min_mm3": "50"}]}, "min_mm3 must be a finite number"),
    ({"postprocessing": [{"name": "remove_small", "min_mm3": float("nan")}]}, "min_mm3 must be a finite number"),
    ({"postprocessing": [{"name": "fill_holes", "iterations": 2}]}, r"unknown option 'iterations' \(it takes: none\)"),
    ({"postprocessing": {"name": "fill_holes"}}, "must be a list of steps"),
])
def test_card_validation(change, message):
    data = tiny_card().to_dict()
    data.update(change)
    with pytest.raises(InputError, match=message):
        ModelCard.from_dict(data)


def test_card_rejects_unknown_fields_and_bad_intensity():
    data = tiny_card().to_dict()
    data["colour"] = "red"
    with pytest.raises(InputError, match="unknown field"):
        ModelCard.from_dict(data)
    with pytest.raises(InputError, match="clip range"):
        IntensityNormalization("clip_scale")


def test_composite_folder_loads_members(tmp_path):
    torch.manual_seed(1)
    for name in ("a", "b"):
        save_model_folder(build_network("unet2d", num_classes=3, base_channels=4), tiny_card(f"m-{name}"),
                          tmp_path / "ens" / name)
    top = tiny_card("ens", members=[{"role": "ensemble", "path": "a"}, {"role": "ensemble", "path": "b"}])
    save_model_folder(None, top, tmp_path / "ens")
    loaded = load_model_folder(tmp_path / "ens")
    assert [role for role, _ in loaded.members] == ["ensemble", "ensemble"]
    # a member whose channels carry other numbers than the card's (11 and 21 exchanged) is refused
    member_card = json.loads((tmp_path / "ens" / "b" / "model.json").read_text())
    member_card["class_values"] = [0, 21, 11]
    (tmp_path / "ens" / "b" / "model.json").write_text(json.dumps(member_card))
    with pytest.raises(InputError, match="member 'b' numbers its output channels"):
        load_model_folder(tmp_path / "ens")
    member_card["class_values"] = [0, 11, 21]
    (tmp_path / "ens" / "b" / "model.json").write_text(json.dumps(member_card))
    with pytest.raises(InputError, match="must be a sub-folder"):
        tiny_card("escape", members=[{"role": "ensemble", "path": "../../etc"}])
    card = json.loads((tmp_path / "ens" / "model.json").read_text())  # a card edited by hand
    for path in ("../../etc", "/etc", "a/../../b"):
        card["members"][0]["path"] = path
        (tmp_path / "ens" / "model.json").write_text(json.dumps(card))
        with pytest.raises(InputError, match="must be a sub-folder"):
            load_model_folder(tmp_path / "ens")


@pytest.mark.parametrize("model_id", ["../../evil", "a/b", ".hidden", "", "x" * 129, "has space"])
def test_a_card_whose_id_is_no_plain_name_is_refused_and_never_installed(tmp_path, saved, model_id, monkeypatch):
    """``models add`` installs a folder under its card's ID: a shared folder naming ``../..`` would
    have been written (with --overwrite, replaced) outside the models folder."""
    from toothseg.core.models.catalog import load_catalog

    _, folder = saved
    card = json.loads((folder / "model.json").read_text())
    card["id"] = model_id
    (folder / "model.json").write_text(json.dumps(card))
    monkeypatch.setenv("TOOTHSEG_MODELS_DIR", str(tmp_path / "store" / "models"))
    with pytest.raises(InputError, match="model ID"):
        load_catalog().add_folder(folder, overwrite=True)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "store").exists()
    card["id"], card["weights_file"] = "tiny", "../weights.safetensors"
    (folder / "model.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="weights_file must be a file name"):
        load_model_folder(folder)


def test_pack_under_a_new_id_installs_beside_the_bundled_original(tmp_path, monkeypatch):
    from toothseg.core.models.catalog import load_catalog

    monkeypatch.setenv("TOOTHSEG_MODELS_DIR", str(tmp_path / "store"))
    catalog = load_catalog()
    bundled = catalog.default("2d")
    with pytest.raises(OutputExistsError, match="--id NEW_ID"):
        catalog.add_folder(bundled.folder)
    copy = pack_model_folder(bundled.folder, tmp_path / "mine", new_id="my-pano", new_name="Mine")
    card = json.loads((copy / "model.json").read_text())
    assert (card["id"], card["name"], card["provenance"]["packed_from"]) == ("my-pano", "Mine", bundled.id)
    assert catalog.add_folder(copy).id == "my-pano"
    with pytest.raises(InputError, match="model ID"):
        pack_model_folder(bundled.folder, tmp_path / "bad", new_id="../x")
    with pytest.raises(InputError, match="inside the model folder"):
        pack_model_folder(copy, copy / "nested")
    assert not (tmp_path / "bad").exists() and not (copy / "nested").exists()


def test_models_cli_add_list_verify(tmp_path, saved):
    _, folder = saved
    env = dict(os.environ, TOOTHSEG_MODELS_DIR=str(tmp_path / "store"), PYTHONWARNINGS="ignore")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "toothseg.cli", "models", *args], capture_output=True,
                              text=True, env=env, timeout=120)

    assert "not installed" in run("list").stdout
    added = run("add", str(folder))
    assert added.returncode == 0, added.stderr
    assert (tmp_path / "store" / "tiny" / "model.json").exists()
    listing = run("list").stdout
    assert "tiny" in listing and "installed" in listing
    verified = run("verify", "tiny")
    assert verified.returncode == 0 and "OK" in verified.stdout
    again = run("add", str(folder))
    assert again.returncode == 1 and "already installed" in again.stderr and "Traceback" not in again.stderr
    shown = run("show", "umamba2-ssl")
    assert "expected SHA-256: none published" in shown.stdout
    by_path = run("show", str(folder))  # a folder never installed: its own card
    assert by_path.returncode == 0 and "tiny" in by_path.stdout and "classes: 3 (11, 21)" in by_path.stdout
    # a copy that a killed install left in its hidden staging folder is not listed as a model
    shutil.copytree(folder, tmp_path / "store" / ".toothseg-tmp-killed")
    assert [line.split()[0] for line in run("list").stdout.splitlines()].count("tiny") == 1
    # pack by catalogue ID into a float16 copy under a new ID, then install it beside the original
    packed = run("pack", "tiny", str(tmp_path / "half"), "--half", "--id", "tiny-half")
    assert packed.returncode == 0 and "float16 weights" in packed.stdout, packed.stderr
    assert run("add", str(tmp_path / "half")).returncode == 0
    assert {"tiny", "tiny-half"} <= {line.split()[0] for line in run("list").stdout.splitlines()}
    assert run("verify", "tiny-half").returncode == 0


def test_pack_half_halves_the_weights_and_keeps_the_outputs(tmp_path):
    torch.manual_seed(2)
    for name in ("coarse", "fine"):
        save_model_folder(build_network("unet2d", num_classes=3, base_channels=4), tiny_card(f"m-{name}"),
                          tmp_path / "cascade" / name)
    save_model_folder(None, tiny_card("cascade", members=[{"role": "coarse", "path": "coarse"},
                                                          {"role": "fine", "path": "fine"}]), tmp_path / "cascade")
    packed = pack_model_folder(tmp_path / "cascade", tmp_path / "packed", half=True)
    original = load_model_folder(tmp_path / "cascade")
    copy = load_model_folder(packed)  # verifies every member's new SHA-256
    x = torch.randn(1, 1, 32, 48)
    for (role, a), (_, b) in zip(original.members, copy.members):
        size_a = (a.folder / "weights.safetensors").stat().st_size
        size_b = (b.folder / "weights.safetensors").stat().st_size
        assert 0.45 < size_b / size_a < 0.56, role
        assert read_state_dict(b.folder / "weights.safetensors")["inc.double_conv.0.weight"].dtype == torch.float16
        assert b.card.provenance["weights_dtype"] == "float16"
        assert next(b.network.parameters()).dtype == torch.float32  # the network still runs in float32
        with torch.no_grad():
            ya, yb = a.network(x), b.network(x)
        assert 0 < (ya - yb).abs().max() < 1e-2 * ya.abs().max()
    with pytest.raises(OutputExistsError):
        pack_model_folder(tmp_path / "cascade", packed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cascade", "packed"]  # no staging folder left behind


def test_pack_refuses_a_damaged_source(saved, tmp_path):
    _, folder = saved
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(InputError, match="SHA-256 mismatch"):
        pack_model_folder(folder, tmp_path / "copy", half=True)
    assert not (tmp_path / "copy").exists()


@pytest.mark.parametrize("given, message", [
    ("", "no model given"),
    ("{tmp}", "is a folder but not a model folder: it has no model.json"),
    ("{tmp}/notes.txt", "is a file; a model is a folder holding model.json"),
    ("./no-such-folder", "no model folder ./no-such-folder: it does not exist"),
    ("no-such-model", "no model 'no-such-model' in the catalogue"),
])
def test_a_model_that_is_no_model_folder_says_what_it_is(tmp_path, given, message):
    from toothseg.core.models.catalog import load_catalog

    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(InputError, match=re.escape(message)):
        load_catalog().resolve(given.format(tmp=tmp_path))


def test_an_ensemble_predicts_the_members_mean_probability(tmp_path):
    from toothseg.core.inference import InferenceOptions, Predictor
    from toothseg.core.models.folder import ensemble_model_folder

    torch.manual_seed(3)
    members = [save_model_folder(build_network("unet2d", num_classes=3, base_channels=4), tiny_card(f"snap-{i}"),
                                 tmp_path / f"snap{i}") for i in range(2)]
    folder = ensemble_model_folder(members, tmp_path / "ens", "snaps", half=False)
    loaded = load_model_folder(folder)
    assert [role for role, _ in loaded.members] == ["ensemble", "ensemble"]
    assert [e["id"] for e in loaded.card.provenance["ensemble_of"]] == ["snap-0", "snap-1"]
    options = InferenceOptions(device="cpu", tta=False)
    batch = torch.randn(2, 1, 1, 32, 48)  # the (B, C, Z, Y, X) windows a 2D model's runner is given
    mean = sum(Predictor(m, options)._runner()(batch) for m in members) / 2
    together = Predictor(folder, options)._runner()(batch)
    torch.testing.assert_close(together, mean, rtol=0, atol=1e-6)
    assert not torch.allclose(Predictor(members[0], options)._runner()(batch), mean, atol=1e-3)
    image = Volume(np.random.default_rng(0).integers(0, 255, (1, 40, 60)).astype(np.uint8), (0.1, 0.1, 1.0),
                   kind="2d")
    assert Predictor(folder, options).predict(image).labels.shape == image.shape


def test_an_ensemble_refuses_members_run_differently_and_leaves_nothing(tmp_path):
    from toothseg.core.models.folder import ensemble_model_folder

    torch.manual_seed(4)
    a = save_model_folder(build_network("unet2d", num_classes=3, base_channels=4), tiny_card("a"), tmp_path / "a")
    b = save_model_folder(build_network("unet2d", num_classes=3, base_channels=4),
                          tiny_card("b", image_extent_yx=[512.0, 512.0]), tmp_path / "b")
    with pytest.raises(InputError, match="image_extent_yx"):
        ensemble_model_folder([a, b], tmp_path / "ens", "ens")
    with pytest.raises(InputError, match="at least two"):
        ensemble_model_folder([a], tmp_path / "ens", "ens")
    assert not (tmp_path / "ens").exists()
    result = subprocess.run([sys.executable, "-m", "toothseg.cli", "models", "ensemble", str(tmp_path / "ens"),
                             str(a), str(b), "--id", "ens"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "image_extent_yx" in result.stderr and "Traceback" not in result.stderr
    c = save_model_folder(build_network("unet2d", num_classes=3, base_channels=4), tiny_card("c"), tmp_path / "c")
    result = subprocess.run([sys.executable, "-m", "toothseg.cli", "models", "ensemble", str(tmp_path / "ens"),
                             str(a), str(c), "--id", "ens", "--half"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "2 members" in result.stdout and verify_model_folder(tmp_path / "ens")[-1].endswith("OK")
