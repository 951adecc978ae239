"""MAGIC-A alignment of hidden states (fairseq-free; torch only).

MAGIC-A (section 4 of the paper) adds ``lambda * L_align`` to the masked-LM loss
of the sampled child, where L_align is the sum over aligned layers of the MSE
between the child's layer outputs and a target's: the anchor child's outputs
(section 4, Eq. 1) or the average outputs of C random children (appendix A.2,
Eq. 3-4). The paper aligns block-wise, "in every four layers", so only the
outputs of the last layer of each block (and of the top layer) enter the sum
(``block_boundaries``).

Conventions: every hidden state is ``(batch, time, hidden)``; a list of hidden
states holds one tensor per layer, 0-based (entry ``i`` is the output of layer
``i``, i.e. the input of layer ``i + 1``). Callers holding fairseq's time-first
``inner_states`` transpose them (and drop the embedding entry) before calling.
"""

from typing import List, Optional, Sequence

import torch

from .space import MagicConfigError


def block_boundaries(num_layers: int, every: int) -> List[int]:
    """0-based indices of the layers whose outputs are aligned.

    The paper aligns "in every four layers" of a 26-layer chain (section 5.1),
    and 4 does not divide 26. Rule: a boundary after every ``every``-th layer,
    plus the top layer, whose output feeds the LM head and so must always be
    aligned. 1-based, 26 layers every 4: layers 4, 8, ..., 24 and 26 (seven
    terms; the last block holds 2 layers). 0-based that is
    ``every-1, 2*every-1, ..., num_layers-1``. ``every >= num_layers`` aligns
    the top layer only.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise MagicConfigError(
            f"--magic-align-every {every!r}: expected a positive integer (block size "
            f"in layers; the model has {num_layers})")
    if num_layers < 1:
        raise MagicConfigError(f"number of layers {num_layers}: expected >= 1")
    out = list(range(every - 1, num_layers, every))
    if not out or out[-1] != num_layers - 1:
        out.append(num_layers - 1)
    return out


def _check_layers(name: str, hiddens: Sequence[torch.Tensor], boundaries: Sequence[int]):
    for n in boundaries:
        if not 0 <= n < len(hiddens):
            raise ValueError(
                f"alignment boundary {n} is outside the {len(hiddens)} {name} layer "
                "outputs given")


def alignment_loss(child_hiddens: Sequence[torch.Tensor],
                   target_hiddens: Sequence[torch.Tensor],
                   boundaries: Sequence[int],
                   pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``sum_{n in boundaries} MSE(H_target_n, H_child_n)`` as a float32 scalar.

    Each MSE is the mean over the non-pad (batch, time) positions and all
    hidden dims: pad positions carry no token, so their hidden states are
    arbitrary and must neither add to the loss nor dilute it (the mean divides
    by the number of real positions, not by batch x time).

    ``pad_mask``: ``(batch, time)`` bool, True = pad; None = all positions real.
    A layer whose positions are all padding contributes exactly 0.

    The targets are detached here, not by the caller: the target is a fixed
    reference (anchor or average). Gradient through it would also pull the
    shared weights of the anchor's / average's operators towards the child,
    which is not the paper's objective, and it would silently double the
    backward cost -- so it must not depend on the caller remembering no_grad.

    The arithmetic is in float32 even for half inputs: squared differences of
    fp16 activations overflow/underflow easily, and the sum over many
    positions loses precision.
    """
    _check_layers("child", child_hiddens, boundaries)
    _check_layers("target", target_hiddens, boundaries)
    if not boundaries:
        device = child_hiddens[0].device if len(child_hiddens) else None
        return torch.zeros((), dtype=torch.float32, device=device)
    total = None
    for n in boundaries:
        child = child_hiddens[n]
        target = target_hiddens[n].detach()
        if child.shape != target.shape or child.dim() != 3:
            raise ValueError(
                f"layer {n}: child hidden state {tuple(child.shape)} and target "
                f"{tuple(target.shape)}: expected equal (batch, time, hidden) shapes")
        diff = child.float() - target.to(device=child.device, dtype=torch.float32)
        if pad_mask is None:
            mse = diff.pow(2).mean()
        else:
            if tuple(pad_mask.shape) != tuple(child.shape[:2]):
                raise ValueError(
                    f"pad_mask {tuple(pad_mask.shape)}: expected (batch, time) = "
                    f"{tuple(child.shape[:2])}")
            real = (~pad_mask.to(device=child.device, dtype=torch.bool)).unsqueeze(-1)
            # where() on the difference rather than multiplying the squares by
            # the mask: a pad position holding inf/nan (fp16 overflow) would
            # otherwise leak in as nan * 0, in the loss and in its gradient.
            diff = torch.where(real, diff, torch.zeros((), dtype=diff.dtype, device=diff.device))
            count = real.sum().to(torch.float32) * child.shape[-1]
            mse = diff.pow(2).sum() / count.clamp(min=1.0)
        total = mse if total is None else total + mse
    return total


def average_hiddens(list_of_hidden_lists: Sequence[Sequence[torch.Tensor]]) -> List[torch.Tensor]:
    """Per-layer elementwise mean of C children's hidden states (appendix A.2, Eq. 3).

    ``list_of_hidden_lists[i][n]`` is the output of layer ``n`` of child ``i``.
    The result is detached: it is an alignment target, never trained through.
    The mean is taken in float32 and cast back to the input dtype.
    """
    if not list_of_hidden_lists:
        raise ValueError("average_hiddens: expected hidden states of at least one child")
    depth = len(list_of_hidden_lists[0])
    if any(len(h) != depth for h in list_of_hidden_lists):
        raise ValueError(
            "average_hiddens: children have different numbers of layer outputs "
            f"{[len(h) for h in list_of_hidden_lists]}")
    out = []
    for n in range(depth):
        layer = [h[n].detach() for h in list_of_hidden_lists]
        dtype = layer[0].dtype
        out.append(torch.stack([t.float() for t in layer]).mean(0).to(dtype))
    return out
