#!/usr/bin/env python3
"""Training curves of a fairseq-train run of the plugin, and the unigram baseline.

    python scripts/plot_training.py LOG [LOG ...] --out curve.png [--json-out FILE]
        [--data DATA_BIN --tokens-per-sample 32 --sample-break-mode complete]
    python scripts/plot_training.py --data DATA_BIN [--tokens-per-sample 32]   # baseline only

LOG: what fairseq-train printed (stdout and stderr; several files = one run
resumed, read in order), in ``--log-format simple`` or ``json``. Read from it:
``train_inner`` lines (``loss``, ``mlm_loss``, ``align_loss``, ``anchor_loss``,
``anchor_repl`` at ``num_updates``), ``valid`` lines (validation loss) and the
task's ``anchor evaluation at update U: ...`` lines (MAGIC-A: which candidates
were validated, whether the anchor was replaced). An update logged twice (a
resumed run redoes the updates after its last checkpoint) keeps its last value.

The PNG has three panels over updates: (1) training MLM loss, validation loss,
the anchor's validation score at each evaluation and the unigram baseline;
(2) the alignment loss; (3) anchor replacements so far.

The unigram baseline (``--data``) is the loss of a model that ignores context:
the entropy of the masked-token distribution. fairseq's masked_lm masks 15% of
the positions of each sample uniformly, ``<s>`` and ``</s>`` included, so that
distribution is the token distribution of the training samples themselves:
the blocks ``--tokens-per-sample`` / ``--sample-break-mode`` cut (one ``<s>``
prepended), without blocks longer than ``--tokens-per-sample`` (which
``--skip-invalid-size-inputs-valid-test`` drops). Also reported: that
distribution's cross-entropy on the validation samples (counts + 1), what a
context-free model fit on training data scores on the validation split.
Losses are in bits per masked token, like fairseq's ``loss``.
"""

import argparse
import json
import math
import os
import re
import sys

LINE = re.compile(r"\| (train_inner|train|valid) \| (.*)$")
ANCHOR = re.compile(r"anchor evaluation at update (\d+): candidates \[(.*)\] "
                    r"\(bits per masked token\); (.*)$")
CANDIDATE = re.compile(r"(\S+) \(train ([-+.\deE]+|nan|inf), valid ([-+.\deE]+|nan|inf)\)")
REPLACED = re.compile(r"anchor (\S+) valid ([-+.\deE]+); anchor replaced by (\S+) "
                      r"\((\d+) replacements\)")
KEPT = re.compile(r"anchor (\S+) valid ([-+.\deE]+); anchor kept")
FIRST = re.compile(r"first anchor (\S+)")


class LogError(Exception):
    """A log without anything to plot, or bad arguments: one line, exit 2."""


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _stats_simple(kind, body):
    """``key=value, ...`` (train_inner) or ``key value | ...`` (train, valid)."""
    if kind == "train_inner":
        pairs = re.findall(r"(\w+)=([^,\s]+)", body)
    else:
        pairs = [p.strip().split(" ", 1) for p in body.split(" | ")]
        pairs = [p for p in pairs if len(p) == 2]
    return {k: v for k, v in pairs}


def _stats_json(kind, body):
    raw = json.loads(body)
    prefix = "" if kind == "train_inner" else kind + "_"
    return {(k[len(prefix):] if prefix and k.startswith(prefix) else k): v
            for k, v in raw.items()}


