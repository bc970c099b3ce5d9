"""The semi-supervised methods are sound before they are compared (the review's defects, each guarded):
losses that charge nothing for a perfect prediction, unlabeled terms that never outweigh the supervised
one, supervised training reproduced bit for bit when every unlabeled weight is 0, the same labeled
images as supervised training, RAIL's arithmetic on a binary input, a reconstruction head of its own,
the finest skips left alone, and every method near supervised training on a toy multi-class problem."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from toothseg.core.networks import build_network
from toothseg.train.config.loader import load_recipe
from toothseg.train.losses import soft_dice_loss
from toothseg.train.methods import MethodContext, get_method
from toothseg.train.methods.bcp import weighted_mix_loss
from toothseg.train.methods.rail import STUDENTS, disputed_entropy

RECIPES = Path(__file__).resolve().parents[2] / "ToothSegTraining" / "toothseg" / "train" / "recipes"
CLASSES = 6  # background + 5 "teeth"


# ----------------------------------------------------------------------------------------------- toy data
def toy_batch(generator: torch.Generator, size: int = 4, side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of up to five discs, class k at a class-specific place and brightness, with noise: a
    multi-class problem that a small U-Net learns in ~100 steps, where position and contrast matter."""
    images = torch.zeros((size, 1, side, side))
    labels = torch.zeros((size, side, side), dtype=torch.long)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    centres = [(8, 8), (8, 24), (24, 8), (24, 24), (16, 16)]
    for b in range(size):
        for k, (cy, cx) in enumerate(centres, start=1):
            if float(torch.rand((), generator=generator)) < 0.2:
                continue  # a missing "tooth"
            dy, dx = (torch.randint(-2, 3, (2,), generator=generator)).tolist()
            radius = 3.0 + float(torch.rand((), generator=generator)) * 2
            disc = (yy - cy - dy) ** 2 + (xx - cx - dx) ** 2 <= radius**2
            labels[b][disc] = k
            images[b, 0][disc] = 0.4 + 0.12 * k
    images += 0.15 * torch.randn(images.shape, generator=generator)
    return images, labels


def unet(seed: int = 0, channels: int = 8):
    torch.manual_seed(seed)
    return build_network("unet2d", num_classes=CLASSES, base_channels=channels)


def method_of(name: str, settings: dict | None = None, iterations: int = 100, seed: int = 0):
    torch.manual_seed(seed)
    cls = get_method(name)
    context = MethodContext(lambda **kw: build_network("unet2d", num_classes=CLASSES, base_channels=8, **kw),
                            CLASSES, 2, iterations, lr_classes=None, seed=seed)
    method = cls(cls.validate_settings(settings or {}), context)
    method.nets = method.build_networks()
    for name_, net in method.nets.items():
        if name_ not in method.trainable:
            for p in net.parameters():
                p.requires_grad_(False)
    return method


def hard_dice(logits: torch.Tensor, labels: torch.Tensor) -> float:
    predicted = logits.argmax(1)
    scores = []
    for c in range(1, CLASSES):
        t, p = labels == c, predicted == c
        if t.sum() + p.sum():
            scores.append(float(2 * (t & p).sum() / (t.sum() + p.sum())))
    return float(np.mean(scores))


# ----------------------------------------------------------------------------------------------- losses
def test_a_perfect_prediction_of_a_few_classes_costs_no_dice():
    """33 FDI classes, a patch that holds three: the absent 29 tooth classes used to add ~1 each."""
    target = torch.zeros((2, 24, 24), dtype=torch.long)
    target[:, 2:8, 2:8], target[:, 10:16, 10:16], target[0, 18:22, 3:9] = 11, 12, 30
    logits = F.one_hot(target, 33).movedim(-1, 1).float() * 30.0
    assert float(soft_dice_loss(logits, target)) < 1e-4
    assert float(soft_dice_loss(logits, target, batch_dice=False)) < 1e-4
    # a wrong class still costs: the predicted class is counted although the target lacks it
    wrong = logits.clone()
    wrong[:, 12], wrong[:, 13] = logits[:, 13], logits[:, 12]
    assert float(soft_dice_loss(wrong, target)) > 0.3


