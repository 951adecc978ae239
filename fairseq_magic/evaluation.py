"""Loading a trained super-net and scoring children with its shared weights.

Scores are the masked-LM loss in bits per masked token (base 2, as fairseq logs
``loss``) on a fixed subset of a split: the masking of a split is seeded per
example, so every child is scored on exactly the same tokens. An ELECTRA
super-net (``magic_electra_supernet``) is scored by its discriminator's
replaced-token-detection loss in bits per non-pad token, on corrupted inputs
fixed per batch (masking and generator sample seeded by the batch's example ids,
the generator in eval mode): see ``MagicElectraSupernetModel.rtd_loss_sums``.
"""

import math
import os
from argparse import Namespace
from typing import Iterable, List, Optional, Sequence

import torch

from .core.space import MagicConfigError

USER_DIR = os.path.dirname(os.path.abspath(__file__))


def import_plugin() -> None:
    """Register the plugin with fairseq (needed before loading a checkpoint:
    otherwise fairseq fails with 'Could not infer task type')."""
    import sys

    from fairseq import utils

    package = sys.modules.get(__package__)
    if package is not None and USER_DIR in map(os.path.abspath, package.__path__):
        # Importing the package registered everything already (console scripts
        # run from it); fairseq's call would only log "--user-dir=... has
        # already been imported." at the start of every tool. Its memo makes
        # later --user-dir imports (a checkpoint's common.user_dir) skip too.
        utils.import_user_module.memo = getattr(utils.import_user_module, "memo", set())
        utils.import_user_module.memo.add(USER_DIR)
        return
    utils.import_user_module(Namespace(user_dir=USER_DIR))


def _unreadable(path, error) -> MagicConfigError:
    # torch's messages run on with advice about weights_only: keep the first sentence
    first = (str(error).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")[:160]
    return MagicConfigError(
        f"checkpoint {path!r} is not a readable fairseq checkpoint "
        f"({type(error).__name__}: {first}): expected a file written by fairseq-train "
        "or magic-export (truncated copy, or another kind of file?)")


def read_checkpoint(path: str, arg_overrides=None, **kwargs) -> dict:
    """fairseq's ``checkpoint_utils.load_checkpoint_to_cpu``, with one error
    naming the file for a missing, truncated or non-checkpoint file (torch
    alone reports 'failed finding central directory' or an unpickling
    error, without the path)."""
    from fairseq import checkpoint_utils

    load = getattr(checkpoint_utils.load_checkpoint_to_cpu, "__wrapped__",
                   checkpoint_utils.load_checkpoint_to_cpu)
    if not os.path.isfile(path):
        raise MagicConfigError(f"checkpoint {path!r} does not exist")
    try:
        state = load(path, arg_overrides, **kwargs)
    except MagicConfigError:
        raise
    except Exception as e:
        raise _unreadable(path, e) from e
    if not isinstance(state, dict) or "model" not in state:
        raise _unreadable(path, TypeError(
            f"holds a {type(state).__name__} without a 'model' entry"))
    return state


def guard_checkpoint_reads() -> None:
    """Route fairseq's own checkpoint reads (``--restore-file``,
    ``--finetune-from-model``, hub loading) through ``read_checkpoint``: the
    trainer reads the file before any plugin hook runs, so this is the only
    place to name the file in the error."""
    import functools

    from fairseq import checkpoint_utils

    original = checkpoint_utils.load_checkpoint_to_cpu
    if hasattr(original, "__wrapped__"):
        return

    @functools.wraps(original)
    def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
        return read_checkpoint(path, arg_overrides, load_on_all_ranks=load_on_all_ranks)

    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu


def load_supernet(checkpoint: str, data: Optional[str] = None, device: str = "cpu"):
    """Load a ``magic_supernet`` checkpoint; returns (model, task, cfg, extra_state)
    where extra_state holds what training stored beside the weights (the
    sampler, the MAGIC-A anchor, ...)."""
    import_plugin()
    from fairseq import checkpoint_utils

    from .models.magic_supernet import MagicChildModel, MagicSupernetModel

    overrides = {"data": data} if data else {}
    state = read_checkpoint(checkpoint, overrides)
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [checkpoint], arg_overrides=overrides, state=state)
    model = models[0]
    if not isinstance(model, MagicSupernetModel) or isinstance(model, MagicChildModel):
        raise MagicConfigError(
            f"checkpoint {checkpoint!r} holds a {type(model).__name__}: expected a "
            "magic_supernet checkpoint")
    model.to(device).eval()
    return model, task, cfg, state.get("extra_state") or {}


def fixed_batches(task, split: str = "valid", max_batches: int = 8,
                  batch_size: int = 16, device: str = "cpu") -> List[dict]:
    """The first ``max_batches`` batches of a split, materialised once, so every
    child is scored on identical inputs and masks."""
    from fairseq import utils

    if split not in task.datasets:
        try:
            task.load_dataset(split, combine=False, epoch=1)
        except FileNotFoundError as e:
            raise MagicConfigError(f"split {split!r} not found: {e}") from e
    itr = task.get_batch_iterator(
        dataset=task.dataset(split), max_sentences=batch_size,
        max_positions=task.max_positions(), ignore_invalid_inputs=True,
        seed=1, num_workers=0,
        # fairseq caches one iterator per dataset and hands it back whatever the
        # arguments: without this, training's own validation would reuse ours.
        disable_iterator_cache=True).next_epoch_itr(shuffle=False)
    out = []
    for i, sample in enumerate(itr):
        if i >= max_batches:
            break
        out.append(utils.move_to_cuda(sample) if device.startswith("cuda") else sample)
    if not out:
        raise MagicConfigError(f"split {split!r} produced no batches")
    return out


@torch.no_grad()
def child_loss_sums(model, arch, batches: Iterable[dict]):
    """(summed MLM loss in nats, number of masked tokens) of ``arch`` over
    ``batches``, in eval mode; the model's active path and mode are restored."""
    from .model_utils import mlm_loss

    was_training = model.training
    previous = model.get_active_path()
    model.eval()
    model.set_active_path(arch)
    total, count = 0.0, 0
    pad = model.encoder.dictionary.pad()
    # An ELECTRA super-net scores its discriminator: summed RTD loss (nats) over
    # non-pad tokens, with a fixed masking and generator sample per batch.
    rtd = getattr(model, "rtd_loss_sums", None)
    try:
        for sample in batches:
            if rtd is not None:
                loss, n = rtd(sample)
            else:
                loss, n, _ = mlm_loss(model, sample, pad)
            total += float(loss)
            count += n
    finally:
        if previous is not None:
            # put back exactly what was active, without validating it: after
            # progressive shrinking the last trained child may hold an operator
            # the shrunk space no longer allows
            model.sentence_encoder.active_path = previous
        model.train(was_training)
    return total, count


def score_child(model, arch, batches: Iterable[dict]) -> float:
    """MLM loss of ``arch`` (bits per masked token) over ``batches``, in eval mode."""
    total, count = child_loss_sums(model, arch, batches)
    return total / max(count, 1) / math.log(2)