def parse_log(lines):
    """{"train_inner": [...], "train": [...], "valid": [...], "anchor": [...]}.

    Each of the first three is a list of ``{"update": int, key: float}`` sorted
    by update, one per update (the last logged wins); ``anchor`` lists the
    evaluations: ``{"update", "anchor", "score", "replaced", "first",
    "replacements", "candidates": [[spec, train, valid]]}``."""
    rows = {"train_inner": {}, "train": {}, "valid": {}}
    anchor = {}
    replacements = 0
    for line in lines:
        line = line.rstrip("\n")
        m = ANCHOR.search(line)
        if m:
            update, cands, outcome = int(m.group(1)), m.group(2), m.group(3)
            cand = [[s, float(t), float(v)] for s, t, v in CANDIDATE.findall(cands)]
            scores = {s: v for s, _, v in cand}
            ev = {"update": update, "candidates": cand, "first": False, "replaced": False}
            if (r := REPLACED.search(outcome)):
                ev.update(anchor=r.group(3), score=scores.get(r.group(3)), replaced=True,
                          previous=r.group(1), previous_score=float(r.group(2)))
                replacements = int(r.group(4))
            elif (r := KEPT.search(outcome)):
                ev.update(anchor=r.group(1), score=float(r.group(2)))
            elif (r := FIRST.search(outcome)):
                ev.update(anchor=r.group(1), score=scores.get(r.group(1)), first=True)
            else:
                continue
            ev["replacements"] = replacements
            anchor[update] = ev
            continue
        m = LINE.search(line)
        if not m:
            continue
        kind, body = m.group(1), m.group(2).strip()
        try:
            stats = _stats_json(kind, body) if body.startswith("{") else _stats_simple(kind, body)
        except ValueError:
            continue
        update = _number(stats.get("num_updates"))
        if update is None:
            continue
        row = {}
        for k, v in stats.items():
            x = _number(v)
            if x is not None and k != "num_updates":
                row[k] = x
        # json lines hold "update" too: the fractional epoch, not the update count
        row["update"] = int(update)
        rows[kind][int(update)] = row
    out = {k: [v[u] for u in sorted(v)] for k, v in rows.items()}
    # A resumed run rescores from its checkpoint: replacements count from the
    # evaluations kept, in update order.
    out["anchor"] = [anchor[u] for u in sorted(anchor)]
    return out


def read_logs(paths):
    lines = []
    for p in paths:
        if not os.path.isfile(p):
            raise LogError(f"log {p!r} does not exist")
        with open(p, encoding="utf-8", errors="replace") as f:
            lines += f.readlines()
    return parse_log(lines)


def mlm_key(row):
    """The MLM loss of a row: ``mlm_loss`` (magic_alignment), else ``loss``."""
    return row.get("mlm_loss", row.get("loss"))


# ---- unigram baseline ----

def sample_token_counts(data_bin, split, dictionary, tokens_per_sample, break_mode):
    """Token counts (numpy, one per dictionary symbol) over the masked_lm samples
    of ``split``: fairseq's blocks with <s> prepended, too-long blocks dropped."""
    import numpy as np
    from fairseq.data import TokenBlockDataset, data_utils

    ds = data_utils.load_indexed_dataset(os.path.join(data_bin, split), dictionary)
    if ds is None:
        raise LogError(f"data-bin {data_bin!r} has no {split!r} split")
    blocks = TokenBlockDataset(ds, ds.sizes, tokens_per_sample - 1, pad=dictionary.pad(),
                               eos=dictionary.eos(), break_mode=break_mode)
    counts = np.zeros(len(dictionary), dtype=np.int64)
    kept = 0
    for i, size in enumerate(blocks.sizes):
        if size + 1 > tokens_per_sample:
            continue
        counts += np.bincount(blocks[i].numpy(), minlength=len(dictionary))
        kept += 1
    counts[dictionary.bos()] += kept
    return counts, kept, len(blocks)