def test_bcp_charges_a_perfect_prediction_of_a_paste_region_nothing():
    target = torch.zeros((2, 32, 32), dtype=torch.long)
    target[:, 4:10, 4:10], target[:, 20:28, 20:28] = 3, 7  # 2 of 33 classes in the image
    region = torch.zeros((2, 32, 32))
    region[:, 0:16, 0:16] = 1  # the box holds class 3 and background only
    logits = F.one_hot(target, 33).movedim(-1, 1).float() * 30.0
    assert float(weighted_mix_loss(logits, target, region)) < 1e-4
    assert float(weighted_mix_loss(logits, target, 1 - region)) < 1e-4
    ignored = target.clone()
    ignored[:, 0:3] = 255  # unconfident pseudo-labels: no cost whatever is predicted there
    assert float(weighted_mix_loss(logits, ignored, region)) < 1e-4


# ----------------------------------------------------------------------------------------------- RAIL
def test_rail_terms_on_a_binary_input_are_rails_own_numbers():
    """On two classes, every term equals the binary formula of RAIL's code (methods.md §1.4) with its
    fixes R1-R3, computed here by hand; only CAL's entropy is normalised by all unlabeled voxels."""
    method = method_of("rail", {"gate_dice": 0.0, "rampup_steps": 0, "group_steps": 0,
                                "student_b_architecture": "same"})
    g = torch.Generator().manual_seed(3)
    y = (torch.rand((1, 4, 4), generator=g) > 0.5).long()
    logits_l = {n: torch.randn((1, 2, 4, 4), generator=g) for n in STUDENTS}
    logits_u = {n: torch.randn((1, 2, 4, 4), generator=g) for n in STUDENTS}
    teacher_u = {1: torch.randn((1, 2, 4, 4), generator=g), 2: torch.randn((1, 2, 4, 4), generator=g)}

    class Fixed(torch.nn.Module):
        def __init__(self, on_labeled, on_unlabeled):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))
            self.outputs = (on_labeled, on_unlabeled)

        def forward(self, x):
            return self.w * (self.outputs[0] if float(x.flatten()[0]) == 0.0 else self.outputs[1])

    method.nets = {n: Fixed(logits_l[n], logits_u[n]) for n in STUDENTS}
    method.nets["teacher_1"] = Fixed(torch.randn((1, 2, 4, 4), generator=g), teacher_u[1])
    method.nets["teacher_2"] = Fixed(torch.randn((1, 2, 4, 4), generator=g), teacher_u[2])
    batch = {"image": torch.zeros((1, 1, 4, 4)), "label": y, "unlabeled_image": torch.ones((1, 1, 4, 4))}
    out = method.train_step(batch, step=5)
    w_c, w_t = 20.0, 10.0

    def sm(z):
        return torch.softmax(z, 1)

    def sharp(p, t=0.1):
        q = p ** (1 / t)
        return q / q.sum(1, keepdim=True)

    dice_loss = {n: float(soft_dice_loss(logits_l[n], y)) for n in STUDENTS}
    best = min(dice_loss, key=dice_loss.get)
    pred = {n: logits_l[n].argmax(1) for n in STUDENTS}
    pred_u = {n: logits_u[n].argmax(1) for n in STUDENTS}
    disagreement = cal = teacher = 0.0
    for name in STUDENTS:
        partner = name[:-1] + ("b" if name.endswith("a") else "a")
        err = pred[name] != y
        if name == best:
            region, kl_region = torch.ones_like(err), err
        else:
            other = partner if best == partner else best
            region = pred[name] != pred[other]
            kl_region = region & err
        # RAIL's binary MSE: foreground channel only, mean over the region
        mse = float(((sm(logits_l[name])[:, 1] - y.float()) ** 2)[region].sum() / (region.sum() + 1e-16))
        sdcl = -torch.log_softmax(logits_l[name], 1).mean(1)  # SDCL's term over both classes
        kl = float(sdcl[kl_region].sum() / (kl_region.sum() + 1e-16))
        disagreement += 0.5 * mse + 0.05 * kl
        if name != best:
            target = sharp(sm(logits_u[best]))
            cons = float(((sm(logits_u[name]) - target) ** 2).mean())  # mean over voxels and both channels
            disputed = (pred_u[name] != pred_u[best]).float()
            uniform = float((-torch.log_softmax(logits_u[name], 1).mean(1) * disputed).mean())
            cal += w_c * (cons + 0.1 * uniform)
        t = sharp(sm(teacher_u[1 if name.startswith("g1") else 2]))
        teacher += w_t * float(((sm(logits_u[name]) - t) ** 2).mean())
    assert float(out.terms["disagreement"].detach()) == pytest.approx(disagreement, rel=1e-5)
    assert float(out.terms["cal"].detach()) == pytest.approx(cal, rel=1e-5)
    assert float(out.terms["teacher"].detach()) == pytest.approx(teacher, rel=1e-5)


