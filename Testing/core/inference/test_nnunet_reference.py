"""Imported nnU-Net models segment as nnU-Net itself does.

The fixtures in ``Testing/data/nnunet_reference`` were made by nnU-Net 2.8.1 (planned, preprocessed,
trained and run by its own code; ``Testing/benchmarks/make_nnunet_fixtures.py``): real
``checkpoint_final.pth``/``plans.json``/``dataset.json`` and ``nnUNetv2_predict``'s label maps and
probabilities. nnU-Net is not needed here: ``toothseg models import-checkpoint nnunet`` and
``toothseg segment`` must reproduce those outputs — an anisotropic plan with a transposed axis order
and a rotated direction (plain U-Net, with and without test-time mirroring) and a ResEnc plan resampled
in 3D.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from toothseg.cli import main
from toothseg.core.errors import InputError
from toothseg.core.inference.nnunet_pipeline import nearest_rows, resample_image, separate_axis, spline_resize
from toothseg.core.inference.predictor import InferenceOptions, Predictor
from toothseg.core.inference.windows import nnunet_gaussian_importance
from toothseg.core.io.images import read_volume
from toothseg.core.labels import LabelTable
from toothseg.core.models.card import ModelCard
from toothseg.core.models.checkpoints import safe_torch_load
from toothseg.core.models.folder import load_model_folder
from toothseg.core.models.nnunet_import import known_trainer, sided_pairs
from toothseg.core.models.nnunet_settings import NnUNetResampling, NnUNetSettings
from toothseg.core.networks import build_network

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "nnunet_reference"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text()) if (FIXTURES / "manifest.json").is_file() else None
needs_fixtures = pytest.mark.skipif(MANIFEST is None, reason="Testing/data/nnunet_reference is missing")
MODELS = sorted(MANIFEST["models"]) if MANIFEST else []


def _cases(name: str) -> list[tuple[Path, Path, Path]]:
    """(image, nnU-Net's label map, nnU-Net's probabilities) of each test image of a fixture model."""
    images = FIXTURES / MANIFEST["models"][name]["images"]
    out = []
    for image in sorted(images.glob("*_0000.nrrd")):
        case = image.name.removesuffix("_0000.nrrd")
        reference = FIXTURES / name / "reference"
        out.append((image, reference / f"{case}.nrrd", reference / f"{case}.npz"))
    return out


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, Path]:
    """Every fixture model imported once with the CLI, as a user would."""
    root = tmp_path_factory.mktemp("nnunet-imported")
    folders = {}
    for name in MODELS:
        source = FIXTURES / name
        folders[name] = root / name
        assert main(["models", "import-checkpoint", "nnunet", "--checkpoint", str(source / "checkpoint_final.pth"),
                     "--plans", str(source / "plans.json"), "--dataset", str(source / "dataset.json"),
                     "--out", str(folders[name]), "--id", name.replace("_", "-")]) == 0
    return folders


def _agreement(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, dict[int, float]]:
    dice = {}
    for label in sorted(set(np.unique(theirs)) | set(np.unique(ours)) - {0}):
        a, b = ours == label, theirs == label
        dice[int(label)] = float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))
    return float((ours == theirs).mean()), dice


@needs_fixtures
@pytest.mark.parametrize("name", MODELS)
def test_segment_reproduces_nnunet_predict(name, imported, tmp_path):
    card = load_model_folder(imported[name]).card
    trainer = MANIFEST["models"][name]["trainer"]
    # the checkpoint's own mirroring axes: none for the NoMirroring trainer
    assert card.mirror_axes == ([] if trainer == "nnUNetTrainerNoMirroring" else [0, 1, 2])
    assert card.nnunet is not None
    for image, reference, _ in _cases(name):
        out = tmp_path / f"{image.name.removesuffix('_0000.nrrd')}.nrrd"
        assert main(["segment", str(image), "-o", str(out), "--model", str(imported[name]), "--device", "cpu"]) == 0
        ours, theirs = sitk.ReadImage(str(out)), sitk.ReadImage(str(reference))
        # same grid, same place: the result is written in the input's geometry, as nnU-Net writes it
        assert ours.GetSize() == theirs.GetSize()
        assert np.allclose(ours.GetDirection(), theirs.GetDirection())
        assert np.allclose(ours.GetOrigin(), theirs.GetOrigin())
        agreement, dice = _agreement(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs))
        assert np.unique(sitk.GetArrayFromImage(theirs)).size >= 2, "a reference with no labels tests nothing"
        assert agreement >= 0.999, f"{name}/{image.name}: voxel agreement {agreement:.5f}"
        assert min(dice.values()) >= 0.995, f"{name}/{image.name}: Dice per label {dice}"


@needs_fixtures
@pytest.mark.parametrize("name", MODELS)
def test_probabilities_match_nnunet(name, imported):
    """The softmax nnU-Net saves (``--save_probabilities``) against ours, via the normalised entropy."""
    predictor = Predictor(imported[name], InferenceOptions(device="cpu", uncertainty=True))
    for image, _, probabilities in _cases(name):
        volume = read_volume(image)
        prediction = predictor.predict(volume)
        with np.load(probabilities) as data:
            p = data["probabilities"].astype(np.float32).clip(1e-8, None)
        entropy = -(p * np.log(p)).sum(axis=0) / np.log(max(2, p.shape[0]))
        difference = np.abs(prediction.uncertainty.array - entropy)
        assert float(np.percentile(difference, 99)) < 0.02 and float(difference.mean()) < 2e-3, (
            f"{name}/{image.name}: entropy differs by {difference.mean():.4f} on average")


@needs_fixtures
def test_toothseg_arithmetic_alone_does_not_reproduce_nnunet(imported, tmp_path):
    """The same weights run with ToothSeg's own preprocessing (trilinear resampling after normalising,
    reoriented axes, blended probabilities) disagree with nnU-Net: the fixtures can tell the two apart."""
    name = "aniso_plain_nomirroring"
    folder = imported[name]
    card = json.loads((folder / "model.json").read_text())
    card["nnunet"] = None
    (folder.parent / "plain").mkdir()
    for path in folder.iterdir():
        (folder.parent / "plain" / path.name).write_bytes(path.read_bytes())
    (folder.parent / "plain" / "model.json").write_text(json.dumps(card))
    image, reference, _ = _cases(name)[0]
    options = InferenceOptions(device="cpu", postprocessing=[])
    prediction = Predictor(folder.parent / "plain", options).predict(read_volume(image))
    _, dice = _agreement(prediction.labels.array, sitk.GetArrayFromImage(sitk.ReadImage(str(reference))))
    assert min(dice.values()) < 0.995


@needs_fixtures
def test_mirroring_is_part_of_what_is_reproduced(imported):
    """A model trained with mirroring is mirrored by nnU-Net at inference: without it the fixture's
    label 1 (small, undertrained: near-ties) comes out different."""
    name = "aniso_plain_mirroring"
    image, reference, _ = _cases(name)[-1]
    options = InferenceOptions(device="cpu", tta=False)
    labels = Predictor(imported[name], options).predict(read_volume(image)).labels.array
    _, dice = _agreement(labels, sitk.GetArrayFromImage(sitk.ReadImage(str(reference))))
    assert min(dice.values()) < 0.995


@needs_fixtures
def test_folds_are_averaged_as_logits(imported, tmp_path):
    """Two folds of one checkpoint (the same weights twice) give the one-fold result exactly, and the
    imported folder is an ensemble of two members with the plan on each card."""
    name = "aniso_plain_mirroring"
    source = FIXTURES / name
    out = tmp_path / "folds"
    checkpoint = str(source / "checkpoint_final.pth")
    assert main(["models", "import-checkpoint", "nnunet", "--checkpoint", checkpoint, checkpoint, "--plans",
                 str(source / "plans.json"), "--dataset", str(source / "dataset.json"), "--out", str(out)]) == 0
    loaded = load_model_folder(out)
    assert [role for role, _ in loaded.members] == ["ensemble", "ensemble"]
    assert all(member.card.nnunet == loaded.card.nnunet for _, member in loaded.members)
    image = read_volume(_cases(name)[0][0])
    options = InferenceOptions(device="cpu", tta=False)
    two = Predictor(out, options).predict(image).labels.array
    one = Predictor(imported[name], options).predict(image).labels.array
    assert np.array_equal(one, two)


def _distributed_zip(path: Path, name: str, folds: list[str],
                     configurations: tuple[str, ...] = ("3d_fullres",)) -> Path:
    """A fixture model packed as nnU-Net models are distributed (Dataset…/Trainer__Plans__config/fold_N/)."""
    source = FIXTURES / name
    with zipfile.ZipFile(path, "w") as archive:
        for configuration in configurations:
            folder = f"Dataset901_Aniso/nnUNetTrainer__nnUNetPlansTiny__{configuration}"
            for file in ("plans.json", "dataset.json"):
                archive.write(source / file, f"{folder}/{file}")
            for fold in folds:
                archive.write(source / "checkpoint_final.pth", f"{folder}/fold_{fold}/checkpoint_final.pth")
                archive.writestr(f"{folder}/fold_{fold}/debug.json", "{}")
    return path


@needs_fixtures
def test_a_distributed_zip_imports_as_it_comes(imported, tmp_path, capsys):
    name = "aniso_plain_mirroring"
    archive = _distributed_zip(tmp_path / "model.zip", name, ["0", "1"])
    assert main(["models", "import-checkpoint", "nnunet", "--zip", str(archive), "--out", str(tmp_path / "m")]) == 0
    loaded = load_model_folder(tmp_path / "m")
    assert len(loaded.members) == 2  # both folds, as nnUNetv2_predict would use them
    assert loaded.card.provenance["archive"] == "model.zip"
    assert loaded.card.provenance["imported_from"][0].endswith("fold_0/checkpoint_final.pth")
    assert main(["models", "import-checkpoint", "nnunet", "--zip", str(archive), "--folds", "1",
                 "--out", str(tmp_path / "one")]) == 0
    image = read_volume(_cases(name)[0][0])
    options = InferenceOptions(device="cpu", tta=False)
    one = Predictor(tmp_path / "one", options).predict(image).labels.array
    assert np.array_equal(one, Predictor(imported[name], options).predict(image).labels.array)
    # a fold that is not there, an archive with two configurations and a file that is no zip are refused
    # with a clear message, and nothing is written
    def refused(*arguments: str) -> str:
        assert main(["models", "import-checkpoint", "nnunet", *arguments, "--out", str(tmp_path / "x")]) != 0
        assert not (tmp_path / "x").exists()
        return capsys.readouterr().err

    assert "no fold(s) 3" in refused("--zip", str(archive), "--folds", "3")
    both = _distributed_zip(tmp_path / "two.zip", name, ["all"], ("3d_fullres", "3d_lowres"))
    assert "several models (3d_fullres" in refused("--zip", str(both))
    assert "not a readable zip" in refused("--zip", str(FIXTURES / "manifest.json"))
    assert "either --zip or" in refused("--zip", str(archive), "--plans", "plans.json")


@needs_fixtures
def test_an_unknown_trainer_is_reported(tmp_path, caplog):
    import torch

    source = FIXTURES / "aniso_plain_mirroring"
    checkpoint = safe_torch_load(source / "checkpoint_final.pth")  # weights_only, as the importer reads it
    checkpoint["trainer_name"] = "MyCustomTrainer"
    torch.save(checkpoint, tmp_path / "custom.pth")
    with caplog.at_level("WARNING"):
        assert main(["models", "import-checkpoint", "nnunet", "--checkpoint", str(tmp_path / "custom.pth"),
                     "--plans", str(source / "plans.json"), "--dataset", str(source / "dataset.json"),
                     "--out", str(tmp_path / "m")]) == 0
    assert "'MyCustomTrainer' is not one ToothSeg knows" in caplog.text
    assert load_model_folder(tmp_path / "m").card.provenance["trainer_known"] is False


def test_trainer_names_and_sided_labels():
    assert known_trainer("nnUNetTrainer") and known_trainer("nnUNetTrainerNoMirroring")
    assert known_trainer("nnUNetTrainer_4000epochs_NoMirroring")
    assert known_trainer("nnUNetTrainer_DASegOrd0_NoMirroring")
    assert not known_trainer("nnUNetTrainerUMambaBot") and not known_trainer("MyTrainer")
    names = {1: "Maxilla & Upper Skull", 2: "Mandible", 3: "sinus_maxillary_left", 4: "sinus_maxillary_right",
             5: "Left Mandibular Canal", 6: "Right Mandibular Canal", 7: "left_only_thing"}
    assert sided_pairs(names) == {3: 4, 4: 3, 5: 6, 6: 5}


# --------------------------------------------------------------------------- arithmetic, without fixtures

def test_separate_axis_follows_nnunets_rule():
    rule = NnUNetResampling()
    assert separate_axis([0.7, 0.7, 2.4], [0.7, 0.7, 0.7], rule) == 2  # the current spacing is anisotropic
    assert separate_axis([0.5, 0.5, 0.5], [3.0, 0.8, 0.8], rule) == 0  # else the new one
    assert separate_axis([0.8, 0.8, 2.0], [0.8, 0.8, 0.8], rule) is None  # ratio 2.5: not above 3
    assert separate_axis([0.24, 1.25, 1.25], [0.24, 1.25, 1.25], rule) is None  # two thick axes: 3D
    assert separate_axis([0.8, 0.8, 2.0], [0.8, 0.8, 0.8], NnUNetResampling(force_separate_z=True)) == 2
    assert separate_axis([0.7, 0.7, 2.4], [0.7, 0.7, 0.7], NnUNetResampling(force_separate_z=False)) is None


def test_one_zoom_per_axis_equals_a_3d_spline_zoom():
    """The memory-lean cubic resampling (slices, then rows) gives scikit-image's 3D resize, which is
    ``ndimage.zoom`` with these arguments, clipped to the input range."""
    rng = np.random.default_rng(0)
    image = ndimage.gaussian_filter(rng.normal(size=(13, 17, 11)), 1.0).astype(np.float32)
    shape = (19, 12, 16)
    ours = resample_image(image, shape, [1.0, 1.0, 1.0], [0.7, 1.4, 0.7], NnUNetResampling())
    reference = spline_resize(image, shape, 3)
    assert ours.dtype == np.float32 and ours.shape == shape
    assert np.abs(ours - reference).max() < 1e-5
    # and a single-axis zoom reproduces ndimage.zoom's own grid-mode arithmetic
    direct = ndimage.zoom(image.astype(np.float64), [s / n for s, n in zip(shape, image.shape)], order=3,
                          mode="nearest", grid_mode=True)
    assert np.abs(np.clip(direct, image.min(), image.max()) - reference).max() < 1e-9


def test_thick_axis_is_resampled_by_nearest_slice():
    image = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    out = resample_image(image, (7, 5, 6), [3.0, 0.5, 0.5], [1.5, 0.5, 0.5], NnUNetResampling())
    rows = nearest_rows(4, 7)
    assert rows == [0, 0, 1, 2, 2, 3, 3] or rows == [0, 1, 1, 2, 2, 3, 3]  # ties as ndimage rounds them
    for k, row in enumerate(rows):
        assert np.allclose(out[k], image[row])  # in-plane shape unchanged: each slice copied whole
    assert nearest_rows(6, 6) == list(range(6))


def test_nnunet_gaussian_is_centred_at_half_the_patch():
    weights = nnunet_gaussian_importance([8, 10, 12])
    assert weights.max() == pytest.approx(10.0)
    assert np.unravel_index(weights.argmax(), weights.shape) == (4, 5, 6)
    assert (weights > 0).all() and weights.dtype == np.float32
    assert np.array_equal(weights.astype(np.float16).astype(np.float32), weights)  # float16 values


def test_card_refuses_a_broken_plan():
    with pytest.raises(InputError, match="transpose_backward does not undo"):
        NnUNetSettings(transpose_forward=[2, 0, 1], transpose_backward=[2, 0, 1],
                       intensity_properties={"mean": 0, "std": 1, "percentile_00_5": -1, "percentile_99_5": 1})
    with pytest.raises(InputError, match="intensity properties"):
        NnUNetSettings(normalization="CTNormalization")
    card = {"id": "x", "architecture": "plain_conv_unet", "kwargs": {}, "spatial_dims": 3,
            "label_table": LabelTable.custom({1: "a"}, name="t").to_dict(), "class_values": [0, 1],
            "nnunet": {"normalization": "Fancy"}}
    with pytest.raises(InputError, match="Fancy"):
        ModelCard.from_dict(card)


def test_plain_conv_unet_loads_nnunet_key_names():
    network = build_network("plain_conv_unet", features_per_stage=[4, 8], strides=[1, 2], n_conv_per_stage=[2, 2],
                            n_conv_per_stage_decoder=[2], kernel_sizes=3, num_classes=3)
    keys = set(network.state_dict())
    assert "encoder.stages.0.0.convs.1.conv.weight" in keys and "encoder.stages.1.0.convs.0.norm.weight" in keys
    assert "decoder.stages.0.convs.1.conv.weight" in keys and "decoder.seg_layers.0.weight" in keys
    assert network(torch.zeros(1, 1, 8, 8, 8)).shape == (1, 3, 8, 8, 8)
    # by hand: encoder 564 + 2640 (convs with bias, affine instance norms), decoder 260 (transposed conv)
    # + 876 + 444 (convs) + 15 (1x1 head)
    assert sum(p.numel() for p in network.parameters()) == 4799


@needs_fixtures
def test_install_imports_a_zip_straight_into_the_model_folders(tmp_path, monkeypatch, capsys):
    """What the Slicer panel's "Import nnU-Net model (.zip)…" runs: no --out, the model lands in the
    user's model folders under the given ID, and the scratch folder is gone."""
    import tempfile

    from toothseg.core.models.catalog import load_catalog

    monkeypatch.setenv("TOOTHSEG_MODELS_DIR", str(tmp_path / "home"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    archive = _distributed_zip(tmp_path / "model.zip", "aniso_plain_mirroring", ["0"])
    assert main(["models", "import-checkpoint", "nnunet", "--zip", str(archive)]) != 0  # neither --out nor --install
    assert "--install" in capsys.readouterr().err
    assert main(["models", "import-checkpoint", "nnunet", "--zip", str(archive), "--id", "my-nnunet",
                 "--install"]) == 0
    assert "installed model 'my-nnunet'" in capsys.readouterr().out
    entry = load_catalog().get("my-nnunet")
    assert entry.available and entry.folder == tmp_path / "home" / "my-nnunet"
    assert load_model_folder(entry.folder).card.nnunet is not None
    assert list((tmp_path / "tmp").iterdir()) == []  # the scratch copy was removed
    assert main(["models", "import-checkpoint", "nnunet", "--zip", str(archive), "--id", "my-nnunet",
                 "--install"]) != 0  # installed already: refused, the installed copy kept
    assert "already installed" in capsys.readouterr().err
    assert load_model_folder(entry.folder).card.id == "my-nnunet"
