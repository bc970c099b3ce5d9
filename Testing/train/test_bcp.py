"""Bidirectional copy-paste: the paste box, its dynamic schedule, and that every mixed image is
supervised by the labels of the very pixels it shows (true labels on the labeled part, the teachers'
pseudo-labels on the unlabeled part). The generic method contract cannot see a mix-up of halves."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from toothseg.train.methods import MethodContext, get_method
from toothseg.train.methods.bcp import paste_mask

CLASSES = 3


class ImageIsTheAnswer(nn.Module):
    """Confident logits for class ``round(image)``: a perfect network when the image shows its labels."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = x[:, 0].round().long().clamp(0, CLASSES - 1)
        return F.one_hot(values, CLASSES).movedim(-1, 1).float() * self.scale


def method(name: str, dims: int = 2, iterations: int = 100):
    cls = get_method(name)
    bcp = cls(cls.validate_settings({}), MethodContext(lambda **_: ImageIsTheAnswer(), CLASSES, dims, iterations))
    bcp.nets = bcp.build_networks()
    return bcp


def combs(shift: int, size: int = 24) -> torch.Tensor:
    """(size, size) labels in which every 3 adjacent columns show all classes, and classes 1 and 2 are
    each one connected piece (columns joined by the top and bottom rows): so any paste box holds every
    class, and BCP's largest-component cleaning of pseudo-labels keeps them whole."""
    columns = (torch.arange(size) + shift) % CLASSES
    label = columns.expand(size, size).clone()
    label[0] = 1  # class 1 joined along the top row ...
    label[-1] = 2  # ... class 2 along the bottom one
    return label


