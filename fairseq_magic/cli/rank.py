"""magic-rank: how well do predictors rank children against a ground truth?

    magic-rank GT_FILE [CHECKPOINT ...] [--scores FILE ...] --out DIR
        [--group NAME=MEMBER,MEMBER,...] [--pairs A:B ... | --baseline NAME]
        [--tnr-n N[,N...]] [--bootstrap 1000] [--seed 0] [--level 0.95]
        [--data DATA_BIN --split valid --max-batches 8 --batch-size 16 --device cpu]
        [--finetune-steps 0 --finetune-lr 1e-4 --finetune-split train]

GT_FILE: JSON lines {"arch": SPEC, "seed": S, "loss": X}; a child's truth is its
mean loss over seeds. Predictors: super-net checkpoints, scored like magic-search
scores (weight-sharing validation MLM loss on fixed batches, optionally after
--finetune-steps private updates per child), and/or score files (--scores FILE,
JSON lines {"arch": SPEC, "loss": X}). Lower is better everywhere. Every
predictor must score every ground-truth child.

Predictor names: NAME=PATH names one explicitly; otherwise a score file is named
by its stem and a checkpoint by its last two path components without ".pt"
(runs/spos1/checkpoint_last.pt -> spos1/checkpoint_last), with more components
where that is needed to tell predictors apart.

Groups (S-Tau): --group NAME=M1,M2,... puts several rankings of one method
(super-nets trained with different seeds) together. Members are predictor names
or paths; a path not given elsewhere is added as a predictor (a score file if it
ends in .json/.jsonl, else a checkpoint). A group reports S-Tau (mean pairwise
tau between its members) and the members' mean Kendall tau, Spearman and TnR.

Paired differences (a - b on the same bootstrap resamples of children):
--pairs A:B (names of predictors or groups) or --baseline NAME (every other
predictor, or every other group if NAME is a group, against it); by default
every pair of predictors and every pair of groups.

Writes DIR/rank.json (atomically), DIR/scatter-NAME.png per predictor, and
DIR/scores/NAME.jsonl for every checkpoint (reusable with --scores).
"""

import argparse
import collections
import itertools
import math
import os
import re
import sys
import tempfile
import time

import numpy as np

from . import run_main
from ..core import ranking as R
from ..core.space import MagicConfigError
from .search import atomic_json

METRICS = ("kendall_tau", "spearman", "tnr")


def get_parser():
    p = argparse.ArgumentParser(prog="magic-rank", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ground_truth", help="ground-truth JSON lines: {arch, seed, loss}")
    p.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT",
                   help="magic_supernet checkpoints to score ([NAME=]PATH)")
    p.add_argument("--scores", action="append", default=[], metavar="FILE",
                   help="a score file, JSON lines {arch, loss} ([NAME=]PATH; repeatable)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--group", action="append", default=[], metavar="NAME=M1,M2,...",
                   help="rankings of one method (>= 2) for S-Tau (repeatable)")
    p.add_argument("--pairs", action="append", default=[], metavar="A:B",
                   help="paired difference A - B (repeatable)")
    p.add_argument("--baseline", help="paired differences of every other predictor vs this one")
    p.add_argument("--tnr-n", metavar="N[,N...]",
                   help="top-n for TnR; the first is the headline 'tnr' "
                        "(default: 10%% of the children, rounded up)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the children")
    p.add_argument("--level", type=float, default=0.95, help="interval coverage")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the bootstrap resamples and of --finetune-steps")
    g = p.add_argument_group("scoring checkpoints (as magic-search does)")
    g.add_argument("--data", help="data-bin to score on (default: the one each super-net trained on)")
    g.add_argument("--split", default="valid", help="data split to score on")
    g.add_argument("--max-batches", type=int, default=8, help="batches of the split")
    g.add_argument("--batch-size", type=int, default=16, help="sentences per batch")
    g.add_argument("--device", default="cpu", help="cpu or cuda")
    g.add_argument("--finetune-steps", type=int, default=0,
                   help="private Adam updates per child before scoring (0: none)")
    g.add_argument("--finetune-lr", type=float, default=1e-4)
    g.add_argument("--finetune-split", default="train", help="split of the fine-tuning batches")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def _need(ok, msg):
    if not ok:
        raise MagicConfigError(msg)


