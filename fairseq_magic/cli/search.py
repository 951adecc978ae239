"""magic-search: find the best child of a trained super-net under params/FLOPs bounds.

    magic-search CHECKPOINT --out DIR [--data DATA_BIN] [--strategy evolution|random]
        [--population 50 --parents 10 --mutation-prob 0.1 --mutation-num 25
         --crossover-num 25 --generations 20 | --samples 1000]
        [--min-params N --max-params N --min-flops N --max-flops N] [--seq-len 128]
        [--split valid --max-batches 8 --batch-size 16] [--seed 0] [--top-k 5]
        [--resume] [--finetune-steps 0 --finetune-lr 1e-4]

Children are scored with the super-net's shared weights (validation MLM loss in
bits per masked token on fixed batches, lower is better): SPOS evolutionary
search (Guo et al., 2020) or random search. ``--finetune-steps N`` scores each
candidate after N private Adam updates of its path on fixed training batches,
from a copy of the shared weights (the super-net itself is never modified).

DIR/search_state.json is rewritten after every generation (and on Ctrl-C);
``--resume`` continues from it. DIR/search.json holds the result (top-k children
with spec, score, params, FLOPs, and the history); DIR/search.png plots it.
"""

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import tempfile

from . import run_main
from ..core.search import Constraints, build_search
from ..core.space import MagicConfigError

STATE = "search_state.json"


