"""Knowledge distillation from a frozen teacher (paper section 5.4, NAS-BERT's
two stages: pre-training and fine-tuning, logits only).

``--criterion magic_kd`` (pre-training, ``--task masked_lm`` or ``--task magic``)::

    L = (1 - alpha) * MLM + alpha * T^2 * KL(teacher || student)  [+ lambda * align]

over the masked tokens: the teacher sees the student's masked input and its
distribution over the vocabulary at each masked position is the soft target.
It extends ``magic_alignment``: under ``--task magic`` the student is the
super-net's sampled path, and with ``--magic-method magic_a/magic_at`` the
alignment term (lambda x block-wise MSE to the anchor, its warm-up, the
average-of-children target) is added to the distillation loss unchanged, the
MLM part of which it would otherwise be added to. Anchor candidates keep being
ranked by the child's own ``mlm_loss``, not by the distillation loss.

``--criterion sentence_prediction_kd`` (fine-tuning, ``--task
sentence_prediction``): fairseq's ``sentence_prediction`` loss with the same
mix on the classification head's logits; a regression task (STS-B,
``--regression-target``) mixes the squared error to the gold score with the
squared error to the teacher's output (no temperature).

``--criterion squad_span_kd`` (fine-tuning, ``--task magic_squad``): the
``squad_span`` loss, 0.5 x (start + end), each the mix above over the positions
that may start or end an answer (the teacher's distribution restricted to the
same positions).

The teacher (``--kd-teacher CHECKPOINT``) is loaded once, when fairseq builds
the criterion, checked (same dictionary, enough positions, the head the task
needs), frozen and kept out of the student's parameters, optimiser and
checkpoint: see fairseq_magic/teacher.py. The loss conventions (T^2, the
reductions) are in fairseq_magic/core/distill.py; as fairseq does, the criteria
return sums that fairseq divides by the sample size (masked tokens, sentences,
windows). Logged, per masked token / sentence / window in bits: ``loss`` (what
is optimised), the task's own loss (``mlm_loss`` / ``task_loss`` /
``span_loss``), ``kd_loss`` (T^2 x KL, or the squared distance to the teacher)
and ``teacher_loss`` (the teacher's own loss on the gold labels: how good the
targets are); for classification also ``teacher_accuracy``.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq.criterions import register_criterion
from fairseq.criterions.sentence_prediction import (SentencePredictionConfig,
                                                     SentencePredictionCriterion)
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics

from ..core.alignment import alignment_loss
from ..core.distill import check_kd_params, kd_loss, regression_kd_loss
from ..core.space import MagicConfigError
from ..teacher import load_teacher
from .magic_alignment import MagicAlignmentConfig, MagicAlignmentLoss
from .squad_span import SquadSpanConfig, SquadSpanCriterion, answer_mask


@dataclass
class KDConfig(FairseqDataclass):
    kd_teacher: str = field(
        default="", metadata={"help": "the frozen teacher: a checkpoint over the student's "
                              "dictionary (a magic-export folder or its model.pt, a "
                              "magic_child / fairseq RoBERTa checkpoint; for fine-tuning a "
                              "checkpoint fine-tuned on the same task). Loaded once, never "
                              "trained, not saved with the student (only this path is)"})
    kd_alpha: float = field(
        default=0.5, metadata={"help": "weight of the teacher's term, in [0, 1]: loss = "
                               "(1 - alpha) x gold-label loss + alpha x distillation loss "
                               "(0 = no distillation)"})
    kd_temperature: float = field(
        default=1.0, metadata={"help": "softmax temperature T > 0 of both distributions "
                               "in the distillation term, which is scaled by T^2 (Hinton)"})


def _check(cfg, criterion: str) -> None:
    check_kd_params(cfg.kd_alpha, cfg.kd_temperature)
    if not cfg.kd_teacher:
        raise MagicConfigError(f"--criterion {criterion} needs --kd-teacher CHECKPOINT (the "
                               "teacher to distill from)")


def _student_param(model):
    """A student parameter: the teacher follows its device, and its dtype when the
    student's weights are half precision (not merely its autocast outputs)."""
    return next(model.parameters())


def _log_bits(logging_outputs, key, denominator_key="sample_size"):
    total = sum(log.get(key, 0) for log in logging_outputs)
    n = sum(log.get(denominator_key, 0) for log in logging_outputs)
    if n and any(key in log for log in logging_outputs):
        metrics.log_scalar(key, total / n / math.log(2), n, round=3)


