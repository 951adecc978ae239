#!/usr/bin/env python3
"""MAGIC-A anchor fidelity: the anchor's loss over training, before and after
"every trained child is an anchor candidate" (issue 7).

BEFORE is the code at a given commit (default 66f8ec6: only the child of update
u-1 is compared, once every interval; the first anchor is the first child
trained). AFTER is this working tree (the C children with the lowest training
MLM loss since the last evaluation are validated against the rescored anchor;
the first anchor is chosen by validation). Both train the tiny preset
(``configs/magic_at_tiny.yaml``: 8 layers x {mha2,ffn,conv3,conv5}, hidden 128,
MAGIC-AT, anchor interval 25) on the KJV data-bin with the same seed and the
same budget (``--updates``), saving a checkpoint every ``--every`` updates. BEFORE runs in a
``git worktree`` of the commit (made and removed by this script unless
``--before-tree`` names one), with ``PYTHONPATH`` and ``--user-dir`` pointing at
it.

One common scorer (this tree's ``fairseq_magic.evaluation.score_child``, eval
mode) then scores, at every saved checkpoint, the anchor that checkpoint holds
with the weights of that moment, on

* ``valid``: the task's own anchor subset (the first 4 x 32 sentences of the
  valid split -- what the anchor rule itself sees; a rule that validates more
  children is favoured here by selection), and
* ``test``: the whole test split, which no anchor rule ever sees (the fair
  comparison).

The two codes train different weights from the same start (the anchor is the
alignment target), so the absolute loss mixes the anchor choice with how well
the whole super-net trained. A fixed reference population of random children
(the same children at every checkpoint, in every run) is therefore scored on
the test split too: ``test - ref. median`` (the anchor against the median
random child of the same weights) and the percentile (% of them better) judge
the anchor choice itself. ``--seeds 1,2`` repeats the pair with other seeds.

Usage::

    python benchmarks/anchor_trajectory.py [--updates 400] [--every 25] [--seeds 1,2]

Writes ``benchmarks/results/anchor_trajectory.json`` (merged), its section of
``benchmarks/RESULTS.md`` and ``benchmarks/results/anchor_trajectory.png``.
Training takes 3-5 minutes per run on 2 CPU cores, scoring about as long.
"""

import argparse
import datetime
import glob
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, REPO)

from benchmarks.common import host_info, load_avg, write_json, write_markdown  # noqa: E402

