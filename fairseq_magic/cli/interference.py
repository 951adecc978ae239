"""magic-interference: how differently do child models pull on a shared operator?

    magic-interference CHECKPOINT --out DIR [--data DATA_BIN] [--split valid]
        [--sentences 2048] [--batch-size 32] [--layer J | --by-layer] [--op OP]
        [--m 1 [2 4 ...]] [--children C] [--repeats 10] [--seed 0] [--device cpu]

The paper's analysis (section 3, appendix A.3/A.4): the super-net is frozen and
fed one fixed batch; a shared operator o_g sits in layer j and C child paths
agree everywhere except in layers j+1..j+m. Each child's gradient on o_g's
weights (its whole candidate sub-layer, LayerNorm included) is flattened and
the C x C cosine-similarity matrix reported; R repeats draw o_g and the fixed
layers afresh and are averaged.

Layers are 1-BASED, as in the paper: layer 1 is the first operator layer after
the embeddings ("o_g in layer 1, children differ in layer 2"), so 1 <= j and
j + m <= N. With m = 1 the C children take C distinct operators of layer j+1
(by default all of them, the rows of Figure 2a); with m > 1 each varied layer
gives the C children C distinct operators in a random order, so every pair
differs in exactly m operators. A repeat keeps j, o_g and the unvaried layers
for every --m value, so the similarity-vs-m curve compares like with like.
The (possibly shrunk) search space stored in the checkpoint is used.

Gradients are taken in eval mode (no dropout: children differ only by their
path; the paper does not state its mode) on the mean MLM loss per masked token
of --sentences sentences of --split (same masks for every child), accumulated
over pieces of --batch-size sentences (exactly one big batch's gradient). Only
o_g's parameters require grad; no parameter's .grad is touched and the
checkpoint is only read.

Writes DIR/interference.json (every matrix of every repeat, the averages),
DIR/heatmap.png (m = 1: mean matrix labelled by the operator in layer j+1, each
cell averaged over the repeats holding both operators), DIR/similarity_vs_m.png
(mean off-diagonal similarity vs m, Figure 2c) and, with --by-layer,
DIR/similarity_vs_layer.png (vs j, Figure 8). Files are written atomically; a
plot this run does not produce is removed from DIR so none is stale.
"""

import argparse
import json
import math
import os
import sys
import tempfile

from . import run_main
from ..core.interference import (LAYER_NUMBERING, cosine_matrix, mean_off_diagonal,
                                 path_gradients, plan_cases, summarize)
from ..core.space import MagicConfigError

JSON_NAME = "interference.json"
HEATMAP = "heatmap.png"
VS_M = "similarity_vs_m.png"
VS_LAYER = "similarity_vs_layer.png"
PAPER_SENTENCES = 2048  # section 3.1: "a large batch of 2048 sentences"