def _number(text):
    """An integer bound such as 5000000, 5e6 or 5M."""
    t = text.strip().lower().replace("_", "").replace(",", "")
    mult = {"k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}.get(t[-1:], None)
    try:
        v = float(t[:-1]) * mult if mult else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number such as 5000000, 5e6 or 5M")
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number >= 0")
    return int(round(v))


def get_parser():
    p = argparse.ArgumentParser(prog="magic-search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a magic_supernet checkpoint (checkpoint_last.pt)")
    p.add_argument("--data", help="data-bin to score on (default: the one it trained on)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--strategy", default="evolution", choices=["evolution", "random"])
    g = p.add_argument_group("evolution (SPOS)")
    g.add_argument("--population", type=int, default=50)
    g.add_argument("--parents", type=int, default=10, help="top-k parents per generation")
    g.add_argument("--mutation-prob", type=float, default=0.1)
    g.add_argument("--mutation-num", type=int, default=25)
    g.add_argument("--crossover-num", type=int, default=25)
    g.add_argument("--generations", type=int, default=20)
    g = p.add_argument_group("random")
    g.add_argument("--samples", type=int, default=1000, help="children to score")
    g = p.add_argument_group("constraints (inclusive; accept 5e6, 5M, 2.9G)")
    for name in ("min-params", "max-params", "min-flops", "max-flops"):
        g.add_argument(f"--{name}", type=_number)
    p.add_argument("--seq-len", type=int, default=128, help="tokens for FLOPs counting")
    p.add_argument("--split", default="valid", help="data split to score on")
    p.add_argument("--max-batches", type=int, default=8, help="batches of the split")
    p.add_argument("--batch-size", type=int, default=16, help="sentences per batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top-k", type=int, default=5, help="children to report")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--resume", action="store_true", help=f"continue from DIR/{STATE}")
    p.add_argument("--finetune-steps", type=int, default=0,
                   help="private Adam updates per candidate before scoring (0: none)")
    p.add_argument("--finetune-lr", type=float, default=1e-4)
    p.add_argument("--finetune-split", default="train", help="split of the fine-tuning batches")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def _check_args(args):
    def need(ok, msg):
        if not ok:
            raise MagicConfigError(msg)

    need(args.seq_len >= 1, f"--seq-len {args.seq_len}: expected >= 1")
    need(args.max_batches >= 1, f"--max-batches {args.max_batches}: expected >= 1")
    need(args.batch_size >= 1, f"--batch-size {args.batch_size}: expected >= 1")
    need(args.top_k >= 1, f"--top-k {args.top_k}: expected >= 1")
    need(args.finetune_steps >= 0, f"--finetune-steps {args.finetune_steps}: expected >= 0")
    need(math.isfinite(args.finetune_lr) and args.finetune_lr > 0,
         f"--finetune-lr {args.finetune_lr}: expected a finite number > 0")
    need(math.isfinite(args.mutation_prob), f"--mutation-prob {args.mutation_prob}: expected 0 <= p <= 1")


def atomic_json(path, obj):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; results are for everyone who may read the folder
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run_config(args) -> dict:
    """What must match for --resume (beside the strategy's own config)."""
    return {"checkpoint": os.path.abspath(args.checkpoint),
            "data": os.path.abspath(args.data) if args.data else None,
            "seq_len": args.seq_len, "split": args.split, "max_batches": args.max_batches,
            "batch_size": args.batch_size, "finetune_steps": args.finetune_steps,
            "finetune_lr": args.finetune_lr if args.finetune_steps else None,
            "finetune_split": args.finetune_split if args.finetune_steps else None}


def candidate_seed(seed: int, spec: str) -> int:
    return int(hashlib.sha256(f"magic-finetune:{seed}:{spec}".encode()).hexdigest()[:15], 16)


class FinetuneScorer:
    """Score a child after N private Adam updates of its path (Insight 2 of the
    'deeper insights' paper: a short fine-tune improves ranking).

    Each candidate starts from the super-net's weights, copied into one scratch
    model (the super-net is never modified), trains on the same fixed training
    batches, with torch's RNG forked and seeded from (seed, spec): the score is
    a function of the candidate alone, whatever was scored before it."""

    def __init__(self, model, train_batches, valid_batches, steps, lr, seed, device):
        self.model, self.train_batches, self.valid_batches = model, train_batches, valid_batches
        self.steps, self.lr, self.seed, self.device = steps, lr, seed, device
        self.scratch = copy.deepcopy(model)
        self.pad = model.encoder.dictionary.pad()

    def __call__(self, arch) -> float:
        import torch

        from ..model_utils import mlm_loss
        from ..evaluation import score_child

        scratch = self.scratch
        with torch.no_grad():
            scratch.load_state_dict(self.model.state_dict())
        devices = [torch.cuda.current_device()] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(candidate_seed(self.seed, str(arch)))
            scratch.set_active_path(arch)
            scratch.train()
            params = [p for p in scratch.parameters() if p.requires_grad]
            opt = torch.optim.Adam(params, lr=self.lr)
            for step in range(self.steps):
                sample = self.train_batches[step % len(self.train_batches)]
                loss, n, _ = mlm_loss(scratch, sample, self.pad)
                (loss / max(n, 1)).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            del opt
            return score_child(scratch, arch, self.valid_batches)


def plot(path, result):
    import logging

    # before the import: matplotlib logs its set-up at DEBUG on import
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib


    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    hist = result["history"]
    a.plot([h["generation"] for h in hist], [h["best_score"] for h in hist], "o-")
    a.set_xlabel("generation" if result["config"]["strategy"] == "evolution" else "batch of samples")
    a.set_ylabel("best valid loss (bits)")
    a.set_title(f"{result['config']['strategy']} search: best child")
    a.grid(alpha=0.3)
    a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    a.ticklabel_format(axis="y", useOffset=False)
    ev = result["evaluated"]
    b.scatter([r["params"] for r in ev], [r["score"] for r in ev], s=10, alpha=0.5,
              c=[r["generation"] for r in ev], cmap="viridis", label="evaluated")
    top = result["top_k"]
    b.scatter([r["params"] for r in top], [r["score"] for r in top], s=60,
              facecolors="none", edgecolors="red", linewidths=1.5, label=f"top-{len(top)}")
    c = result["constraints"]
    for key, style in (("min_params", ":"), ("max_params", "--")):
        if c.get(key) is not None:
            b.axvline(c[key], color="gray", linestyle=style, label=key.replace("_", " "))
    b.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    b.ticklabel_format(axis="y", useOffset=False)
    b.set_xlabel("parameters")
    b.set_ylabel("valid loss (bits)")
    b.set_title(f"{len(ev)} children evaluated")
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    args = get_parser().parse_args(argv)
    _check_args(args)
    from ..evaluation import fixed_batches, load_supernet, score_child

    state_path = os.path.join(args.out, STATE)
    saved = None
    if os.path.exists(state_path):
        if not args.resume:
            raise MagicConfigError(
                f"{state_path} exists: pass --resume to continue that search, or choose "
                "another --out")
        with open(state_path) as f:
            saved = json.load(f)
        if saved.get("run") != run_config(args):
            mine, theirs = run_config(args), saved.get("run") or {}
            diff = "; ".join(f"{k}: saved {theirs.get(k)!r} vs now {mine.get(k)!r}"
                             for k in sorted(mine) if mine.get(k) != theirs.get(k))
            raise MagicConfigError(f"--resume: the saved search used other settings ({diff})")
    elif args.resume:
        print(f"magic-search: no {state_path} yet: starting a new search", file=sys.stderr)

    model, task, _, _ = load_supernet(args.checkpoint, args.data, args.device)
    # only now: a checkpoint that does not load must leave no empty --out behind
    os.makedirs(args.out, exist_ok=True)
    space = model.search_space
    constraints = Constraints(args.min_params, args.max_params, args.min_flops, args.max_flops)

    def cost_fn(arch):
        return model.child_cost(arch, args.seq_len)

    if args.strategy == "evolution":
        kw = dict(population=args.population, parents=args.parents,
                  mutation_prob=args.mutation_prob, mutation_num=args.mutation_num,
                  crossover_num=args.crossover_num, generations=args.generations)
    else:
        kw = dict(samples=args.samples)
    search = build_search(args.strategy, space, constraints, cost_fn, seed=args.seed, **kw)
    if saved is not None:
        search.load_state_dict(saved["search"])

    def save_state():
        atomic_json(state_path, {"run": run_config(args), "search": search.state_dict()})

    lazy = {}

    def score_fn(arch):
        if "fn" not in lazy:  # build the batches only if something is scored
            valid = fixed_batches(task, args.split, args.max_batches, args.batch_size,
                                  args.device)
            if args.finetune_steps:
                train = fixed_batches(task, args.finetune_split,
                                      min(args.finetune_steps, 64), args.batch_size,
                                      args.device)
                lazy["fn"] = FinetuneScorer(model, train, valid, args.finetune_steps,
                                            args.finetune_lr, args.seed, args.device)
            else:
                lazy["fn"] = lambda a: score_child(model, a, valid)
        return lazy["fn"](arch)

    total = search._num_generations() + 1
    bar = None
    if not args.no_progress and not search.done:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=search.generation, desc="magic-search",
                   unit="gen", file=sys.stderr, dynamic_ncols=True)

    def progress(entry):
        save_state()
        line = (f"generation {entry['generation']}: best {entry['best_score']:.4f} "
                f"({entry['best_spec']}), {entry['evaluations']} evaluated")
        if bar is not None:
            bar.write(line, file=sys.stderr)
            bar.set_postfix(best=f"{entry['best_score']:.4f}", evals=entry["evaluations"])
            bar.update(1)

    try:
        search.run(score_fn, progress=progress)
    except KeyboardInterrupt:
        save_state()  # keeps the unfinished generation's scores: --resume continues
        print(f"magic-search: interrupted; state saved to {state_path}", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    save_state()

    result = {
        "checkpoint": args.checkpoint,
        "config": {**search.config(), **run_config(args)},
        "space": space.state_dict(),
        "constraints": constraints.state_dict(),
        "achievable": {k: list(v) for k, v in search.achievable.items()},
        "num_evaluations": search.num_evaluations,
        "top_k": search.top_k(args.top_k),
        "history": search.history,
        "evaluated": search.all_evaluated(),
    }
    result["config"].pop("space", None)
    atomic_json(os.path.join(args.out, "search.json"), result)
    plot(os.path.join(args.out, "search.png"), result)

    top = result["top_k"]
    width = max([len(r["spec"]) for r in top] + [5])
    print(f"{'child':<{width}}  {'valid_loss':>10}  {'params':>12}  {'FLOPs@' + str(args.seq_len):>10}")
    for r in top:
        print(f"{r['spec']:<{width}}  {r['score']:>10.4f}  {r['params']:>12,}  {r['flops']:>10.3g}")
    print(f"{args.strategy} search over {space}: {search.num_evaluations} children "
          f"evaluated; results in {args.out}/search.json and search.png")
    return 0


def cli_main():
    run_main(main, "magic-search")


if __name__ == "__main__":
    cli_main()