def _check_args(args):
    _need(args.bootstrap >= 1, f"--bootstrap {args.bootstrap}: expected >= 1")
    _need(math.isfinite(args.level) and 0 < args.level < 1,
          f"--level {args.level}: expected 0 < level < 1")
    _need(args.max_batches >= 1, f"--max-batches {args.max_batches}: expected >= 1")
    _need(args.batch_size >= 1, f"--batch-size {args.batch_size}: expected >= 1")
    _need(args.finetune_steps >= 0, f"--finetune-steps {args.finetune_steps}: expected >= 0")
    _need(math.isfinite(args.finetune_lr) and args.finetune_lr > 0,
          f"--finetune-lr {args.finetune_lr}: expected a finite number > 0")
    _need(not (args.pairs and args.baseline), "--pairs and --baseline: give one of them")


def _tnr_ns(text, num_children):
    if text is None:
        return [max(1, math.ceil(0.1 * num_children))]
    ns = []
    for part in text.split(","):
        try:
            n = int(part)
        except ValueError:
            raise MagicConfigError(f"--tnr-n {text!r}: expected positive integers such as 1,3")
        _need(1 <= n <= num_children,
              f"--tnr-n {n}: expected 1 <= n <= {num_children} (the number of children)")
        ns.append(n)
    return ns


# ------------------------------------------------------------------ predictors

class Predictor:
    def __init__(self, kind, path, name=None, given=None):
        self.kind, self.path, self.name = kind, path, name
        self.given = given or path  # as the user wrote it, for matching group members
        self.scores = None  # np.ndarray over the ground-truth children
        self.ignored = 0  # scored children that are not in the ground truth


def _named(text):
    """'NAME=PATH' -> (NAME, PATH); a plain path (even one containing '=') -> (None, PATH)."""
    if "=" in text and not os.path.exists(text):
        name, path = text.split("=", 1)
        _need(name.strip() != "", f"{text!r}: empty name before '='")
        return name.strip(), path
    return None, text


def _default_names(preds):
    """Shortest path suffixes that tell the unnamed predictors apart."""
    todo = [p for p in preds if p.name is None]
    paths = {}
    for p in todo:
        key = os.path.abspath(p.path)
        _need(key not in paths, f"{p.path!r} is given twice (to use one file as two "
                                "predictors, name them with NAME=PATH)")
        paths[key] = p
    comps = {id(p): os.path.splitext(os.path.normpath(os.path.abspath(p.path)))[0].split(os.sep)
             for p in todo}
    k = {id(p): 2 if p.kind == "checkpoint" else 1 for p in todo}
    while True:
        names = {id(p): "/".join(comps[id(p)][-k[id(p)]:]) for p in todo}
        taken = [p.name for p in preds if p.name is not None]
        clash = [p for p in todo if list(names.values()).count(names[id(p)]) > 1
                 or names[id(p)] in taken]
        grow = [p for p in clash if k[id(p)] < len(comps[id(p)])]
        if not grow:
            break
        for p in grow:
            k[id(p)] += 1
    for p in todo:
        p.name = names[id(p)]
    seen = {}
    for p in preds:
        _need(p.name not in seen, f"predictor name {p.name!r} is used twice ({seen.get(p.name)} "
                                  f"and {p.path}): name them with NAME=PATH")
        seen[p.name] = p.path


def _safe(name):
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", name).strip("_") or "predictor"


