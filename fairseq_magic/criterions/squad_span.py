"""``--criterion squad_span``: the SQuAD span loss of ``--task magic_squad``.

Start and end logits (the task's span head) are masked to the window's context
tokens plus the ``<s>`` (CLS) position, the target of a window that holds no
answer (an unanswerable v2.0 question, or an answer outside this window, BERT's
rule in v1.1 as well; only v2.0 may *predict* CLS, see core/squad.py). The loss
is 0.5 x (cross-entropy of the start + cross-entropy of the end), summed over
windows; reported per window in bits, as fairseq reports losses. ``accuracy``:
windows whose start and end are both the argmax.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass

from ..tasks.squad_task import span_logits


@dataclass
class SquadSpanConfig(FairseqDataclass):
    pass


def answer_mask(context_start, context_end, length: int):
    """B x T bool: positions that may start or end an answer (context and CLS)."""
    pos = torch.arange(length, device=context_start.device).unsqueeze(0)
    mask = (pos >= context_start.unsqueeze(1)) & (pos < context_end.unsqueeze(1))
    mask[:, 0] = True
    return mask


@register_criterion("squad_span", dataclass=SquadSpanConfig)
class SquadSpanCriterion(FairseqCriterion):

    def forward(self, model, sample, reduce=True):
        src = sample["net_input"]["src_tokens"]
        logits = span_logits(model, src).float()  # B x T x 2
        mask = answer_mask(sample["context_start"], sample["context_end"], src.size(1))
        logits = logits.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        start_logits, end_logits = logits.unbind(-1)
        starts, ends = sample["start_positions"], sample["end_positions"]
        loss = 0.5 * (F.cross_entropy(start_logits, starts, reduction="sum")
                      + F.cross_entropy(end_logits, ends, reduction="sum"))
        ncorrect = ((start_logits.argmax(-1) == starts) & (end_logits.argmax(-1) == ends)).sum()
        n = src.size(0)
        log = {"loss": loss.data, "ntokens": sample["ntokens"], "nsentences": n,
               "sample_size": n, "ncorrect": ncorrect.data}
        return loss, n, log

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        loss = sum(log.get("loss", 0) for log in logging_outputs)
        n = sum(log.get("sample_size", 0) for log in logging_outputs)
        ncorrect = sum(log.get("ncorrect", 0) for log in logging_outputs)
        metrics.log_scalar("loss", loss / max(n, 1) / math.log(2), n, round=3)
        metrics.log_scalar("accuracy", 100.0 * ncorrect / max(n, 1), n, round=1)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