def get_parser():
    p = argparse.ArgumentParser(prog="magic-interference", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a magic_supernet checkpoint (checkpoint_last.pt)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--data", help="data-bin to take the batch from (default: the one it trained on)")
    p.add_argument("--split", default="valid", help="split the fixed batch comes from")
    p.add_argument("--sentences", type=int, default=None,
                   help=f"sentences in the fixed batch (default: {PAPER_SENTENCES}, the paper's, "
                        "or the whole split if smaller; memory is bounded by --batch-size)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="sentences per forward/backward piece (memory only: the gradient "
                        "is that of the whole fixed batch)")
    p.add_argument("--layer", type=int, default=None,
                   help="j, o_g's layer, 1-based as in the paper (default: drawn per repeat "
                        "among the layers that allow j + max(--m) <= N)")
    p.add_argument("--by-layer", action="store_true",
                   help="sweep j over every valid layer, --repeats each (Figure 8)")
    p.add_argument("--op", default=None,
                   help="o_g's operator, e.g. conv3 (default: drawn per repeat)")
    p.add_argument("--m", type=int, nargs="+", default=[1],
                   help="how many layers (j+1..j+m) the children differ in; several values "
                        "give the similarity-vs-m curve (Figure 2c), e.g. --m 1 2 4")
    p.add_argument("--children", type=int, default=None,
                   help="C, the number of children (default: as many as every varied layer "
                        "allows: all operators of layer j+1 for m = 1)")
    p.add_argument("--repeats", type=int, default=10, help="R random draws to average (paper: 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def _check_args(args):
    """Everything that needs no checkpoint, before loading it."""
    if args.sentences is not None and args.sentences < 1:
        raise MagicConfigError(f"--sentences {args.sentences}: expected >= 1")
    if args.batch_size < 1:
        raise MagicConfigError(f"--batch-size {args.batch_size}: expected >= 1")
    if args.repeats < 1:
        raise MagicConfigError(f"--repeats {args.repeats}: expected >= 1")
    for m in args.m:
        if m < 1:
            raise MagicConfigError(f"--m {m}: expected >= 1 (the number of layers the children differ in)")
    if len(set(args.m)) != len(args.m):
        raise MagicConfigError(f"--m {' '.join(map(str, args.m))}: values repeat")
    if args.children is not None and args.children < 2:
        raise MagicConfigError(
            f"--children {args.children}: expected >= 2 (a cosine matrix needs two children)")
    if args.layer is not None and args.layer < 1:
        raise MagicConfigError(f"--layer {args.layer}: expected >= 1 (layers are 1-based)")
    if args.layer is not None and args.by_layer:
        raise MagicConfigError("--layer and --by-layer exclude each other: expected one of them")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise MagicConfigError(f"--out {args.out!r} is a file: expected a folder")


def _take(sample, k):
    """The first k sentences of a fairseq batch."""
    import torch

    if isinstance(sample, dict):
        out = {key: _take(v, k) for key, v in sample.items()}
        if "nsentences" in out:
            out["nsentences"] = k
        return out
    if torch.is_tensor(sample) and sample.dim() > 0:
        return sample[:k]
    return sample


def fixed_batch(task, split, sentences, batch_size, device):
    """The first ``sentences`` sentences of ``split`` in pieces of ``batch_size``;
    returns (pieces, sentences used)."""
    from ..evaluation import fixed_batches

    if split not in task.datasets:
        try:
            task.load_dataset(split, combine=False, epoch=1)
        except FileNotFoundError as e:
            raise MagicConfigError(f"--split {split!r} not found: {e}") from e
    available = len(task.dataset(split))
    wanted = min(PAPER_SENTENCES, available) if sentences is None else sentences
    if wanted > available:
        raise MagicConfigError(
            f"--sentences {sentences}: split {split!r} has only {available} sentences: "
            f"expected 1..{available}")
    pieces = fixed_batches(task, split, math.ceil(wanted / batch_size) + 1, batch_size, device)
    out, have = [], 0
    for piece in pieces:
        if have >= wanted:
            break
        n = int(piece["net_input"]["src_tokens"].size(0))
        if have + n > wanted:
            piece, n = _take(piece, wanted - have), wanted - have
        out.append(piece)
        have += n
    if have < wanted and (sentences is not None or have == 0):
        # sentences longer than the model's positions are skipped, so a split
        # can hold fewer usable sentences than it has; the default takes them all
        raise MagicConfigError(
            f"--sentences {wanted}: only {have} usable sentences in split {split!r}")
    return out, have


def _atomic_write(path, write):
    d = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from others
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _pyplot():
    import logging

    # before the import: matplotlib logs its set-up at DEBUG on import
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_heatmap(path, heat, title):
    import numpy as np

    plt = _pyplot()
    labels = heat["labels"]
    mat = np.array([[np.nan if v is None else v for v in row] for row in heat["matrix"]])
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.1 * n + 2.5, 1.0 * n + 1.8))
    seen = mat[~np.isnan(mat)]
    # scale to the data (as Figure 2a): similarities near 1 would all look alike on [-1, 1]
    low = float(seen.min()) if seen.size else 0.0
    vmin = low if low < 1.0 else 0.0
    digits = 2 if 1.0 - low >= 0.1 else 4
    im = ax.imshow(np.ma.masked_invalid(mat), cmap="RdYlBu_r", vmin=vmin, vmax=1.0)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    for i in range(n):
        for k in range(n):
            if not np.isnan(mat[i, k]):
                ax.text(k, i, f"{mat[i, k]:.{digits}f}", ha="center", va="center", fontsize=9)
    ax.set_xlabel("operator in layer j+1")
    ax.set_ylabel("operator in layer j+1")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="gradient cosine similarity on o_g")
    fig.tight_layout()
    _atomic_write(path, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)


