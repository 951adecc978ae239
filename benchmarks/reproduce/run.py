#!/usr/bin/env python3
"""The reproduction of the paper's Table 1, one resumable driver.

    python benchmarks/reproduce/run.py STAGE [--workdir DIR] [--stop-at HH:MM] [--commit]
    python benchmarks/reproduce/run.py STAGE --report-only

A stage is a list of units (a child trained from scratch under one recipe with
one seed, through ``magic-ground-truth``); each finished unit's line lands in a
JSON-lines file under ``benchmarks/reproduce/results/`` at once, so a re-run
skips finished units and retrains only an interrupted one. After every unit the
stage's report (``results/STAGE.json`` and its section of ``RESULTS.md``) is
rewritten from all lines so far, and with ``--commit`` the stage's files are
committed (only them).

Stages:

``power``  How noisy is the ground truth, and does attention learn in budget?
           Probe children (12 x attention, 12 x convolution, BERT-like
           attention/FFN, convolution/FFN, and random children of the paper's
           four-operator space) x 3 seeds at the candidate recipe (group
           ``h64``), plus the reference scale of the measured notes (group
           ``h128``: the structured children, seed 1). Reported: validation
           loss at several budgets (checkpoints of one run), updates/s, the
           Kendall tau-b between seeds, and the distance of every
           attention-only child from the unigram plateau.

Units run one at a time with one thread (``OMP_NUM_THREADS=1``): the machine is
shared; ``--jobs`` is magic-ground-truth's and stays 1 here.
"""

import argparse
import datetime
import itertools
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from common import host_info, load_avg  # noqa: E402  (benchmarks/common.py)
from fairseq_magic.cli import ground_truth  # noqa: E402

RESULTS = os.path.join(HERE, "results")
RESULTS_MD = os.path.join(HERE, "RESULTS.md")
DATA = os.path.join(REPO, "data", "kjv", "data-bin")
DEPTH = 12

MD_HEADER = ("# Reproduction of Table 1: results\n\n"
             "Sections between markers are written by `benchmarks/reproduce/run.py` from the\n"
             "result files in `results/`; do not edit them by hand. Text outside the markers\n"
             "(the decisions) is written by people, from those numbers.\n")


# ---------------------------------------------------------------- stage definitions

def repeat(ops, n=DEPTH):
    return ",".join(list(itertools.islice(itertools.cycle(ops), n)))


def random_children(ops, n, seed):
    rng = random.Random(f"reproduce:{seed}")
    return [",".join(rng.choice(ops) for _ in range(DEPTH)) for _ in range(n)]


def probe_children(attn):
    """(name, spec) of the power probes at one hidden size; ``attn`` is the
    attention operator of that size."""
    ops = [attn, "ffn", "conv3", "conv5"]
    named = [("all-attention", repeat([attn])),
             ("all-convolution", repeat(["conv3"])),
             ("bert-like", repeat([attn, "ffn"])),
             ("conv-ffn", repeat(["conv3", "ffn"]))]
    return named + [(f"random-{i + 1}", s) for i, s in enumerate(random_children(ops, 8, 0))]


# Candidate recipe: hidden 64 so that >= 96 ground-truth units fit the run's
# budget (sizing in RESULTS.md). Attention keeps BERT's QKV width = hidden with
# two heads (mha2d64: two heads of 32). 64 x 32-token samples: the notes found
# that short samples are what lets attention leave the unigram plateau.
COMMON = ["--updates", "800", "--score-at", "200", "400", "600", "--lr", "5e-4",
          "--warmup", "100", "--batch-size", "64", "--tokens-per-sample", "32",
          "--sample-break-mode", "complete", "--dropout", "0.1",
          "--attention-dropout", "0.1", "--valid-passes", "4"]

GROUPS = {
    "h64": {"hidden": 64, "children": probe_children("mha2d64"), "flags": COMMON},
    # The measured notes' scale (12 x 128, mha2 = two heads of 64; the random
    # children are h64's with mha2 for mha2d64): does it separate the children
    # holding a convolution better than hidden 64 does?
    "h128": {"hidden": 128, "children": probe_children("mha2"),
             "flags": ["--updates", "1000", "--score-at", "250", "500", "750"]
             + COMMON[COMMON.index("--lr"):]},
}
# Does a higher learning rate move attention faster at hidden 64? (Added after
# seed 1 of h64: attention-only children ended 0.7 bits behind every child
# holding a convolution.) Structured children, seed 1.
GROUPS["h64-lr1e-3"] = {
    "hidden": 64, "children": probe_children("mha2d64"),
    "flags": [f if f != "5e-4" else "1e-3" for f in COMMON]}
