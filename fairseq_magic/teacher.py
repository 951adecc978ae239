"""A frozen teacher for knowledge distillation (``--kd-teacher CHECKPOINT``).

The distillation criteria (``magic_kd``, ``sentence_prediction_kd``,
``squad_span_kd`` in criterions/magic_kd.py) load the teacher once, when
fairseq-train builds the criterion, i.e. before the first update and before
any checkpoint is restored, so every bad teacher fails the run before it
trains. The teacher is:

* any fairseq checkpoint of a model over the student's dictionary: a
  magic-export folder's model.pt (or the folder itself), a ``magic_child`` run's
  checkpoint, a fairseq RoBERTa checkpoint (``--arch roberta*``), or a
  fine-tuned ``sentence_prediction`` / ``magic_squad`` checkpoint of one of
  these (its classification or span head included);
* built from its own model config (``fairseq.models.build_model``: not the
  task's ``build_model``, which for ``--task magic`` would re-point the task's
  sampler at the teacher) over the student task's dictionary, after checking
  that the dictionaries agree (the number of embedding rows, and the symbols of
  the teacher's dict.txt where it can be found);
* frozen: ``requires_grad`` off, eval mode (no dropout, so its outputs are a
  function of the input alone and a resumed run sees the same targets), run
  under ``torch.no_grad``;
* kept out of the student: ``FrozenTeacher`` is not a ``torch.nn.Module``, so
  the criterion holding it has no parameters. fairseq's trainer therefore never
  gives the teacher to the optimiser, never wraps it in DDP, never moves it and
  never writes it into a checkpoint (it saves ``criterion.state_dict()`` only
  for criteria with parameters). The checkpoint records only the teacher's path
  (``cfg.criterion.kd_teacher``). ``FrozenTeacher`` moves the model to the
  student's device (and half precision) at the first forward.
"""

import copy
import logging
import os
from contextlib import ExitStack
from typing import List, Optional

import torch

from .core.space import MagicConfigError

logger = logging.getLogger(__name__)

_EMBED = "sentence_encoder.embed_tokens.weight"
_POSITIONS = "encoder.sentence_encoder.embed_positions.weight"
_HEADS = "classification_heads."
_ELECTRA_KEYS = ("generator.", "encoder.rtd_head.")


def resolve_teacher_path(path: str) -> str:
    """The checkpoint file ``--kd-teacher`` names: the file itself, or in a
    folder its model.pt (magic-export) or checkpoint_best.pt (fairseq-train)."""
    if not path:
        raise MagicConfigError(
            "--kd-teacher is empty: expected a teacher checkpoint (a magic-export folder or "
            "its model.pt, a fairseq-train checkpoint, a fairseq RoBERTa model.pt)")
    if os.path.isdir(path):
        for name in ("model.pt", "checkpoint_best.pt"):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise MagicConfigError(
            f"--kd-teacher {path!r} is a folder without model.pt or checkpoint_best.pt: "
            "expected a teacher checkpoint or a folder holding one")
    if not os.path.isfile(path):
        raise MagicConfigError(
            f"--kd-teacher {path!r} does not exist: expected a teacher checkpoint (a "
            "magic-export folder or its model.pt, a fairseq-train checkpoint, a fairseq "
            "RoBERTa model.pt)")
    return path


def _cfg_get(cfg, key, default=None):
    if cfg is None:
        return default
    try:
        value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    except Exception:  # noqa: BLE001 - omegaconf struct / interpolation errors
        value = default
    return default if value is None else value


def teacher_dictionary_file(path: str, state: dict) -> Optional[str]:
    """The dict.txt the teacher was trained with, where it can be found: beside
    the checkpoint (a magic-export folder), in its data-bin, or in the data-bin's
    input0/ (a fine-tuned sentence_prediction / magic_squad checkpoint)."""
    candidates = [os.path.join(os.path.dirname(os.path.abspath(path)), "dict.txt")]
    data = str(_cfg_get(_cfg_get(state.get("cfg"), "task"), "data", "") or "")
    first = data.split(os.pathsep)[0] if data else ""
    if first:
        candidates += [os.path.join(first, "dict.txt"), os.path.join(first, "input0", "dict.txt")]
    for c in candidates:
        if os.path.isfile(c):
            return c
    return None


def _embedding_rows(state_dict) -> Optional[int]:
    for k, v in state_dict.items():
        if k.endswith(_EMBED):
            return int(v.shape[0])
    return None