def unigram_baseline(data_bin, tokens_per_sample=512, break_mode="complete"):
    """Entropy (bits) of the masked-token distribution of the training samples,
    and its cross-entropy on the validation samples (training counts + 1)."""
    import logging

    import numpy as np

    logging.getLogger("fairseq").setLevel(logging.WARNING)  # "loaded N examples" lines
    from fairseq.data import Dictionary

    dict_txt = os.path.join(data_bin, "dict.txt")
    if not os.path.isfile(dict_txt):
        raise LogError(f"--data {data_bin!r} has no dict.txt: expected a fairseq data-bin")
    if tokens_per_sample < 2:
        raise LogError(f"--tokens-per-sample {tokens_per_sample}: expected >= 2")
    d = Dictionary.load(dict_txt)
    d.add_symbol("<mask>")  # masked_lm's extra symbol (never a target)
    train, n_train, all_train = sample_token_counts(data_bin, "train", d, tokens_per_sample,
                                                    break_mode)
    p = train[train > 0] / train.sum()
    out = {"data": data_bin, "tokens_per_sample": tokens_per_sample,
           "sample_break_mode": break_mode,
           "train_bits": float(-(p * np.log2(p)).sum()),
           "train_tokens": int(train.sum()), "train_samples": n_train,
           "train_samples_dropped": all_train - n_train}
    if os.path.isfile(os.path.join(data_bin, "valid.idx")):
        valid, n_valid, _ = sample_token_counts(data_bin, "valid", d, tokens_per_sample,
                                                break_mode)
        q = (train + 1) / (train + 1).sum()
        out["valid_bits"] = float(-(valid * np.log2(q)).sum() / max(valid.sum(), 1))
        out["valid_tokens"] = int(valid.sum())
    return out


# ---- plot ----

def plot(parsed, path, baseline=None, title=None):
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inner, valid, anchor = parsed["train_inner"], parsed["valid"], parsed["anchor"]
    fig, (a, b, c) = plt.subplots(3, 1, figsize=(8, 9), sharex=True,
                                  gridspec_kw={"height_ratios": [2.2, 1, 1]})
    pts = [(r["update"], mlm_key(r)) for r in inner if mlm_key(r) is not None]
    if pts:
        a.plot(*zip(*pts), "-", color="tab:blue", label="train (MLM loss, sampled paths)")
    pts = [(r["update"], mlm_key(r)) for r in valid if mlm_key(r) is not None]
    if pts:
        a.plot(*zip(*pts), "o-", color="tab:orange", label="valid (fairseq validation)")
    pts = [(e["update"], e["score"]) for e in anchor if e.get("score") is not None]
    if pts:
        a.plot(*zip(*pts), "x", color="tab:green", ms=7,
               label="anchor, validated at each evaluation")
    if baseline is not None:
        a.axhline(baseline["train_bits"], color="gray", linestyle="--",
                  label=f"unigram baseline {baseline['train_bits']:.2f} (no context)")
    if baseline is not None and pts:
        # the first updates start near log2(vocabulary): keep the baseline region readable
        top = max(v for _, v in pts) if not inner else max(mlm_key(r) or 0 for r in inner)
        if top > baseline["train_bits"] + 2.5:
            a.set_ylim(top=baseline["train_bits"] + 2.5)
    a.set_ylabel("bits per masked token")
    a.set_title(title or "training curves")
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    pts = [(r["update"], r["align_loss"]) for r in inner if "align_loss" in r]
    if pts:
        b.plot(*zip(*pts), "-", color="tab:purple")
    else:
        b.text(0.5, 0.5, "no alignment loss in this log", ha="center", va="center",
               transform=b.transAxes, color="gray")
    b.set_ylabel("align loss\n(MSE per masked token)", fontsize=9)
    b.grid(alpha=0.3)
    if anchor:
        xs = [e["update"] for e in anchor]
        ys = [e["replacements"] for e in anchor]
        last = max([r["update"] for r in inner] + xs)
        c.step(xs + [last], ys + ys[-1:], where="post", color="tab:red")
        c.plot(xs, [e["replacements"] for e in anchor], "|", color="tab:red", ms=10,
               label="evaluation")
        c.plot([e["update"] for e in anchor if e["replaced"]],
               [e["replacements"] for e in anchor if e["replaced"]], "o", color="tab:red",
               label="replacement")
        c.legend(fontsize=8)
    else:
        pts = [(r["update"], r["anchor_repl"]) for r in inner if "anchor_repl" in r]
        if pts:
            c.step(*zip(*pts), where="post", color="tab:red")
        else:
            c.text(0.5, 0.5, "no anchor in this log", ha="center", va="center",
                   transform=c.transAxes, color="gray")
    c.set_ylabel("anchor\nreplacements", fontsize=9)
    c.set_xlabel("updates")
    c.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary(parsed, baseline=None):
    """The numbers a reader wants: last training and validation losses, anchor."""
    out = {}
    if parsed["train_inner"]:
        last = parsed["train_inner"][-1]
        out["train"] = {"update": last["update"], "mlm_loss": mlm_key(last)}
    if parsed["valid"]:
        last = parsed["valid"][-1]
        out["valid"] = {"update": last["update"], "mlm_loss": mlm_key(last),
                        "best": min(mlm_key(r) for r in parsed["valid"])}
    if parsed["anchor"]:
        last = parsed["anchor"][-1]
        out["anchor"] = {"update": last["update"], "arch": last.get("anchor"),
                         "score": last.get("score"), "replacements": last["replacements"],
                         "evaluations": len(parsed["anchor"])}
    if baseline is not None:
        out["unigram"] = baseline
        if "valid" in out and out["valid"]["mlm_loss"] is not None:
            out["valid"]["below_unigram"] = baseline["train_bits"] - out["valid"]["mlm_loss"]
    return out


