#!/usr/bin/env python3
"""Super-net vs child: how much does weight sharing cost per update?

The super-net holds every candidate operator in every layer but runs one path
per forward, so an update on a fixed path should cost what the same child costs
as a static model. This benchmark measures it, in one process and side by side:

    supernet_over_child = median update time of ``magic_supernet`` on PATH
                          / median update time of ``magic_child --magic-arch PATH``

(target: <= 1.05). One "update" is what fairseq-train does per step, minus the
data loading: zero_grad(set_to_none) -> forward + MLM loss on the masked
positions (the criterion's own ``mlm_loss``) -> backward -> Adam step.

Both models are built through fairseq's real path (``build_model(cfg, task)``,
RoBERTa's BERT init, the registered model classes), and the child gets the
super-net's weights through ``child_state_dict(PATH)`` so the two compute the
same function; the script asserts that before timing anything.

Usage (defaults: the tiny preset, sized to finish in 1-2 minutes on 2 cores)::

    python benchmarks/step_overhead.py [--device cuda] [--check]

Writes ``benchmarks/results/step_overhead.json`` (merged, other keys kept) and
replaces its own section of ``benchmarks/RESULTS.md``. Exit code 0 whatever the
ratio; with ``--check``, 1 when the ratio is over the target.
"""

import argparse
import datetime
import gc
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from argparse import Namespace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, REPO)

import torch  # noqa: E402
from fairseq.data import Dictionary  # noqa: E402

import fairseq_magic  # noqa: E402,F401  (registers models/criterion with fairseq)
from fairseq_magic.criterions.magic_alignment import mlm_loss  # noqa: E402
from fairseq_magic.models.magic_supernet import (  # noqa: E402
    MagicChildModel,
    MagicSupernetModel,
)