def test_paste_mask_has_one_zero_box_of_the_given_fraction():
    g = torch.Generator().manual_seed(0)
    for shape, fraction in [((24, 30), 2 / 3), ((16, 20, 12), 0.5), ((9, 9), 1 / 3)]:
        mask = paste_mask(shape, fraction, g)
        zeros = (mask == 0).nonzero()
        sides = [int(fraction * s) for s in shape]
        assert len(zeros) == int(torch.tensor(sides).prod())
        extent = (zeros.max(0).values - zeros.min(0).values + 1).tolist()
        assert extent == sides and set(mask.unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("dims, final", [(2, 1 / 3), (3, 1 / 2)])
def test_dynamic_mask_shrinks_linearly_to_its_final_fraction(dims, final):
    bcp = method("bcp_pretrain", dims, iterations=100)
    assert bcp.mask_fraction(0) == pytest.approx(2 / 3)
    assert bcp.mask_fraction(50) == pytest.approx((2 / 3 + final) / 2)
    assert bcp.mask_fraction(100) == pytest.approx(final) and bcp.mask_fraction(500) == pytest.approx(final)


def test_pretraining_mixes_images_and_labels_with_the_same_box():
    torch.manual_seed(0)
    label = torch.stack([combs(0), combs(1), combs(2), combs(1)])
    image = label.float()[:, None]
    bcp = method("bcp_pretrain")
    right = bcp.train_step({"image": image, "label": label}, step=0)
    assert float(right.loss.detach()) < 0.01  # the perfect network scores perfectly on every mixed image
    # control: the labels of the other half (a mix-up of a and b) would be caught
    wrong = bcp.train_step({"image": image, "label": label.roll(2, dims=0)}, step=0)
    assert float(wrong.loss.detach()) > 0.2


def test_self_training_supervises_each_part_of_both_mixes_by_the_right_labels():
    """X_l = x_a⊙M + u_a⊙(1−M) and X_u = u_b⊙M + x_b⊙(1−M): with teachers that read the classes off the
    image, true and pseudo-labels agree with the mixed pixels exactly when the halves are paired right."""
    torch.manual_seed(0)
    label = torch.stack([combs(0), combs(1)])
    unlabeled = torch.stack([combs(2), combs(0).flip(-1)]).float()[:, None]  # four different images
    bcp = method("bcp")
    out = bcp.train_step({"image": label.float()[:, None], "label": label, "unlabeled_image": unlabeled}, step=0)
    assert float(out.terms["supervised"].detach()) < 0.02 and float(out.terms["pseudo"].detach()) < 0.02
    assert out.unsupervised == ("pseudo",)
    # control: labels that do not belong to the labeled images show up in the supervised term only
    out = bcp.train_step({"image": label.float()[:, None], "label": label.roll(1, dims=0),
                          "unlabeled_image": unlabeled}, step=0)
    assert float(out.terms["supervised"].detach()) > 0.2 and float(out.terms["pseudo"].detach()) < 0.02


def test_u_weight_scales_the_pseudo_labelled_terms_as_in_bcps_mix_loss():
    """BCP weighs the pseudo-labelled part of each mix by ``u_weight`` (0.5) against 1.0 for the labeled
    part. The masked losses are normalised by their region, so the weight must multiply the loss: put
    into the voxel weights it cancels out and every part counts 1.0."""
    torch.manual_seed(0)
    label = torch.stack([combs(0), combs(1)])
    unlabeled = torch.stack([combs(2), combs(0).flip(-1)]).float()[:, None]
    batch = {"image": label.float()[:, None], "label": label, "unlabeled_image": unlabeled}
    terms = {}
    for u_weight in (1.0, 0.5, 0.0):
        cls = get_method("bcp")
        bcp = cls(cls.validate_settings({"u_weight": u_weight}),
                  MethodContext(lambda **_: ImageIsTheAnswer(), CLASSES, 2, 100))
        bcp.nets = bcp.build_networks()
        with torch.no_grad():
            bcp.nets["student"].scale.fill_(0.5)  # a doubtful student: every term is well above zero
        out = bcp.train_step(batch, step=0)
        terms[u_weight] = {name: float(value.detach()) for name, value in out.terms.items()}
        assert float(out.loss.detach()) == pytest.approx(sum(terms[u_weight].values()))
        assert set(terms[u_weight]) == {"supervised", "pseudo", "plain"}  # plain: the unmixed labeled batch
    assert terms[1.0]["pseudo"] > 0.1
    assert terms[0.5]["supervised"] == pytest.approx(terms[1.0]["supervised"])
    assert terms[0.5]["pseudo"] == pytest.approx(terms[1.0]["pseudo"] / 2)
    assert terms[0.0]["pseudo"] == 0.0


def test_pseudo_labels_below_the_confidence_threshold_are_ignored():
    """Issue defect 9: BCP took every arg-max of its teacher as a label, however unsure. Voxels whose
    teacher confidence is under ``pseudo_threshold`` (0.9) become IGNORE (they count nowhere); confident
    ones keep their class."""
    from toothseg.train.methods.supervised import IGNORE

    bcp = method("bcp")
    logits = torch.zeros((1, CLASSES, 6, 6))
    logits[0, 1, :, :3] = 5.0  # confident class 1 on the left half: softmax 0.987
    logits[0, 2, :, 3:] = 0.5  # a doubtful class 2 on the right half: softmax 0.45
    pseudo = bcp.pseudo_labels(logits)
    assert (pseudo[0, :, :3] == 1).all()
    assert (pseudo[0, :, 3:] == IGNORE).all()


def test_the_pseudo_labelled_terms_wait_for_a_competent_teacher():
    """The gate keeps the pseudo-labelled terms at weight 0 while the teacher's labeled-batch tooth Dice
    is under ``gate_dice``: a teacher that says 'background' everywhere teaches nothing."""
    label = torch.stack([combs(0), combs(1)])
    batch = {"image": torch.zeros_like(label, dtype=torch.float)[:, None], "label": label,  # all background
             "unlabeled_image": torch.stack([combs(2), combs(0)]).float()[:, None]}
    bcp = method("bcp")
    out = bcp.train_step(batch, step=0)
    assert out.logs["w_pseudo"] == 0.0 and float(out.terms["pseudo"].detach()) == 0.0
    batch["image"] = label.float()[:, None]  # now the teacher reads every label right
    opened = [bcp.train_step(batch, step=s).logs["w_pseudo"] for s in range(1, 40)]
    assert opened[-1] == pytest.approx(bcp.settings.u_weight)