def get_parser():
    p = argparse.ArgumentParser(prog="plot_training.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="*", help="fairseq-train output (simple or json format)")
    p.add_argument("--out", help="PNG to write (needs LOG)")
    p.add_argument("--json-out", help="also write the parsed curves and summary as JSON")
    p.add_argument("--data", help="data-bin: adds the unigram baseline")
    p.add_argument("--tokens-per-sample", type=int, default=512,
                   help="the run's --tokens-per-sample (%(default)s, fairseq's default)")
    p.add_argument("--sample-break-mode", default="complete",
                   choices=["none", "complete", "complete_doc", "eos"],
                   help="the run's --sample-break-mode (%(default)s)")
    p.add_argument("--title", help="title of the plot")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        if not args.logs and not args.data:
            raise LogError("nothing to do: give LOG files (and --out) or --data")
        if args.logs and not (args.out or args.json_out):
            raise LogError("give --out PNG and/or --json-out FILE for the curves")
        baseline = None
        if args.data:
            baseline = unigram_baseline(args.data, args.tokens_per_sample,
                                        args.sample_break_mode)
            line = (f"unigram baseline: {baseline['train_bits']:.3f} bits per masked token "
                    f"(entropy of the training samples' tokens: the loss of a model that "
                    f"ignores context")
            if "valid_bits" in baseline:
                line += f"; {baseline['valid_bits']:.3f} on the validation samples"
            print(line + ")")
        if not args.logs:
            if args.json_out:
                with open(args.json_out, "w") as f:
                    json.dump({"unigram": baseline}, f, indent=1)
            return 0
        parsed = read_logs(args.logs)
        if not parsed["train_inner"] and not parsed["valid"]:
            raise LogError(f"no train_inner or valid lines in {', '.join(args.logs)}: "
                           "expected fairseq-train output (--log-format simple or json)")
        summ = summary(parsed, baseline)
        if args.out:
            plot(parsed, args.out, baseline, args.title)
            print(f"training curves: {args.out}")
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump({"summary": summ, **parsed}, f, indent=1)
        if "train" in summ:
            print(f"last training MLM loss (update {summ['train']['update']}): "
                  f"{summ['train']['mlm_loss']:.3f}")
        if "valid" in summ:
            v = summ["valid"]
            note = (f", {v['below_unigram']:.2f} bits below the unigram baseline"
                    if "below_unigram" in v else "")
            print(f"last validation loss (update {v['update']}): {v['mlm_loss']:.3f}{note}")
        if "anchor" in summ:
            a = summ["anchor"]
            score = "?" if a["score"] is None else f"{a['score']:.3f}"
            print(f"anchor: {a['evaluations']} evaluations, {a['replacements']} "
                  f"replacements; last {a['arch']} (valid {score} on its subset at "
                  f"update {a['update']})")
        return 0
    except LogError as e:
        print(f"plot_training.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
