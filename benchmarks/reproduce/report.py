"""The reproduction's report: Table 1, Figure 3a, Figure 2 / 3c and the
fine-tune-before-ranking study, from the committed result files only.

    python benchmarks/reproduce/run.py report

Inputs (all under results/): ground-truth.jsonl (stage gt), supernets.jsonl and
similarity/ (stage supernets). Outputs: results/scores/*.jsonl (every
predictor's scores, reusable with ``magic-rank --scores``), results/rank/
(magic-rank's rank.json and scatter plots), the PNGs table1.png, ksweep.png,
similarity.png, ../results/reproduce.json and the marked sections of
RESULTS.md. Every number is recomputed from the inputs: rerunning replaces.

The ranking itself is ``magic-rank`` (Kendall tau-b, Spearman, TnR, S-Tau,
bootstrap intervals over children, paired differences on the same resamples);
this file only decides what to feed it and how to lay the answers out.
"""

import datetime
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(HERE, "results")
SCORES = os.path.join(RESULTS, "scores")
RANK = os.path.join(RESULTS, "rank")
REPRODUCE_JSON = os.path.join(REPO, "benchmarks", "results", "reproduce.json")

# The paper's numbers (arXiv version with appendix): Table 1, 60 children,
# ground truth = MNLI accuracy of children pre-trained at BERT-base cost.
PAPER_TABLE1 = {"spos": 0.36, "magic_t": 0.49, "magic_a": 0.44, "magic_at": 0.57}
METHOD_LABEL = {"spos": "SPOS", "magic_t": "MAGIC-T", "magic_a": "MAGIC-A", "magic_at": "MAGIC-AT"}
BOOTSTRAP = 2000


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    os.replace(tmp, path)


def atomic_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def complete_seeds(gt_rows, children):
    """Seeds at which every child has a finished unit (ok or failed): Table 1
    ranks against whole seeds only, so a child is never judged on fewer seeds
    than its neighbours."""
    have = {}
    for r in gt_rows:
        have.setdefault(r["seed"], set()).add(r["arch"])
    return sorted(s for s, a in have.items() if set(children) <= a)


def trivial_scores(children, vocab, positions):
    """Predictors that need no training: lower score = predicted better."""
    from fairseq_magic.core.cost import child_cost

    out = {}
    costs = [child_cost(c.split(","), 64, vocab, positions, seq_len=32) for c in children]
    out["params (more is better)"] = [-c["params"] for c in costs]
    out["flops (more is better)"] = [-c["flops"] for c in costs]
    ops = sorted({o for c in children for o in c.split(",")})
    convs = [sum(o.startswith("conv") for o in c.split(",")) for c in children]
    out["convolutions (more is better)"] = [-n for n in convs]
    for op in ops:
        out[f"#{op} (fewer is better)"] = [c.split(",").count(op) for c in children]
    return out


def safe(name):
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def build_predictors(sn_rows, children):
    """Score files for magic-rank: {name: path} plus the groups of seeds."""
    from fairseq_magic.core.ranking import read_scores  # noqa: F401  (format check below)

    preds, groups = {}, {}

    def add(name, scores, group):
        path = os.path.join(SCORES, f"{safe(name)}.jsonl")
        write_jsonl(path, [{"arch": c, "loss": float(scores[c])} for c in children])
        preds[name] = path
        groups.setdefault(group, []).append(name)

    for r in sn_rows:
        if r["kind"] == "similarity":
            continue
        group = {"table1": r["method"], "ksweep": f"magic_t_k{r['k']}",
                 "ablation_nowarm": f"{r['method']}_nowarm"}[r["kind"]]
        add(r["name"], r["scores"], group)
        if r.get("finetune") and r["kind"] == "table1":
            add(f"{r['name']}-ft{r['finetune']['steps']}", r["finetune"]["scores"],
                f"{r['method']}_ft")
    return preds, groups


