"""MAGIC-A alignment loss, block boundaries and averaged targets (no fairseq)."""

import pytest
import torch

from fairseq_magic.core.alignment import alignment_loss, average_hiddens, block_boundaries
from fairseq_magic.core.space import MagicConfigError


def t(rows):
    """(batch=1, time, hidden) tensor from a list of per-position vectors."""
    return torch.tensor([rows], dtype=torch.float32)


# Two layers, batch 1, time 2, hidden 2.
CHILD = [t([[1.0, 2.0], [3.0, 4.0]]), t([[1.0, 1.0], [1.0, 1.0]])]
TARGET = [t([[0.0, 0.0], [0.0, 0.0]]), t([[0.0, 2.0], [1.0, 1.0]])]
# By hand: layer 0 squared errors 1, 4, 9, 16 -> mean 30/4 = 7.5;
#          layer 1 squared errors 1, 1, 0, 0 -> mean 2/4 = 0.5.


def test_block_boundaries():
    assert block_boundaries(8, 4) == [3, 7]
    assert block_boundaries(8, 1) == list(range(8))
    assert block_boundaries(8, 8) == [7]
    # The paper's base super-net: 26 layers aligned every 4 -> 1-based layers
    # 4, 8, ..., 24 and the top layer 26 (0-based 3, 7, ..., 23, 25).
    assert block_boundaries(26, 4) == [3, 7, 11, 15, 19, 23, 25]
    assert block_boundaries(6, 4) == [3, 5]
    assert block_boundaries(8, 3) == [2, 5, 7]
    assert block_boundaries(3, 10) == [2]  # larger than the depth: the top layer only
    assert block_boundaries(1, 1) == [0]
    for bad in (0, -4, 2.0, True):
        with pytest.raises(MagicConfigError, match=r"--magic-align-every .*positive integer"):
            block_boundaries(8, bad)


def test_zero_when_child_equals_target():
    hid = [torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    loss = alignment_loss(hid, [h.clone() for h in hid], block_boundaries(4, 2))
    assert loss.dim() == 0 and loss.dtype == torch.float32 and loss.item() == 0.0


def test_hand_computed_value():
    assert abs(alignment_loss(CHILD, TARGET, block_boundaries(2, 1)).item() - 8.0) < 1e-6
    # every=2: only the top layer is aligned.
    assert abs(alignment_loss(CHILD, TARGET, block_boundaries(2, 2)).item() - 0.5) < 1e-6
    # Order of the arguments does not matter for an MSE, but detaching does:
    assert abs(alignment_loss(TARGET, CHILD, [0, 1]).item() - 8.0) < 1e-6


def test_pad_positions_excluded():
    pad = torch.tensor([[False, True]])
    # Only position 0 is real: layer 0 (1 + 4) / 2 = 2.5, layer 1 (1 + 1) / 2 = 1.0.
    base = alignment_loss(CHILD, TARGET, [0, 1], pad_mask=pad)
    assert abs(base.item() - 3.5) < 1e-6
    # Arbitrary (even non-finite) values at the pad position change nothing.
    child = [h.clone() for h in CHILD]
    target = [h.clone() for h in TARGET]
    child[0][0, 1] = torch.tensor([100.0, -7.0])
    child[1][0, 1] = torch.tensor([float("inf"), float("nan")])
    target[1][0, 1] = torch.tensor([42.0, 3.0])
    assert alignment_loss(child, target, [0, 1], pad_mask=pad).item() == base.item()
    # All-false mask == no mask; an all-pad batch contributes 0, not nan.
    none_pad = torch.zeros(1, 2, dtype=torch.bool)
    assert alignment_loss(CHILD, TARGET, [0, 1], pad_mask=none_pad).item() == pytest.approx(8.0)
    all_pad = torch.ones(1, 2, dtype=torch.bool)
    assert alignment_loss(CHILD, TARGET, [0, 1], pad_mask=all_pad).item() == 0.0


def test_gradient_reaches_child_not_target():
    pad = torch.tensor([[False, True]])
    child = [h.clone().requires_grad_(True) for h in CHILD]
    # The caller "forgot" no_grad: the target is a leaf that wants gradient and
    # also the output of a parameterised computation.
    w = torch.tensor(1.0, requires_grad=True)
    target_leaves = [h.clone().requires_grad_(True) for h in TARGET]
    target = [target_leaves[0], target_leaves[1] * w]
    child[1].data[0, 1] = torch.tensor([float("nan"), 1.0])  # pad: no nan gradient
    loss = alignment_loss(child, target, [0, 1], pad_mask=pad)
    loss.backward()
    assert target_leaves[0].grad is None and target_leaves[1].grad is None and w.grad is None
    # d/dc mean_{real}(c - t)^2 = 2 (c - t) / (#real positions x hidden) = (c - t) at
    # real positions (2 / 2), and exactly 0 at the pad position.
    assert torch.equal(child[0].grad, torch.tensor([[[1.0, 2.0], [0.0, 0.0]]]))
    assert torch.equal(child[1].grad, torch.tensor([[[1.0, -1.0], [0.0, 0.0]]]))


def test_half_inputs_give_float32_scalar():
    child = [h.half().requires_grad_(True) for h in CHILD]
    target = [h.half() for h in TARGET]
    loss = alignment_loss(child, target, [0, 1])
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert abs(loss.item() - 8.0) < 1e-6
    loss.backward()
    assert child[0].grad.dtype == torch.float16


def test_bad_inputs():
    with pytest.raises(ValueError, match="boundary 2"):
        alignment_loss(CHILD, TARGET, [2])
    with pytest.raises(ValueError, match="expected equal"):
        alignment_loss(CHILD, [torch.zeros(1, 3, 2)] * 2, [0])
    with pytest.raises(ValueError, match="pad_mask"):
        alignment_loss(CHILD, TARGET, [0], pad_mask=torch.zeros(2, 2, dtype=torch.bool))


def test_average_hiddens():
    a = [t([[1.0, 2.0]]), t([[0.0, 0.0]])]
    b = [t([[3.0, 6.0]]), t([[1.0, -1.0]])]
    c = [t([[2.0, 1.0]]), t([[2.0, 4.0]])]
    for h in a:
        h.requires_grad_(True)
    avg = average_hiddens([a, b, c])
    assert len(avg) == 2
    assert torch.equal(avg[0], t([[2.0, 3.0]]))
    assert torch.equal(avg[1], t([[1.0, 1.0]]))
    assert all(not x.requires_grad for x in avg)
    # As a target: the loss of child b against the average of (a, b, c).
    loss = alignment_loss(b, avg, [0, 1])
    assert abs(loss.item() - ((1 + 9) / 2 + (0 + 4) / 2)) < 1e-6
    assert average_hiddens([b])[0].equal(b[0])
    with pytest.raises(ValueError):
        average_hiddens([])
    with pytest.raises(ValueError, match="different numbers"):
        average_hiddens([a, b[:1]])
