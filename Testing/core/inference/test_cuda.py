"""CUDA paths of inference: AMP and the out-of-memory fall-back on a real GPU.

Marked ``gpu``: collected everywhere, run only where ``torch.cuda.is_available()`` (skipped, and
reported as skipped, on the CPU machines of this project's CI). Run them on a GPU machine with
``.venv/bin/python -m pytest -m gpu Testing``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toothseg.core.inference.predictor import InferenceOptions, Predictor
from toothseg.core.inference.sliding_window import SlidingWindowConfig, sliding_window_predict
from toothseg.core.io import read_volume
from toothseg.core.models.catalog import load_catalog
from toothseg.core.resources import sample_scan

pytestmark = pytest.mark.gpu


def test_bundled_cascade_on_the_sample_gives_the_same_teeth_on_gpu_with_amp_as_on_cpu():
    """float16 autocast changes logits in the last bits; the labels must barely move."""
    entry = load_catalog(include_user=False).default("3d")
    scan = read_volume(sample_scan())
    results = {}
    for device in ("cpu", "cuda"):
        predictor = Predictor(entry.folder, InferenceOptions(device=device, fast=True))
        assert predictor.device.type == device
        results[device] = predictor.predict(scan).labels.array
    cpu, gpu = results["cpu"], results["cuda"]
    assert cpu.shape == gpu.shape
    assert float(np.mean(cpu == gpu)) >= 0.999
    teeth = cpu > 0
    assert teeth.any() and float(np.mean(cpu[teeth] == gpu[teeth])) >= 0.98


def test_real_gpu_out_of_memory_falls_back_and_blends_the_same():
    """A predictor that asks for more GPU memory than exists, for batches of more than one window:
    the blend goes on with single windows and equals the blend computed with single windows."""
    free, _ = torch.cuda.mem_get_info()

    def greedy(batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[0] > 1:
            torch.empty(int(free * 2), dtype=torch.uint8, device=batch.device)  # raises OutOfMemoryError
        return torch.softmax(torch.stack([batch[:, 0], -batch[:, 0]], 1), 1)

    image = torch.linspace(-1, 1, 8 * 12 * 12).reshape(1, 8, 12, 12)
    config = SlidingWindowConfig((4, 6, 6), 0.5, batch_size=2, exact=True)
    probs = sliding_window_predict(image, greedy, 2, config, device="cuda")
    single = sliding_window_predict(image, greedy, 2, SlidingWindowConfig((4, 6, 6), 0.5, 1, exact=True),
                                    device="cuda")
    torch.testing.assert_close(probs, single)