CONFIG = os.path.join(REPO, "configs", "magic_at_tiny.yaml")
DEFAULT_DATA = os.path.join(REPO, "data", "kjv", "data-bin")
DEFAULT_JSON = os.path.join(REPO, "benchmarks", "results", "anchor_trajectory.json")
DEFAULT_PNG = os.path.join(REPO, "benchmarks", "results", "anchor_trajectory.png")
DEFAULT_MD = os.path.join(REPO, "benchmarks", "RESULTS.md")
MD_BEGIN = "<!-- anchor_trajectory:begin -->"
MD_END = "<!-- anchor_trajectory:end -->"
VARIANTS = ("before", "after")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="fairseq data-bin (KJV)")
    p.add_argument("--before-commit", default="66f8ec6",
                   help="the BEFORE code: a worktree of this commit is made and removed")
    p.add_argument("--before-tree", default=None,
                   help="use this existing checkout as BEFORE instead (kept)")
    p.add_argument("--updates", type=int, default=400, help="updates per run (same budget)")
    p.add_argument("--every", type=int, default=25,
                   help="save (and score) a checkpoint every N updates")
    p.add_argument("--seeds", default=None,
                   help="comma list of seeds, one BEFORE/AFTER pair each; the first is the "
                        "one tabulated in full; default: the config's seed")
    p.add_argument("--reference-children", type=int, default=16,
                   help="random children scored at every checkpoint for the percentile")
    p.add_argument("--test-batches", type=int, default=1000,
                   help="batches of 32 sentences of the test split (all of it by default)")
    p.add_argument("--work-dir", default=None,
                   help="where the runs' checkpoints go (WORK/seed<S>/<before|after>); "
                        "kept, and a later call with --train none rescores them; "
                        "default: a temporary directory")
    p.add_argument("--train", default="before,after",
                   help="runs to (re)train for every seed: before, after, both, none, or "
                        "missing (those without their checkpoints in --work-dir); a run "
                        "not trained is read from --work-dir as a previous call left it")
    p.add_argument("--json-out", default=DEFAULT_JSON)
    p.add_argument("--png-out", default=DEFAULT_PNG)
    p.add_argument("--results-md", default=DEFAULT_MD)
    args = p.parse_args(argv)
    for name in ("updates", "every", "reference_children", "test_batches"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: expected >= 1")
    if args.updates % args.every:
        p.error(f"--every {args.every} must divide --updates {args.updates}")
    args.train_missing = args.train == "missing"
    wanted = {"both": ["before", "after"], "none": [], "missing": list(VARIANTS)}.get(
        args.train, args.train.split(","))
    if any(v not in VARIANTS for v in wanted):
        p.error(f"--train {args.train!r}: expected before, after, both, none or missing")
    args.train = [v for v in VARIANTS if v in wanted]
    if (len(args.train) < len(VARIANTS) or args.train_missing) and not args.work_dir:
        p.error("--train without both runs needs --work-dir (where the other run is)")
    try:
        args.seeds = ([int(x) for x in args.seeds.split(",") if x.strip()]
                      if args.seeds else [config_seed()])
    except ValueError:
        p.error(f"--seeds {args.seeds!r}: expected a comma list of integers")
    if not args.seeds or len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds {args.seeds!r}: expected distinct integers")
    if not os.path.isfile(os.path.join(args.data, "dict.txt")):
        p.error(f"--data {args.data!r} has no dict.txt: run `make demo` (or "
                "scripts/prepare_corpus.py) first")
    return args


# ------------------------------------------------------------------ training

def config_train_args(seed_override=None):
    """fairseq-train flags equal to configs/magic_at_tiny.yaml (paths and
    logging left out: each run sets its own)."""
    from omegaconf import OmegaConf

    c = OmegaConf.load(CONFIG)  # ${hydra:...} paths are never resolved here
    t, cr, m, d, o, s = c.task, c.criterion, c.model, c.dataset, c.optimizer, c.lr_scheduler
    seed = c.common.seed if seed_override is None else seed_override
    return [
        "--task", t._name, "--tokens-per-sample", t.tokens_per_sample,
        "--sample-break-mode", t.sample_break_mode, "--magic-method", t.magic_method,
        "--magic-t-k", t.magic_t_k, "--magic-anchor-interval", t.magic_anchor_interval,
        "--magic-anchor-valid-batches", t.magic_anchor_valid_batches,
        "--criterion", cr._name, "--magic-align-lambda", cr.magic_align_lambda,
        "--magic-align-every", cr.magic_align_every,
        "--magic-align-warmup-epochs", cr.magic_align_warmup_epochs,
        "--arch", m._name, "--encoder-layers", m.encoder_layers,
        "--encoder-embed-dim", m.encoder_embed_dim, "--magic-ops", m.magic_ops,
        "--dropout", m.dropout, "--attention-dropout", m.attention_dropout,
        "--batch-size", d.batch_size, "--num-workers", d.num_workers,
        "--optimizer", o._name, "--adam-betas", o.adam_betas, "--adam-eps", o.adam_eps,
        "--weight-decay", o.weight_decay,
        "--lr-scheduler", s._name, "--warmup-updates", s.warmup_updates,
        "--total-num-update", s.total_num_update,
        "--lr", c.optimization.lr[0], "--clip-norm", c.optimization.clip_norm,
        "--seed", seed, "--cpu",
    ]


def train(tree, save_dir, args, seed):
    """One fairseq-train run of the preset with ``tree``'s plugin; returns seconds."""
    os.makedirs(save_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "fairseq_cli.train", args.data,
           "--user-dir", os.path.join(tree, "fairseq_magic"),
           *map(str, config_train_args(seed)),
           "--max-update", str(args.updates), "--save-dir", save_dir,
           "--save-interval-updates", str(args.every), "--keep-interval-updates", "-1",
           "--no-epoch-checkpoints", "--no-save-optimizer-state", "--disable-validation",
           "--magic-path-log", os.path.join(save_dir, "paths.jsonl"),
           "--log-format", "simple", "--log-interval", str(args.every)]
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONHASHSEED="0")
    t0 = time.time()
    with open(os.path.join(save_dir, "train.log"), "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tree)
    if proc.returncode != 0:
        raise RuntimeError(f"training in {tree} failed ({proc.returncode}): see "
                           f"{os.path.join(save_dir, 'train.log')}")
    return time.time() - t0


def make_worktree(commit):
    path = tempfile.mkdtemp(prefix="anchor_before_")
    os.rmdir(path)
    subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", path, commit],
                   check=True, capture_output=True, text=True)
    return path


