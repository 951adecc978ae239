"""magic-export: cut one child out of a trained super-net as a standalone model.

    magic-export SUPERNET_CKPT --arch SPEC --out DIR [--data DATA_BIN] [--force]
    magic-export SUPERNET_CKPT --arch anchor --out DIR    # the stored MAGIC-A anchor

Writes DIR/model.pt, a fairseq checkpoint of ``--arch magic_child --magic-arch
SPEC`` holding exactly the child's weights (``child_state_dict``: the shared
embeddings and LM head plus, in each layer, the chosen operator), with no
optimizer, sampler or data-loader state; DIR/dict.txt (the vocabulary, without
``<mask>``: masked_lm and sentence_prediction add it again, at the same index);
DIR/export.json (spec, parameters, FLOPs at 128 tokens, source checkpoint,
the super-net's search space); and DIR/spm.model, the sentencepiece model of
the data (``--spm``, or found beside the data-bin), so ``fairseq_magic.hub.
from_pretrained(DIR)`` encodes raw text (``encode``, ``fill_mask``).

The checkpoint's config is a ``magic_child`` model config and a fairseq
``masked_lm`` task config, so it loads with ``checkpoint_utils.
load_model_ensemble_and_task`` (after importing the plugin), with
``fairseq_magic.hub.from_pretrained(DIR)``, and continues training with
``fairseq-train ... --arch magic_child --magic-arch SPEC --restore-file
DIR/model.pt --reset-optimizer --reset-dataloader --reset-meters
--reset-lr-scheduler`` under ``--task masked_lm``, ``--task magic`` or
``--task sentence_prediction``.

An ELECTRA super-net (``--arch magic_electra_supernet``) exports its
discriminator child as ``--arch magic_electra_child --magic-arch SPEC`` without
the generator, under the same ``masked_lm`` task config: it fine-tunes under
``--task sentence_prediction --arch magic_electra_child --magic-arch SPEC
--restore-file DIR/model.pt`` like any exported child (the model builds no
generator outside ``--task magic``). ``--keep-generator`` also writes the
generator and a ``magic`` task config, for continued RTD pre-training
(``--task magic --arch magic_electra_child --criterion magic_electra
--restore-file DIR/model.pt ...``).

The output is written to a temporary folder beside DIR and renamed at the end:
on any error nothing is left behind.
"""

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import fields

from . import run_main
from ..core.space import MagicConfigError, SearchSpace

FLOPS_SEQ_LEN = 128


def get_parser():
    p = argparse.ArgumentParser(prog="magic-export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a magic_supernet checkpoint (checkpoint_last.pt)")
    p.add_argument("--arch", required=True,
                   help="the child to export: a spec (one operator per layer, e.g. "
                        "'mha12,ffn,conv3,ffn') or 'anchor' for the MAGIC-A anchor "
                        "stored in the checkpoint")
    p.add_argument("--out", required=True, help="output folder (must not exist)")
    p.add_argument("--data", help="data-bin the super-net trained on (default: the "
                                  "path stored in the checkpoint)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--spm", help="sentencepiece model the data was encoded with, copied "
                                 "to DIR/spm.model so the hub's encode/fill_mask take raw "
                                 "text (default: spm.model or sentencepiece.bpe.model in "
                                 "the data-bin or its parent folder, as "
                                 "scripts/prepare_corpus.py lays them out)")
    p.add_argument("--keep-generator", action="store_true",
                   help="ELECTRA super-nets: also export the generator (and a --task "
                        "magic config), for continued replaced-token-detection "
                        "pre-training; by default only the discriminator child is written")
    return p


def stored_space(extra_state):
    """The (possibly shrunk) search space a training run stored, or None."""
    state = (extra_state.get("MagicTask") or {}).get("search_space")
    return SearchSpace.from_state_dict(state) if state else None


