"""``--task magic_squad``: SQuAD span extraction on an exported child.

fairseq has no SQuAD task. This one reads what ``magic-squad`` writes
(fairseq_magic/core/squad.py builds the windows):

    DATA/input0/SPLIT.{bin,idx}, dict.txt   question pieces, one window per line
    DATA/input1/SPLIT.{bin,idx}             the window's context pieces
    DATA/label/SPLIT.label                  "start end": the answer's tokens relative
                                            to the window's context, "-1 -1" = none here

and feeds ``<s> question </s> </s> context </s>`` (RoBERTa's pair layout, as
sentence_prediction builds it with ``--init-token 0 --separator-token 2``)
with absolute start/end positions (0, the ``<s>`` position, for "none here")
and each window's context range, which the criterion ``squad_span`` uses to
mask every position that cannot start or end an answer.

``build_model`` adds the span head, one ``Linear(hidden, 2)`` over every
token's features (start and end logits), as ``model.span_head``. It is not a
RoBERTa classification head: fairseq's head bookkeeping expects a ``dense``
layer (RobertaClassificationHead's) that a one-layer head does not have. When a
checkpoint without the head is restored (a magic-export folder's model.pt) the
head keeps its fresh weights, as RoBERTa does for a new classification head.
"""

import contextlib
import logging
import os
from dataclasses import dataclass, field

import numpy as np
from fairseq.data import (ConcatSentencesDataset, Dictionary, IdDataset,
                          NestedDictionaryDataset, NumelDataset, NumSamplesDataset,
                          PrependTokenDataset, RawLabelDataset, RightPadDataset, SortDataset,
                          data_utils)
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING, OmegaConf, open_dict
from torch import nn

from ..core.space import MagicConfigError

logger = logging.getLogger(__name__)


class SquadSpanHead(nn.Module):
    """Start and end logits of every token: one Linear(hidden, 2)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.out_proj = nn.Linear(hidden, 2)
        # BERT's initialisation, as the encoder's own layers got at construction
        nn.init.normal_(self.out_proj.weight, mean=0.0, std=0.02)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, features):
        return self.out_proj(features)

    def upgrade_state_dict_named(self, state_dict, name):
        # fairseq calls this on every sub-module while loading: a checkpoint
        # without the head (a magic-export) keeps this head's fresh weights.
        prefix = name + "." if name else ""
        for k, v in self.state_dict().items():
            if prefix + k not in state_dict:
                logger.info(f"new span head: {prefix + k} starts from its initialisation")
                state_dict[prefix + k] = v


def span_logits(model, src_tokens):
    """B x T x 2 (start, end) logits of a model built by ``magic_squad``."""
    features, _ = model(src_tokens, features_only=True)
    return model.span_head(features)


@dataclass
class MagicSquadConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={
        "help": "magic-squad's data-bin: input0/ (questions), input1/ (context windows), "
                "label/SPLIT.label"})
    max_positions: int = field(default=512, metadata={
        "help": "tokens per window (the model's position table)"})
    no_shuffle: bool = field(default=False, metadata={
        "help": "keep the training windows in file order"})
    seed: int = II("common.seed")


def read_labels(path: str):
    """(start, end) per line of a SPLIT.label file."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            parts = line.split()
            try:
                s, e = (int(x) for x in parts)
            except ValueError:
                raise MagicConfigError(f"{path} line {i}: {line.strip()!r}, expected two "
                                       "integers 'start end' (-1 -1 = no answer)") from None
            out.append((s, e))
    return out


@register_task("magic_squad", dataclass=MagicSquadConfig)
class MagicSquadTask(FairseqTask):

    def __init__(self, cfg, dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary

    @classmethod
    def load_dictionary(cls, filename):
        # <mask> as masked_lm / sentence_prediction add it: the export's
        # embedding table has that row
        d = Dictionary.load(filename)
        d.add_symbol("<mask>")
        return d

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        path = os.path.join(cfg.data, "input0", "dict.txt")
        if not os.path.isfile(path):
            raise MagicConfigError(f"--task magic_squad: no {path} (a magic-squad data-bin "
                                   "holds input0/, input1/ and label/)")
        return cls(cfg, cls.load_dictionary(path))

    def load_dataset(self, split, combine=False, **kwargs):
        d = self.dictionary

        def load(key):
            path = os.path.join(self.cfg.data, key, split)
            ds = data_utils.load_indexed_dataset(path, d, combine=combine)
            if ds is None:
                raise MagicConfigError(f"--task magic_squad: no dataset {path}.{{bin,idx}}")
            return ds

        question, context = load("input0"), load("input1")
        labels = read_labels(os.path.join(self.cfg.data, "label", f"{split}.label"))
        if not len(question) == len(context) == len(labels):
            raise MagicConfigError(
                f"{self.cfg.data} {split}: {len(question)} questions, {len(context)} "
                f"contexts and {len(labels)} labels: expected one of each per window")
        # question and context each end with </s> (fairseq-preprocess appends it)
        cstart = question.sizes.astype(np.int64) + 2
        cend = cstart + context.sizes.astype(np.int64) - 1
        starts, ends = [], []
        for i, (s, e) in enumerate(labels):
            if s < 0 or e < 0:
                starts.append(0)
                ends.append(0)
                continue
            if not s <= e < cend[i] - cstart[i]:
                raise MagicConfigError(f"{self.cfg.data} {split} window {i}: label {s} {e} "
                                       f"outside its {cend[i] - cstart[i]} context tokens")
            starts.append(int(cstart[i] + s))
            ends.append(int(cstart[i] + e))
        src = ConcatSentencesDataset(PrependTokenDataset(question, d.bos()),
                                     PrependTokenDataset(context, d.eos()))
        dataset = NestedDictionaryDataset({
            "id": IdDataset(),
            "net_input": {"src_tokens": RightPadDataset(src, pad_idx=d.pad()),
                          "src_lengths": NumelDataset(src, reduce=False)},
            "start_positions": RawLabelDataset(starts),
            "end_positions": RawLabelDataset(ends),
            "context_start": RawLabelDataset(cstart.tolist()),
            "context_end": RawLabelDataset(cend.tolist()),
            "nsentences": NumSamplesDataset(),
            "ntokens": NumelDataset(src, reduce=True),
        }, sizes=[src.sizes])
        if not self.cfg.no_shuffle:
            with data_utils.numpy_seed(self.cfg.seed):
                order = np.random.permutation(len(src))
            dataset = SortDataset(dataset, sort_order=[order])
        logger.info(f"magic_squad {split}: {len(dataset)} windows")
        self.datasets[split] = dataset
        return dataset

    def build_model(self, cfg, from_checkpoint=False):
        from fairseq import models

        from ..models.magic_supernet import MagicChildModel

        with open_dict(cfg) if OmegaConf.is_config(cfg) else contextlib.ExitStack():
            cfg.max_positions = self.cfg.max_positions
        model = models.build_model(cfg, self, from_checkpoint)
        if not isinstance(model, MagicChildModel):
            raise MagicConfigError(
                f"--task magic_squad fine-tunes one fixed child (--arch magic_child "
                f"--magic-arch SPEC), got --arch {getattr(cfg, '_name', None) or cfg.arch!r}: "
                "cut a child out of a super-net with magic-export first")
        model.span_head = SquadSpanHead(model.cfg.encoder_embed_dim)
        return model

    def max_positions(self):
        return self.cfg.max_positions

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary

