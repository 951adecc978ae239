"""``--criterion magic_alignment``: the super-net's training loss (MAGIC-A).

    L = L_mlm + lambda * sum_{n in blocks} MSE(H_target_n, H_child_n)

H_n is the output of layer n, taken at block boundaries: every
``--magic-align-every``-th layer (paper: 4) and the top layer. The target is the anchor child's
hidden states (a path of the same super-net, run with the current shared
weights, without gradient, in eval mode so the targets carry no dropout noise),
or the average of C random children's (appendix A.2). Alignment switches on
after ``--magic-align-warmup-epochs`` epochs of plain MLM (paper: 3), and only
when the task has an anchor (or the target is the average). As fairseq's
masked_lm criterion, losses are sums over masked tokens and fairseq divides by
the number of masked tokens, so the alignment term is added as
lambda * MSE * sample_size: per token it is exactly lambda * MSE.
"""

import math
import random
from dataclasses import dataclass, field

import torch
from fairseq import utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics

from ..core.alignment import alignment_loss, average_hiddens, block_boundaries
from ..core.samplers import random_arch
from ..core.space import MagicConfigError
from ..model_utils import mlm_loss, unwrap_model


@dataclass
class MagicAlignmentConfig(FairseqDataclass):
    magic_align_lambda: float = field(
        default=0.5, metadata={"help": "weight lambda of the alignment loss (>= 0)"})
    magic_align_every: int = field(
        default=4, metadata={"help": "align the outputs of every N-th layer and of the "
                             "top layer (paper: 4; 26 layers -> layers 4, 8, ..., 24, 26)"})
    magic_align_warmup_epochs: int = field(
        default=3, metadata={"help": "epochs of plain MLM before alignment switches on"})
    magic_align_target: str = field(
        default="anchor", metadata={"help": "anchor (MAGIC-A) or average (appendix A.2: "
                                    "mean hidden states of C random children)"})
    magic_align_avg_children: int = field(
        default=4, metadata={"help": "C, children averaged by --magic-align-target average"})


def log_align_loss(logging_outputs, sample_size) -> None:
    """Log ``align_loss`` once alignment is on in any logging output: the mean
    block-summed MSE per unit of ``sample_size`` (not in bits: it is no entropy).
    Shared by every criterion that adds the alignment term."""
    if any(log.get("align_on", 0) for log in logging_outputs):
        total = sum(log.get("align_loss", 0) for log in logging_outputs)
        metrics.log_scalar("align_loss", total / sample_size, sample_size, round=4)


@register_criterion("magic_alignment", dataclass=MagicAlignmentConfig)
class MagicAlignmentLoss(FairseqCriterion):
    def __init__(self, cfg: MagicAlignmentConfig, task):
        super().__init__(task)
        self.cfg = cfg
        if cfg.magic_align_lambda < 0 or not math.isfinite(cfg.magic_align_lambda):
            raise MagicConfigError(
                f"--magic-align-lambda {cfg.magic_align_lambda}: expected a finite value >= 0")
        if cfg.magic_align_target not in ("anchor", "average"):
            raise MagicConfigError(
                f"--magic-align-target {cfg.magic_align_target!r}: expected 'anchor' or 'average'")
        if cfg.magic_align_avg_children < 1:
            raise MagicConfigError(
                f"--magic-align-avg-children {cfg.magic_align_avg_children}: expected >= 1")
        if cfg.magic_align_warmup_epochs < 0:
            raise MagicConfigError(
                f"--magic-align-warmup-epochs {cfg.magic_align_warmup_epochs}: expected >= 0")
        space = getattr(task, "search_space", None)
        # Validate the block size only where alignment can happen: a plain SPOS
        # or MAGIC-T run must not fail over a flag it never uses.
        uses_alignment = cfg.magic_align_lambda > 0 and (
            cfg.magic_align_target == "average"
            or getattr(task, "anchor_policy", None) is not None)
        self.boundaries = (block_boundaries(space.num_layers, cfg.magic_align_every)
                           if space is not None and uses_alignment else None)

    def alignment_on(self) -> bool:
        task = self.task
        if self.boundaries is None or self.cfg.magic_align_lambda == 0:
            return False
        if getattr(task, "epoch", 1) <= self.cfg.magic_align_warmup_epochs:
            return False
        if self.cfg.magic_align_target == "average":
            return True
        return task.alignment_anchor() is not None

    @torch.no_grad()
    def alignment_targets(self, model, sample):
        """Target hidden states, per layer, computed without gradient in eval mode."""
        bare = unwrap_model(model)
        encoder = bare.encoder.sentence_encoder
        tokens = sample["net_input"]["src_tokens"]
        if self.cfg.magic_align_target == "anchor":
            paths = [self.task.alignment_anchor()]
        else:
            rng = random.Random(f"magic-align-avg:{self.task.cfg.seed}:{self.task.current_update}")
            paths = [random_arch(self.task.sampler.space, rng)
                     for _ in range(self.cfg.magic_align_avg_children)]
        was_training = bare.training
        bare.eval()
        try:
            hiddens = [encoder(tokens, path=p, return_all_hiddens=True)[1] for p in paths]
        finally:
            bare.train(was_training)
        return hiddens[0] if len(hiddens) == 1 else average_hiddens(hiddens)

    def forward(self, model, sample, reduce=True):
        align_on = model.training and self.alignment_on()
        loss, sample_size, extra = mlm_loss(model, sample, self.padding_idx,
                                            return_all_hiddens=align_on)
        mlm = loss.detach()
        align_sum = torch.zeros((), device=loss.device)
        if align_on:
            targets = self.alignment_targets(model, sample)
            pad_mask = sample["net_input"]["src_tokens"].eq(self.padding_idx)
            align = alignment_loss(extra["inner_states"], targets, self.boundaries, pad_mask)
            align_sum = align * max(sample_size, 1)
            loss = loss + self.cfg.magic_align_lambda * align_sum
        logging_output = {
            "loss": loss.data,
            "mlm_loss": mlm,
            "align_loss": align_sum.detach(),
            "align_on": int(align_on),
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
        log_align_loss(logging_outputs, sample_size)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["mlm_loss"].avg))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
