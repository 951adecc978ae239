"""``--criterion magic_electra``: ELECTRA's replaced-token-detection loss (E-MAGIC).

As in the official ELECTRA code (google-research/electra), per batch:

1. mask 15% of the tokens (``--electra-mask-prob``; per sequence, round(15% of
   its non-pad tokens), never a special symbol); of the masked, 85% show
   ``<mask>``, 15% keep their token, none becomes a random token;
2. the generator predicts the masked positions: ``gen_loss`` = its MLM
   cross-entropy, mean over the masked tokens;
3. each masked position is replaced by a sample of the generator's
   distribution (Gumbel-max at temperature 1, without gradient);
4. the discriminator (the sampled path of the super-net) labels every token:
   1 where the token was replaced by a DIFFERENT one (a sample equal to the
   original counts as original); ``disc_loss`` = binary cross-entropy, mean
   over the non-pad tokens;

    L = gen_loss + w x disc_loss  (+ lambda x alignment)      w = --electra-disc-weight (50)

The alignment term is MAGIC-A's (``magic_alignment``, whose flags and
machinery this criterion inherits): when the task has an anchor (or
``--magic-align-target average``), the block-wise MSE between the
**discriminator's** hidden states on the corrupted input and the anchor's (in
eval mode, without gradient). E-SPOS / E-MAGIC-T have no anchor, so no term.

The task's dataset masks the BERT way; this criterion restores the original
tokens from its targets and masks on its own. The masking and the Gumbel noise
come from a ``torch.Generator`` seeded by (--seed, update, data-parallel rank,
micro-batch) while training and by the batch's example ids while validating,
never from (or into) the global RNG: a resumed run draws exactly what an
uninterrupted one does.

Convention (as ``magic_alignment``): ``sample_size`` is the number of non-pad
tokens and the returned loss is a sum that fairseq divides by it, so per batch
loss / sample_size is exactly the formula above. Logged (bits where a loss):
``loss``, ``gen_loss``, ``disc_loss``, ``disc_acc`` (discriminator accuracy
over non-pad tokens), ``replaced_frac`` (masked tokens the generator's sample
changed), ``align_loss`` (when on) and ``gen_ppl``.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.logging import metrics

from ..core.alignment import alignment_loss
from ..core.space import MagicConfigError
from ..model_utils import unwrap_model
from .magic_alignment import MagicAlignmentConfig, MagicAlignmentLoss, log_align_loss


@dataclass
class MagicElectraConfig(MagicAlignmentConfig):
    electra_disc_weight: float = field(
        default=50.0, metadata={"help": "weight of the discriminator's loss against the "
                                "generator's (ELECTRA: 50); > 0"})
    electra_mask_prob: float = field(
        default=0.15, metadata={"help": "fraction of each sequence's tokens masked for the "
                                "generator (ELECTRA: 0.15); the task's --mask-prob is not "
                                "used (its masking is undone); children are always scored "
                                "at 0.15"})


class RTDOutputs:
    """Everything one ELECTRA pass computed (tests read it)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