def _log_teacher_accuracy(logging_outputs, count_key):
    if any("teacher_ncorrect" in log for log in logging_outputs):
        n = sum(log.get(count_key, 0) for log in logging_outputs)
        correct = sum(log.get("teacher_ncorrect", 0) for log in logging_outputs)
        if n:
            metrics.log_scalar("teacher_accuracy", 100.0 * correct / n, n, round=1)


# ---------------------------------------------------------------- pre-training

@dataclass
class MagicKDConfig(MagicAlignmentConfig, KDConfig):
    pass


@register_criterion("magic_kd", dataclass=MagicKDConfig)
class MagicKDLoss(MagicAlignmentLoss):
    """MLM + distillation to the teacher's masked-token distribution (+ alignment)."""

    def __init__(self, cfg: MagicKDConfig, task):
        _check(cfg, "magic_kd")
        super().__init__(cfg, task)  # validates the alignment flags
        self.alpha = float(cfg.kd_alpha)
        self.temperature = float(cfg.kd_temperature)
        self.teacher = load_teacher(cfg.kd_teacher, task)

    def forward(self, model, sample, reduce=True):
        align_on = model.training and self.alignment_on()
        pad = self.padding_idx
        target = sample["target"]
        masked = target.ne(pad)
        sample_size = int(masked.sum())
        # (as mlm_loss: with no masked token, project every position so the
        # graph still has a loss; every target is then padding and ignored)
        sel = masked if sample_size else None
        net_input = sample["net_input"]
        logits, extra = model(**net_input, masked_tokens=sel, return_all_hiddens=align_on)
        targets = (target[sel] if sel is not None else target).view(-1)
        logits = logits.view(-1, logits.size(-1))
        teacher_logits, _ = self.teacher(**net_input, masked_tokens=sel,
                                         like=_student_param(model))
        teacher_logits = teacher_logits.view(-1, teacher_logits.size(-1))
        parts = kd_loss(logits, teacher_logits, targets, self.alpha, self.temperature,
                        ignore_index=pad, reduction="sum")
        teacher_nll = F.cross_entropy(teacher_logits.float(), targets, reduction="sum",
                                      ignore_index=pad)
        loss = parts.loss
        align_sum = torch.zeros((), device=loss.device)
        if align_on:
            targets_h = self.alignment_targets(model, sample)
            pad_mask = net_input["src_tokens"].eq(pad)
            align = alignment_loss(extra["inner_states"], targets_h, self.boundaries, pad_mask)
            align_sum = align * max(sample_size, 1)
            loss = loss + self.cfg.magic_align_lambda * align_sum
        logging_output = {
            "loss": loss.data,
            "mlm_loss": parts.hard.detach(),
            "kd_loss": parts.soft.detach(),
            "teacher_loss": teacher_nll.detach(),
            "align_loss": align_sum.detach(),
            "align_on": int(align_on),
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": sample_size,
        }
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        MagicAlignmentLoss.reduce_metrics(logging_outputs)
        for key in ("kd_loss", "teacher_loss"):
            _log_bits(logging_outputs, key)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


# ---------------------------------------------------------------- fine-tuning

@dataclass
class SentencePredictionKDConfig(SentencePredictionConfig, KDConfig):
    pass