def child_model_cfg(supernet_model_cfg: dict, arch, max_positions: int,
                    generator_dims=None) -> dict:
    """The ``magic_child`` model config of ``arch``: dims from the super-net,
    the operator list narrowed to the child's own operators. With
    ``generator_dims`` (an ELECTRA super-net's (hidden, heads, layers)): the
    ``magic_electra_child`` config, the generator's sizes written out."""
    from ..models.magic_electra import MagicElectraChildConfig
    from ..models.magic_supernet import MagicChildConfig

    electra = generator_dims is not None
    out = {}
    for f in fields(MagicElectraChildConfig if electra else MagicChildConfig):
        if f.name in supernet_model_cfg:
            out[f.name] = supernet_model_cfg[f.name]
    if electra:
        (out["electra_generator_embed_dim"], out["electra_generator_heads"],
         out["electra_generator_layers"]) = map(int, generator_dims)
    ops = list(dict.fromkeys(arch))
    out.update({
        "_name": "magic_electra_child" if electra else "magic_child",
        "magic_arch": str(arch),
        "encoder_layers": len(arch),
        "magic_ops": ",".join(ops),
        # explicit, so a task with another --tokens-per-sample builds the same table
        "max_positions": int(max_positions),
    })
    return out


def masked_lm_task_cfg(supernet_task_cfg: dict, data: str) -> dict:
    """fairseq's masked_lm task config: the magic task's masked-LM fields only."""
    from fairseq.tasks.masked_lm import MaskedLMConfig

    out = {f.name: supernet_task_cfg[f.name] for f in fields(MaskedLMConfig)
           if f.name in supernet_task_cfg}
    out["_name"] = "masked_lm"
    out["data"] = data
    return out


def save_dictionary(dictionary, path: str) -> None:
    """Write the vocabulary as fairseq's dict.txt, without the ``<mask>`` symbol
    masked_lm appended on load (it is appended again, at the same index)."""
    symbols = dictionary.symbols[dictionary.nspecial:]
    counts = dictionary.count[dictionary.nspecial:]
    if symbols and symbols[-1] == "<mask>":
        symbols, counts = symbols[:-1], counts[:-1]
    if "<mask>" in symbols:
        raise MagicConfigError("the dictionary holds '<mask>' before its last entry: "
                               "cannot write a dict.txt masked_lm would rebuild identically")
    with open(path, "w", encoding="utf-8") as f:
        for sym, count in zip(symbols, counts):
            f.write(f"{sym} {count}\n")


SPM_FILES = ("spm.model", "sentencepiece.bpe.model")


def find_spm(data: str):
    """The sentencepiece model beside a data-bin (in it or its parent folder), or None."""
    first = (data or "").split(os.pathsep)[0]
    for folder in (first, os.path.dirname(os.path.abspath(first))) if first else ():
        for name in SPM_FILES:
            if os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name)
    return None


def magic_task_cfg(supernet_task_cfg: dict, data: str) -> dict:
    """The super-net's ``magic`` task config for a child that continues RTD
    pre-training: its data and masking kept, the super-net's method, anchor,
    shrinking, logging and batch-size settings back at their defaults."""
    out = dict(supernet_task_cfg, data=data, magic_method="spos", magic_sampler=None,
               magic_anchor=None, magic_shrink=False, magic_path_log=None,
               magic_valid_arch=None, magic_interference_interval=0,
               magic_sentences_per_update=0, magic_max_params=0, magic_max_flops=0)
    out["_name"] = "magic"
    return out


