"""Every registered method: one step runs, the loss is finite, unsupervised terms reach every
trainable network, frozen networks stay frozen, teachers follow the EMA formula."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from toothseg.core.networks import build_network
from toothseg.train.methods import MethodContext, get_method, method_names


def context(dims: int = 2, iterations: int = 100) -> MethodContext:
    def build(**overrides):
        kwargs = {"num_classes": 3, "spatial_dims": dims, "features_per_stage": [4, 8, 16], "strides": [1, 2, 2],
                  "n_blocks_per_stage": [1, 1, 1], **overrides}
        return build_network("resenc_unet", **kwargs)

    return MethodContext(build, 3, dims, iterations, lr_classes=torch.tensor([0, 2, 1]))


def batch(dims: int = 2, size: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    spatial = (size,) * dims
    label = torch.zeros((2, *spatial), dtype=torch.long)
    label[(slice(None),) + tuple(slice(s // 4, s // 2) for s in spatial)] = 1
    label[(slice(None),) + tuple(slice(s // 2, 3 * s // 4) for s in spatial)] = 2
    image = label.float()[:, None] + 0.3 * torch.randn((2, 1, *spatial), generator=g)
    return {"image": image, "label": label, "unlabeled_image": torch.randn((2, 1, *spatial), generator=g),
            "force": "consistency"}  # methods that draw the kind of step at random take this one


@pytest.mark.parametrize("name", method_names())
def test_method_contract(name):
    torch.manual_seed(0)
    cls = get_method(name)
    # gate_dice 0: the unlabeled terms start at step 0 (not when the untrained networks find teeth);
    # pseudo_threshold 0: an untrained teacher's pseudo-labels are kept, however unsure (BCP ignores voxels under 0.9)
    fields = {f.name for f in dataclasses.fields(cls.Settings)} if dataclasses.is_dataclass(cls.Settings) else set()
    settings = {key: 0.0 for key in ("gate_dice", "pseudo_threshold") if key in fields}
    method = cls(cls.validate_settings(settings), context())
    method.nets = method.build_networks()
    for net_name, net in method.nets.items():
        if net_name not in method.trainable:
            for p in net.parameters():
                p.requires_grad_(False)
    assert method.exported in method.nets and set(method.trainable) <= set(method.nets)
    step = 450  # past every warm-up / first-turn phase with the defaults
    output = method.train_step(batch(), step=step)
    assert torch.isfinite(output.loss)
    assert torch.allclose(output.loss, sum(output.terms.values()))
    if cls.needs_unlabeled:
        assert output.unsupervised, f"{name} declares no unsupervised term"
        unsupervised = sum(output.terms[t] for t in output.unsupervised)
        assert float(unsupervised.detach()) != 0.0
        active = method.active_trainable(step)
        grads = torch.autograd.grad(unsupervised, [p for n in active for p in method.nets[n].parameters()],
                                    allow_unused=True, retain_graph=True)
        offset = 0
        for net_name in active:
            params = list(method.nets[net_name].parameters())
            net_grads = grads[offset:offset + len(params)]
            offset += len(params)
            assert any(g is not None and g.abs().sum() > 0 for g in net_grads), \
                f"{name}: the unsupervised loss does not reach network {net_name!r}"
    for net_name, net in method.nets.items():
        if net_name not in method.trainable:
            assert not any(p.requires_grad for p in net.parameters())
    # teachers move towards their students by the EMA formula
    teachers = {n: copy.deepcopy(method.nets[n]) for n in method.ema_teachers_at(step)}
    frozen = [n for n in method.nets if n not in method.trainable]
    assert set(teachers) <= set(frozen)
    output.loss.backward()
    with torch.no_grad():
        for net_name in method.trainable:
            for p in method.nets[net_name].parameters():
                if p.grad is not None:
                    p -= 0.1 * p.grad
    method.after_step(step=step)
    for net_name, before in teachers.items():
        after = method.nets[net_name]
        changed = any(not torch.equal(a, b) for a, b in zip(after.parameters(), before.parameters()))
        assert changed, f"{name}: teacher {net_name!r} did not move"


def test_mean_teacher_ema_is_exact():
    cls = get_method("mean_teacher")
    method = cls(cls.validate_settings({"ema_decay": 0.9}), context())
    method.nets = method.build_networks()
    with torch.no_grad():
        for p in method.nets["student"].parameters():
            p.add_(1.0)
    teacher_before = [p.clone() for p in method.nets["teacher"].parameters()]
    method.after_step(step=100)  # decay = min(1 - 1/102, 0.9) = 0.9
    for t, t0, s in zip(method.nets["teacher"].parameters(), teacher_before, method.nets["student"].parameters()):
        torch.testing.assert_close(t, 0.9 * t0 + 0.1 * s)


def test_consistency_strong_view_leaves_batchnorm_statistics_as_a_clean_forward_does():
    """On a batch-norm network, the perturbed strong-view forward must not become inference statistics."""
    def build(**overrides):
        return build_network("unet2d", **{"num_classes": 3, "base_channels": 4, **overrides})

    cls = get_method("consistency")
    method = cls(cls.validate_settings({"gate_dice": 0.0}), MethodContext(build, 3, 2, 100))
    method.nets = method.build_networks()
    student = method.nets["student"]
    reference = copy.deepcopy(student)
    data = batch(size=32)
    output = method.train_step(data, step=50)  # labeled forward, then the forced consistency: clean + perturbed
    output.loss.backward()  # the graph is intact
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    with torch.no_grad():
        reference(data["image"])  # the labeled forward and the clean unlabeled one alone
        reference(data["unlabeled_image"])
    stats = [(n, b) for n, b in student.named_buffers() if "running" in n]
    assert stats, "unet2d is expected to use batch norm"
    expected = dict(reference.named_buffers())
    for name, value in stats:
        torch.testing.assert_close(value, expected[name], msg=f"{name} moved with the perturbed forward")
