"""Knowledge-distillation losses (fairseq-free, pure torch).

The paper (section 5.4) trains the compressed child "following NAS-BERT" with
distillation at two stages, pre-training and fine-tuning, on logits only (no
hidden-state or attention-matrix terms). Per example (a masked token during
pre-training, a sentence or a SQuAD window during fine-tuning)::

    loss = (1 - alpha) * hard + alpha * soft

    hard = the task's own loss on the gold label (cross-entropy; MSE for a
           regression target)
    soft = T^2 * KL( softmax(teacher / T) || softmax(student / T) )   (classes)
         = (student - teacher)^2                                       (regression)

* **T^2** (Hinton et al., 2015): the soft term's gradient with respect to the
  student's logits scales as 1/T^2 (one 1/T from the softened softmax, one from
  the logits divided by T), so multiplying by T^2 keeps the balance between the
  two terms set by ``alpha`` alone, whatever the temperature. At T = 1 the soft
  term is the plain KL divergence, which differs from the soft cross-entropy
  ``-sum p_teacher log p_student`` by the teacher's entropy: a constant for the
  student, so both give the same gradients; the KL is reported because it is 0
  when the student matches the teacher.
* **alpha** in [0, 1]: 0 is training without a teacher (the loss is exactly
  the hard loss), 1 trains on the teacher's output alone.
* **Regression** (STS-B): the teacher's output is a number, not a
  distribution; the soft term is the squared distance to it and the
  temperature does not apply.
* **Reduction**: every function returns per-example values (``reduction=
  "none"``), their ``"sum"`` or their ``"mean"`` over the examples counted.
  The fairseq criteria use sums, which fairseq divides by the sample size, so
  what the logs and the optimiser see is the mean over masked tokens
  (pre-training) or over sentences / windows (fine-tuning), as for their
  non-distilling counterparts (``masked_lm``, ``sentence_prediction``,
  ``squad_span``).

Everything is computed in float32 (the logits are cast), as fairseq's criteria
compute their log-softmax.
"""

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from .space import MagicConfigError


class KDLoss(NamedTuple):
    """The combined loss and its two parts (each reduced the same way)."""

    loss: torch.Tensor
    hard: torch.Tensor
    soft: torch.Tensor


def check_kd_params(alpha: float, temperature: float) -> None:
    """Raise MagicConfigError naming the flag and value unless 0 <= alpha <= 1
    and temperature > 0 (both finite)."""
    if alpha is None or not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise MagicConfigError(
            f"--kd-alpha {alpha}: expected a value in [0, 1] (the weight of the teacher's "
            "term; 0 = no distillation, 1 = the teacher's output alone)")
    if temperature is None or not math.isfinite(temperature) or temperature <= 0:
        raise MagicConfigError(
            f"--kd-temperature {temperature}: expected a finite value > 0 (1 = the "
            "teacher's plain distribution; larger values soften it)")


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    if reduction == "mean":
        return values.sum() / max(values.numel(), 1)
    raise ValueError(f"reduction {reduction!r}: expected 'none', 'sum' or 'mean'")


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               temperature: float = 1.0, mask: Optional[torch.Tensor] = None,
               reduction: str = "none") -> torch.Tensor:
    """T^2 x KL(softmax(teacher / T) || softmax(student / T)) over the last
    dimension, one value per row.

    ``mask`` (bool, broadcastable to the logits): the classes that take part;
    the others get probability 0 under both distributions (SQuAD: positions
    that cannot start or end an answer). The teacher's logits are detached:
    the teacher is never trained through this loss.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)}: expected the same shape")
    t = float(temperature)
    s = student_logits.float() / t
    q = teacher_logits.detach().float() / t
    if mask is not None:
        mask = mask.expand_as(s)
        s = s.masked_fill(~mask, float("-inf"))
        q = q.masked_fill(~mask, float("-inf"))
    log_ps = F.log_softmax(s, dim=-1)
    log_pt = F.log_softmax(q, dim=-1)
    terms = log_pt.exp() * (log_pt - log_ps)
    if mask is not None:
        # excluded classes: 0 x (-inf - -inf) would be NaN; they contribute 0
        terms = torch.where(mask, terms, torch.zeros_like(terms))
    return _reduce(terms.sum(-1) * (t * t), reduction)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            target: torch.Tensor, alpha: float, temperature: float = 1.0,
            ignore_index: Optional[int] = None, mask: Optional[torch.Tensor] = None,
            reduction: str = "mean") -> KDLoss:
    """(1 - alpha) x cross-entropy(student, target) + alpha x ``distill_kl``.

    ``student_logits``/``teacher_logits``: N x C; ``target``: N class indices.
    Rows whose target is ``ignore_index`` count in neither term (and not in the
    mean). The cross-entropy is taken at temperature 1 (the student's own
    prediction); ``mask`` restricts the classes of both terms.
    """
    check_kd_params(alpha, temperature)
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"reduction {reduction!r}: expected 'none', 'sum' or 'mean'")
    logits = student_logits.float()
    if mask is not None:
        logits = logits.masked_fill(~mask.expand_as(logits), float("-inf"))
    # The hard term is exactly the call fairseq's masked-LM loss makes (same
    # summation), so that alpha = 0 reproduces the plain criterion bit for bit.
    ignore = -100 if ignore_index is None else ignore_index
    keep = target.ne(ignore)
    soft = distill_kl(student_logits, teacher_logits, temperature, mask)
    soft = torch.where(keep, soft, torch.zeros_like(soft))
    if reduction == "mean":  # over the rows counted (0, not NaN, when none is)
        n = max(int(keep.sum()), 1)
        hard = F.cross_entropy(logits, target, ignore_index=ignore, reduction="sum") / n
        soft = soft.sum() / n
    else:
        hard = F.cross_entropy(logits, target, ignore_index=ignore, reduction=reduction)
        soft = _reduce(soft, reduction)
    return KDLoss(combine(hard, soft, alpha), hard, soft)


def regression_kd_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
                       alpha: float, reduction: str = "mean") -> KDLoss:
    """(1 - alpha) x (student - target)^2 + alpha x (student - teacher)^2, per
    example (a regression head's single output each)."""
    check_kd_params(alpha, 1.0)
    s = student.float().view(-1)
    hard = (s - target.float().view(-1)) ** 2
    soft = (s - teacher.detach().float().view(-1)) ** 2
    hard, soft = _reduce(hard, reduction), _reduce(soft, reduction)
    return KDLoss(combine(hard, soft, alpha), hard, soft)


def combine(hard: torch.Tensor, soft: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 - alpha) x hard + alpha x soft; exactly ``hard`` at alpha 0 (the soft
    term is then left out, so not even a NaN in it could leak in)."""
    if alpha == 0:
        return hard
    if alpha == 1:
        return soft
    return (1.0 - alpha) * hard + alpha * soft