def export_child(checkpoint: str, arch_spec: str, out_dir: str, data=None,
                 force: bool = False, spm=None, keep_generator: bool = False) -> dict:
    """Export one child; returns the export.json record. Raises MagicConfigError
    (nothing written) on a bad spec, a non-super-net checkpoint, a missing anchor
    or an existing ``out_dir`` without ``force``."""
    import torch
    from omegaconf import OmegaConf

    from ..evaluation import load_supernet
    from .children import checkpoint_anchor

    out_dir = os.path.abspath(out_dir)
    if os.path.lexists(out_dir) and not force:
        raise MagicConfigError(f"output {out_dir!r} exists (pass --force to replace it)")
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise MagicConfigError(f"output {out_dir!r} exists and is not a folder")

    if spm is not None and not os.path.isfile(spm):
        raise MagicConfigError(f"--spm {spm!r} does not exist: expected the "
                               "sentencepiece model (spm.model) the data was encoded with")
    model, task, cfg, extra_state = load_supernet(checkpoint, data, "cpu")
    electra = getattr(model, "is_electra", False)
    if keep_generator and not electra:
        raise MagicConfigError(
            f"--keep-generator: checkpoint {checkpoint!r} is a masked-LM super-net "
            f"({type(model).__name__}), which has no generator: expected an ELECTRA "
            "super-net (--arch magic_electra_supernet)")
    spm = spm or find_spm(cfg.task.data)
    space = stored_space(extra_state) or model.search_space
    if arch_spec == "anchor":
        anchor = checkpoint_anchor(extra_state)
        if anchor is None:
            raise MagicConfigError(
                f"checkpoint {checkpoint!r} stores no MAGIC-A anchor (trained with "
                "--magic-method magic_a/magic_at?): pass a spec with --arch")
        arch_spec = anchor
    try:
        arch = model.search_space.parse(arch_spec)
        space.validate(arch)  # progressive shrinking may have narrowed the space
    except MagicConfigError as e:
        raise MagicConfigError(f"--arch {arch_spec!r}: {e}") from e

    weights = (model.child_state_dict(arch, keep_generator=keep_generator) if electra
               else model.child_state_dict(arch))
    cost = model.child_cost(arch, FLOPS_SEQ_LEN)
    generator_params = model.generator_params() if keep_generator else 0
    # named_parameters() lists a tied tensor once (the LM head shares the embedding)
    param_names = {name for name, _ in model.named_parameters()}
    params = sum(v.numel() for k, v in weights.items() if k in param_names)
    if params != cost["params"] + generator_params:
        raise MagicConfigError(f"internal error: exported {params} parameters, "
                               f"child_cost says {cost['params']} (+ generator "
                               f"{generator_params})")

    cfg_dict = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    cfg_dict["model"] = child_model_cfg(cfg_dict["model"], arch,
                                        model.encoder.max_positions(),
                                        model.generator_dims if electra else None)
    if keep_generator:
        cfg_dict["task"] = magic_task_cfg(cfg_dict["task"], out_dir)
        cfg_dict["criterion"] = dict(cfg_dict["criterion"], _name="magic_electra")
    else:
        cfg_dict["task"] = masked_lm_task_cfg(cfg_dict["task"], out_dir)
        cfg_dict["criterion"] = {"_name": "masked_lm", "tpu": False}
    state = {
        "args": None,
        "cfg": cfg_dict,
        "model": weights,
        "criterion": {},
        # fairseq's loader needs one entry; no optimizer state is stored, so
        # training restarts its optimizer and schedule at update 0
        "optimizer_history": [{"criterion_name": "MagicElectraLoss" if keep_generator
                               else "MaskedLmLoss", "optimizer_name": None,
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": {},
        "extra_state": {
            "train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "shuffle": False},
            "magic_export": {"arch": str(arch), "source": os.path.abspath(checkpoint)},
        },
        "last_optimizer_state": None,
    }
    record = {
        "arch": str(arch),
        "num_layers": len(arch),
        "params": cost["params"],
        "flops": cost["flops"],
        "objective": "electra" if electra else "mlm",
        "generator_params": generator_params,
        "flops_seq_len": FLOPS_SEQ_LEN,
        "source_checkpoint": os.path.abspath(checkpoint),
        "source_data": cfg.task.data,
        "anchor": arch_spec == checkpoint_anchor(extra_state),
        "search_space": space.state_dict(),
        "supernet_params": sum(p.numel() for p in model.parameters()),
        "spm": os.path.abspath(spm) if spm else None,
    }

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
        torch.save(state, os.path.join(tmp, "model.pt"))
        save_dictionary(task.source_dictionary, os.path.join(tmp, "dict.txt"))
        if spm:
            shutil.copyfile(spm, os.path.join(tmp, "spm.model"))
        with open(os.path.join(tmp, "export.json"), "w") as f:
            json.dump(record, f, indent=2)
        if os.path.isdir(out_dir):  # --force
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
            os.rename(out_dir, os.path.join(old, "d"))
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def main(argv=None):
    args = get_parser().parse_args(argv)
    record = export_child(args.checkpoint, args.arch, args.out, args.data, args.force,
                          args.spm, args.keep_generator)
    print(f"exported {record['arch']}: {record['params']:,} parameters "
          f"(super-net {record['supernet_params']:,}), "
          f"{record['flops']:.3g} FLOPs at {FLOPS_SEQ_LEN} tokens"
          + (f" (+ generator {record['generator_params']:,})"
             if record["generator_params"] else "") + " -> "
          f"{os.path.join(os.path.abspath(args.out), 'model.pt')}")
    return 0


def cli_main():
    run_main(main, "magic-export")


if __name__ == "__main__":
    cli_main()