def entity(groups, name):
    """A group when it has >= 2 members (S-Tau needs two), else its only member."""
    members = groups.get(name) or []
    if len(members) >= 2:
        return name
    return members[0] if members else None


def run_magic_rank(gt_path, preds, groups, trivial_paths, out):
    from fairseq_magic.cli import rank

    argv = [gt_path, "--out", out, "--bootstrap", str(BOOTSTRAP), "--seed", "0"]
    for name, path in {**preds, **trivial_paths}.items():
        argv += ["--scores", f"{name}={path}"]
    for g, members in groups.items():
        if len(members) >= 2:
            argv += ["--group", f"{g}={','.join(members)}"]
    pairs = []
    base = entity(groups, "spos")
    for m in ("magic_t", "magic_a", "magic_at"):
        if entity(groups, m) and base:
            pairs.append((m, f"{entity(groups, m)}:{base}"))
    for m in ("spos", "magic_at"):
        if entity(groups, f"{m}_ft") and entity(groups, m):
            pairs.append((f"{m}_ft", f"{entity(groups, m + '_ft')}:{entity(groups, m)}"))
    for g in groups:
        if g.startswith("magic_t_k") and entity(groups, "magic_t"):
            pairs.append((g, f"{entity(groups, g)}:{entity(groups, 'magic_t')}"))
    for _, p in pairs:
        argv += ["--pairs", p]
    if not pairs:  # magic-rank's default would be every pair: keep it to one
        names = list(preds) + list(trivial_paths)
        argv += ["--pairs", f"{names[0]}:{names[1]}"]
    rc = rank.main(argv + ["--no-progress"])
    if rc not in (0, None):
        raise RuntimeError(f"magic-rank exited {rc}")
    with open(os.path.join(out, "rank.json")) as f:
        return json.load(f), dict(pairs)


def diff_entry(rank_json, pair):
    a, b = pair.split(":")
    for d in rank_json["paired_differences"]:
        if d["a"] == a and d["b"] == b:
            t = d["kendall_tau"]
            return {"mean": t["estimate"], "lo": t["interval"][0], "hi": t["interval"][1],
                    "a": a, "b": b}
    return None