def check_teacher_dictionary(path: str, state: dict, dictionary, student_dict_file=None) -> None:
    """Raise MagicConfigError unless the teacher's vocabulary is the student's:
    the same number of embedding rows as the student's dictionary and, where
    the teacher's dict.txt is found, the same symbols in the same order."""
    rows = _embedding_rows(state["model"])
    if rows is None:
        raise MagicConfigError(
            f"--kd-teacher {path!r} holds no token embedding (no key ending in {_EMBED!r}): "
            "expected a masked-LM model (RoBERTa or a magic child)")
    where = f" ({student_dict_file})" if student_dict_file else ""
    if rows != len(dictionary):
        raise MagicConfigError(
            f"--kd-teacher {path!r} has a vocabulary of {rows} symbols, the student's "
            f"dictionary{where} {len(dictionary)}: expected the same dictionary (train the "
            "teacher on the student's data-bin, or binarise the student's data with the "
            "teacher's dict.txt)")
    dict_file = teacher_dictionary_file(path, state)
    if dict_file is None:
        logger.warning(f"--kd-teacher {path}: its dict.txt was not found (beside it or in its "
                       f"data-bin), only the vocabulary size ({rows}) was compared")
        return
    from fairseq.data import Dictionary

    theirs = list(Dictionary.load(dict_file).symbols)
    ours = list(dictionary.symbols)
    if len(theirs) == len(ours) - 1 and ours[-1] == "<mask>" and "<mask>" not in theirs:
        theirs.append("<mask>")  # masked_lm / sentence_prediction append it on load
    for i, (a, b) in enumerate(zip(theirs, ours)):
        if a != b:
            raise MagicConfigError(
                f"--kd-teacher {path!r}: its dictionary {dict_file} differs from the student's"
                f"{where} at symbol {i}: {a!r} (teacher) vs {b!r} (student): expected the "
                "same dictionary, symbol for symbol")
    if len(theirs) != len(ours):
        raise MagicConfigError(
            f"--kd-teacher {path!r}: its dictionary {dict_file} has {len(theirs)} symbols, "
            f"the student's{where} {len(ours)}: expected the same dictionary")


def student_dictionary_file(task) -> Optional[str]:
    """The student's dict.txt (masked_lm / magic: DATA/dict.txt; sentence_prediction
    and magic_squad: DATA/input0/dict.txt), for messages."""
    data = str(_cfg_get(getattr(task, "cfg", None), "data", "") or "").split(os.pathsep)[0]
    for c in (os.path.join(data, "dict.txt"), os.path.join(data, "input0", "dict.txt")):
        if data and os.path.isfile(c):
            return c
    return None


def _teacher_max_positions(state, model_cfg, pad: int) -> Optional[int]:
    pos = state["model"].get(_POSITIONS)
    if pos is not None and _is_magic(model_cfg):
        return int(pos.shape[0]) - pad - 1
    value = _cfg_get(model_cfg, "max_positions")
    return int(value) if value else None


def _is_magic(model_cfg) -> bool:
    name = str(_cfg_get(model_cfg, "_name", "") or _cfg_get(model_cfg, "arch", ""))
    return name.startswith("magic_")


def _set(cfg, key, value):
    from omegaconf import OmegaConf, open_dict

    with open_dict(cfg) if OmegaConf.is_config(cfg) else ExitStack():
        setattr(cfg, key, value)