def collect_predictors(args):
    preds = [Predictor("checkpoint", path, name, text)
             for text in args.checkpoints for name, path in [_named(text)]]
    preds += [Predictor("scores", path, name, text)
              for text in args.scores for name, path in [_named(text)]]
    groups = {}
    for text in args.group:
        _need("=" in text, f"--group {text!r}: expected NAME=MEMBER,MEMBER,...")
        gname, members = text.split("=", 1)
        gname = gname.strip()
        members = [m.strip() for m in members.split(",") if m.strip()]
        _need(gname and len(members) >= 2,
              f"--group {text!r}: expected a name and at least 2 members (S-Tau compares rankings)")
        _need(gname not in groups, f"--group {gname!r} is given twice")
        groups[gname] = members
    # group members that are files not given elsewhere become predictors; the
    # others must be predictor names (known only once every predictor is named)
    known = {m for p in preds for m in (p.name, p.given, os.path.abspath(p.path))}
    for members in groups.values():
        for m in members:
            if m in known or os.path.abspath(m) in known or not os.path.isfile(m):
                continue
            kind = "scores" if m.endswith((".json", ".jsonl")) else "checkpoint"
            preds.append(Predictor(kind, m))
            known.update({m, os.path.abspath(m)})
    _need(preds, "no predictors: give super-net checkpoints and/or --scores FILE")
    for p in preds:
        _need(os.path.isfile(p.path), f"{'checkpoint' if p.kind == 'checkpoint' else 'score file'} "
                                      f"{p.path!r} does not exist")
    _default_names(preds)
    lookup = {}
    for p in preds:
        for key in (p.given, p.path, os.path.abspath(p.path)):
            lookup.setdefault(key, p.name)
        lookup[p.name] = p.name
    resolved = {}
    for gname, members in groups.items():
        _need(gname not in {p.name for p in preds},
              f"--group {gname!r}: a predictor has that name; choose another")
        names = [lookup.get(m) or lookup.get(os.path.abspath(m)) for m in members]
        for m, n in zip(members, names):
            _need(n is not None, f"--group {gname!r}: member {m!r} is neither a predictor name "
                                 f"({', '.join(p.name for p in preds)}) nor a file")
        _need(len(set(names)) == len(names), f"--group {gname!r}: a member is listed twice")
        resolved[gname] = names
    safe = [_safe(p.name) for p in preds]
    _need(len(set(safe)) == len(safe),
          f"predictor names {[p.name for p in preds]} give clashing file names: rename with NAME=PATH")
    return preds, resolved


def resolve_pairs(args, preds, groups):
    names = [p.name for p in preds]
    entities = set(names) | set(groups)
    if args.pairs:
        pairs = []
        for text in args.pairs:
            a, sep, b = text.partition(":")
            _need(sep and a and b, f"--pairs {text!r}: expected A:B (two predictor or group names)")
            for x in (a, b):
                _need(x in entities, f"--pairs {text!r}: {x!r} is not a predictor or group; "
                                     f"expected one of {sorted(entities)}")
            _need(a != b, f"--pairs {text!r}: a predictor compared with itself")
            pairs.append((a, b))
        return pairs
    if args.baseline:
        base = args.baseline
        _need(base in entities, f"--baseline {base!r}: expected one of {sorted(entities)}")
        pool = list(groups) if base in groups else names
        return [(x, base) for x in pool if x != base]
    return list(itertools.combinations(names, 2)) + list(itertools.combinations(groups, 2))


# ------------------------------------------------------------------ scoring

def check_checkpoint(path, children, args):
    """Load a super-net and check it can build every child (before any scoring)."""
    from ..evaluation import load_supernet

    model, task, _, _ = load_supernet(path, args.data, args.device)
    for c in children:
        try:
            model.search_space.parse(c)
        except MagicConfigError as e:
            raise MagicConfigError(f"ground-truth child {c} cannot be built by the super-net "
                                   f"{path} ({model.search_space}): {e}") from None
    return model, task