TARGET = 1.05
DEFAULT_OPS = "mha2,ffn,conv3,conv5"
DEFAULT_LAYERS = 8
# A fixed, mixed path using every candidate kind at least once (the tiny preset).
DEFAULT_PATH = "mha2,ffn,conv3,ffn,mha2,conv5,ffn,mha2"
DEFAULT_JSON = os.path.join("benchmarks", "results", "step_overhead.json")
DEFAULT_MD = os.path.join("benchmarks", "RESULTS.md")
MD_BEGIN = "<!-- step_overhead:begin -->"
MD_END = "<!-- step_overhead:end -->"
MD_HEADER = ("# Benchmark results\n\n"
             "Every section below is written by the script it names, from a real run;\n"
             "rerunning a script replaces its section. Do not edit the numbers by hand.\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--layers", type=int, default=DEFAULT_LAYERS)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--ops", default=DEFAULT_OPS, help="candidate operators (--magic-ops)")
    p.add_argument("--path", default=None,
                   help=f"the fixed child (one op per layer); default: {DEFAULT_PATH} "
                        "for the default ops/layers, else the ops cycled over the layers")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab", type=int, default=4000,
                   help="dictionary size, special symbols and <mask> included")
    p.add_argument("--rounds", type=int, default=20,
                   help="timed rounds per model (rounds alternate between the models)")
    p.add_argument("--updates-per-round", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5, help="untimed updates per model first")
    p.add_argument("--batches", type=int, default=8,
                   help="distinct random batches, cycled (the same ones for both models)")
    p.add_argument("--optimizer", choices=["fairseq_adam", "adamw"], default="fairseq_adam",
                   help="fairseq_adam: what `fairseq-train --optimizer adam` builds "
                        "(FairseqAdam); adamw: torch.optim.AdamW")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads; 0 = leave torch's default")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json-out", default=None,
                   help=f"default: {DEFAULT_JSON} in the repository")
    p.add_argument("--results-md", default=None,
                   help=f"default: {DEFAULT_MD} in the repository")
    p.add_argument("--check", action="store_true",
                   help=f"exit 1 when the median ratio is over the target ({TARGET})")
    args = p.parse_args(argv)
    for name in ("layers", "hidden", "batch_size", "seq_len", "rounds",
                 "updates_per_round", "batches"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.vocab < 8:
        p.error("--vocab must be >= 8 (4 special symbols, <mask>, some words)")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    return args


def default_path(args) -> str:
    if args.path:
        return args.path
    if args.layers == DEFAULT_LAYERS and args.ops == DEFAULT_OPS:
        return DEFAULT_PATH
    ops = [o.strip() for o in args.ops.split(",")]
    return ",".join(ops[i % len(ops)] for i in range(args.layers))


# ---------------------------------------------------------------- building

def make_dictionary(vocab: int) -> Dictionary:
    """A fairseq Dictionary of exactly ``vocab`` symbols ending with <mask>,
    laid out like a data-bin's dict.txt after MaskedLMTask adds <mask>."""
    d = Dictionary()  # <s> <pad> </s> <unk>
    for i in range(vocab - len(d) - 1):
        d.add_symbol(f"w{i}")
    d.add_symbol("<mask>")
    assert len(d) == vocab, (len(d), vocab)
    return d


def model_cfg(args, arch=None) -> Namespace:
    """The fields of MagicSupernetConfig (+ magic_arch for MagicChildConfig),
    as argparse would hand them to ``build_model``."""
    cfg = Namespace(
        encoder_layers=args.layers, encoder_embed_dim=args.hidden, magic_ops=args.ops,
        magic_embed_dim=0, dropout=args.dropout, attention_dropout=args.dropout,
        activation_dropout=0.0, pooler_dropout=0.0, pooler_activation_fn="tanh",
        max_positions=args.seq_len)
    if arch is not None:
        cfg.magic_arch = arch
    return cfg


def build_models(args, path: str, device):
    dictionary = make_dictionary(args.vocab)
    # The only things build_model reads from the task.
    task = Namespace(source_dictionary=dictionary, dictionary=dictionary,
                     cfg=Namespace(tokens_per_sample=args.seq_len))
    torch.manual_seed(args.seed)
    supernet = MagicSupernetModel.build_model(model_cfg(args), task)
    supernet.set_active_path(path)
    child = MagicChildModel.build_model(model_cfg(args, path), task)
    # Same weights => same function: the child is the super-net's path.
    child.load_state_dict(supernet.child_state_dict(path), strict=True)
    return dictionary, supernet.to(device).train(), child.to(device).train()


def build_optimizer(args, model):
    # The optimizer gets ALL of model.parameters(): for the super-net that is every
    # candidate of every layer, as in real super-net training (fairseq builds its
    # optimizer once, over the whole model). Candidates off the path have
    # .grad None and must be skipped; if anything still walks them (a per-param
    # Python loop, zero-filled grads, weight decay), this is where it shows up.
    params = [p for p in model.parameters() if p.requires_grad]
    lr, betas, eps, wd = 1e-4, (0.9, 0.98), 1e-6, 0.01  # RoBERTa's recipe
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    from fairseq.optim.adam import FairseqAdam

    cfg = Namespace(lr=[lr], adam_betas=str(betas), adam_eps=eps, weight_decay=wd,
                    use_old_adam=False, fp16_adam_stats=False, tpu=False)
    return FairseqAdam(cfg, params)


def zero_grad(optimizer):
    if isinstance(optimizer, torch.optim.Optimizer):
        optimizer.zero_grad(set_to_none=True)
    else:  # FairseqOptimizer.zero_grad sets every p.grad = None
        optimizer.zero_grad()


def make_batches(args, dictionary, device):
    """Random MLM batches, BERT-style masking: 15% of the tokens are predicted;
    of those 80% become <mask>, 10% a random word, 10% stay. No padding."""
    g = torch.Generator().manual_seed(args.seed + 1000)
    lo, mask_idx, pad = dictionary.nspecial, dictionary.index("<mask>"), dictionary.pad()
    batches = []
    for _ in range(args.batches):
        tokens = torch.randint(lo, mask_idx, (args.batch_size, args.seq_len), generator=g)
        chosen = torch.rand(tokens.shape, generator=g) < 0.15
        chosen[0, 0] = True  # never an empty target
        target = torch.where(chosen, tokens, torch.full_like(tokens, pad))
        r = torch.rand(tokens.shape, generator=g)
        src = tokens.clone()
        src[chosen & (r < 0.8)] = mask_idx
        rand_pos = chosen & (r >= 0.8) & (r < 0.9)
        src[rand_pos] = torch.randint(lo, mask_idx, (int(rand_pos.sum()),), generator=g)
        batches.append({"net_input": {"src_tokens": src.to(device)},
                        "target": target.to(device)})
    return batches


# ---------------------------------------------------------------- one update

def update(model, optimizer, sample, padding_idx):
    """One training update, as fairseq-train does it (less data loading)."""
    zero_grad(optimizer)
    loss, sample_size, _ = mlm_loss(model, sample, padding_idx)
    (loss / max(sample_size, 1)).backward()
    optimizer.step()
    return loss


def check_same_function(supernet, child, sample, padding_idx, seed):
    """Forward/backward both models on the same batch with the same dropout
    stream; the losses must match before any timing means anything."""
    out = {}
    for name, model in (("supernet", supernet), ("child", child)):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)  # same dropout masks: both draw them in the same order
        loss, n, _ = mlm_loss(model, sample, padding_idx)
        (loss / n).backward()
        out[name] = float(loss.detach()) / n
    diff = abs(out["supernet"] - out["child"])
    if not diff <= 1e-5:
        raise AssertionError(
            f"super-net and child disagree on the first batch: per-token MLM loss "
            f"{out['supernet']:.8f} vs {out['child']:.8f} (|diff| {diff:.2e} > 1e-5)")
    sup_params = dict(supernet.named_parameters())
    grad_diff = 0.0
    for k, p in child.named_parameters():
        q = sup_params[k]
        if (p.grad is None) != (q.grad is None):
            raise AssertionError(f"{k}: gradient present in only one model")
        if p.grad is not None:
            grad_diff = max(grad_diff, float((p.grad - q.grad).abs().max()))
    child_keys = set(dict(child.named_parameters()))
    off_path_with_grad = [k for k, p in supernet.named_parameters()
                          if k not in child_keys and p.grad is not None]
    if off_path_with_grad:
        raise AssertionError(f"off-path candidates got gradients: {off_path_with_grad[:3]}")
    supernet.zero_grad(set_to_none=True)
    child.zero_grad(set_to_none=True)
    return {"loss_supernet": out["supernet"], "loss_child": out["child"],
            "loss_abs_diff": diff, "grad_max_abs_diff": grad_diff}