def test_the_disputed_entropy_acts_on_the_two_classes_in_dispute_only():
    logits = torch.zeros((1, 33, 1, 1))
    logits[0, 5], logits[0, 9] = 4.0, 4.0  # the two in dispute, equally likely: the minimum ln 2
    a, b = torch.full((1, 1, 1), 5), torch.full((1, 1, 1), 9)
    assert float(disputed_entropy(logits, a, b)) == pytest.approx(math.log(2), rel=1e-6)
    logits.requires_grad_(True)
    logits2 = logits.detach().clone()
    logits2[0, 5] = 6.0
    logits2.requires_grad_(True)
    disputed_entropy(logits2, a, b).sum().backward()
    others = [c for c in range(33) if c not in (5, 9)]
    assert float(logits2.grad[0, others].abs().sum()) == 0.0  # the 31 other classes are left alone


# ----------------------------------------------------------------------------------------------- budgets
def _segmentation_passes(recipe_name: str) -> int:
    """Labeled image passes a segmentation network gets over the recipe: batch x steps of its segmentation
    stages, times the method's passes per labeled image (BCP's mixed images carry half of two)."""
    recipe, _ = load_recipe(RECIPES / recipe_name)
    return sum(stage.batch_size * stage.iterations * max(1, stage.grad_accumulation)
               * get_method(stage.method).labeled_passes_per_image
               for stage in recipe.stages if get_method(stage.method).produces_segmentation)


@pytest.mark.parametrize("recipe", ["mean_teacher_ufba.yaml", "bcp_ufba.yaml", "mim_ufba.yaml", "rail_ufba.yaml",
                                    "umamba2_ssl_ufba.yaml"])
def test_every_method_sees_as_many_labeled_images_as_supervised_training(recipe):
    assert _segmentation_passes(recipe) == _segmentation_passes("supervised_ufba.yaml")


@pytest.mark.parametrize("name", ["mean_teacher", "rail", "consistency", "pseudo_label", "bcp", "bcp_pretrain"])
def test_every_labeled_image_of_the_batch_reaches_every_trainable_network(name):
    """A method that drew a step without labels, or half a batch, trained on fewer labeled images."""
    method = method_of(name, {"gate_dice": 0.0} if name != "bcp_pretrain" else {})
    images, labels = toy_batch(torch.Generator().manual_seed(1))
    images.requires_grad_(True)
    for step in (0, 50, 99):
        images.grad = None
        out = method.train_step({"image": images, "label": labels, "unlabeled_image": torch.randn(4, 1, 32, 32)},
                                step)
        supervised = out.terms["supervised"]
        (grad,) = torch.autograd.grad(supervised, images, retain_graph=True)
        assert all(float(grad[k].abs().sum()) > 0 for k in range(4)), f"{name} at step {step}"
        for net_name in method.trainable:
            params = [p for p in method.nets[net_name].parameters() if p.requires_grad]
            grads = torch.autograd.grad(supervised, params, retain_graph=True, allow_unused=True)
            assert any(g is not None and float(g.abs().sum()) > 0 for g in grads), (name, net_name, step)