def plot_curve(path, xs, series, xlabel, title):
    """``series``: {legend: [stats dict per x or None]}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, stats in series.items():
        pts = [(x, s) for x, s in zip(xs, stats) if s is not None]
        ax.errorbar([x for x, _ in pts], [s["mean"] for _, s in pts],
                    yerr=[s["std"] for _, s in pts], marker="o", capsize=3, label=name)
    ax.set_xticks(xs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean off-diagonal cosine similarity\n(bars: std over repeats)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    _atomic_write(path, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)


def main(argv=None):
    args = get_parser().parse_args(argv)
    _check_args(args)
    from ..evaluation import load_supernet
    from ..model_utils import mlm_loss
    from .export import stored_space

    model, task, _, extra_state = load_supernet(args.checkpoint, args.data, args.device)
    # progressive shrinking narrows the space; the model object keeps every candidate
    space = stored_space(extra_state) or model.search_space
    cases = plan_cases(space, args.m, args.repeats, args.seed, layer=args.layer, op=args.op,
                       children=args.children, by_layer=args.by_layer)
    batches, used = fixed_batch(task, args.split, args.sentences, args.batch_size, args.device)

    pad = model.encoder.dictionary.pad()

    def loss_fn(m, sample):
        loss, n, _ = mlm_loss(m, sample, pad)
        return loss, n

    masked_tokens = sum(int(b["target"].ne(pad).sum()) for b in batches)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(c.paths) for c in cases), desc="magic-interference",
                   unit="child", file=sys.stderr, dynamic_ncols=True)
    records = []
    try:
        for case in cases:
            og = model.sentence_encoder.layers[case.layer - 1].candidates[case.op]
            params = list(og.parameters())
            grads = path_gradients(model, params, case.paths, batches, loss_fn,
                                   progress=bar.update if bar is not None else None)
            matrix = cosine_matrix(grads)
            records.append({**case.to_dict(), "og_params": sum(p.numel() for p in params),
                            "grad_norms": [float(g.norm()) for g in grads],
                            "matrix": matrix, "mean_off_diagonal": mean_off_diagonal(matrix)})
            if bar is not None:
                bar.set_postfix(m=case.m, j=case.layer, sim=f"{records[-1]['mean_off_diagonal']:.3f}")
    finally:
        if bar is not None:
            bar.close()

    summary = summarize(records, space.candidates, args.by_layer)
    os.makedirs(args.out, exist_ok=True)
    files = {"json": os.path.join(args.out, JSON_NAME)}
    where = (f"layer {args.layer}" if args.layer else
             "every layer" if args.by_layer else "a random layer per repeat")
    if "heatmap" in summary:
        files["heatmap"] = os.path.join(args.out, HEATMAP)
        n1 = sum(1 for r in records if r["m"] == 1)
        differ = f"layer {args.layer + 1}" if args.layer else "layer j+1"
        plot_heatmap(files["heatmap"], summary["heatmap"],
                     f"o_g in {where}, children differ in {differ} (m = 1)\n"
                     f"mean of {n1} cases, {used} sentences")
    files["similarity_vs_m"] = os.path.join(args.out, VS_M)
    ms = sorted(args.m)
    series = {"all cases": [summary["by_m"][str(m)] for m in ms]}
    if "by_m_common_layers" in summary:
        series["layers that fit every m"] = [summary["by_m_common_layers"][str(m)] for m in ms]
    plot_curve(files["similarity_vs_m"], ms, series, "m (layers the children differ in)",
               f"gradient similarity on o_g vs m (o_g in {where})")
    if args.by_layer:
        files["similarity_vs_layer"] = os.path.join(args.out, VS_LAYER)
        layers = sorted({r["layer"] for r in records})
        plot_curve(files["similarity_vs_layer"], layers,
                   {f"m = {m}": [summary["by_layer"][str(m)].get(str(j)) for j in layers]
                    for m in ms},
                   "j (o_g's layer, 1-based)", "gradient similarity on o_g vs its layer")
    for name in (HEATMAP, VS_M, VS_LAYER):
        stale = os.path.join(args.out, name)
        if stale not in files.values() and os.path.exists(stale):
            os.unlink(stale)

    result = {
        "tool": "magic-interference",
        "checkpoint": args.checkpoint,
        "layer_numbering": LAYER_NUMBERING,
        "mode": "eval (no dropout): the children's gradients differ only by their paths",
        "gradient": ("d(mean MLM loss per masked token)/d(o_g's weights: its whole candidate "
                     "sub-layer, LayerNorm included), flattened"),
        "config": {"m": args.m, "layer": args.layer, "by_layer": args.by_layer, "op": args.op,
                   "children": args.children, "repeats": args.repeats, "seed": args.seed,
                   "split": args.split, "data": args.data, "sentences_requested": args.sentences,
                   "batch_size": args.batch_size, "device": args.device},
        "batch": {"sentences": used, "masked_tokens": masked_tokens, "pieces": len(batches)},
        "space": space.state_dict(),
        "summary": summary,
        "cases": records,
        "files": {k: os.path.basename(v) for k, v in files.items()},
    }
    def dump(tmp):
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
            f.flush()
            os.fsync(f.fileno())

    _atomic_write(files["json"], dump)

    print(f"{'m':>3}  {'mean off-diag cos':>17}  {'std':>6}  {'cases':>5}")
    for m in ms:
        s = summary["by_m"][str(m)]
        print(f"{m:>3}  {s['mean']:>17.4f}  {s['std']:>6.3f}  {s['n']:>5}")
    if args.by_layer:
        for m in ms:
            row = "  ".join(f"j={j}: {s['mean']:.4f}" for j, s in summary["by_layer"][str(m)].items())
            print(f"m = {m} by layer: {row}")
    print(f"o_g in {where}; {used} '{args.split}' sentences ({masked_tokens} masked tokens); "
          f"{space}; results in {', '.join(files.values())}")
    return 0


def cli_main():
    run_main(main, "magic-interference")


if __name__ == "__main__":
    cli_main()
