"""Window placement, Gaussian blending by hand, reorientation and resampling round trips."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from toothseg.core import Volume
from toothseg.core.preprocessing import (
    axis_weights,
    channel_argmax,
    image_statistics,
    iter_resampled_argmax,
    iter_resampled_slabs,
    resample_array,
    restore_orientation,
    to_canonical,
    whole_image_spacing,
)
from toothseg.core.inference.sliding_window import SlidingWindowConfig, sliding_window_predict
from toothseg.core.inference.windows import gaussian_importance, window_starts

from ...conftest import oblique_direction


def test_window_starts():
    assert window_starts(6, 4, 0.5, "even") == [0, 2]
    assert window_starts(10, 4, 0.5, "even") == [0, 2, 4, 6]
    assert window_starts(11, 4, 0.5, "even") == [0, 2, 4, 5, 7]
    assert window_starts(3, 4, 0.5, "even") == [0]
    assert window_starts(10, 4, 0.25, "monai") == [0, 3, 6]  # step int(4 * 0.75) = 3, last moved back
    assert window_starts(11, 4, 0.25, "monai") == [0, 3, 6, 7]


def test_gaussian_weights_match_the_formula():
    w = gaussian_importance((1, 1, 4))
    sigma = 0.125 * 4
    expected = np.exp(-np.array([1.5, 0.5, 0.5, 1.5]) ** 2 / (2 * sigma**2))
    np.testing.assert_allclose(w[0, 0], np.maximum(expected, expected.min()), rtol=1e-6)


def test_blend_of_two_windows_by_hand():
    """Window 0 says class 0, window 1 says class 1; voxel 2 is weighted by the two Gaussians."""
    calls = []

    def predictor(batch):
        out = torch.zeros((batch.shape[0], 2, *batch.shape[2:]))
        for k in range(batch.shape[0]):
            out[k, len(calls)] = 1.0
            calls.append(k)
        return out

    probs = sliding_window_predict(torch.zeros(1, 1, 1, 6), predictor, 2,
                                   SlidingWindowConfig((1, 1, 4), 0.5, batch_size=1, exact=True))
    w = np.exp(-np.array([1.5, 0.5, 0.5, 1.5]) ** 2 / (2 * 0.5**2))
    w = np.maximum(w, w.min())
    # voxel 2: position 2 of window 0 (weight w[2]) and position 0 of window 1 (weight w[0])
    assert probs[1, 0, 0, 2].item() == pytest.approx(w[0] / (w[2] + w[0]), rel=1e-6)
    assert probs[1, 0, 0, 0].item() == 0.0 and probs[1, 0, 0, 5].item() == pytest.approx(1.0)
    torch.testing.assert_close(probs.sum(0), torch.ones(1, 1, 6))


def test_small_image_is_padded_and_skipped_windows_count_as_background():
    def predictor(batch):
        return torch.softmax(torch.stack([torch.zeros_like(batch[:, 0]), torch.ones_like(batch[:, 0])], 1), 1)

    probs = sliding_window_predict(torch.zeros(1, 3, 5, 5), predictor, 2, SlidingWindowConfig((8, 8, 8), exact=True))
    assert probs.shape == (2, 3, 5, 5)
    probs = sliding_window_predict(torch.zeros(1, 8, 8, 16), predictor, 2,
                                   SlidingWindowConfig((8, 8, 8), 0.0, exact=True),
                                   skip=lambda window: window[2].start >= 8)
    assert torch.all(probs[0, :, :, 8:] == 1) and torch.all(probs[1, :, :, :8] > 0.7)



def _window_dependent_predictor(batch: torch.Tensor) -> torch.Tensor:
    """Probabilities that depend on each window's content, so a window counted twice shows."""
    logits = torch.stack([batch[:, 0], -batch[:, 0], batch[:, 0] ** 2], 1)
    return torch.softmax(logits, 1)