def _heads(state_dict):
    """{head name: (classes, inner dim)} of the RoBERTa classification heads stored."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith(_HEADS) and k.endswith(".out_proj.weight"):
            name = k[len(_HEADS):].split(".")[0]
            inner = state_dict[f"{_HEADS}{name}.dense.weight"].shape[0]
            out[name] = (int(v.shape[0]), int(inner))
    return out


def check_teacher(path: str, dictionary, max_positions: Optional[int] = None,
                  classification_head: Optional[str] = None,
                  num_classes: Optional[int] = None, span_head: bool = False,
                  student_dict_file: Optional[str] = None) -> dict:
    """Read the teacher of ``--kd-teacher PATH`` and check it against the
    student without building it: one masked-LM model (not a super-net, not an
    ELECTRA discriminator) over ``dictionary``, taking at least
    ``max_positions`` tokens, holding ``classification_head`` with
    ``num_classes`` outputs / a SQuAD span head when asked. Raises
    MagicConfigError naming the value; returns ``{"path", "state",
    "model_cfg", "max_positions", "heads", "span_head"}``. The CLIs call it
    before any training (magic-glue checks every task's teacher first)."""
    from .evaluation import read_checkpoint
    from .models.magic_supernet import checkpoint_layout

    path = resolve_teacher_path(path)
    state = read_checkpoint(path)
    model_cfg = copy.deepcopy(_cfg_get(state.get("cfg"), "model"))
    if model_cfg is None:
        raise MagicConfigError(f"--kd-teacher {path!r} stores no model config: expected a "
                               "checkpoint written by fairseq-train or magic-export")
    weights = state["model"]
    name = str(_cfg_get(model_cfg, "_name", "") or _cfg_get(model_cfg, "arch", ""))
    if name.startswith("magic_electra") or any(k.startswith(_ELECTRA_KEYS) for k in weights):
        raise MagicConfigError(
            f"--kd-teacher {path!r} is an ELECTRA model ({name}): its discriminator predicts "
            "replaced tokens, not the masked tokens' distribution: expected a masked-LM "
            "teacher (RoBERTa or a magic child)")
    layers, _, _ = checkpoint_layout(weights)
    if layers and any(len(ops) > 1 for ops in layers):
        raise MagicConfigError(
            f"--kd-teacher {path!r} is a magic_supernet ({len(layers)} layers, several "
            "operators each): a teacher is one model: cut a child out first with "
            "`magic-export CHECKPOINT --arch SPEC --out DIR` (and train it) and pass DIR")
    check_teacher_dictionary(path, state, dictionary, student_dict_file)
    have = _teacher_max_positions(state, model_cfg, dictionary.pad())
    if max_positions and have and have < max_positions:
        raise MagicConfigError(
            f"--kd-teacher {path!r} takes at most {have} tokens, the student's inputs up to "
            f"{max_positions}: expected a teacher with at least the student's max positions")
    heads = _heads(weights)
    if classification_head is not None:
        if classification_head not in heads:
            raise MagicConfigError(
                f"--kd-teacher {path!r} has no classification head {classification_head!r} "
                f"(it holds {sorted(heads) or 'none'}): expected a fine-tuned "
                "sentence_prediction checkpoint (magic-glue's OUT/TASK/checkpoints/"
                "checkpoint_best.pt)")
        if num_classes is not None and heads[classification_head][0] != num_classes:
            raise MagicConfigError(
                f"--kd-teacher {path!r}: its head {classification_head!r} has "
                f"{heads[classification_head][0]} outputs, this task {num_classes} "
                "(--num-classes): expected a teacher fine-tuned on the same task")
    has_span = any(k.startswith("span_head.") for k in weights)
    if span_head and not has_span:
        raise MagicConfigError(
            f"--kd-teacher {path!r} has no SQuAD span head: expected a checkpoint fine-tuned "
            "by magic-squad (OUT/vVERSION/checkpoints/checkpoint_best.pt)")
    return {"path": path, "state": state, "model_cfg": model_cfg, "max_positions": have,
            "heads": heads, "span_head": has_span}


def load_teacher(path: str, task, classification_head: Optional[str] = None,
                 num_classes: Optional[int] = None, span_head: bool = False):
    """Load, check (``check_teacher``) and freeze the teacher of ``--kd-teacher
    PATH`` for a student trained under ``task``; returns a ``FrozenTeacher``."""
    from fairseq import models

    want = task.max_positions() if hasattr(task, "max_positions") else None
    want = want[0] if isinstance(want, tuple) else want
    info = check_teacher(path, task.source_dictionary, want, classification_head,
                         num_classes, span_head, student_dictionary_file(task))
    model_cfg, weights = info["model_cfg"], info["state"]["model"]
    if _is_magic(model_cfg) and info["max_positions"]:
        # explicit: its cfg may hold 0 (= the training task's --tokens-per-sample)
        _set(model_cfg, "max_positions", info["max_positions"])
    # Building draws random initial weights: keep the caller's RNG as it was.
    with torch.random.fork_rng(devices=[]):
        model = models.build_model(model_cfg, task, from_checkpoint=True)
    for head, (classes, inner) in info["heads"].items():
        model.register_classification_head(head, num_classes=classes, inner_dim=inner)
    if info["span_head"]:
        from .tasks.squad_task import SquadSpanHead

        model.span_head = SquadSpanHead(weights["span_head.out_proj.weight"].shape[1])
    model.load_state_dict(weights, strict=True, model_cfg=model_cfg)
    return FrozenTeacher(model, info["path"])


class FrozenTeacher:
    """The teacher model, hidden from ``torch.nn.Module`` bookkeeping (see the
    module docstring). Call it like the model; it always runs in eval mode
    without gradient, on the device and in the dtype of ``like``."""

    def __init__(self, model, path: str):
        self.path = os.path.abspath(path)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self.num_params = sum(p.numel() for p in model.parameters())
        logger.info(f"KD teacher {self.path}: {type(model).__name__}, {self.num_params:,} "
                    "parameters, frozen (eval mode, no gradient)")

    def match(self, like: torch.Tensor) -> None:
        """Move the teacher to ``like``'s device, and to its dtype when that is half
        precision (a student under --memory-efficient-fp16 / --bf16)."""
        p = next(self.model.parameters())
        dtype = like.dtype if like.dtype in (torch.float16, torch.bfloat16) else p.dtype
        if p.device != like.device or p.dtype != dtype:
            self.model.to(device=like.device, dtype=dtype)

    @torch.no_grad()
    def __call__(self, *args, like: Optional[torch.Tensor] = None, **kwargs):
        if like is not None:
            self.match(like)
        self.model.eval()  # whatever happened to it, no dropout in the targets
        return self.model(*args, **kwargs)

    @torch.no_grad()
    def apply(self, fn, *args, like: Optional[torch.Tensor] = None, **kwargs):
        """``fn(teacher_model, *args, **kwargs)`` under the same conditions as a call
        (for outputs a plain forward does not give, e.g. SQuAD's span logits)."""
        if like is not None:
            self.match(like)
        self.model.eval()
        return fn(self.model, *args, **kwargs)

    def state_dict(self):
        return self.model.state_dict()

    def parameters(self) -> List[torch.Tensor]:
        return list(self.model.parameters())