def score_checkpoint(model, task, children, args, label):
    """Scores of ``children`` with magic-search's scoring (same batches, same
    fine-tuning scorer)."""
    from ..evaluation import fixed_batches, score_child
    from .search import FinetuneScorer

    valid = fixed_batches(task, args.split, args.max_batches, args.batch_size, args.device)
    if args.finetune_steps:
        train = fixed_batches(task, args.finetune_split, min(args.finetune_steps, 64),
                              args.batch_size, args.device)
        fn = FinetuneScorer(model, train, valid, args.finetune_steps, args.finetune_lr,
                            args.seed, args.device)
    else:
        def fn(arch):
            return score_child(model, arch, valid)
    it = children
    if not args.no_progress:
        from tqdm import tqdm

        it = tqdm(children, desc=label, unit="child", file=sys.stderr, dynamic_ncols=True)
    return np.array([fn(c) for c in it], dtype=float)


def score_all_checkpoints(ckpts, children, args):
    """Check every checkpoint first, then score them; the last one checked stays
    loaded and is scored first, so a single checkpoint is loaded once."""
    loaded = None
    for p in ckpts:
        loaded = None  # free the previous super-net before loading the next
        loaded = (p, *check_checkpoint(p.path, children, args))
    for p in reversed(ckpts):
        if loaded is None or loaded[0] is not p:
            loaded = (p, *check_checkpoint(p.path, children, args))
        t = time.time()
        p.scores = score_checkpoint(loaded[1], loaded[2], children, args, p.name)
        loaded = None
        print(f"magic-rank: scored {len(children)} children with {p.name} in "
              f"{time.time() - t:.1f}s", file=sys.stderr)


# ------------------------------------------------------------------ analysis

def analyse(children, truth, preds, groups, pairs, tnr_ns, n_boot, seed, level):
    """Every metric, interval and paired difference, from scores already aligned
    to ``children``. ``preds``: {name: scores}; ``groups``: {name: [member names]}."""
    idx = R.bootstrap_indices(len(children), n_boot, seed)
    fns = {"kendall_tau": R.kendall_tau_b, "spearman": R.spearman}
    for n in tnr_ns:
        fns[f"tnr@{n}"] = (lambda n: lambda p, t: R.tnr(p, t, n))(n)
    head = f"tnr@{tnr_ns[0]}"

    cache = {}  # (entity, metric) -> Interval; the replicates share ``idx``

    def interval(entity, metric):
        if (entity, metric) not in cache:
            if entity in groups:
                # the members' mean on each resample (R.mean_over_rows), from
                # the members' own replicates: they were drawn from ``idx`` too
                parts = [interval(m, metric) for m in groups[entity]]
                est = float(np.mean([iv.estimate for iv, _ in parts]))
                reps = np.mean([r for _, r in parts], axis=0)
            else:
                est = fns[metric](preds[entity], truth)
                reps = R.replicates(fns[metric], preds[entity], truth, idx)
            cache[entity, metric] = (R.percentile_interval(est, reps, level), reps)
        return cache[entity, metric]

    def summary(entity):
        out = {}
        ivs = {}
        for key, metric in (("kendall_tau", "kendall_tau"), ("spearman", "spearman"), ("tnr", head)):
            iv = interval(entity, metric)[0]
            out[key], ivs[key] = R._finite_or_none(iv.estimate), iv.as_list()
        out["tnr_n"] = tnr_ns[0]
        out["tnr_by_n"] = {str(n): R._finite_or_none(interval(entity, f"tnr@{n}")[0].estimate)
                           for n in tnr_ns}
        ivs["tnr_by_n"] = {str(n): interval(entity, f"tnr@{n}")[0].as_list() for n in tnr_ns}
        out["intervals"] = ivs
        out["bootstrap_valid"] = {k: interval(entity, m)[0].n_valid for k, m in
                                  (("kendall_tau", "kendall_tau"), ("spearman", "spearman"),
                                   ("tnr", head))}
        return out

    result = {"predictors": {name: summary(name) for name in preds}, "groups": {}}
    for gname, members in groups.items():
        m = np.stack([preds[x] for x in members])
        s_iv = R.bootstrap_interval(lambda p, t: R.s_tau(p), m, None, level=level, indices=idx)
        taus = R.pairwise_taus(m)
        per_member = [R.kendall_tau_b(preds[x], truth) for x in members]
        result["groups"][gname] = {
            "members": members, **summary(gname),
            "kendall_tau_std": R._finite_or_none(float(np.std(per_member, ddof=1))),
            "s_tau": R._finite_or_none(s_iv.estimate),
            "s_tau_min": R._finite_or_none(float(np.min(list(taus.values())))),
            "s_tau_max": R._finite_or_none(float(np.max(list(taus.values())))),
            "pairwise_taus": {f"{members[i]}:{members[j]}": R._finite_or_none(t)
                              for (i, j), t in taus.items()},
        }
        result["groups"][gname]["intervals"]["s_tau"] = s_iv.as_list()
    diffs = []
    for a, b in pairs:
        entry = {"a": a, "b": b}
        for key, metric in (("kendall_tau", "kendall_tau"), ("spearman", "spearman"), ("tnr", head)):
            (ia, ra), (ib, rb) = interval(a, metric), interval(b, metric)
            iv = R.percentile_interval(ia.estimate - ib.estimate, ra - rb, level)
            entry[key] = {"estimate": R._finite_or_none(iv.estimate), "interval": iv.as_list(),
                          "n_valid": iv.n_valid}
        entry["tnr_n"] = tnr_ns[0]
        diffs.append(entry)
    result["paired_differences"] = diffs
    return result