def remove_worktree(path):
    subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", path],
                   check=False, capture_output=True)


def git(*a, cwd=REPO):
    return subprocess.run(["git", "-C", cwd, *a], capture_output=True, text=True).stdout.strip()


# ------------------------------------------------------------------- scoring

def checkpoints(save_dir):
    """[(num_updates, path)] of the interval checkpoints, ascending."""
    out = []
    for path in glob.glob(os.path.join(save_dir, "checkpoint_*_*.pt")):
        m = re.fullmatch(r"checkpoint_\d+_(\d+)\.pt", os.path.basename(path))
        if m:
            out.append((int(m.group(1)), path))
    return sorted(out)


class Scorer:
    """This tree's scorer, with fixed inputs: the test split and the reference
    children (the same for every run and seed), and each seed's anchor subset."""

    def __init__(self, args):
        self.args = args
        self.test = None
        self.valid = {}   # task seed -> that seed's anchor subset
        self.reference = None

    def _setup(self, model, task, cfg):
        from fairseq_magic.core.samplers import random_arch
        from fairseq_magic.evaluation import fixed_batches

        # Masks are seeded per example with the task's seed. The test split is
        # built once, from the first run loaded: every run of every seed is
        # scored on the same masked tokens.
        if self.test is None:
            self.test = fixed_batches(task, "test", self.args.test_batches, 32)
            rng = random.Random("anchor-trajectory:reference")
            self.reference = [random_arch(model.search_space, rng)
                              for _ in range(self.args.reference_children)]
        # The anchor subset exactly as the runs of this seed built it (the
        # same call and arguments as MagicTask._anchor_valid_batches).
        if cfg.task.seed not in self.valid:
            self.valid[cfg.task.seed] = fixed_batches(
                task, cfg.task.magic_anchor_valid_subset,
                cfg.task.magic_anchor_valid_batches, cfg.task.magic_anchor_valid_batch_size)
        return self.valid[cfg.task.seed]

    def run(self, label, save_dir):
        import torch

        from fairseq_magic.evaluation import load_supernet, score_child

        rows = []
        with torch.no_grad():
            for updates, path in checkpoints(save_dir):
                model, task, cfg, extra = load_supernet(path, self.args.data)
                valid = self._setup(model, task, cfg)
                state = extra.get("MagicTask", {}).get("anchor") or {}
                spec = state.get("arch")
                ref = [score_child(model, a, self.test) for a in self.reference]
                row = {"updates": updates, "anchor": spec,
                       "replacements": state.get("replacements"), "reference_test": ref,
                       "reference_test_median": statistics.median(ref)}
                if spec is not None:
                    arch = model.search_space.parse(spec)
                    row["valid"] = score_child(model, arch, valid)
                    row["test"] = score_child(model, arch, self.test)
                    row["test_minus_reference_median"] = row["test"] - row["reference_test_median"]
                    row["test_percentile"] = 100.0 * sum(s < row["test"] for s in ref) / len(ref)
                rows.append(row)
                print(f"{label:14s} {updates:5d}  anchor {spec}  "
                      f"valid {row.get('valid', math.nan):.4f}  "
                      f"test {row.get('test', math.nan):.4f}  "
                      f"ref median {row['reference_test_median']:.4f}", flush=True)
                del model, task
        return rows

    def info(self):
        return {
            "valid_sentences": sum(int(b["nsentences"]) for b in next(iter(self.valid.values()))),
            "test_sentences": sum(int(b["nsentences"]) for b in self.test),
            "reference_children": [str(a) for a in self.reference],
        }


def paired(rows):
    return [(b, a) for b, a in zip(rows["before"], rows["after"])
            if b.get("test") is not None and a.get("test") is not None]


