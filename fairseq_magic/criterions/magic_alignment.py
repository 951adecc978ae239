"""``--criterion magic_alignment``: the super-net's training loss.

For now L = L_mlm (summed cross-entropy over masked tokens, as fairseq's
masked_lm criterion). MAGIC-A adds lambda x block-wise MSE to an anchor child.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from fairseq import utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics


@dataclass
class MagicAlignmentConfig(FairseqDataclass):
    pass


def mlm_loss(model, sample, padding_idx):
    """Summed MLM cross-entropy and the number of masked tokens."""
    masked_tokens = sample["target"].ne(padding_idx)
    sample_size = int(masked_tokens.sum())
    if sample_size == 0:
        # Rare (tiny batches): project every token so the graph still has a loss.
        masked_tokens = None
    logits, extra = model(**sample["net_input"], masked_tokens=masked_tokens)
    targets = sample["target"]
    if masked_tokens is not None:
        targets = targets[masked_tokens]
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1),
                           reduction="sum", ignore_index=padding_idx)
    return loss, sample_size, extra


@register_criterion("magic_alignment", dataclass=MagicAlignmentConfig)
class MagicAlignmentLoss(FairseqCriterion):
    def __init__(self, cfg: MagicAlignmentConfig, task):
        super().__init__(task)
        self.cfg = cfg

    def forward(self, model, sample, reduce=True):
        loss, sample_size, _ = mlm_loss(model, sample, self.padding_idx)
        logging_output = {
            "loss": loss.data,
            "mlm_loss": loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": sample_size,
        }
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        if sample_size == 0:
            return
        for key in ("loss", "mlm_loss"):
            total = sum(log.get(key, 0) for log in logging_outputs)
            metrics.log_scalar(key, total / sample_size / math.log(2), sample_size, round=3)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["mlm_loss"].avg))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