# ---------------------------------------------------------------- plots

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_table1(path, rep):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    methods = [m for m in PAPER_TABLE1 if rep["kendall_tau"].get(m)]
    for i, m in enumerate(methods):
        taus = rep["kendall_tau"][m]
        ax.scatter([i] * len(taus), taus, color="C0", zorder=3,
                   label="ours, one super-net seed" if i == 0 else None)
        if len(taus) >= 2:
            ax.errorbar([i + 0.12], [np.mean(taus)], yerr=[np.std(taus, ddof=1)], fmt="s",
                        color="C0", capsize=4, label="ours, mean +- s.d." if i == 0 else None)
        ax.scatter([i - 0.12], [PAPER_TABLE1[m]], marker="x", color="C3", s=60, zorder=3,
                   label="paper (Table 1)" if i == 0 else None)
    gt = rep["ground_truth_seed_tau"].get("pairwise") or {}
    if gt.get("s_tau") is not None:
        if gt["max"] - gt["min"] < 0.01:  # one pair of seeds: a line, not a band
            ax.axhline(gt["s_tau"], color="0.5", ls=":", label="ground truth: seed vs seed")
        else:
            ax.axhspan(gt["min"], gt["max"], color="0.85", zorder=0,
                       label="ground truth: seed vs seed (range over pairs)")
    best_triv = max(rep["trivial_tau"].items(), key=lambda kv: kv[1] if kv[1] is not None else -9)
    ax.axhline(best_triv[1], color="C2", ls="--", label=f"best trivial: {best_triv[0]}")
    ax.set_xticks(range(len(methods)), [METHOD_LABEL[m] for m in methods])
    ax.set_ylabel("Kendall tau-b vs ground truth")
    ax.set_title(f"Table 1 at small scale: {rep['children']} children, "
                 f"ground truth = mean of {len(rep['ground_truth_seeds'])} seed(s)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ksweep(path, rep):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ks = sorted(rep["magic_t_k"], key=int)
    for k in ks:
        v = rep["magic_t_k"][k]
        ax.scatter([int(k)] * len(v), v, color="C0", zorder=3)
    means = [np.mean(rep["magic_t_k"][k]) for k in ks]
    ax.plot([int(k) for k in ks], means, "-o", color="C0", label="ours: mean over seeds")
    if rep["kendall_tau"].get("spos"):
        ax.axhline(np.mean(rep["kendall_tau"]["spos"]), color="C1", ls=":",
                   label="ours: SPOS mean")
    ax.set_xscale("log", base=2)
    ax.set_xticks([int(k) for k in ks], ks)
    ax.set_xlabel("k (operators MAGIC-T changes per update; N = 12)")
    ax.set_ylabel("Kendall tau-b")
    ax.set_title("Figure 3a: MAGIC-T's tau vs k\n(paper: tau falls as k grows)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_similarity(path, sim):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (name, by_m) in enumerate(sim.items()):
        ms = sorted(by_m, key=int)
        ax.errorbar([int(m) for m in ms], [by_m[m]["mean"] for m in ms],
                    yerr=[by_m[m]["std"] for m in ms], fmt="-o", capsize=3, label=name,
                    color=f"C{i}")
    ax.set_xlabel("m (layers the children differ in)")
    ax.set_ylabel("mean off-diagonal gradient cosine")
    ax.set_title("Figure 2(c) / 3(c): similarity on a shared operator\n"
                 "(table6 space; error bars: s.d. over 10 repeats)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- report

def fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def build(children, gt_rows, sn_rows, data, host, command):
    from fairseq_magic.core import ranking as R

    seeds = complete_seeds(gt_rows, children)
    if not seeds:
        return None
    tmp = tempfile.mkdtemp(prefix="reproduce-report-")
    gt_path = os.path.join(tmp, "ground-truth.jsonl")
    write_jsonl(gt_path, [r for r in gt_rows if r["seed"] in seeds and r["arch"] in children])
    gt = R.read_ground_truth(gt_path)

    preds, groups = build_predictors(sn_rows, children)
    vocab = sum(1 for _ in open(os.path.join(data, "dict.txt"))) + 4  # + fairseq's specials
    triv = trivial_scores(children, vocab, 32 + 2)
    triv_paths = {}
    for name, vals in triv.items():
        p = os.path.join(SCORES, "trivial-" + safe(name.split(" ")[0].lstrip("#")) + ".jsonl")
        write_jsonl(p, [{"arch": c, "loss": float(v)} for c, v in zip(children, vals)])
        triv_paths[name] = p
    rank_json, pairs = run_magic_rank(gt_path, preds, groups, triv_paths, RANK)
    P = rank_json["predictors"]

    def taus(names):
        return [P[n]["kendall_tau"] for n in names]

    rep = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "host": host,
        "children": len(children), "ground_truth_seeds": seeds,
        "ground_truth_units": len([r for r in gt_rows if r["seed"] in seeds]),
        "ground_truth_seed_tau": rank_json["ground_truth_seed_tau"],
        "ground_truth_loss_range": rank_json["ground_truth"]["loss_range"],
        "kendall_tau": {m: taus(groups.get(m, [])) for m in PAPER_TABLE1},
        "kendall_tau_seeds": {m: [n.rsplit("-s", 1)[1] for n in groups.get(m, [])]
                              for m in PAPER_TABLE1},
        "paper_kendall_tau": PAPER_TABLE1,
        "paired_diff": {},
        "trivial_tau": {n: P[n]["kendall_tau"] for n in triv_paths},
        "magic_t_k": {},
        "spearman": {m: [P[n]["spearman"] for n in groups.get(m, [])] for m in PAPER_TABLE1},
        "tnr": {m: [P[n]["tnr"] for n in groups.get(m, [])] for m in PAPER_TABLE1},
        "tnr_n": rank_json["tnr_n"], "tnr_random": rank_json["tnr_random"],
        "s_tau": {g: e["s_tau"] for g, e in rank_json["groups"].items()},
        "finetune": {}, "similarity_vs_m": None, "similarity_by_method": {},
        "supernet_train_s": {r["name"]: r["train_s"] for r in sn_rows},
        "ground_truth_unit_wall_s": float(np.mean([r["wall_s"] for r in gt_rows if r.get("wall_s")])),
        # compute spent, summed over units (each ran on one thread): the run's
        # cost on one core, whatever the parallelism and pauses of the sessions
        "compute_core_hours": {
            "ground_truth": round(sum(r.get("wall_s") or 0 for r in gt_rows) / 3600, 2),
            "supernets": round(sum((r.get("train_s") or 0) + (r.get("analysis_s") or 0)
                                   for r in sn_rows) / 3600, 2)},
        "bootstrap": rank_json["bootstrap"],
        "rank_json": os.path.relpath(os.path.join(RANK, "rank.json"), REPO),
    }
    for key, pair in pairs.items():
        d = diff_entry(rank_json, pair)
        if key in ("magic_t", "magic_a", "magic_at"):
            rep["paired_diff"][key] = d
        else:
            rep.setdefault("other_paired_diff", {})[key] = d
    k1 = groups.get("magic_t", [])
    if k1:
        rep["magic_t_k"]["1"] = taus(k1)
    for g in groups:
        if g.startswith("magic_t_k"):
            rep["magic_t_k"][g[len("magic_t_k"):]] = taus(groups[g])
    for m in ("spos", "magic_at"):
        ft = groups.get(f"{m}_ft", [])
        if ft:
            base = [n for n in groups[m] if any(f.startswith(n + "-ft") for f in ft)]
            rep["finetune"][m] = {"before": taus(base), "after": taus(ft),
                                  "steps": next(r["finetune"]["steps"] for r in sn_rows if r.get("finetune")),
                                  "lr": next(r["finetune"]["lr"] for r in sn_rows if r.get("finetune"))}
    for m in ("magic_a", "magic_at"):
        names = groups.get(f"{m}_nowarm", [])
        if names:
            rows = {r["name"]: r for r in sn_rows}
            rep.setdefault("nowarm", {})[m] = {
                "tau": taus(names),
                "mean_score": [float(np.mean(list(rows[n]["scores"].values()))) for n in names]}
    for r in sn_rows:
        if r["kind"] == "similarity":
            rep["similarity_by_method"][r["method"]] = r["similarity_by_m"]
    if "spos" in rep["similarity_by_method"]:
        by = rep["similarity_by_method"]["spos"]
        rep["similarity_vs_m"] = [{"m": int(m), **by[m]} for m in sorted(by, key=int)]
    return rep


def markdown(rep, rank_json_path):
    h = rep["host"]
    st = rep["ground_truth_seed_tau"]
    pw = st.get("pairwise") or {}
    out = ["## Table 1, Figure 3a, Figure 2/3c: measured", "",
           f"- Command: `{rep['command']}` (stages `gt`, `supernets`, then `report`)",
           f"- Report date: {rep['date']}; machine: {h['cpu']}, {h['cpu_count']} CPUs, "
           f"torch {h['torch']}, CPU only, one thread per unit",
           f"- Children: {rep['children']} uniformly sampled 12-layer children of "
           "`mha2d64,ffn,conv3,conv5` at hidden 64 (`children.txt`); ground truth: each child "
           f"trained from scratch (800 updates, recipe of the power stage's decision) at seeds "
           f"{rep['ground_truth_seeds']}, scored on the fixed validation subset; truth = mean "
           f"over seeds; range {rep['ground_truth_loss_range'][0]:.3f}-"
           f"{rep['ground_truth_loss_range'][1]:.3f} bits; mean wall per unit "
           f"{rep['ground_truth_unit_wall_s']:.0f} s",
           f"- Super-nets: same recipe, {rep.get('supernet_updates', 2000)} updates each, equal for "
           "every method; scored by weight-sharing validation loss (every usable validation "
           "sentence: 214 of up to 32 tokens, fixed masks); full per-predictor metrics with intervals in "
           f"`{rank_json_path}`",
           f"- Compute: {rep['compute_core_hours']['ground_truth']:.1f} core-hours of ground "
           f"truth ({len(rep.get('ground_truth_seeds') or [])} seeds x {rep['children']} children) + "
           f"{rep['compute_core_hours']['supernets']:.1f} core-hours of super-nets and their "
           "scoring (sums of the units' wall times, one thread each; two units ran at a time)",
           f"- Intervals: {rep['bootstrap']['resamples']} bootstrap resamples of the children "
           "(percentile, 95%), the same resamples for every predictor and difference", "",
           "### Ground truth's agreement with itself (the ceiling)", "",
           f"- tau-b between seeds (every pair): mean {fmt(pw.get('s_tau'))}, "
           f"range {fmt(pw.get('min'))}-{fmt(pw.get('max'))} "
           f"({', '.join(f's{k}: {fmt(v)}' for k, v in (pw.get('taus') or {}).items())})",
           f"- split-half (seeds {st.get('halves')}): {fmt(st.get('value'))} "
           f"[{fmt((st.get('interval') or [None, None])[0])}, "
           f"{fmt((st.get('interval') or [None, None])[1])}]", "",
           "### Table 1: Kendall tau-b of each super-net with the ground truth", "",
           "| method | paper | tau per super-net seed | mean +- s.d. | S-Tau (seed vs seed) "
           f"| Spearman (mean) | T{rep['tnr_n']}R (mean; best true rank among the predicted "
           f"top {rep['tnr_n']}, 1 is perfect, random {rep['tnr_random']:.2f}) "
           "| minus SPOS [95%] |",
           "|---|---|---|---|---|---|---|---|"]
    for m, paper in PAPER_TABLE1.items():
        t = rep["kendall_tau"].get(m) or []
        seeds = rep["kendall_tau_seeds"].get(m) or []
        d = rep["paired_diff"].get(m)
        mean_sd = (f"{np.mean(t):.3f} +- {np.std(t, ddof=1):.3f}" if len(t) >= 2 else
                   fmt(t[0]) if t else "-")
        sp = rep["spearman"].get(m) or []
        tn = [x for x in (rep["tnr"].get(m) or []) if x is not None]
        out.append(
            f"| {METHOD_LABEL[m]} | {paper:.2f} | "
            + (", ".join(f"s{s}: {v:.3f}" for s, v in zip(seeds, t)) or "-")
            + f" | {mean_sd} | {fmt(rep['s_tau'].get(m))} | "
            f"{fmt(float(np.mean(sp)) if sp else None)} | {fmt(float(np.mean(tn)) if tn else None, '.2f')} | "
            + (f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" if d else "-") + " |")
    out += ["", "Trivial predictors (no training; the sign of tau shows the direction: "
            "positive = the predictor orders children as the ground truth does):", "",
            "| predictor | tau-b |", "|---|---|"]
    for n, v in rep["trivial_tau"].items():
        out.append(f"| {n} | {fmt(v)} |")
    if rep.get("nowarm"):
        out += ["", "Ablation: alignment from the first anchor (update 100) instead of after the "
                "3-epoch warm start (`--magic-align-warmup-epochs 0`; same budget otherwise):", "",
                "| method | tau per seed | mean super-net score (bits) | with warm start |",
                "|---|---|---|---|"]
        for m, v in rep["nowarm"].items():
            out.append(f"| {METHOD_LABEL[m]} | {', '.join(f'{x:.3f}' for x in v['tau'])} | "
                       f"{', '.join(f'{x:.3f}' for x in v['mean_score'])} | "
                       f"{', '.join(f'{x:.3f}' for x in rep['kendall_tau'].get(m) or []) or '-'} |")
    if rep["magic_t_k"]:
        out += ["", "### Figure 3a: MAGIC-T's tau for k in {1, N/4, N/2, N} (N = 12)", "",
                "| k | tau per seed | mean |", "|---|---|---|"]
        for k in sorted(rep["magic_t_k"], key=int):
            v = rep["magic_t_k"][k]
            out.append(f"| {k} | {', '.join(f'{x:.3f}' for x in v)} | {np.mean(v):.3f} |")
        for key, d in (rep.get("other_paired_diff") or {}).items():
            if key.startswith("magic_t_k") and d:
                out.append(f"\nk = {key[len('magic_t_k'):]} minus k = 1: {d['mean']:+.3f} "
                           f"[{d['lo']:+.3f}, {d['hi']:+.3f}]")
    if rep["finetune"]:
        out += ["", "### Beyond the paper: fine-tune each child before ranking "
                "(Insight 2 of the \"deeper insights\" study)", "",
                "| method | steps, lr | tau before (per seed) | tau after (per seed) | after minus before [95%] |",
                "|---|---|---|---|---|"]
        for m, f in rep["finetune"].items():
            d = (rep.get("other_paired_diff") or {}).get(f"{m}_ft")
            out.append(f"| {METHOD_LABEL[m]} | {f['steps']}, {f['lr']:g} | "
                       f"{', '.join(f'{x:.3f}' for x in f['before'])} | "
                       f"{', '.join(f'{x:.3f}' for x in f['after'])} | "
                       + (f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" if d else "-") + " |")
    if rep["similarity_by_method"]:
        out += ["", "### Figure 2(c) / 3(c): gradient similarity on a shared operator vs m "
                "(table6 space, hidden 96, 12 layers, 1,000 updates; 10 repeats, the 214 usable validation sentences)", "",
                "| super-net | " + " | ".join(f"m = {m}" for m in
                                                sorted(next(iter(rep["similarity_by_method"].values())), key=int))
                + " |", "|---|" + "---|" * len(next(iter(rep["similarity_by_method"].values())))]
        for name, by in rep["similarity_by_method"].items():
            out.append(f"| {name} | " + " | ".join(
                f"{by[m]['mean']:.3f} +- {by[m]['std']:.3f}" for m in sorted(by, key=int)) + " |")
        out += ["", "Heatmaps (m = 1, like Figure 2a/b): "
                + ", ".join(f"[{n}](results/similarity/table6-{n}/heatmap.png)"
                            for n in rep["similarity_by_method"])]
    out += ["", "Figures: [table1.png](results/table1.png), [ksweep.png](results/ksweep.png), "
            "[similarity.png](results/similarity.png); per-predictor scatter plots in `results/rank/`."]
    return "\n".join(out) + "\n"


def main(children, data, host, command, write_md_section, supernet_updates):
    gt_rows = read_jsonl(os.path.join(RESULTS, "ground-truth.jsonl"))
    sn_rows = read_jsonl(os.path.join(RESULTS, "supernets.jsonl"))
    rep = build(children, gt_rows, sn_rows, data, host, command)
    if rep is None:
        print("report: no ground-truth seed is complete yet", file=sys.stderr)
        return 1
    rep["supernet_updates"] = supernet_updates
    if any(rep["kendall_tau"].values()):
        plot_table1(os.path.join(RESULTS, "table1.png"), rep)
    if len(rep["magic_t_k"]) >= 2:
        plot_ksweep(os.path.join(RESULTS, "ksweep.png"), rep)
    if rep["similarity_by_method"]:
        plot_similarity(os.path.join(RESULTS, "similarity.png"), rep["similarity_by_method"])
    atomic_json(REPRODUCE_JSON, rep)
    write_md_section("table1", markdown(rep, rep["rank_json"]))
    print(f"report: {rep['children']} children, ground-truth seeds {rep['ground_truth_seeds']}; "
          f"tau: " + "; ".join(f"{m} {[round(x, 3) for x in v]}" for m, v in rep["kendall_tau"].items()))
    return 0