# ----------------------------------------------------------------------------------------------- weight 0
ZERO_WEIGHTS = {
    "mean_teacher": {"consistency_weight": 0.0},
    "consistency": {"consistency_weight": 0.0, "pl_weight": 0.0},
    "pseudo_label": {"consistency_weight": 0.0, "pl_weight": 0.0},
    "rail": {"consistency_weight": 0.0, "teacher_weight": 0.0, "alpha": 0.0, "beta": 0.0,
             "student_b_architecture": "same"},
}


@pytest.mark.parametrize("name", sorted(ZERO_WEIGHTS))
def test_with_unlabeled_weights_at_zero_a_method_is_supervised_training_bit_for_bit(name):
    """The same start, the same labeled batches: parameters and batch-norm statistics end identical."""
    steps, g = 4, torch.Generator().manual_seed(5)
    batches = []
    for _ in range(steps):
        images, labels = toy_batch(g)
        batches.append({"image": images, "label": labels, "unlabeled_image": torch.randn((4, 1, 32, 32), generator=g)})
    reference = method_of("supervised")
    method = method_of(name, {**ZERO_WEIGHTS[name], "gate_dice": 0.0})
    students = [n for n in method.trainable]
    for n in students:
        method.nets[n].load_state_dict(reference.nets["student"].state_dict())

    def run(m, names):
        optimizers = {n: torch.optim.SGD(m.nets[n].parameters(), lr=0.05, momentum=0.9) for n in names}
        for step, batch in enumerate(batches):
            for o in optimizers.values():
                o.zero_grad()
            m.train_step(batch, step).loss.backward()
            for o in optimizers.values():
                o.step()
            m.after_step(step)

    run(reference, ["student"])
    run(method, students)
    expected = reference.nets["student"].state_dict()
    for n in students:
        for key, value in method.nets[n].state_dict().items():
            assert torch.equal(value, expected[key]), f"{name}/{n}: {key} differs from supervised training"