@register_criterion("sentence_prediction_kd", dataclass=SentencePredictionKDConfig)
class SentencePredictionKDCriterion(SentencePredictionCriterion):
    """fairseq's sentence_prediction loss mixed with distillation to a teacher
    fine-tuned on the same task (its classification head's logits)."""

    def __init__(self, cfg: SentencePredictionKDConfig, task):
        _check(cfg, "sentence_prediction_kd")
        super().__init__(cfg, task)
        self.alpha = float(cfg.kd_alpha)
        self.temperature = float(cfg.kd_temperature)
        num_classes = getattr(task.cfg, "num_classes", None)
        self.teacher = load_teacher(cfg.kd_teacher, task,
                                    classification_head=self.classification_head_name,
                                    num_classes=num_classes)

    def forward(self, model, sample, reduce=True):
        head = self.classification_head_name
        if head not in getattr(model, "classification_heads", {}):
            raise MagicConfigError(f"the model has no classification head {head!r} "
                                   "(--classification-head-name)")
        net_input = sample["net_input"]
        logits, _ = model(**net_input, features_only=True, classification_head_name=head)
        targets = model.get_targets(sample, [logits]).view(-1)
        sample_size = targets.numel()
        t_logits, _ = self.teacher(**net_input, features_only=True,
                                   classification_head_name=head,
                                   like=_student_param(model))
        if not self.regression_target:
            parts = kd_loss(logits, t_logits, targets, self.alpha, self.temperature,
                            reduction="sum")
            teacher_loss = F.cross_entropy(t_logits.float(), targets, reduction="sum")
        else:
            targets = targets.float()
            parts = regression_kd_loss(logits.view(-1), t_logits.view(-1), targets,
                                       self.alpha, reduction="sum")
            teacher_loss = F.mse_loss(t_logits.view(-1).float(), targets, reduction="sum")
        loss = parts.loss
        logging_output = {
            "loss": loss.data,
            "task_loss": parts.hard.detach(),
            "kd_loss": parts.soft.detach(),
            "teacher_loss": teacher_loss.detach(),
            "ntokens": sample["ntokens"],
            "nsentences": sample_size,
            "sample_size": sample_size,
        }
        if not self.regression_target:
            preds = logits.argmax(dim=1)
            logging_output["ncorrect"] = (preds == targets).sum()
            logging_output["teacher_ncorrect"] = (t_logits.argmax(dim=1) == targets).sum()
        if self.keep_pred_and_targ and not model.training:
            self._keep_predictions(logging_output, logits, targets)
        return loss, sample_size, logging_output

    def _keep_predictions(self, logging_output, logits, targets):
        # as fairseq's sentence_prediction does, for --report-mcc & co.
        if self.regression_target:
            logging_output["pred"] = logits.detach().view(-1).float().cpu().tolist()
            logging_output["targ"] = targets.detach().cpu().tolist()
        else:
            nspecial = self.label_dict.nspecial
            preds = self.label_dict.string(logits.argmax(dim=1) + nspecial).split()
            targs = self.label_dict.string(targets + nspecial).split()
            logging_output["pred"] = list(map(int, preds))
            logging_output["targ"] = list(map(int, targs))
        for flag in ("report_mcc", "report_acc_and_f1", "report_pearson_and_spearman"):
            if getattr(self, flag):
                logging_output[flag] = True

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        SentencePredictionCriterion.reduce_metrics(logging_outputs)
        for key in ("task_loss", "kd_loss", "teacher_loss"):
            _log_bits(logging_outputs, key)
        _log_teacher_accuracy(logging_outputs, "nsentences")

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


@dataclass
class SquadSpanKDConfig(SquadSpanConfig, KDConfig):
    pass


@register_criterion("squad_span_kd", dataclass=SquadSpanKDConfig)
class SquadSpanKDCriterion(SquadSpanCriterion):
    """squad_span's 0.5 x (start + end) loss, each mixed with distillation to a
    teacher fine-tuned by magic-squad, over the positions an answer may use."""

    def __init__(self, cfg: SquadSpanKDConfig, task):
        _check(cfg, "squad_span_kd")
        super().__init__(task)
        self.alpha = float(cfg.kd_alpha)
        self.temperature = float(cfg.kd_temperature)
        self.teacher = load_teacher(cfg.kd_teacher, task, span_head=True)

    def forward(self, model, sample, reduce=True):
        from ..tasks.squad_task import span_logits

        src = sample["net_input"]["src_tokens"]
        logits = span_logits(model, src).float()  # B x T x 2
        t_logits = self.teacher.apply(span_logits, src,
                                      like=_student_param(model)).float()
        mask = answer_mask(sample["context_start"], sample["context_end"], src.size(1))
        gold = (sample["start_positions"], sample["end_positions"])
        parts = [kd_loss(logits[..., i], t_logits[..., i], gold[i], self.alpha,
                         self.temperature, mask=mask, reduction="sum") for i in (0, 1)]
        loss = 0.5 * (parts[0].loss + parts[1].loss)
        masked = logits.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        t_masked = t_logits.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        teacher_loss = 0.5 * sum(F.cross_entropy(t_masked[..., i], gold[i], reduction="sum")
                                 for i in (0, 1))

        def exact(lg):
            return ((lg[..., 0].argmax(-1) == gold[0]) & (lg[..., 1].argmax(-1) == gold[1])).sum()

        n = src.size(0)
        log = {"loss": loss.data, "span_loss": (0.5 * (parts[0].hard + parts[1].hard)).detach(),
               "kd_loss": (0.5 * (parts[0].soft + parts[1].soft)).detach(),
               "teacher_loss": teacher_loss.detach(), "ntokens": sample["ntokens"],
               "nsentences": n, "sample_size": n, "ncorrect": exact(masked).data,
               "teacher_ncorrect": exact(t_masked).data}
        return loss, n, log

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        SquadSpanCriterion.reduce_metrics(logging_outputs)
        for key in ("span_loss", "kd_loss", "teacher_loss"):
            _log_bits(logging_outputs, key)
        _log_teacher_accuracy(logging_outputs, "sample_size")

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