# ---------------------------------------------------------------- timing

def run_benchmark(args):
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    path = default_path(args)
    dictionary, supernet, child = build_models(args, path, device)
    pad = dictionary.pad()
    batches = make_batches(args, dictionary, device)
    check = check_same_function(supernet, child, batches[0], pad, args.seed)

    child_names = set(dict(child.named_parameters()))
    # Snapshot of the candidates off the path: they must come out of training
    # bit-identical (no weight decay, no moment update), or the optimizer is
    # touching them -- both wrong and a cost the child does not pay.
    off_path = {k: p.detach().clone() for k, p in supernet.named_parameters()
                if k not in child_names}

    models = {
        "supernet": (supernet, build_optimizer(args, supernet)),
        "child": (child, build_optimizer(args, child)),
    }
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    step = {"supernet": 0, "child": 0}

    def run_round(name, n, record=None):
        model, opt = models[name]
        for _ in range(n):
            # Same batch sequence for both models: update i of either model uses
            # batches[i % len(batches)].
            sample = batches[step[name] % len(batches)]
            step[name] += 1
            sync()
            t0 = time.perf_counter()
            update(model, opt, sample, pad)
            sync()
            if record is not None:
                record.append(time.perf_counter() - t0)

    # Warm-up: allocator pools, Adam state creation (first step), kernel caches.
    for name in models:
        run_round(name, args.warmup)
    sync()

    # Interleaved rounds. CPU clock, thermal state and neighbours drift over a
    # run; timing all super-net updates and then all child updates would fold
    # that drift into the ratio. Alternating short rounds exposes both models to
    # the same conditions, and the order flips every round (S,C then C,S) so
    # neither model always runs right after the other (cache / allocator state).
    times = {"supernet": [], "child": []}
    round_means = {"supernet": [], "child": []}
    was_enabled = gc.isenabled()
    try:
        for r in range(args.rounds):
            order = ("supernet", "child") if r % 2 == 0 else ("child", "supernet")
            for name in order:
                gc.collect()
                gc.disable()  # no collector pause inside a timed round
                rec = []
                run_round(name, args.updates_per_round, rec)
                gc.enable()
                times[name].extend(rec)
                round_means[name].append(statistics.fmean(rec))
    finally:
        if was_enabled:
            gc.enable()

    untouched = all(torch.equal(off_path[k], p.detach())
                    for k, p in supernet.named_parameters() if k in off_path)

    med = {k: statistics.median(v) for k, v in times.items()}
    mins = {k: min(v) for k, v in times.items()}
    paired = [s / c for s, c in zip(round_means["supernet"], round_means["child"])]
    n_params = {k: sum(p.numel() for p in m.parameters()) for k, (m, _) in models.items()}
    result = {
        "supernet_over_child": med["supernet"] / med["child"],
        "supernet_over_child_min": mins["supernet"] / mins["child"],
        "supernet_over_child_paired_rounds_median": statistics.median(paired),
        "target": TARGET,
        "pass": med["supernet"] / med["child"] <= TARGET,
        "median_update_ms": {k: v * 1e3 for k, v in med.items()},
        "min_update_ms": {k: v * 1e3 for k, v in mins.items()},
        "timed_updates_per_model": len(times["child"]),
        "params": n_params,
        "off_path_params_untouched": untouched,
        "equivalence_check": check,
        "config": {
            "layers": args.layers, "hidden": args.hidden, "ops": args.ops, "path": path,
            "batch_size": args.batch_size, "seq_len": args.seq_len, "vocab": args.vocab,
            "rounds": args.rounds, "updates_per_round": args.updates_per_round,
            "warmup": args.warmup, "batches": args.batches, "optimizer": args.optimizer,
            "dropout": args.dropout, "device": args.device,
            "torch_threads": torch.get_num_threads(), "seed": args.seed,
        },
    }
    return result