def test_gpu_out_of_memory_retries_without_counting_a_window_twice(monkeypatch, caplog):
    """An out-of-memory error on the second batch (the first already blended) halves the batch;
    the blend equals the run that never failed. ``_on_gpu`` is forced, since no GPU is needed to
    exercise the retry; the order of the fall-backs is checked on its own below."""
    from toothseg.core.inference import sliding_window as sw

    image = torch.linspace(-2, 2, 1 * 6 * 10 * 12).reshape(1, 6, 10, 12)
    config = SlidingWindowConfig((4, 6, 6), 0.5, batch_size=4, exact=True)
    reference = sliding_window_predict(image, _window_dependent_predictor, 3, config)
    calls = []

    def failing_once(batch):
        calls.append(batch.shape[0])
        if len(calls) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return _window_dependent_predictor(batch)

    monkeypatch.setattr(sw, "_on_gpu", lambda state: True)
    with caplog.at_level("WARNING"):
        probs = sliding_window_predict(image, failing_once, 3, config)
    assert calls[:3] == [4, 4, 2] and set(calls[3:]) <= {2}
    assert "retrying with 2 window(s) per batch" in caplog.text
    torch.testing.assert_close(probs, reference, rtol=0, atol=0)


def test_out_of_memory_fallbacks_go_from_cheapest_to_cpu_and_then_give_up(monkeypatch):
    from toothseg.core.inference import sliding_window as sw

    state = sw._FallbackState(device=torch.device("cuda"), batch=4, acc_device=torch.device("cuda"))
    steps = []
    while (message := sw._degrade(state)) is not None:
        steps.append((message, state.batch, state.acc_device.type, state.device.type))
    assert [s[1:] for s in steps] == [(2, "cuda", "cuda"), (1, "cuda", "cuda"), (1, "cpu", "cuda"), (1, "cpu", "cpu")]
    assert "CPU memory" in steps[2][0] and "on the CPU" in steps[3][0]
    # a predictor that keeps failing ends in the error itself, not in an endless retry
    monkeypatch.setattr(sw, "_on_gpu", lambda state: True)

    def always_failing(batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        sliding_window_predict(torch.zeros(1, 4, 6, 6), always_failing, 3, SlidingWindowConfig((4, 6, 6), batch_size=2))


DIRECTIONS = []
for perm in itertools.permutations(range(3)):
    for signs in itertools.product((1, -1), repeat=3):
        matrix = np.zeros((3, 3))
        for column, (row, sign) in enumerate(zip(perm, signs)):
            matrix[row, column] = sign
        DIRECTIONS.append(matrix)


@pytest.mark.parametrize("direction", DIRECTIONS[::5] + [oblique_direction()], ids=lambda d: "")
def test_reorientation_is_exact_and_reversible(direction):
    rng = np.random.default_rng(0)
    volume = Volume(rng.integers(0, 100, (4, 5, 6)).astype(np.int16), (0.3, 0.5, 0.7), (10.0, -3.0, 5.0), direction)
    canonical, orientation = to_canonical(volume)
    assert np.all(np.diag(canonical.direction) > 0.5)  # axes now point along +x, +y, +z
    np.testing.assert_array_equal(restore_orientation(canonical.array, orientation), volume.array)
    # every voxel keeps its physical position
    k, j, i = 1, 3, 4
    value = volume.array[k, j, i]
    point = volume.index_to_physical(np.array([[i, j, k]]))[0]
    ci = np.round(np.linalg.solve(canonical.ijk_to_lps()[:3, :3], point - canonical.origin)).astype(int)
    assert canonical.array[ci[2], ci[1], ci[0]] == value
    channels = np.stack([canonical.array, canonical.array * 2])
    np.testing.assert_array_equal(restore_orientation(channels, orientation)[1], volume.array * 2)


@pytest.mark.parametrize("shape_in, shape_out", [((7, 9, 11), (14, 5, 11)), ((20, 16, 12), (9, 33, 6))])
def test_slab_resampling_equals_trilinear_interpolation(shape_in, shape_out):
    source = torch.rand(3, *shape_in)
    expected = F.interpolate(source[None], size=shape_out, mode="trilinear", align_corners=False)[0]
    torch.testing.assert_close(resample_array(source, shape_out, slab=2), expected, atol=1e-5, rtol=1e-5)
    blocks = list(iter_resampled_slabs(source.numpy(), shape_out, slab=3))
    assert [b[0] for b in blocks] == list(range(0, shape_out[0], 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_resampled_argmax_equals_the_argmax_of_all_classes(dtype):
    """Skipping the classes that cannot win a slab changes no label: mostly background, a few local
    classes, voxels where two classes are close, and all-zero voxels (windows never run)."""
    generator = torch.Generator().manual_seed(3)
    classes, shape_in, shape_out = 12, (9, 14, 11), (23, 31, 27)
    logits = torch.randn((classes, *shape_in), generator=generator)
    logits[0] += 4.0  # background nearly everywhere
    for c in range(1, classes):
        z, y, x = (int(torch.randint(0, n - 3, (), generator=generator)) for n in shape_in)
        logits[c, z:z + 3, y:y + 3, x:x + 3] += 6.0  # each class wins a small block
    probs = torch.softmax(logits, dim=0)
    probs[:, 0, :2, :2] = 0.0  # never-run windows count as nothing
    probs = probs.to(dtype)
    expected = torch.cat([block.argmax(dim=0) for _, _, block in iter_resampled_slabs(probs, shape_out, slab=2)])
    got = torch.cat([winner for _, _, winner in iter_resampled_argmax(probs, shape_out, slab=2)])
    assert torch.equal(got, expected)
    assert len(torch.unique(expected)) > classes // 2  # the test has several winners to keep


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_channel_argmax_is_torch_argmax_ties_included(dtype):
    """The running-maximum arg-max gives torch's answer voxel for voxel, the first channel winning ties
    (coarse integer values make many ties), for 1, 2 and 17 channels."""
    generator = torch.Generator().manual_seed(0)
    for channels in (1, 2, 17):
        block = torch.randint(0, 4, (channels, 3, 5, 7), generator=generator).to(dtype)
        assert torch.equal(channel_argmax(block), block.argmax(dim=0))
    block = torch.rand((5, 4, 6, 6), generator=generator).to(dtype)
    assert torch.equal(channel_argmax(block), block.argmax(dim=0))


def test_axis_weights_identity_and_statistics():
    lower, upper, frac = axis_weights(5, 5)
    assert torch.equal(lower, torch.arange(5)) and not frac.any()
    array = np.arange(1000, dtype=np.int16).reshape(10, 10, 10)
    stats = image_statistics(array, step=1)
    assert stats["p005"] == pytest.approx(np.percentile(array, 0.5))


def test_blending_equals_monai_sliding_window_inference():
    """Same windows and Gaussian as MONAI: probabilities agree to float32 round-off."""
    monai_inferers = pytest.importorskip("monai.inferers")
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 4, 3, padding=1)
    image = torch.randn(1, 1, 21, 30, 26)

    def predictor(x):
        return torch.softmax(net(x), 1)

    with torch.no_grad():
        expected = monai_inferers.sliding_window_inference(image, (8, 12, 10), 3, predictor, overlap=0.4,
                                                           mode="gaussian", sigma_scale=0.125)[0]
        config = SlidingWindowConfig((8, 12, 10), 0.4, batch_size=3, placement="monai", exact=True)
        ours = sliding_window_predict(image[0], predictor, 4, config)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_whole_image_spacing_by_hand():
    """A 512 x 512 training X-ray keeps its 1 mm pixels; a 1400 x 2800 one spans the same 512 x 512."""
    assert whole_image_spacing((512, 512), (512.0, 512.0)) == (1.0, 1.0)
    rows, cols = whole_image_spacing((1400, 2800), (512.0, 512.0))
    assert rows == pytest.approx(512 / 1400) and cols == pytest.approx(512 / 2800)
    assert 1400 * rows == pytest.approx(512) and 2800 * cols == pytest.approx(512)
    with pytest.raises(Exception, match="2D shape"):
        whole_image_spacing((1, 512, 512), (512.0, 512.0))