@register_criterion("magic_electra", dataclass=MagicElectraConfig)
class MagicElectraLoss(MagicAlignmentLoss):
    def __init__(self, cfg: MagicElectraConfig, task):
        w = cfg.electra_disc_weight
        if not (w > 0 and math.isfinite(w)):
            raise MagicConfigError(
                f"--electra-disc-weight {w}: expected a finite value > 0 (ELECTRA: 50)")
        if not 0 < cfg.electra_mask_prob < 1:
            raise MagicConfigError(
                f"--electra-mask-prob {cfg.electra_mask_prob}: expected 0 < p < 1 "
                "(ELECTRA: 0.15)")
        from ..models.magic_electra import _root_name, is_electra_arch

        arch = _root_name(cfg, "model")
        if arch is not None and not is_electra_arch(arch):
            raise MagicConfigError(
                f"--criterion magic_electra with --arch {arch}: expected an ELECTRA model "
                "(--arch magic_electra_supernet[_base|_tiny] or magic_electra_child); "
                "masked-LM models train with --criterion magic_alignment")
        super().__init__(cfg, task)
        self._micro = (None, 0)  # (update, micro-batches seen in it)

    # ---- seeding ----
    def _train_rng(self, device):
        from ..models.magic_electra import rng_for
        from ..tasks.magic_task import data_parallel_rank_and_size

        update = getattr(self.task, "current_update", 0)
        last, count = self._micro
        micro = count if last == update else 0
        self._micro = (update, micro + 1)
        rank, _ = data_parallel_rank_and_size()
        seed = getattr(getattr(self.task, "cfg", None), "seed", 1)
        return rng_for(device, "train", seed, update, rank, micro)

    def rtd_outputs(self, model, sample, return_all_hiddens=False) -> RTDOutputs:
        """Mask, run generator + sampling + discriminator (one forward through
        ``model``, DDP-wrapped or not), and label."""
        from ..models.magic_electra import MagicElectraSupernetModel, sample_rng

        bare = unwrap_model(model)
        if not isinstance(bare, MagicElectraSupernetModel) or bare.generator is None:
            got = (type(bare).__name__ if not isinstance(bare, MagicElectraSupernetModel)
                   else "one built without its generator (outside --task magic)")
            raise MagicConfigError(
                f"--criterion magic_electra needs an ELECTRA model with its generator "
                f"(--arch magic_electra_* under --task magic): got {got}")
        device = sample["net_input"]["src_tokens"].device
        g = self._train_rng(device) if model.training else sample_rng(sample, device)
        tokens, masked, masked_input, noise = bare.rtd_inputs(
            sample, self.cfg.electra_mask_prob, g)
        logits, extra = model(src_tokens=masked_input, rtd_masked=masked, rtd_noise=noise,
                              return_all_hiddens=return_all_hiddens)
        nonpad = tokens.ne(self.padding_idx)
        corrupted = extra["corrupted"]
        # 1 = replaced by a different token; pads equal themselves (label 0) and
        # are left out of the loss below
        labels = corrupted.ne(tokens) & nonpad
        return RTDOutputs(tokens=tokens, masked=masked, masked_input=masked_input,
                          noise=noise, corrupted=corrupted, labels=labels, nonpad=nonpad,
                          disc_logits=logits, gen_logits=extra["gen_logits"],
                          inner_states=extra.get("inner_states"))

    def forward(self, model, sample, reduce=True):
        align_on = model.training and self.alignment_on()
        out = self.rtd_outputs(model, sample, return_all_hiddens=align_on)
        n_masked = int(out.masked.sum())
        sample_size = int(out.nonpad.sum())
        gen_sum = F.cross_entropy(out.gen_logits.float(), out.tokens[out.masked],
                                  reduction="sum")
        gen_mean = gen_sum / max(n_masked, 1)
        disc_logits = out.disc_logits[out.nonpad].float()
        disc_sum = F.binary_cross_entropy_with_logits(
            disc_logits, out.labels[out.nonpad].float(), reduction="sum")
        # sums that fairseq divides by sample_size: per batch, the loss is
        # gen_mean + w x disc_mean (+ lambda x alignment)
        loss = gen_mean * sample_size + self.cfg.electra_disc_weight * disc_sum
        align_sum = torch.zeros((), device=loss.device)
        if align_on:
            targets = self.alignment_targets(
                model, {"net_input": {"src_tokens": out.corrupted}})
            align = alignment_loss(out.inner_states, targets, self.boundaries, ~out.nonpad)
            align_sum = align * max(sample_size, 1)
            loss = loss + self.cfg.magic_align_lambda * align_sum
        with torch.no_grad():
            correct = int((disc_logits.gt(0) == out.labels[out.nonpad]).sum())
            replaced = int(out.labels.sum())
        logging_output = {
            "loss": loss.data,
            "gen_loss": (gen_mean * sample_size).detach(),
            "disc_loss": disc_sum.detach(),
            "align_loss": align_sum.detach(),
            "align_on": int(align_on),
            "disc_correct": correct,
            "replaced": replaced,
            "masked": n_masked,
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
        for key in ("loss", "gen_loss", "disc_loss"):
            total = sum(log.get(key, 0) for log in logging_outputs)
            metrics.log_scalar(key, total / sample_size / math.log(2), sample_size, round=3)
        correct = sum(log.get("disc_correct", 0) for log in logging_outputs)
        metrics.log_scalar("disc_acc", correct / sample_size, sample_size, round=4)
        masked = sum(log.get("masked", 0) for log in logging_outputs)
        if masked:
            replaced = sum(log.get("replaced", 0) for log in logging_outputs)
            metrics.log_scalar("replaced_frac", replaced / masked, masked, round=4)
        log_align_loss(logging_outputs, sample_size)
        metrics.log_derived("gen_ppl",
                            lambda meters: utils.get_perplexity(meters["gen_loss"].avg))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
