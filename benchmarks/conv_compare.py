#!/usr/bin/env python3
"""Our separable convolution (``conv<K>``) vs NAS-BERT's (``nbconv<K>``) at
(nearly) equal parameters: validation MLM loss after a fixed budget, and update
time measured side by side.

Two children of the same depth that differ only in the convolution design,
e.g. ``conv3,ffn,conv5,ffn,...`` vs ``nbconv3,ffn,nbconv5,ffn,...`` (12 layers,
hidden 128: the tiny preset's width). Both designs hold two h x h maps per
convolution layer, so their sizes differ only by the depthwise kernel and
LayerNorm of NAS-BERT's second sub-layer (the table gives the exact counts).

* Quality: each child is trained with ``fairseq-train --task masked_lm --arch
  magic_child_tiny`` on the KJV data-bin with the recipe of
  ``/work/shared/notes/downstream-facts.md`` ("64 x 32 tokens": one verse per
  sample, ``--sample-break-mode eos``, 64 sentences per update, Adam (0.9, 0.98),
  lr 5e-4, 100 warm-up, polynomial decay over the run, clip 1.0, dropout 0.1),
  once per seed; the validation loss (bits per masked token) is read at every
  ``--valid-every`` updates. Runs go one at a time with one thread, the order of
  the two designs alternating from seed to seed so machine load drifts hit both.
  fairseq's ``eos`` break mode calls ``np.compat.long``, gone in NumPy 2: the
  training subprocess restores that one alias before fairseq starts.
* Speed: both children built in this process (``magic_child``, RoBERTa's BERT
  init), one thread, random 64 x 32-token MLM batches; ``--rounds`` rounds, each
  running ``--updates-per-round`` updates (zero_grad, forward + MLM loss,
  backward, Adam step) of each child, the order alternating per round. The
  1-minute load average is recorded at every round: the machine is shared, and
  the ratio of the two medians is the number to read, not the absolute times.

Writes ``benchmarks/results/conv_compare.json`` and its own section of
``benchmarks/RESULTS.md``. Usage::

    OMP_NUM_THREADS=1 python benchmarks/conv_compare.py            # ~40 min on a busy 2-core machine
    python benchmarks/conv_compare.py --updates 50 --seeds 1 --rounds 2 \\
        --json-out /tmp/c.json --results-md /tmp/c.md              # a smoke run
"""

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from argparse import Namespace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, REPO)

import torch  # noqa: E402

from benchmarks.common import host_info, load_avg, write_json, write_markdown  # noqa: E402
from benchmarks.harness import (header_lines, machine_line, md_section,  # noqa: E402
                                run_stamp, time_interleaved, torch_isolated)
from fairseq_magic.core.cost import child_cost  # noqa: E402
from fairseq_magic.core.space import MagicConfigError, parse_arch_spec  # noqa: E402

DEFAULT_DATA = os.path.join(REPO, "data", "kjv", "data-bin")
DEFAULT_JSON = os.path.join(REPO, "benchmarks", "results", "conv_compare.json")
DEFAULT_MD = os.path.join(REPO, "benchmarks", "RESULTS.md")
MD_BEGIN = "<!-- conv_compare:begin -->"
MD_END = "<!-- conv_compare:end -->"

# fairseq-train, with the one NumPy 2 alias fairseq's eos break mode still uses.
TRAIN_SHIM = (
    "import sys, types; import numpy as np\n"
    "if not hasattr(np, 'compat'): np.compat = types.SimpleNamespace(long=np.int64)\n"
    "from fairseq_cli.train import cli_main\n"
    "sys.argv = ['fairseq-train'] + sys.argv[1:]\n"
    "cli_main()\n")
VALID_LINE = re.compile(r"\| valid \| (\{.*\})\s*$")
PARAMS_LINE = re.compile(r"num\. shared model params: ([\d,]+)")