# Rounds (group, seed, children): the candidate's three seeds on the eight
# probes first (the tau between seeds is the question). After seed 3 the six
# children holding a convolution agreed between seeds only at tau 0.2-0.5
# (their spread ~1.5 x the seed noise), so next: the same four random children
# at hidden 128 with two seeds (is the band wider there?), the structured
# children at 128, the learning-rate probe, then more random children at 64.
# The probe at lr 1e-3 lowered every structured child's loss by 0.26-0.65 bits
# at no cost, so its random children at two seeds come before the extra ones.
PROBES, STRUCT, RAND4, EXTRA = slice(0, 8), slice(0, 4), slice(4, 8), slice(8, 12)
POWER_ROUNDS = [("h64", 1, PROBES), ("h64", 2, PROBES), ("h64", 3, PROBES),
                ("h128", 1, RAND4), ("h128", 2, RAND4), ("h128", 1, STRUCT),
                ("h64-lr1e-3", 1, STRUCT), ("h64-lr1e-3", 1, RAND4), ("h64-lr1e-3", 2, RAND4),
                ("h64", 1, EXTRA), ("h64", 2, EXTRA)]


# ---------------------------------------------------------------- Table 1's ground truth

# The paper's four operators at hidden 64 (attention: two heads, QKV width = hidden).
OPS = ["mha2d64", "ffn", "conv3", "conv5"]
TABLE1_CHILDREN = 48
CHILDREN_FILE = os.path.join(HERE, "children.txt")
# The recipe the power stage chose (its group h64-lr1e-3; RESULTS.md's decision).
GT_FLAGS = ["--updates", "800", "--lr", "1e-3", "--warmup", "100", "--batch-size", "64",
            "--tokens-per-sample", "32", "--sample-break-mode", "complete", "--dropout", "0.1",
            "--attention-dropout", "0.1", "--valid-passes", "4"]
GT_SEEDS = [1, 2, 3]
GT_OUT = os.path.join(RESULTS, "ground-truth.jsonl")


def table1_children():
    """The fixed list of uniformly sampled children, committed as children.txt.

    Drawn once from a named RNG stream (no global seeding); a re-draw must give
    the file back, which ``--check`` asserts, so the list cannot drift silently."""
    rng = random.Random("reproduce:table1")
    out = []
    while len(out) < TABLE1_CHILDREN:
        spec = ",".join(rng.choice(OPS) for _ in range(DEPTH))
        if spec not in out:
            out.append(spec)
    return out


def read_children_file():
    with open(CHILDREN_FILE) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]


def write_children_file():
    children = table1_children()
    if os.path.exists(CHILDREN_FILE):
        if read_children_file() != children:
            raise SystemExit(f"run.py: {CHILDREN_FILE} differs from the list drawn by "
                             "table1_children(); refusing to overwrite a committed list")
        return children
    with open(CHILDREN_FILE, "w") as f:
        f.write(f"# Table 1's {len(children)} children: uniform over {', '.join(OPS)} in each of "
                f"{DEPTH} layers,\n# drawn by benchmarks/reproduce/run.py table1_children() "
                "(random.Random('reproduce:table1')).\n")
        f.write("\n".join(children) + "\n")
    return children


def gt_remaining(seed):
    done = {(r["arch"], r["seed"]) for r in read_rows(GT_OUT)}
    return [c for c in read_children_file() if (c, seed) not in done]