# ----------------------------------------------------------------------------------------------- gradient size
@pytest.fixture(scope="module")
def partly_trained() -> dict[str, torch.Tensor]:
    """A small U-Net trained supervised on the toy problem until it finds the discs (tooth Dice ~0.5-0.8)."""
    method = method_of("supervised")
    optimizer = torch.optim.AdamW(method.nets["student"].parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(7)
    for step in range(60):
        images, labels = toy_batch(g)
        optimizer.zero_grad()
        method.train_step({"image": images, "label": labels}, step).loss.backward()
        optimizer.step()
    return copy.deepcopy(method.nets["student"].state_dict())


GRADIENT_CASES = {  # method settings with the gate open and every ramp at full weight
    "mean_teacher": {"gate_dice": 0.0, "rampup_steps": 0},
    "rail": {"gate_dice": 0.0, "rampup_steps": 0, "group_steps": 0, "student_b_architecture": "same"},
    "consistency": {"gate_dice": 0.0, "rampup_steps": 0},
    "pseudo_label": {"gate_dice": 0.0, "rampup_steps": 0},
    "bcp": {"gate_dice": 0.0},
}


def _gradient_ratios(method, name: str, step: int, per_term: bool) -> list[float]:
    """Gradient norm of the unlabeled terms (each, or their sum) over that of the labeled terms (every term
    not marked unsupervised: "supervised", and BCP's "plain"), per trainable network, on three toy batches."""
    g = torch.Generator().manual_seed(11)
    ratios = []

    def norm(grads):
        return math.sqrt(sum(float((x ** 2).sum()) for x in grads if x is not None))

    for k in range(3):
        images, labels = toy_batch(g)
        unlabeled, _ = toy_batch(g)
        batch = {"image": images, "label": labels, "unlabeled_image": unlabeled}
        if name in ("consistency", "pseudo_label"):
            batch["force"] = "consistency" if name == "consistency" else "pseudo"
        out = method.train_step(batch, step=step + k)
        parts = [[t] for t in out.unsupervised] if per_term else [list(out.unsupervised)]
        for n in method.trainable:
            params = [p for p in method.nets[n].parameters() if p.requires_grad]
            labeled = sum(value for key, value in out.terms.items() if key not in out.unsupervised)
            sup = norm(torch.autograd.grad(labeled, params, retain_graph=True, allow_unused=True))
            for part in parts:
                term = sum(out.terms[t] for t in part)
                if term.requires_grad:
                    uns = norm(torch.autograd.grad(term, params, retain_graph=True, allow_unused=True))
                    ratios.append(uns / max(sup, 1e-12))
    return ratios


def _load(method, state):
    for net in method.nets.values():
        if all(k in net.state_dict() for k in state):
            net.load_state_dict(state)


@pytest.mark.parametrize("name", sorted(GRADIENT_CASES))
def test_no_unlabeled_term_outweighs_the_supervised_one_on_a_partly_trained_network(name, partly_trained):
    """On a network that has half learnt the task (toy tooth Dice ~0.4):

    * with the recipe's settings, the ramp that starts when the competence gate opens keeps every
      unlabeled term below the supervised one for the steps that follow;
    * at full weight (gate open, ramp done), each unlabeled term's gradient stays within 5x the
      supervised one. (RAIL's consistency to the sharpened best student at the paper's w_C = 20 reaches
      about 4x by design; the 33-class entropy maximiser of CAL was about 14x, and collapsed training.)
    """
    method = method_of(name, {"gate_dice": 0.3} if name != "rail" else {"gate_dice": 0.3, "group_steps": 0,
                                                                           "student_b_architecture": "same"})
    _load(method, partly_trained)
    early = _gradient_ratios(method, name, step=500, per_term=False)  # the gate opens at the first step
    assert method.gate.opened_at == 500, f"{name}: a half-trained network should open the gate"
    assert max(early, default=0.0) < 1.0, f"{name}: {max(early):.2f}x the supervised gradient right after the gate"
    full = method_of(name, GRADIENT_CASES[name])
    _load(full, partly_trained)
    ratios = _gradient_ratios(full, name, step=500, per_term=True)
    assert ratios and max(ratios) < 5.0, f"{name}: an unlabeled term's gradient is {max(ratios):.1f}x the supervised"
    assert max(ratios) > 0.01, f"{name}: the unlabeled terms are inert at full weight ({max(ratios):.4f}x)"


# ----------------------------------------------------------------------------------------------- MIM/DAE head
@pytest.mark.parametrize("mode", ["mim", "dae", "recon"])
def test_reconstruction_has_a_head_of_its_own_and_never_trains_the_segmentation_head(mode, tmp_path):
    method = method_of("ssl_pretrain", {"mode": mode, "side_fraction": (0.1, 0.3)})
    student, head = method.nets["student"], method.nets["reconstruction_head"]
    before = copy.deepcopy(student.segmentation_head().state_dict())
    images, labels = toy_batch(torch.Generator().manual_seed(2))
    out = method.train_step({"image": images, "label": labels}, 0)
    out.loss.backward()
    assert all(p.grad is None for p in student.segmentation_head().parameters())
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in head.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in student.inc.parameters())
    assert not any(k.startswith("reconstruction") for k in student.state_dict())
    for key, value in student.segmentation_head().state_dict().items():
        assert torch.equal(value, before[key])