def alternating(conv: str, layers: int) -> str:
    """conv3,ffn,conv5,ffn,... over ``layers`` layers (``conv`` is the name stem)."""
    ops = [f"{conv}3", "ffn", f"{conv}5", "ffn"]
    return ",".join(ops[i % 4] for i in range(layers))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="fairseq data-bin (make demo's KJV)")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--spec-a", default=None,
                   help="the conv<K> child; default conv3,ffn,conv5,ffn,... over --layers")
    p.add_argument("--spec-b", default=None,
                   help="the nbconv<K> child; default nbconv3,ffn,nbconv5,ffn,...")
    p.add_argument("--seeds", default="1,2,3", help="fairseq --seed of each training run")
    p.add_argument("--updates", type=int, default=1000)
    p.add_argument("--valid-every", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tokens", type=int, default=32, help="--tokens-per-sample")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=12, help="timed rounds (speed part)")
    p.add_argument("--updates-per-round", type=int, default=5)
    p.add_argument("--warmup-updates-timed", type=int, default=3,
                   help="untimed updates per child before the timed rounds")
    p.add_argument("--parts", default="train,speed", help="train, speed, or both")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per training run")
    p.add_argument("--json-out", default=DEFAULT_JSON)
    p.add_argument("--results-md", default=DEFAULT_MD)
    args = p.parse_args(argv)
    for name in ("layers", "hidden", "updates", "valid_every", "batch_size", "tokens",
                 "rounds", "updates_per_round"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: expected >= 1")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds {args.seeds!r}: expected a comma list of integers")
    if not args.seeds or len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds {args.seeds!r}: expected distinct integers")
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    if not args.parts or set(args.parts) - {"train", "speed"}:
        p.error(f"--parts {','.join(args.parts)!r}: expected train, speed or train,speed")
    args.spec_a = args.spec_a or alternating("conv", args.layers)
    args.spec_b = args.spec_b or alternating("nbconv", args.layers)
    try:
        a = parse_arch_spec(args.spec_a, args.hidden)
        b = parse_arch_spec(args.spec_b, args.hidden)
    except MagicConfigError as e:
        p.error(str(e))
    if len(a) != len(b):
        p.error(f"--spec-a has {len(a)} layers, --spec-b {len(b)}: expected the same depth")
    if "train" in args.parts and not os.path.isfile(os.path.join(args.data, "dict.txt")):
        p.error(f"--data {args.data}: no dict.txt there (run `make demo`'s corpus step)")
    return args


def vocab_size(data: str) -> int:
    """Dictionary size as masked_lm builds it: 4 specials + dict.txt + <mask>."""
    with open(os.path.join(data, "dict.txt")) as f:
        return 4 + sum(1 for line in f if line.strip()) + 1


# ---------------------------------------------------------------- quality

def train_command(args, spec: str, seed: int, save_dir: str):
    return [
        sys.executable, "-c", TRAIN_SHIM, args.data,
        "--user-dir", os.path.join(REPO, "fairseq_magic"),
        "--task", "masked_lm", "--criterion", "masked_lm",
        "--arch", "magic_child_tiny", "--magic-arch", spec,
        "--encoder-embed-dim", str(args.hidden),
        "--tokens-per-sample", str(args.tokens), "--sample-break-mode", "eos",
        "--skip-invalid-size-inputs-valid-test", "--batch-size", str(args.batch_size),
        "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-6",
        "--clip-norm", "1.0", "--weight-decay", "0.01", "--lr", str(args.lr),
        "--lr-scheduler", "polynomial_decay", "--warmup-updates", str(args.warmup),
        "--total-num-update", str(args.updates), "--max-update", str(args.updates),
        "--dropout", str(args.dropout), "--attention-dropout", str(args.dropout),
        "--validate-interval-updates", str(args.valid_every),
        "--cpu", "--num-workers", "0", "--seed", str(seed), "--no-save",
        "--save-dir", save_dir, "--log-format", "json", "--log-interval", "100",
    ]


def run_training(args, spec: str, seed: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    with tempfile.TemporaryDirectory(prefix="conv_compare_") as save_dir:
        cmd = train_command(args, spec, seed, save_dir)
        load0, t0 = load_avg(), time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=args.timeout, cwd=REPO)
        wall = time.time() - t0
    out = proc.stdout + proc.stderr
    valid = {}
    for line in out.splitlines():
        m = VALID_LINE.search(line)
        if m:
            rec = json.loads(m.group(1))
            valid[int(float(rec["valid_num_updates"]))] = float(rec["valid_loss"])
    if proc.returncode != 0 or args.updates not in valid:
        shown = " ".join(shlex.quote(c) for c in cmd[3:])
        raise RuntimeError(f"training {spec} seed {seed} failed (exit {proc.returncode}, "
                           f"validated at {sorted(valid)}):\nfairseq-train {shown}\n"
                           f"{out[-4000:]}")
    m = PARAMS_LINE.search(out)
    params = int(m.group(1).replace(",", "")) if m else None
    return {"seed": seed, "valid_loss": valid, "params": params, "wall_s": round(wall, 1),
            "load_avg_start": load0, "load_avg_end": load_avg()}


def run_quality(args) -> dict:
    runs = {"a": [], "b": []}
    for i, seed in enumerate(args.seeds):
        order = ("a", "b") if i % 2 == 0 else ("b", "a")
        for key in order:
            spec = args.spec_a if key == "a" else args.spec_b
            print(f"[conv_compare] training {spec} seed {seed}", flush=True)
            r = run_training(args, spec, seed)
            print(f"[conv_compare]   valid {r['valid_loss']} in {r['wall_s']} s, "
                  f"load {r['load_avg_start']:.2f} -> {r['load_avg_end']:.2f}", flush=True)
            runs[key].append(r)
    summary = {}
    for key, rs in runs.items():
        per_step = {}
        for step in sorted(rs[0]["valid_loss"]):
            vals = [r["valid_loss"][step] for r in rs]
            per_step[step] = {
                "mean": statistics.fmean(vals),
                "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "min": min(vals), "max": max(vals), "values": vals}
        summary[key] = per_step
    final = args.updates
    diffs = [rb["valid_loss"][final] - ra["valid_loss"][final]
             for ra, rb in zip(sorted(runs["a"], key=lambda r: r["seed"]),
                               sorted(runs["b"], key=lambda r: r["seed"]))]
    return {"runs": runs, "summary": summary,
            "paired_diff_b_minus_a": {"values": diffs, "mean": statistics.fmean(diffs)}}


# ---------------------------------------------------------------- speed

def build_child(args, spec: str, vocab: int):
    from fairseq.data import Dictionary

    import fairseq_magic  # noqa: F401  (registers the models)
    from fairseq_magic.models.magic_supernet import MagicChildModel

    d = Dictionary()
    while len(d) < vocab - 1:
        d.add_symbol(f"w{len(d)}")
    d.add_symbol("<mask>")
    cfg = Namespace(encoder_layers=len(spec.split(",")), encoder_embed_dim=args.hidden,
                    magic_ops=",".join(dict.fromkeys(spec.split(","))), magic_arch=spec,
                    magic_embed_dim=0, dropout=args.dropout, attention_dropout=args.dropout,
                    activation_dropout=0.0, pooler_dropout=0.0, pooler_activation_fn="tanh",
                    max_positions=args.tokens)
    task = Namespace(source_dictionary=d, dictionary=d,
                     cfg=Namespace(tokens_per_sample=args.tokens))
    return d, MagicChildModel.build_model(cfg, task).train()


def make_batches(args, d, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo, mask, pad = d.nspecial, d.index("<mask>"), d.pad()
    out = []
    for _ in range(n):
        tokens = torch.randint(lo, mask, (args.batch_size, args.tokens), generator=g)
        chosen = torch.rand(tokens.shape, generator=g) < 0.15
        chosen[0, 0] = True
        src = tokens.masked_fill(chosen, mask)
        out.append({"net_input": {"src_tokens": src},
                    "target": torch.where(chosen, tokens, torch.full_like(tokens, pad))})
    return out


def run_speed(args, vocab: int) -> dict:
    from fairseq_magic.model_utils import mlm_loss

    with torch_isolated(threads=1):
        torch.manual_seed(0)
        models = {}
        for key, spec in (("a", args.spec_a), ("b", args.spec_b)):
            d, model = build_child(args, spec, vocab)
            opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98),
                                   eps=1e-6, weight_decay=0.01)
            models[key] = (model, opt)
        batches = make_batches(args, d)
        pad = d.pad()

        def step(key):
            model, opt = models[key]

            def one_update(i):
                opt.zero_grad(set_to_none=True)
                loss, size, _ = mlm_loss(model, batches[i % len(batches)], pad)
                (loss / size).backward()
                opt.step()
            return one_update

        loads = []
        t = time_interleaved({k: step(k) for k in models}, args.rounds,
                             args.updates_per_round, args.warmup_updates_timed,
                             between_rounds=lambda r: loads.append(load_avg()))
    return {
        "median_update_ms": t.ms("median"),
        "quartiles_update_ms": t.quartiles_ms(),
        "min_update_ms": t.ms("min"),
        "ratio_b_over_a": t.ratio("b", "a"),
        "updates_timed_per_model": t.timed_per_name,
        "load_avg_per_round": loads,
        "threads": 1, "batch_size": args.batch_size, "tokens": args.tokens,
    }


# ---------------------------------------------------------------- report

def markdown_section(res: dict) -> str:
    a, b = res["spec_a"], res["spec_b"]
    ca, cb = res["cost"]["a"], res["cost"]["b"]
    kept = " ".join(
        f"({what} from `{res[key]}`)"
        for key, what in (("quality_command", "validation losses"),
                          ("speed_command", "update times"))
        if res.get(key, res["command"]) != res["command"])
    lines = header_lines(res["command"], res["date"],
                         machine_line(res["host"], note="shared with other jobs"), kept) + [
        f"- Children ({res['layers']} layers, hidden {res['hidden']}): A = `{a}`; "
        f"B = `{b}`",
        "",
        "| child | parameters | FLOPs / sequence |",
        "|---|---:|---:|",
        f"| A (`conv<K>`) | {ca['params']:,} | {ca['flops']:.3e} |",
        f"| B (`nbconv<K>`) | {cb['params']:,} | {cb['flops']:.3e} |",
        "",
        f"FLOPs at {res['tokens']} tokens; B/A parameters "
        f"{cb['params'] / ca['params']:.4f}, FLOPs {cb['flops'] / ca['flops']:.4f}.",
    ]
    q = res.get("quality")
    if q:
        t = res["train"]
        # Epoch ends validate too; the table shows the fixed checkpoints.
        every = t.get("valid_every") or 1
        steps = [k for k in sorted(q["summary"]["a"], key=int)
                 if int(k) % every == 0 or int(k) == t["updates"]]
        lines += [
            "",
            f"**Validation MLM loss** (bits per masked token, KJV valid split; lower is "
            f"better): `fairseq-train --task masked_lm --arch magic_child_tiny`, "
            f"{t['batch_size']} x {t['tokens']} tokens (`--sample-break-mode eos`), "
            f"Adam (0.9, 0.98), lr {t['lr']}, {t['warmup']} warm-up, polynomial decay over "
            f"{t['updates']} updates, clip 1.0, dropout {t['dropout']}, 1 thread, seeds "
            f"{', '.join(str(s) for s in t['seeds'])}:",
            "",
            "| child | " + " | ".join(f"{s} updates: mean (sd) [min, max]" for s in steps)
            + " | per seed at the end |",
            "|---|" + "---:|" * len(steps) + "---|",
        ]
        for key, name in (("a", "A (`conv<K>`)"), ("b", "B (`nbconv<K>`)")):
            cells = []
            for s in steps:
                st = q["summary"][key][s]
                cells.append(f"{st['mean']:.3f} ({st['sd']:.3f}) [{st['min']:.3f}, "
                             f"{st['max']:.3f}]")
            final = q["summary"][key][steps[-1]]["values"]
            lines.append(f"| {name} | " + " | ".join(cells) + " | "
                         + ", ".join(f"{v:.3f}" for v in final) + " |")
        d = q["paired_diff_b_minus_a"]
        loads = [r["load_avg_start"] for k in ("a", "b") for r in q["runs"][k]]
        walls = {k: statistics.fmean(r["wall_s"] for r in q["runs"][k]) for k in ("a", "b")}
        lines += [
            "",
            f"B - A at {steps[-1]} updates, same seed: "
            + ", ".join(f"{v:+.3f}" for v in d["values"]) + f" (mean {d['mean']:+.3f}).",
            f"Training runs took {walls['a']:.0f} s (A) and {walls['b']:.0f} s (B) on "
            f"average, one at a time; 1-min load average at their starts "
            f"{min(loads):.2f}-{max(loads):.2f} (wall times are contended, not speeds).",
        ]
    s = res.get("speed")
    if s:
        loads = s["load_avg_per_round"]
        lines += [
            "",
            f"**Update time**, side by side in one process (1 thread, batch "
            f"{s['batch_size']} x {s['tokens']} random tokens, Adam): "
            f"{s['updates_timed_per_model']} timed updates per child in interleaved rounds; "
            f"1-min load average during the rounds {min(loads):.2f}-{max(loads):.2f} "
            f"(2 cores: above ~1 another job shared the core).",
            "",
            "| child | median update (ms) | quartiles (ms) | min (ms) |",
            "|---|---:|---:|---:|",
        ]
        for key, name in (("a", "A (`conv<K>`)"), ("b", "B (`nbconv<K>`)")):
            qs = s["quartiles_update_ms"][key]
            lines.append(f"| {name} | {s['median_update_ms'][key]:.1f} | "
                         f"{qs[0]:.1f}-{qs[2]:.1f} | {s['min_update_ms'][key]:.1f} |")
        lines += ["", f"Median ratio B / A: {s['ratio_b_over_a']:.3f}."]
    return md_section(
        MD_BEGIN, MD_END,
        "conv_compare: our separable conv (`conv<K>`) vs NAS-BERT's (`nbconv<K>`)", lines)


def keep_previous_parts(args, res: dict) -> None:
    """A part not run this time keeps its last result, when that was measured on
    the same two children (so ``--parts speed`` on a quieter machine does not
    throw away an hour of training)."""
    if not os.path.exists(args.json_out):
        return
    with open(args.json_out) as f:
        old = json.load(f).get("conv_compare")
    same = old and all(old.get(k) == res[k] for k in ("spec_a", "spec_b", "hidden", "tokens"))
    if not same:
        return
    if "speed" not in res and "speed" in old:
        res["speed"] = old["speed"]
        res["speed_command"] = old.get("speed_command", old["command"])
    if "quality" not in res and "quality" in old:
        res["quality"] = old["quality"]
        res["train"] = old["train"]
        res["quality_command"] = old.get("quality_command", old["command"])
        # JSON turned the update counts into strings
        for runs in res["quality"]["runs"].values():
            for r in runs:
                r["valid_loss"] = {int(k): v for k, v in r["valid_loss"].items()}
        res["quality"]["summary"] = {
            key: {int(k): v for k, v in steps.items()}
            for key, steps in res["quality"]["summary"].items()}
    if "speed" in res and "speed_command" not in res:
        res["speed_command"] = res["command"]
    if "quality" in res and "quality_command" not in res:
        res["quality_command"] = res["command"]


def main(argv=None):
    args = parse_args(argv)
    vocab = vocab_size(args.data) if os.path.isfile(os.path.join(args.data, "dict.txt")) \
        else 4005
    positions = args.tokens + 2  # magic_child's table: max_positions + padding_idx + 1
    res = {
        **run_stamp(__file__, sys.argv[1:] if argv is None else argv),
        "host": host_info(), "layers": args.layers, "hidden": args.hidden,
        "tokens": args.tokens, "spec_a": args.spec_a, "spec_b": args.spec_b,
        "cost": {k: child_cost(s.split(","), args.hidden, vocab, positions,
                               seq_len=args.tokens)
                 for k, s in (("a", args.spec_a), ("b", args.spec_b))},
        "train": {"batch_size": args.batch_size, "tokens": args.tokens, "lr": args.lr,
                  "warmup": args.warmup, "updates": args.updates, "dropout": args.dropout,
                  "valid_every": args.valid_every, "seeds": args.seeds},
    }
    if "speed" in args.parts:
        print("[conv_compare] timing both children side by side", flush=True)
        res["speed"] = run_speed(args, vocab)
        print(f"[conv_compare]   median ms {res['speed']['median_update_ms']}", flush=True)
    if "train" in args.parts:
        res["quality"] = run_quality(args)
        for key in ("a", "b"):
            # fairseq's own count of the model it trained vs the cost model
            counted = {r["params"] for r in res["quality"]["runs"][key]}
            if counted != {res["cost"][key]["params"]}:
                raise RuntimeError(f"child {key}: fairseq counted {sorted(counted)} "
                                   f"parameters, cost model {res['cost'][key]['params']}")
    keep_previous_parts(args, res)
    write_json(args.json_out, {"conv_compare": res})
    write_markdown(args.results_md, markdown_section(res), MD_BEGIN, MD_END)
    print(markdown_section(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