def summarize(rows, both=None):
    """Paired over the checkpoints where both runs hold an anchor (``both``:
    such pairs pooled over seeds, for the aggregate)."""
    per_run = both is None
    both = paired(rows) if per_run else both
    out = {"checkpoints_with_both_anchors": len(both)}
    if both:
        def mean(f):
            return statistics.fmean(f(b, a) for b, a in both)

        d_test = [a["test"] - b["test"] for b, a in both]
        out.update({
            "mean_test_after_minus_before": statistics.fmean(d_test),
            "mean_valid_after_minus_before": mean(lambda b, a: a["valid"] - b["valid"]),
            "after_better_on_test": sum(d < 0 for d in d_test),
            "before_better_on_test": sum(d > 0 for d in d_test),
            "mean_reference_median_after_minus_before": mean(
                lambda b, a: a["reference_test_median"] - b["reference_test_median"]),
            "mean_test_minus_reference_median": {
                "before": statistics.fmean(b["test_minus_reference_median"] for b, _ in both),
                "after": statistics.fmean(a["test_minus_reference_median"] for _, a in both)},
            "mean_test_percentile": {
                "before": statistics.fmean(b["test_percentile"] for b, _ in both),
                "after": statistics.fmean(a["test_percentile"] for _, a in both)},
        })
    if not per_run:
        return out
    for v in VARIANTS:
        last = rows[v][-1]
        out[f"final_{v}"] = {k: last.get(k) for k in (
            "updates", "anchor", "valid", "test", "reference_test_median",
            "test_percentile", "replacements")}
        out[f"distinct_anchors_{v}"] = len({r["anchor"] for r in rows[v] if r["anchor"]})
    return out


# ------------------------------------------------------------------- output