# ----------------------------------------------------------------------------------------------- U-Mamba2-SSL
@pytest.mark.parametrize("stages", [3, 4, 5, 7])
def test_the_two_finest_skips_are_never_perturbed(stages):
    torch.manual_seed(0)

    def build(**overrides):
        return build_network("resenc_unet", num_classes=3, spatial_dims=2, features_per_stage=[4] * stages,
                             strides=[1] + [2] * (stages - 1), n_blocks_per_stage=[1] * stages, **overrides)

    cls = get_method("consistency")
    method = cls(cls.validate_settings({}), MethodContext(build, 3, 2, 10))
    method.nets = method.build_networks()
    network = method.nets["student"]
    x = torch.randn((2, 1, 2 ** (stages + 1), 2 ** (stages + 1)))
    clean = network.encode(x)
    seen = {}
    original = network.decode

    def capture(features, image=None):
        seen["features"] = features
        return original(features, image)

    network.decode = capture
    method._forward_perturbed(x)
    perturbed = seen["features"]
    assert torch.equal(perturbed[0], clean[0]) and torch.equal(perturbed[1], clean[1])
    assert all(not torch.equal(p, c) for p, c in zip(perturbed[2:], clean[2:]))


def test_2d_blank_rectangles_cover_no_more_than_the_3d_originals_share():
    from toothseg.train.data.augment import strong_augment

    x = torch.ones((64, 1, 96, 96))
    out = strong_augment(x, torch.Generator().manual_seed(0))
    blank = (out == 0).float().mean(dim=(1, 2, 3))
    # up to 5 boxes of at most 1/27 of the patch each: never more than 5/27 (a 1/3 square each was 5/9)
    assert float(blank.max()) <= 5 / 27 + 1e-6


# ----------------------------------------------------------------------------------------------- toy problem
# Each method as its recipe runs it (its stages in the same proportions, one network carried through), over
# 100 steps of 4 labeled images from 8 in all, with ramps shortened in proportion to the recipes' schedules.
# U-Mamba2-SSL's consistency is a mean over classes (as its own code): its weight's pull per class scales
# with 1/C, so the toy's 6 classes get 50 x 6/33, the pull it has on the 33 FDI classes of the recipes.
TOY_METHODS = {
    "mean_teacher": [("mean_teacher", 100, {"rampup_steps": 20})],
    "rail": [("rail", 100, {"rampup_steps": 75, "group_steps": 10, "student_b_architecture": "same"})],
    "umamba2_ssl": [("consistency", 67, {"rampup_steps": 20, "consistency_weight": 50 * 6 / 33}),
                    ("pseudo_label", 33, {"rampup_steps": 5, "consistency_weight": 50 * 6 / 33})],
    "mim": [("mim_pretrain", 50, {"side_fraction": (0.1, 0.3)}), ("supervised", 100, {})],
    "bcp": [("bcp_pretrain", 25, {}), ("bcp", 75, {"static_interval": 25})],  # 1000 of 3000 steps
}
# Four seeds for every method: one toy run ends anywhere between 0.54 and 0.99 with its seed, and how the
# floating-point sums round differs between CPUs (AVX-512 or AVX2 kernels), so two seeds were a coin toss:
# MIM made 0.76 against supervised 0.86 on seeds 0-1 of an AVX2 machine (0.54 and 0.99; supervised 0.75 and
# 0.97) and passed on another, and 0.86 against 0.87 on seeds 0-3 of the AVX2 one. BCP's runs scatter most
# (its copy-paste mixes cut the discs at random places): 0.72 against 0.87 on seeds 0-1, 0.844 against 0.875
# on 0-3 (0.936 against 0.886 at 150 steps, 0.990 against 0.925 at 200: it learns slower, then better).
TOY_SEEDS = (0, 1, 2, 3)
# learning rates other than 3e-3: mim_ufba.yaml pretrains at a tenth of its fine-tuning rate (1e-4 against
# 1e-3); at the fine-tuning rate, 50 toy pretraining steps left a network that then learnt the toy slower
TOY_LR: dict[str, float] = {"mim_pretrain": 3e-4}