# ------------------------------------------------------------------ output

def _atomic_write_text(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_scores(path, children, scores):
    import json

    _atomic_write_text(path, "".join(json.dumps({"arch": c, "loss": float(s)}) + "\n"
                                     for c, s in zip(children, scores)))


def scatter(path, name, kind, pred, truth, spread, summary):
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    ax.errorbar(truth, pred, xerr=[truth - spread[0], spread[1] - truth], fmt="o", ms=4,
                alpha=0.7, elinewidth=0.8, capsize=0, label="child (bar: seed min-max)")
    n = summary["tnr_n"]
    top = np.argsort(pred, kind="stable")[:n]
    ax.scatter(truth[top], pred[top], s=90, facecolors="none", edgecolors="red",
               label=f"predicted top-{n}")

    def fmt(x):
        return "n/a" if x is None else f"{x:.3f}"

    iv = summary["intervals"]["kendall_tau"]
    ax.set_title(f"{name}\nKendall tau-b {fmt(summary['kendall_tau'])} "
                 f"[{fmt(iv[0])}, {fmt(iv[1])}], Spearman {fmt(summary['spearman'])}, "
                 f"T{n}R {fmt(summary['tnr'])}", fontsize=9)
    ax.set_xlabel("ground-truth loss (mean over seeds; lower is better)")
    ax.set_ylabel("predicted loss (weight sharing)" if kind == "checkpoint" else "predicted score")
    ax.ticklabel_format(useOffset=False)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-",
                               suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv=None):
    # intermixed: checkpoints may come after options (GT --scores F CKPT ...)
    args = get_parser().parse_intermixed_args(argv)
    _check_args(args)
    gt = R.read_ground_truth(args.ground_truth)
    children = gt.children
    _need(len(children) >= 2,
          f"ground truth {args.ground_truth}: {len(children)} child(ren) with a finished seed: "
          "expected at least 2 to rank")
    tnr_ns = _tnr_ns(args.tnr_n, len(children))
    preds, groups = collect_predictors(args)
    for p in preds:
        if p.kind == "scores":
            scores = R.read_scores(p.path)
            p.scores = R.align_scores(scores, children, f"score file {p.path}")
            p.ignored = len(set(scores) - set(children))
    pairs = resolve_pairs(args, preds, groups)

    truth = gt.mean(children)
    ckpts = [p for p in preds if p.kind == "checkpoint"]
    if ckpts:
        score_all_checkpoints(ckpts, children, args)

    os.makedirs(args.out, exist_ok=True)
    if ckpts:
        os.makedirs(os.path.join(args.out, "scores"), exist_ok=True)
    result = {
        "ground_truth": {
            "file": args.ground_truth, "children": len(children),
            "seeds": gt.seeds(),
            # {seeds per child: number of children}: uneven counts show failed units
            "seed_counts": {str(k): v for k, v in sorted(
                collections.Counter(gt.seed_counts().values()).items())},
            "loss_range": [float(truth.min()), float(truth.max())],
            "failed_units": gt.failed, "excluded_children": gt.excluded,
        },
        "ground_truth_seed_tau": R.seed_agreement(gt, args.bootstrap, args.seed, args.level),
        "num_children": len(children),
        "tnr_n": tnr_ns[0],
        "tnr_random": R.tnr_random(len(children), tnr_ns[0]),
        "bootstrap": {"resamples": args.bootstrap, "seed": args.seed, "level": args.level,
                      "method": "percentile; children resampled with replacement; the same "
                                "resamples for every predictor, group and difference"},
        "config": {k: v for k, v in vars(args).items()},
    }
    result.update(analyse(children, truth, {p.name: p.scores for p in preds}, groups, pairs,
                          tnr_ns, args.bootstrap, args.seed, args.level))
    spread = np.array([[min(gt.losses[c].values()) for c in children],
                       [max(gt.losses[c].values()) for c in children]])
    for p in preds:
        entry = result["predictors"][p.name]
        entry.update({"source": p.kind, "path": p.path,
                      "plot": f"scatter-{_safe(p.name)}.png"})
        if p.ignored:
            entry["ignored_children"] = p.ignored
        if p.kind == "checkpoint":
            entry["scores_file"] = os.path.join("scores", f"{_safe(p.name)}.jsonl")
            entry["scoring"] = {"split": args.split, "max_batches": args.max_batches,
                                "batch_size": args.batch_size, "data": args.data,
                                "finetune_steps": args.finetune_steps,
                                "finetune_lr": args.finetune_lr if args.finetune_steps else None}
            write_scores(os.path.join(args.out, entry["scores_file"]), children, p.scores)
        scatter(os.path.join(args.out, entry["plot"]), p.name, p.kind, p.scores, truth,
                spread, entry)
    atomic_json(os.path.join(args.out, "rank.json"), result)

    def fmt(x, w=7, d=3):
        return f"{'n/a':>{w}}" if x is None else f"{x:>{w}.{d}f}"

    rows = [(n, e) for n, e in result["predictors"].items()] + \
           [(f"{n} (group)", e) for n, e in result["groups"].items()]
    width = max(len(n) for n, _ in rows)
    print(f"{'predictor':<{width}}  {'kendall_tau [95%]':>26}  {'spearman':>8}  "
          f"{'T' + str(tnr_ns[0]) + 'R':>7}")
    for n, e in rows:
        iv = e["intervals"]["kendall_tau"]
        print(f"{n:<{width}}  {fmt(e['kendall_tau'])} [{fmt(iv[0])}, {fmt(iv[1])}]  "
              f"{fmt(e['spearman'], 8)}  {fmt(e['tnr'], 7, 2)}")
    st = result["ground_truth_seed_tau"]
    print(f"{len(children)} children; ground-truth seed agreement tau: "
          f"{'n/a (' + st['reason'] + ')' if st['value'] is None else format(st['value'], '.3f')}; "
          f"results in {args.out}/rank.json")
    return 0


def cli_main():
    run_main(main, "magic-rank")


if __name__ == "__main__":
    cli_main()
