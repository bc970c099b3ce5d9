"""The Predictor end to end with stand-in networks of known behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toothseg.core import CancelledError, CancelToken, InputError, LabelTable, Progress, Volume
from toothseg.core.inference import InferenceOptions, Predictor

from ...conftest import ellipsoid_teeth, oblique_direction
from .helpers import HalfImage, IntensityToClass, loaded


def teeth_as_intensity(direction=None) -> tuple[Volume, Volume]:
    """Image whose value at each voxel is the channel index of its tooth (0 bg, 1 → 11, 2 → 21)."""
    labels = ellipsoid_teeth(direction=direction)
    channel = np.zeros(labels.shape, np.float32)
    channel[labels.array == 11] = 1
    channel[labels.array == 21] = 2
    return labels.with_array(channel), labels


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_same_grid_reproduces_the_labels_exactly():
    image, labels = teeth_as_intensity(oblique_direction())
    model = loaded(IntensityToClass(3), [0, 11, 21])
    prediction = Predictor(model, InferenceOptions(tta=False, postprocessing=[])).predict(image)
    np.testing.assert_array_equal(prediction.labels.array, labels.array)
    assert prediction.labels.spacing == labels.spacing
    np.testing.assert_allclose(prediction.labels.direction, labels.direction)


def test_model_spacing_round_trip_keeps_geometry():
    """Resampled to a coarser model grid and back: the tooth lands where it was."""
    image, labels = teeth_as_intensity(np.diag([-1.0, 1.0, -1.0]))  # an 'unexpected' orientation
    one_tooth = image.with_array((labels.array == 11).astype(np.float32))  # interpolation between 0 and 1 only
    model = loaded(IntensityToClass(2), [0, 11], spacing=[0.6, 0.6, 0.6])
    prediction = Predictor(model, InferenceOptions(tta=False, postprocessing=[])).predict(one_tooth)
    assert dice(prediction.labels.array == 11, labels.array == 11) > 0.95
    z, y, x = (np.argwhere(prediction.labels.array == 11).mean(0) - np.argwhere(labels.array == 11).mean(0))
    assert max(abs(z), abs(y), abs(x)) < 0.5  # centroid within half a voxel


def test_the_report_says_whether_mirrored_passes_ran():
    """TTA asked of a model whose card allows no mirror axis runs unmirrored, and the report says so."""
    image, _ = teeth_as_intensity()
    options = InferenceOptions(tta=True, postprocessing=[])
    plain = Predictor(loaded(IntensityToClass(3), [0, 11, 21], mirror_axes=[]), options).predict(image)
    mirrored = Predictor(loaded(IntensityToClass(3), [0, 11, 21], mirror_axes=[2]), options).predict(image)
    assert plain.report["tta"] is False and mirrored.report["tta"] is True


def test_mirroring_swaps_left_and_right_labels():
    """A 'network' that calls the patient's right (low LPS x = image left) tooth 11, the other 21:
    mirrored TTA must swap the channels, or the two halves would end up 50/50."""
    volume = Volume(np.zeros((8, 8, 16), np.float32))
    model = loaded(HalfImage(), [0, 11, 21], patch=[8, 8, 16], mirror_axes=[2])
    plain = Predictor(model, InferenceOptions(tta=False, postprocessing=[], uncertainty=True)).predict(volume)
    tta = Predictor(model, InferenceOptions(tta=True, postprocessing=[], uncertainty=True)).predict(volume)
    np.testing.assert_array_equal(tta.labels.array, plain.labels.array)
    assert set(np.unique(tta.labels.array[..., :8])) == {11} and set(np.unique(tta.labels.array[..., 8:])) == {21}
    assert tta.uncertainty.array.max() < 0.01  # the mirrored pass agrees once labels are swapped
    no_swap_table = LabelTable.custom({11: "a", 21: "b"})  # no left/right pairs known
    broken = loaded(HalfImage(), [0, 11, 21], table=no_swap_table, patch=[8, 8, 16], mirror_axes=[2])
    confused = Predictor(broken, InferenceOptions(tta=True, postprocessing=[], uncertainty=True)).predict(volume)
    assert confused.uncertainty.array.min() > 0.5  # without the swap the two passes contradict



@pytest.mark.parametrize("storage", ["lps", "x_flipped", "ras", "transposed"])
def test_fdi_sides_follow_the_patient_not_the_array_order(storage):
    """One physical scan, stored in four array orders: the tooth on the patient's right must be the
    right-side number (11) every time. ``HalfImage`` calls the low-x half of the model's array 11;
    the predictor reorients every scan to the model's axes (x from the patient's right to left),
    so a scan stored right-to-left or with swapped axes must not swap the numbers."""
    shape = (4, 6, 16)  # z, y, x in LPS storage: x runs from the patient's right to left
    lps = Volume(np.zeros(shape, np.float32), spacing=(0.5, 0.5, 0.5), origin=(-4.0, -1.5, -1.0))
    flip = np.diag([-1.0, 1.0, 1.0])
    if storage == "lps":
        volume = lps
    elif storage == "x_flipped":  # the same voxels, the x axis stored from left to right
        far_x = lps.index_to_physical(np.array([shape[2] - 1, 0, 0]))[0]
        volume = Volume(np.zeros(shape, np.float32), spacing=lps.spacing, origin=tuple(far_x), direction=flip)
    elif storage == "ras":  # x and y both reversed
        far = lps.index_to_physical(np.array([shape[2] - 1, shape[1] - 1, 0]))[0]
        volume = Volume(np.zeros(shape, np.float32), spacing=lps.spacing, origin=tuple(far),
                        direction=np.diag([-1.0, -1.0, 1.0]))
    else:  # array axes (z, x, y): i runs along LPS y, j along LPS x
        volume = Volume(np.zeros((4, 16, 6), np.float32), spacing=lps.spacing, origin=lps.origin,
                        direction=np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    model = loaded(HalfImage(), [0, 11, 21], patch=[4, 6, 16], mirror_axes=[2])
    labels = Predictor(model, InferenceOptions(tta=True, postprocessing=[])).predict(volume).labels
    # physical x (LPS: + towards the patient's left) of every voxel, from the volume's own geometry
    k, j, i = np.meshgrid(*(np.arange(n) for n in labels.shape), indexing="ij")
    x_mm = labels.index_to_physical(np.stack([i.ravel(), j.ravel(), k.ravel()], 1))[:, 0].reshape(labels.shape)
    middle = (lps.origin[0] + lps.origin[0] + (shape[2] - 1) * 0.5) / 2
    assert set(np.unique(labels.array[x_mm < middle])) == {11}, "patient's right must be 11"
    assert set(np.unique(labels.array[x_mm > middle])) == {21}, "patient's left must be 21"


def test_ensemble_members_are_averaged():
    image, labels = teeth_as_intensity()
    members = [("ensemble", loaded(IntensityToClass(3), [0, 11, 21])) for _ in range(2)]
    model = loaded(None, [0, 11, 21], members=members)
    prediction = Predictor(model, InferenceOptions(tta=False, postprocessing=[])).predict(image)
    np.testing.assert_array_equal(prediction.labels.array, labels.array)


def test_cascade_runs_the_fine_model_only_near_teeth():
    image, labels = teeth_as_intensity()
    big = np.zeros((40, 96, 112), np.float32)
    big[:, 24:72, 28:84] = image.array  # teeth in the middle of a larger field of view
    image = Volume(big, image.spacing)
    truth = np.zeros(big.shape, np.uint8)
    truth[:, 24:72, 28:84] = labels.array
    coarse = loaded(IntensityToClass(3), [0, 11, 21], spacing=[0.8, 0.9, 1.0], model_id="coarse")
    fine = loaded(IntensityToClass(3), [0, 11, 21], patch=[16, 16, 16], model_id="fine")
    cascade = loaded(None, [0, 11, 21], members=[("coarse", coarse), ("fine", fine)])
    options = InferenceOptions(tta=False, postprocessing=[])
    fast = Predictor(cascade, options).predict(image)
    full = Predictor(cascade, InferenceOptions(tta=False, postprocessing=[], use_cascade=False)).predict(image)
    np.testing.assert_array_equal(full.labels.array, truth)
    for value in (11, 21):
        assert dice(fast.labels.array == value, truth == value) > 0.99
    assert fast.report["forward_passes"] < 0.6 * full.report["forward_passes"]
    assert fast.report["coarse"]["roi_fraction"] < 0.7
    # the coarse member only locates the teeth: never mirrored, and with less window overlap
    coarse = loaded(IntensityToClass(3), [0, 11, 21], spacing=[0.8, 0.9, 1.0], model_id="coarse", mirror_axes=[0])
    fine = loaded(IntensityToClass(3), [0, 11, 21], patch=[16, 16, 16], model_id="fine", mirror_axes=[0])
    cascade = loaded(None, [0, 11, 21], members=[("coarse", coarse), ("fine", fine)])
    mirrored = Predictor(cascade, InferenceOptions(tta=True, postprocessing=[])).predict(image)
    alone = Predictor(coarse, InferenceOptions(tta=False, overlap=0.25, postprocessing=[])).predict(image)
    assert mirrored.report["coarse"]["forward_passes"] == alone.report["forward_passes"]
    assert mirrored.report["forward_passes"] == 2 * fast.report["forward_passes"]  # the fine member is mirrored


def test_scan_without_teeth_gives_an_empty_result_with_a_warning():
    volume = Volume(np.zeros((16, 16, 16), np.float32))
    prediction = Predictor(loaded(IntensityToClass(3), [0, 11, 21]), InferenceOptions(tta=False)).predict(volume)
    assert not prediction.labels.array.any()
    assert any("no teeth" in w for w in prediction.warnings)
    coarse = loaded(IntensityToClass(3), [0, 11, 21], model_id="coarse")
    cascade = loaded(None, [0, 11, 21], members=[("coarse", coarse), ("fine", coarse)])
    prediction = Predictor(cascade, InferenceOptions(tta=False)).predict(volume)
    assert not prediction.labels.array.any() and any("no teeth" in w for w in prediction.warnings)


def test_kind_mismatch_nan_and_device_fallback(caplog):
    model = loaded(IntensityToClass(3), [0, 11, 21])
    with pytest.raises(InputError, match="2D image"):
        Predictor(model).predict(Volume(np.zeros((32, 32), np.float32), kind="2d"))
    model2d = loaded(IntensityToClass(3, dims=2), [0, 11, 21], dims=2)
    with pytest.raises(InputError, match="3D volume"):
        Predictor(model2d).predict(Volume(np.zeros((4, 32, 32), np.float32)))
    nan = np.zeros((4, 8, 8), np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        Predictor(model).predict(Volume(nan))
    if not torch.cuda.is_available():
        predictor = Predictor(model, InferenceOptions(device="cuda"))
        assert predictor.device.type == "cpu"
        assert "no GPU" in caplog.text


def test_2d_panoramic_path():
    labels = np.zeros((1, 40, 64), np.float32)
    labels[0, 10:20, 5:30] = 1
    labels[0, 22:35, 34:60] = 2
    model = loaded(IntensityToClass(3, dims=2), [0, 11, 21], dims=2, patch=[32, 32])
    prediction = Predictor(model, InferenceOptions(tta=False, postprocessing=[])).predict(
        Volume(labels, kind="2d"))
    assert prediction.labels.is_2d
    np.testing.assert_array_equal(prediction.labels.array, np.choose(labels.astype(int), [0, 11, 21]))


def test_a_one_slice_xray_maps_back_row_by_row_with_the_same_numbers():
    """A panoramic X-ray is one slice: its probabilities go back to the native grid in slabs of rows
    (a single slab held every class at full resolution: 9 GB for 3000 x 6000 px). The labels and the
    entropy must equal the whole-array interpolation."""
    from toothseg.core.preprocessing import resample_array

    model = loaded(IntensityToClass(5, dims=2), [0, 11, 12, 21, 22], dims=2, patch=[32, 32])
    predictor = Predictor(model, InferenceOptions(tta=False, postprocessing=[], uncertainty=True))
    probs = torch.softmax(torch.randn(5, 1, 17, 23, generator=torch.Generator().manual_seed(0)) * 3, dim=0)
    shape = (1, 301, 6007)  # wide enough for two row slabs at 5 classes
    labels = np.zeros(shape, np.uint8)
    entropy = np.zeros(shape, np.float32)
    steps = []
    predictor._probabilities_to_labels(probs, shape, np.array([0, 11, 12, 21, 22]), labels, entropy,
                                       tuple(slice(0, n) for n in shape),
                                       Progress(lambda fraction, stage: steps.append(fraction)))
    whole = resample_array(probs, shape)
    np.testing.assert_array_equal(labels, np.array([0, 11, 12, 21, 22])[whole.argmax(dim=0).numpy()])
    expected = -(whole.clamp_min(1e-8) * whole.clamp_min(1e-8).log()).sum(dim=0) / np.log(5)
    np.testing.assert_allclose(entropy, expected.numpy(), atol=1e-6)
    assert len(steps) > 1  # row slabs, reported as they go
    # without uncertainty only the classes that can win a slab are interpolated: the same labels
    pruned = np.zeros(shape, np.uint8)
    predictor._probabilities_to_labels(probs, shape, np.array([0, 11, 12, 21, 22]), pruned, None,
                                       tuple(slice(0, n) for n in shape), Progress())
    np.testing.assert_array_equal(pruned, labels)


def test_a_scan_maps_back_into_its_region_with_the_same_labels_with_or_without_uncertainty():
    """The fine region of a cascade goes back slab by slab into its place in the full label map; the
    path that interpolates only the classes able to win gives the labels of the full interpolation."""
    model = loaded(IntensityToClass(4), [0, 11, 21, 31])
    predictor = Predictor(model, InferenceOptions(tta=False, postprocessing=[]))
    logits = torch.randn(4, 9, 11, 13, generator=torch.Generator().manual_seed(1))
    logits[0] += 2.0
    probs = torch.softmax(logits * 2, dim=0)
    region, full = (20, 27, 31), (30, 40, 50)
    roi = (slice(5, 25), slice(3, 30), slice(10, 41))
    values = np.array([0, 11, 21, 31])
    with_entropy, without = np.zeros(full, np.uint8), np.zeros(full, np.uint8)
    predictor._probabilities_to_labels(probs, region, values, with_entropy, np.zeros(full, np.float32), roi,
                                       Progress())
    predictor._probabilities_to_labels(probs, region, values, without, None, roi, Progress())
    np.testing.assert_array_equal(without, with_entropy)
    assert set(np.unique(without[roi])) == {0, 11, 21, 31} and not without[:5].any()


def test_cancel_mid_run():
    image, _ = teeth_as_intensity()
    token = CancelToken()
    seen = []

    def callback(fraction, stage):
        seen.append(stage)
        if "window 2" in stage:
            token.cancel()

    with pytest.raises(CancelledError):
        Predictor(loaded(IntensityToClass(3), [0, 11, 21], patch=[8, 8, 8]), InferenceOptions(tta=False)).predict(
            image, Progress(callback, token))
    assert any("window" in s for s in seen)


def test_uncertainty_outputs():
    image, labels = teeth_as_intensity()
    image = image.with_array(image.array * 0.8 + 0.1)  # values between classes: uncertain everywhere a bit
    prediction = Predictor(loaded(IntensityToClass(3), [0, 11, 21]),
                           InferenceOptions(tta=False, uncertainty=True, postprocessing=[])).predict(image)
    u = prediction.uncertainty.array
    assert u.shape == image.shape and 0.0 <= u.min() and u.max() <= 1.0
    assert set(prediction.tooth_uncertainty) == {11, 21}
    assert all(0.0 <= v <= 1.0 for v in prediction.tooth_uncertainty.values())


def test_what_a_post_processing_step_had_to_assume_reaches_the_warnings(monkeypatch):
    """A step's ``notes`` (e.g. "numbered as one jaw; if the scan holds both, say so") end up among the
    prediction's warnings, which the CLI prints and the panel shows; they are not only logged."""
    from toothseg.core.postprocessing import steps as steps_module

    def noting(labels, spacing_zyx, notes=None):
        notes.append("the step assumed something")
        return labels

    monkeypatch.setitem(steps_module._STEPS, "noting", noting)
    monkeypatch.setitem(steps_module._MAXIMA, "noting", {})
    monkeypatch.setitem(steps_module._OFF_OR_AT_LEAST, "noting", {})
    image, _ = teeth_as_intensity()
    model = loaded(IntensityToClass(3), [0, 11, 21])
    prediction = Predictor(model, InferenceOptions(tta=False, postprocessing=[{"name": "noting"}])).predict(image)
    assert "the step assumed something" in prediction.warnings
    quiet = Predictor(model, InferenceOptions(tta=False, postprocessing=[])).predict(image)
    assert "the step assumed something" not in quiet.warnings