def _train_toy(stages: list[tuple[str, int, dict]], seed: int = 0) -> float:
    """Train the stages in order on the toy problem (each from the previous stage's exported network);
    tooth Dice of the last one on 16 unseen toy images."""
    labeled = [toy_batch(torch.Generator().manual_seed(100 + k)) for k in range(2)]  # 8 labeled images in all
    g = torch.Generator().manual_seed(9 + seed)
    carried = None
    for name, steps, settings in stages:
        method = method_of(name, settings, iterations=steps, seed=seed)
        if carried is not None:
            for net in method.nets.values():
                if all(k in net.state_dict() for k in carried):
                    net.load_state_dict(carried)
        lr = TOY_LR.get(name, 3e-3)
        optimizers = [torch.optim.AdamW(method.nets[n].parameters(), lr=lr) for n in method.trainable]
        for step in range(steps):
            images, labels = labeled[step % 2]
            unlabeled, _ = toy_batch(g)
            for o in optimizers:
                o.zero_grad()
            method.train_step({"image": images, "label": labels, "unlabeled_image": unlabeled}, step).loss.backward()
            for o in optimizers:
                o.step()
            method.after_step(step)
        carried = copy.deepcopy(method.nets[method.exported].state_dict())
    test_images, test_labels = toy_batch(torch.Generator().manual_seed(999), size=16)
    network = method.nets[method.exported]
    network.eval()
    with torch.no_grad():
        return hard_dice(method.main_output(network(test_images)), test_labels)


def _toy_mean(stages, seeds: tuple[int, ...] = TOY_SEEDS) -> float:
    return float(np.mean([_train_toy(stages, seed) for seed in seeds]))


@pytest.fixture(scope="module")
def supervised_toy_dice():
    """Supervised training's toy Dice over a set of seeds (each set trained once per module)."""
    cache: dict[tuple[int, ...], float] = {}

    def dice(seeds: tuple[int, ...] = TOY_SEEDS) -> float:
        if seeds not in cache:
            cache[seeds] = _toy_mean([("supervised", 100, {})], seeds)
        return cache[seeds]

    return dice


@pytest.mark.parametrize("name", sorted(TOY_METHODS))
def test_on_a_toy_multi_class_problem_every_method_keeps_up_with_supervised_training(name, supervised_toy_dice):
    """Mean over the same training seeds for both. (RAIL's terms are sharpened, T = 0.1, at weights 20 and
    10: with the gate at 0.3 its students collapsed to 0.24 here, which is why RAIL's gate_dice is 0.5.)"""
    seeds = TOY_SEEDS
    reference = supervised_toy_dice(seeds)
    assert reference > 0.5  # the toy problem is learnt in 100 steps
    dice = _toy_mean(TOY_METHODS[name], seeds)
    assert dice >= 0.9 * reference, f"{name}: {dice:.3f} against supervised {reference:.3f} (seeds {seeds})"


def test_on_the_toy_problem_bcps_pseudo_labels_cost_nothing_against_its_own_labeled_objective():
    """BCP's labeled objective adds copy-paste mixes (half of each labeled image per mixed pass) to plain
    supervised training; its pseudo-labels are judged here against BCP with u_weight 0, the same mixes
    without pseudo-labels. Measured 2026-12-05 (two seeds; the test now takes four): 0.731 against 0.719
    with BCP's gate 0.6 and confidence threshold 0.9; at gate 0.3 / threshold 0.7 it was 0.575."""
    stages = TOY_METHODS["bcp"]
    with_pseudo = _toy_mean(stages)
    without = _toy_mean([stages[0], ("bcp", 75, {"static_interval": 25, "u_weight": 0.0})])
    assert without > 0.3
    assert with_pseudo >= 0.9 * without, f"bcp {with_pseudo:.3f} against its labeled objective alone {without:.3f}"


def test_settings_kept_as_the_papers_in_steps():
    """EMA decays and ramp lengths are not marked as schedule lengths (a --scale keeps them)."""
    from toothseg.train.methods import schedule_settings

    for name in ("mean_teacher", "rail", "bcp", "consistency", "pseudo_label"):
        marked = schedule_settings(get_method(name).Settings)
        assert not any("ema" in key or "rampup" in key for key in marked), (name, marked)
        fields = {f.name for f in dataclasses.fields(get_method(name).Settings)}
        assert "gate_dice" in fields