def plot(runs, path):
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    color = {"before": "tab:gray", "after": "tab:blue"}
    marks = ["o", "s", "^", "D", "v"]
    later = []  # the first checkpoint (loss ~11 bits) would flatten the rest
    for i, (seed, run) in enumerate(runs.items()):
        for v in VARIANTS:
            pts = [r for r in run["rows"][v] if r.get("test") is not None]
            u = [r["updates"] for r in pts]
            kw = dict(color=color[v], marker=marks[i % len(marks)], markersize=4,
                      linestyle=["-", "--", ":", "-."][i % 4])
            ax1.plot(u, [r["test"] for r in pts], label=f"{v}, seed {seed}", **kw)
            later += [r["test"] for r in pts if r["updates"] > pts[0]["updates"]]
            ax2.plot(u, [r["test_minus_reference_median"] for r in pts],
                     label=f"{v}, seed {seed}", **kw)
    ax1.set_xlabel("updates")
    ax1.set_ylabel("anchor MLM loss, test split (bits / masked token)")
    ax1.set_title("anchor loss with the weights of that moment")
    if later:
        pad = 0.1 * (max(later) - min(later) or 1.0)
        ax1.set_ylim(min(later) - pad, max(later) + pad)
    ax1.legend(fontsize=8)
    ax2.axhline(0.0, color="black", linewidth=0.6)
    ax2.set_xlabel("updates")
    ax2.set_ylabel("anchor - median of reference children (bits)")
    ax2.set_title("anchor vs random children of the same weights (lower is better)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _f(x, fmt="{:.4f}"):
    return "-" if x is None else fmt.format(x)


def table_lines(rows):
    lines = ["| updates | before: anchor | valid | test | test - ref. median | pct | "
             "after: anchor | valid | test | test - ref. median | pct |",
             "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for b, a in zip(rows["before"], rows["after"]):
        cells = []
        for r in (b, a):
            cells += [f"`{r['anchor'] or '-'}`", _f(r.get("valid")), _f(r.get("test")),
                      _f(r.get("test_minus_reference_median"), "{:+.4f}"),
                      _f(r.get("test_percentile"), "{:.0f}")]
        lines.append(f"| {b['updates']} | " + " | ".join(cells) + " |")
    return lines


def summary_lines(runs, all_seeds=None):
    lines = ["| seed | checkpoints | test, after - before (mean) | after better / before "
             "better | ref. median, after - before | test - ref. median: before -> after | "
             "pct: before -> after | final test: before / after | replacements: before / "
             "after |", "|---:|---:|---:|---|---:|---|---|---|---|"]
    for seed, run in runs.items():
        s = run["summary"]
        if not s["checkpoints_with_both_anchors"]:
            continue
        m, p = s["mean_test_minus_reference_median"], s["mean_test_percentile"]
        lines.append(
            f"| {seed} | {s['checkpoints_with_both_anchors']} | "
            f"{s['mean_test_after_minus_before']:+.4f} | {s['after_better_on_test']} / "
            f"{s['before_better_on_test']} | {s['mean_reference_median_after_minus_before']:+.4f} | "
            f"{m['before']:+.4f} -> {m['after']:+.4f} | {p['before']:.1f} -> {p['after']:.1f} | "
            f"{_f(s['final_before']['test'])} / {_f(s['final_after']['test'])} | "
            f"{s['final_before']['replacements']} / {s['final_after']['replacements']} |")
    if len(runs) > 1 and all_seeds and all_seeds["checkpoints_with_both_anchors"]:
        s = all_seeds
        m, p = s["mean_test_minus_reference_median"], s["mean_test_percentile"]
        lines.append(
            f"| all | {s['checkpoints_with_both_anchors']} | "
            f"{s['mean_test_after_minus_before']:+.4f} | {s['after_better_on_test']} / "
            f"{s['before_better_on_test']} | {s['mean_reference_median_after_minus_before']:+.4f} | "
            f"{m['before']:+.4f} -> {m['after']:+.4f} | {p['before']:.1f} -> {p['after']:.1f} | "
            "| |")
    return lines


def markdown_section(res):
    r = res
    first = str(r["config"]["seeds"][0])
    lines = [
        MD_BEGIN,
        "## anchor_trajectory: MAGIC-A anchor loss over training, before vs after issue 7",
        "",
        f"- Command: `{r['command']}`",
        f"- Date: {r['date']}; machine: {r['machine']['cpu']}, {r['machine']['cpu_count']} "
        f"CPUs, 1-min load {_f(r['load_avg_1min']['before'], '{:.2f}')} before / "
        f"{_f(r['load_avg_1min']['after'], '{:.2f}')} after (shared machine; only the "
        "training times depend on it, not the losses)",
        f"- BEFORE: commit `{r['before']['commit']}` (at each evaluation only the child of "
        "update u-1 is compared with the anchor; the first anchor is the first child "
        f"trained). AFTER: `{r['after']['commit']}`"
        f"{' + uncommitted changes' if r['after']['dirty'] else ''} (the "
        f"{r['after']['candidates']} children with the lowest training MLM loss since the "
        "last evaluation are validated against the rescored anchor; the first anchor is "
        "chosen by validation; no alignment before it)",
        f"- Training: `configs/magic_at_tiny.yaml` settings (MAGIC-AT, 8 layers x "
        "{mha2,ffn,conv3,conv5}, hidden 128, anchor interval "
        f"{r['config']['anchor_interval']}, alignment from update 0) on `data/kjv/data-bin`, "
        f"{r['config']['updates']} updates per run, a checkpoint every "
        f"{r['config']['every']} updates; seeds {', '.join(map(str, r['config']['seeds']))}, "
        "each trained with both codes",
        f"- Scoring (one scorer: this tree's `score_child`, eval mode, the checkpoint's "
        f"weights): **valid** = the anchor subset the rule itself sees "
        f"({r['data']['valid_sentences']} sentences, masked as that seed's runs masked "
        f"them); **test** = the whole test split ({r['data']['test_sentences']} "
        "sentences, one masking for every run), never seen by any rule; **ref. "
        f"median** = median test loss of {len(r['data']['reference_children'])} fixed "
        "random children with the same weights; **pct** = % of them better than the "
        "anchor. Bits per masked token, lower is better. The checkpoint at N holds the "
        f"anchor of the last evaluation (at the start of update N - "
        f"{r['config']['anchor_interval']} or earlier).",
        "",
        f"Seed {first}:",
        "",
        *table_lines(r["runs"][first]["rows"]),
        "",
        "Per seed, over the checkpoints where both runs hold an anchor:",
        "",
        *summary_lines(r["runs"], r.get("all_seeds")),
        "",
        "The two codes train different weights from the same start (the anchor is the "
        "alignment target, and AFTER aligns nothing before its first evaluation), so "
        "the absolute anchor loss mixes the anchor choice with how well the whole "
        "super-net trained (the reference median moves too); **test - ref. median** "
        "and **pct** compare each anchor with random children of its own weights.",
        "",
        "![anchor trajectory](results/anchor_trajectory.png)",
        MD_END,
    ]
    return "\n".join(lines) + "\n"


def print_table(res):
    first = str(res["config"]["seeds"][0])
    print()
    print(f"seed {first}:")
    print("\n".join(table_lines(res["runs"][first]["rows"])))
    print()
    print("\n".join(summary_lines(res["runs"], res.get("all_seeds"))))


def config_seed():
    args = config_train_args()
    return int(args[args.index("--seed") + 1])


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from fairseq_magic.tasks.magic_task import MagicTaskConfig

    work = args.work_dir or tempfile.mkdtemp(prefix="anchor_trajectory_")
    dirs = {seed: {v: os.path.join(work, f"seed{seed}", v) for v in VARIANTS}
            for seed in args.seeds}
    before_tree, made_tree = args.before_tree, None
    load_before = load_avg()
    seconds_file = os.path.join(work, "train_seconds.json")
    train_s = {}
    if os.path.exists(seconds_file):
        with open(seconds_file) as f:
            train_s = json.load(f)
    want = list(range(args.every, args.updates + 1, args.every))
    todo = [(seed, v) for seed in args.seeds for v in args.train
            if not args.train_missing or [u for u, _ in checkpoints(dirs[seed][v])] != want]
    try:
        if any(v == "before" for _, v in todo) and before_tree is None:
            before_tree = made_tree = make_worktree(args.before_commit)
        for seed, v in todo:
            tree = before_tree if v == "before" else REPO
            if os.path.isdir(dirs[seed][v]):
                shutil.rmtree(dirs[seed][v])
            print(f"training {v}, seed {seed} ({tree}) ...", flush=True)
            train_s[f"seed{seed}/{v}"] = train(tree, dirs[seed][v], args, seed)
            with open(seconds_file + ".tmp", "w") as f:
                json.dump(train_s, f)
            os.replace(seconds_file + ".tmp", seconds_file)
        before_commit = (git("rev-parse", "--short", "HEAD", cwd=before_tree)
                         if before_tree else args.before_commit)
    finally:
        if made_tree:
            remove_worktree(made_tree)
    for seed in args.seeds:
        for v in VARIANTS:
            got = [u for u, _ in checkpoints(dirs[seed][v])]
            if got != want:
                raise RuntimeError(f"{dirs[seed][v]}: checkpoints at {got}, expected {want}")
    scorer = Scorer(args)
    runs = {}
    for seed in args.seeds:
        rows = {v: scorer.run(f"{v}, seed {seed}", dirs[seed][v]) for v in VARIANTS}
        runs[str(seed)] = {"rows": rows, "summary": summarize(rows),
                           "train_s": {v: train_s.get(f"seed{seed}/{v}") for v in VARIANTS}}
    interval_args = config_train_args()
    res = {
        "command": "python benchmarks/anchor_trajectory.py" + "".join(f" {a}" for a in argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": host_info(),
        "load_avg_1min": {"before": load_before, "after": load_avg()},
        "config": {"updates": args.updates, "every": args.every, "seeds": args.seeds,
                   "anchor_interval": int(interval_args[
                       interval_args.index("--magic-anchor-interval") + 1]),
                   "train_args": list(map(str, interval_args))},
        "before": {"commit": before_commit},
        "after": {"commit": git("rev-parse", "--short", "HEAD"),
                  "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
                  "candidates": MagicTaskConfig.__dataclass_fields__[
                      "magic_anchor_candidates"].default},
        "data": scorer.info(),
        "runs": runs,
        "all_seeds": summarize(None, [p for run in runs.values()
                                      for p in paired(run["rows"])]),
    }
    write_json(args.json_out, {"anchor_trajectory": res})
    plot(runs, args.png_out)
    write_markdown(args.results_md, markdown_section(res), MD_BEGIN, MD_END)
    print_table(res)
    print(f"wrote {os.path.relpath(args.json_out)}, {os.path.relpath(args.png_out)} and "
          f"{os.path.relpath(args.results_md)}; checkpoints in {work}")
    return 0


if __name__ == "__main__":
    import logging

    for name in ("fairseq", "fairseq_cli", "fairseq_magic", "hydra", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    sys.exit(main())