# ---------------------------------------------------------------- reporting

def machine_info(device: str) -> dict:
    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    info = {"cpu": cpu_model, "cpu_count": cpus, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def command_line(argv) -> str:
    script = os.path.relpath(os.path.abspath(__file__), REPO)
    return " ".join(["python", script] + [shlex.quote(a) for a in argv])


def resolve(path, default: str) -> str:
    """A given path is taken as the user typed it (relative to the cwd); the
    defaults live in the repository wherever the script is run from."""
    return os.path.abspath(path) if path else os.path.join(REPO, default)


def write_json(path: str, result: dict) -> None:
    data = {}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)  # a corrupt file is an error, not something to overwrite
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}")
    data.update(result)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def markdown_section(res: dict) -> str:
    c, m = res["config"], res["machine"]
    machine = f"{m['cpu']}, {m['cpu_count']} CPUs (torch threads {c['torch_threads']})"
    if "gpu" in m:
        machine += f", GPU {m['gpu']}"
    verdict = "PASS" if res["pass"] else "FAIL"
    med, mn = res["median_update_ms"], res["min_update_ms"]
    lines = [
        MD_BEGIN,
        "## step_overhead: super-net vs child update time",
        "",
        f"- Command: `{res['command']}`",
        f"- Date: {res['date']}",
        f"- Machine: {machine}; device `{c['device']}`; torch {m['torch']}, "
        f"Python {m['python']}",
        f"- Model: {c['layers']} layers, hidden {c['hidden']}, candidates `{c['ops']}`, "
        f"vocab {c['vocab']}; path `{c['path']}`",
        f"- Update: zero_grad + forward/MLM loss + backward + {c['optimizer']} step over all "
        f"parameters; batch {c['batch_size']} x {c['seq_len']} tokens, dropout "
        f"{c['dropout']}; {c['rounds']} interleaved rounds x {c['updates_per_round']} "
        f"updates per model after {c['warmup']} warm-up updates",
        "",
        "| model | parameters | median update (ms) | min update (ms) |",
        "|---|---:|---:|---:|",
        f"| super-net (`magic_supernet`, fixed path) | {res['params']['supernet']:,} | "
        f"{med['supernet']:.2f} | {mn['supernet']:.2f} |",
        f"| child (`magic_child`) | {res['params']['child']:,} | "
        f"{med['child']:.2f} | {mn['child']:.2f} |",
        "",
        "| ratio super-net / child | value | target |",
        "|---|---:|---|",
        f"| median (`supernet_over_child`) | {res['supernet_over_child']:.3f} | "
        f"<= {res['target']} ({verdict}) |",
        f"| min | {res['supernet_over_child_min']:.3f} | |",
        f"| median of per-round ratios | "
        f"{res['supernet_over_child_paired_rounds_median']:.3f} | |",
        "",
        f"Same function checked before timing: per-token loss |diff| "
        f"{res['equivalence_check']['loss_abs_diff']:.1e}; off-path candidates unchanged "
        f"after training: {res['off_path_params_untouched']}.",
        MD_END,
    ]
    return "\n".join(lines) + "\n"


def write_markdown(path: str, section: str) -> None:
    text = MD_HEADER
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    begin, end = text.find(MD_BEGIN), text.find(MD_END)
    if begin != -1 and end > begin:
        text = text[:begin] + section + text[end + len(MD_END):].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def print_summary(res: dict, json_path: str, md_path: str) -> None:
    med, mn = res["median_update_ms"], res["min_update_ms"]
    verdict = "PASS" if res["pass"] else "FAIL"
    print()
    print(f"{'':28s}{'median ms':>12s}{'min ms':>10s}")
    print(f"{'super-net (fixed path)':28s}{med['supernet']:12.2f}{mn['supernet']:10.2f}")
    print(f"{'child (magic_child)':28s}{med['child']:12.2f}{mn['child']:10.2f}")
    print(f"{'ratio super-net / child':28s}{res['supernet_over_child']:12.3f}"
          f"{res['supernet_over_child_min']:10.3f}")
    print(f"target <= {res['target']}: {verdict}   "
          f"(median of per-round ratios {res['supernet_over_child_paired_rounds_median']:.3f})")
    print(f"wrote {json_path} and {md_path}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    res = run_benchmark(args)
    res["machine"] = machine_info(args.device)
    res["torch_version"] = torch.__version__
    res["device_name"] = res["machine"].get("gpu", res["machine"]["cpu"])
    res["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    res["command"] = command_line(argv)
    json_path = resolve(args.json_out, DEFAULT_JSON)
    md_path = resolve(args.results_md, DEFAULT_MD)
    write_json(json_path, res)
    write_markdown(md_path, markdown_section(res))
    print_summary(res, os.path.relpath(json_path), os.path.relpath(md_path))
    if args.check and not res["pass"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