def run_gt(args):
    """Table 1's ground truth: every child at seed 1, then every child at seed
    2, then 3 (so a stopped run leaves whole seeds behind), two units at a time
    with one thread each, committed after every pair."""
    os.makedirs(RESULTS, exist_ok=True)
    write_children_file()
    files = [CHILDREN_FILE, GT_OUT, GT_OUT + ".recipe.json"]
    for seed in GT_SEEDS:
        while gt_remaining(seed):
            if past(args.stop_at):
                print(f"run.py: --stop-at {args.stop_at} reached; rerun to continue", flush=True)
                return 0
            argv = ["--data", DATA, "--children", CHILDREN_FILE, "--seeds", str(seed),
                    "--out", GT_OUT, "--workdir", os.path.join(args.workdir, "gt"),
                    "--encoder-embed-dim", "64", "--jobs", str(args.jobs), "--threads", "1",
                    "--max-units", str(args.jobs), *GT_FLAGS]
            rc = ground_truth.main(argv)
            if rc != 0:
                print(f"run.py: magic-ground-truth exited {rc}", file=sys.stderr, flush=True)
                return rc
            if args.commit:
                commit(files, f"reproduce gt: seed {seed}, {len(read_rows(GT_OUT))} units")
    print("run.py: stage gt complete", flush=True)
    return 0


def run_supernets(args):
    """Table 1's super-nets, the similarity super-nets, then the k sweep (one
    unit at a time, one thread). Several workers may run this stage at once
    (e.g. a second one once the ground truth is done): each unit is claimed
    with a lock file, so no two train the same super-net."""
    import supernets as SN

    os.makedirs(RESULTS, exist_ok=True)
    children = read_children_file()
    for u in SN.units():
        if u["name"] in SN.read_done():
            continue
        if past(args.stop_at):
            print(f"run.py: --stop-at {args.stop_at} reached; rerun to continue", flush=True)
            return 0
        lock = SN.claim(u, args.workdir)
        if lock is None:  # another worker of this stage trains it
            continue
        print(f"run.py: super-net {u['name']} ...", flush=True)
        try:
            if u["name"] in SN.read_done():  # finished between the check and the claim
                continue
            row = SN.run_unit(u, children, DATA, args.workdir, load_avg)
        finally:
            os.unlink(lock)
        print(f"run.py: super-net {u['name']} done: train {row['train_s']} s, "
              f"analysis {row['analysis_s']} s", flush=True)
        if args.commit:
            commit([SN.SN_OUT, SN.SIM_DIR], f"reproduce supernets: {u['name']} done")
    print("run.py: stage supernets complete", flush=True)
    return 0


def run_report(args):
    """Table 1 / Figure 3a / Figure 2 report from the committed results."""
    import report
    import supernets as SN

    rc = report.main(read_children_file(), DATA, host_info(),
                     "python benchmarks/reproduce/run.py report", write_md_section, SN.UPDATES)
    if rc == 0 and args.commit:
        commit([report.SCORES, report.RANK, report.REPRODUCE_JSON, RESULTS_MD,
                *(os.path.join(RESULTS, f) for f in ("table1.png", "ksweep.png", "similarity.png"))],
               "reproduce: report regenerated")
    return rc


def group_out(name):
    return os.path.join(RESULTS, f"power-{name}.jsonl")


def round_children(name, subset):
    return [spec for _, spec in GROUPS[name]["children"][subset]]


def gt_argv(name, seed, subset, workdir):
    g = GROUPS[name]
    argv = ["--data", DATA, "--seeds", str(seed), "--out", group_out(name),
            "--workdir", os.path.join(workdir, f"power-{name}"),
            "--encoder-embed-dim", str(g["hidden"]), "--jobs", "1", "--threads", "1",
            "--max-units", "1"]
    for spec in round_children(name, subset):
        argv += ["--arch", spec]
    return argv + g["flags"]


def read_rows(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    return rows


def remaining(name, seed, subset):
    done = {(r["arch"], r["seed"]) for r in read_rows(group_out(name))}
    return [s for s in round_children(name, subset) if (s, seed) not in done]


# ---------------------------------------------------------------- analysis

def unigram_entropy_bits(data):
    """Entropy of the training tokens' unigram distribution (dict.txt counts):
    the loss of a model that ignores context."""
    counts = []
    with open(os.path.join(data, "dict.txt"), encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").rsplit(" ", 2)
            if len(parts) >= 2 and parts[1].lstrip("-").isdigit():
                counts.append(int(parts[1]))
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts if c > 0)


def kendall_tau(x, y):
    from scipy.stats import kendalltau

    t = kendalltau(x, y).statistic  # tau-b
    return None if t is None or math.isnan(t) else float(t)


def budgets_of(rows):
    keys = set()
    for r in rows:
        keys |= set(r.get("loss_at") or {})
        if r.get("updates"):
            keys.add(str(r["updates"]))
    return sorted(keys, key=int)


def loss_at(row, budget):
    if row["status"] != "ok":
        return None
    if str(row["updates"]) == budget:
        return row["loss"]
    return (row.get("loss_at") or {}).get(budget)


def sd(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def spread(children, budget):
    """Seed noise against the signal: the mean over children of the standard
    deviation across seeds, and the standard deviation of the children's means."""
    within, means = [], []
    for c in children:
        v = [x for x in c["loss"][budget].values() if x is not None]
        if v:
            means.append(sum(v) / len(v))
        if len(v) >= 2:
            within.append(sd(v))
    return {"seed_sd_mean": sum(within) / len(within) if within else None,
            "child_sd": sd(means) if len(means) >= 2 else None}


def seed_pairs(children, seeds, budget):
    """Kendall tau-b between every two seeds over the children both have."""
    pairs = []
    for s1, s2 in itertools.combinations(seeds, 2):
        common = [c for c in children if c["loss"][budget].get(str(s1)) is not None
                  and c["loss"][budget].get(str(s2)) is not None]
        if len(common) >= 3:
            t = kendall_tau([c["loss"][budget][str(s1)] for c in common],
                            [c["loss"][budget][str(s2)] for c in common])
            pairs.append({"seeds": [s1, s2], "children": len(common), "tau": t})
    return pairs


def analyse_group(name, unigram):
    g = GROUPS[name]
    rows = read_rows(group_out(name))
    budgets = budgets_of(rows)
    by = {(r["arch"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    children = []
    for n, spec in g["children"]:
        per_seed = {s: by[(spec, s)] for s in seeds if (spec, s) in by}
        if not per_seed:
            continue
        entry = {"name": n, "arch": spec, "convs": sum(op.startswith("conv") for op in spec.split(",")),
                 "params": next(iter(per_seed.values())).get("params"),
                 "failed": {s: r.get("reason") for s, r in per_seed.items() if r["status"] != "ok"},
                 "loss": {}, "updates_per_s": {s: r.get("updates_per_s") for s, r in per_seed.items()},
                 "load": {s: r.get("load") for s, r in per_seed.items()}}
        for b in budgets:
            entry["loss"][b] = {str(s): loss_at(r, b) for s, r in per_seed.items()}
        children.append(entry)
    taus, band = {}, [c for c in children if c["convs"] > 0]
    for b in budgets:
        pairs = seed_pairs(children, seeds, b)
        # Uniformly sampled children of a 12-layer chain almost always hold a
        # convolution: the agreement among those is what a Table 1 ground truth has.
        band_pairs = seed_pairs(band, seeds, b)
        band_vals = [p["tau"] for p in band_pairs if p["tau"] is not None]
        conv = []
        for s in seeds:
            have = [c for c in children if c["loss"][b].get(str(s)) is not None]
            if len(have) >= 3:
                conv.append(kendall_tau([c["loss"][b][str(s)] for c in have],
                                        [-c["convs"] for c in have]))
        vals = [p["tau"] for p in pairs if p["tau"] is not None]
        taus[b] = {"pairs": pairs, "mean": sum(vals) / len(vals) if vals else None,
                   "min": min(vals) if vals else None, **spread(children, b),
                   "with_conv_pairs": band_pairs,
                   "with_conv_mean": sum(band_vals) / len(band_vals) if band_vals else None,
                   "with_conv_spread": spread(band, b),
                   "count_convs_tau_mean": (sum(v for v in conv if v is not None) / len(conv)
                                            if conv and None not in conv else None)}
    plateau = {}
    for c in children:
        if c["convs"] == 0:
            final = [v for v in c["loss"][budgets[-1]].values() if v is not None] if budgets else []
            if final:
                plateau[c["name"]] = {"mean_loss": sum(final) / len(final),
                                      "below_unigram": unigram - sum(final) / len(final)}
    speeds = [v for c in children for v in c["updates_per_s"].values() if v]
    loads = [v for c in children for v in c["load"].values() if v is not None]
    walls = [r.get("wall_s") for r in rows if r.get("wall_s")]
    return {"hidden": g["hidden"], "flags": g["flags"], "seeds": seeds, "budgets": budgets,
            "units_done": len(rows), "units_planned": None, "children": children,
            "tau_between_seeds": taus, "attention_plateau": plateau,
            "updates_per_s": {"min": min(speeds) if speeds else None,
                              "max": max(speeds) if speeds else None},
            "unit_wall_s_mean": sum(walls) / len(walls) if walls else None,
            "load_range": [min(loads), max(loads)] if loads else None}


def fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def report_power(started=None):
    unigram = unigram_entropy_bits(DATA)
    planned = {n: sum(len(round_children(g, sub)) for g, _, sub in POWER_ROUNDS if g == n)
               for n in GROUPS}
    groups = {}
    for n in GROUPS:
        groups[n] = analyse_group(n, unigram)
        groups[n]["units_planned"] = planned[n]
    result = {"stage": "power", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python benchmarks/reproduce/run.py power",
              "host": host_info(), "load_1min_at_report": load_avg(),
              "unigram_entropy_bits": unigram, "groups": groups}
    # The whole report is recomputed from the JSON lines: replace, never merge.
    path = os.path.join(RESULTS, "power.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    write_md_section("power", power_markdown(result))
    return result


def power_markdown(res):
    h = res["host"]
    out = ["## Stage `power`: ground-truth noise and the attention plateau", "",
           f"- Command: `{res['command']}` (units: `magic-ground-truth`, 1 job x 1 thread)",
           f"- Report date: {res['date']}; machine: {h['cpu']}, {h['cpu_count']} CPUs, torch {h['torch']}; "
           "shared with other agents' jobs: the load averages below are what each unit saw",
           f"- Data: KJV data-bin of `make demo`; unigram entropy of its training tokens "
           f"**{res['unigram_entropy_bits']:.2f} bits** (the plateau: a model that ignores context)",
           "- Loss: masked-LM validation loss in bits per masked token on the fixed subset "
           "(`valid`, 4 mask seeds, the same tokens and masks for every unit); budgets below the "
           "final one are checkpoints of the same run (the schedule decays over the full run)", ""]
    for n, g in res["groups"].items():
        out += [f"### Group `{n}`: 12 layers x hidden {g['hidden']}",
                "", f"Flags: `{' '.join(g['flags'])}`; units done {g['units_done']} of "
                f"{g['units_planned']}; updates/s {fmt(g['updates_per_s']['min'], '.2f')}-"
                f"{fmt(g['updates_per_s']['max'], '.2f')} (1 thread), mean wall per unit "
                f"{fmt(g['unit_wall_s_mean'], '.0f')} s, load {g['load_range']}", ""]
        if not g["children"]:
            out += ["(no unit finished yet)", ""]
            continue
        seeds, budgets = g["seeds"], g["budgets"]
        head = "| child | convs | params | " + " | ".join(
            f"{b} upd s{s}" for b in budgets for s in seeds) + " | upd/s |"
        out += [head, "|" + "---|" * (3 + len(budgets) * len(seeds) + 1)]
        for c in g["children"]:
            cells = [fmt(c["loss"][b].get(str(s))) for b in budgets for s in seeds]
            sp = [v for v in c["updates_per_s"].values() if v]
            fail = " (failed: " + "; ".join(f"s{s} {r}" for s, r in c["failed"].items()) + ")" if c["failed"] else ""
            out.append(f"| {c['name']} `{c['arch']}`{fail} | {c['convs']} | {fmt(c['params'], ',')} | "
                       + " | ".join(cells) + f" | {fmt(sum(sp) / len(sp) if sp else None, '.2f')} |")
        out += ["", "| budget | Kendall tau-b between seeds (pairs) | mean | min | tau vs -#convs (mean over seeds) "
                "| seed s.d. (mean over children) | s.d. of child means |",
                "|---|---|---|---|---|---|---|"]
        for b in budgets:
            t = g["tau_between_seeds"][b]
            pairs = ", ".join(f"s{p['seeds'][0]}-s{p['seeds'][1]}: {fmt(p['tau'], '.2f')} (n={p['children']})"
                              for p in t["pairs"]) or "-"
            out.append(f"| {b} | {pairs} | {fmt(t['mean'], '.2f')} | {fmt(t['min'], '.2f')} | "
                       f"{fmt(t['count_convs_tau_mean'], '.2f')} | {fmt(t['seed_sd_mean'])} | "
                       f"{fmt(t['child_sd'])} |")
        out += ["", "Children holding at least one convolution only (what uniformly sampled children are):", "",
                "| budget | tau-b between seeds (pairs) | mean | seed s.d. (mean over children) | s.d. of child means |",
                "|---|---|---|---|---|"]
        for b in budgets:
            t = g["tau_between_seeds"][b]
            pairs = ", ".join(f"s{p['seeds'][0]}-s{p['seeds'][1]}: {fmt(p['tau'], '.2f')} (n={p['children']})"
                              for p in t["with_conv_pairs"]) or "-"
            out.append(f"| {b} | {pairs} | {fmt(t['with_conv_mean'], '.2f')} | "
                       f"{fmt(t['with_conv_spread']['seed_sd_mean'])} | {fmt(t['with_conv_spread']['child_sd'])} |")
        if g["attention_plateau"]:
            out += ["", "Attention-only children at the final budget (mean over seeds): " + "; ".join(
                f"{k} {v['mean_loss']:.2f} bits ({v['below_unigram']:.2f} below the unigram level)"
                for k, v in g["attention_plateau"].items())]
        out.append("")
    return "\n".join(out)


def write_md_section(stage, body):
    begin, end = f"<!-- {stage}:begin -->", f"<!-- {stage}:end -->"
    text = MD_HEADER
    if os.path.exists(RESULTS_MD):
        with open(RESULTS_MD) as f:
            text = f.read()
    section = f"{begin}\n{body.rstrip()}\n{end}\n"
    i, j = text.find(begin), text.find(end)
    if i != -1 and j > i:
        text = text[:i] + section + text[j + len(end):].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = RESULTS_MD + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, RESULTS_MD)


# ---------------------------------------------------------------- driver

def commit(paths, message):
    paths = [os.path.relpath(p, REPO) for p in paths if os.path.exists(p)]
    for attempt in range(10):
        add = subprocess.run(["git", "add", *paths], cwd=REPO, capture_output=True, text=True)
        if add.returncode == 0:
            c = subprocess.run(["git", "commit", "-q", "-m", message, "--", *paths], cwd=REPO,
                               capture_output=True, text=True)
            if c.returncode == 0 or "nothing to commit" in c.stdout + c.stderr:
                return
        time.sleep(3)  # another agent's git holds .git/index.lock
    print(f"run.py: could not commit {paths}", file=sys.stderr, flush=True)


def past(stop_at):
    if not stop_at:
        return False
    now = datetime.datetime.now(datetime.timezone.utc)
    hh, mm = (int(x) for x in stop_at.split(":"))
    return (now.hour, now.minute) >= (hh, mm)


def run_power(args):
    os.makedirs(RESULTS, exist_ok=True)
    files = [group_out(n) for n in GROUPS] + [group_out(n) + ".recipe.json" for n in GROUPS] + [
        os.path.join(RESULTS, "power.json"), RESULTS_MD]
    for name, seed, subset in POWER_ROUNDS:
        while remaining(name, seed, subset):
            if past(args.stop_at):
                print(f"run.py: --stop-at {args.stop_at} reached; rerun to continue", flush=True)
                return 0
            rc = ground_truth.main(gt_argv(name, seed, subset, args.workdir))
            if rc != 0:
                print(f"run.py: magic-ground-truth exited {rc}", file=sys.stderr, flush=True)
                return rc
            report_power()
            if args.commit:
                commit(files, f"reproduce power: {name} seed {seed} unit done")
    report_power()
    if args.commit:
        commit(files, "reproduce power: stage complete")
    print("run.py: stage power complete", flush=True)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["power", "gt", "supernets", "report"])
    p.add_argument("--jobs", type=int, default=2, help="units at once (stage gt)")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "magic-reproduce"),
                   help="unit work directories (checkpoints are deleted after scoring)")
    p.add_argument("--stop-at", help="UTC HH:MM after which no new unit starts")
    p.add_argument("--commit", action="store_true",
                   help="git-commit the stage's result files after every unit")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report")
    args = p.parse_args(argv)
    if args.stage == "gt":
        return run_gt(args)
    if args.stage == "supernets":
        return run_supernets(args)
    if args.stage == "report":
        return run_report(args)
    if args.report_only:
        report_power()
        return 0
    return run_power(args)


if __name__ == "__main__":
    sys.exit(main())
