#!/usr/bin/env python3
"""What does the teacher cost per update? Pre-training distillation vs plain MLM.

    kd_over_plain = median update time, --criterion magic_kd (frozen teacher)
                    / median update time, plain MLM (the same student)

target: <= 1 + teacher forward FLOPs / student update FLOPs + 0.1, where a
student update is taken as 3 x its forward FLOPs (forward + backward ~ 2 x
forward) and FLOPs come from the cost model (fairseq_magic/core/cost.py: one
sequence of --seq-len tokens, matrix products only, the LM head over every
position for both models). The 0.1 allows for what the FLOPs do not count: the
KL over the vocabulary at the masked tokens, the teacher's softmax, memory
traffic of a second model.

Both students are built exactly as fairseq-train builds them (``--task
masked_lm --arch magic_child``, RoBERTa's init with the same seed, fairseq's
Adam): plain with ``--criterion magic_alignment`` (plain MLM outside ``--task
magic``: the criterion ``magic_kd`` extends, so the difference is the teacher
alone) and KD with ``--criterion magic_kd --kd-teacher``. One update =
``task.train_step`` (forward, loss, backward) + ``optimizer.step`` +
``zero_grad``, on the same batches, timed side by side in interleaved rounds
(benchmarks/harness.py). The teacher is a ``magic_child`` of ``--teacher-arch``
at ``--teacher-hidden`` saved as a checkpoint first (random weights: its values
do not change its cost), or ``--teacher CKPT``, an existing magic_child
checkpoint over the same dictionary. The defaults are benchmarks/kd_run.py's
pair (teacher 12 layers x 128, student 8 x 96) on its recipe's batches (64 x
32 tokens of the KJV data-bin, or a synthetic data-bin of the same vocabulary
size when that is missing).

Writes ``benchmarks/results/kd_overhead.json`` (merged) and its section of
``benchmarks/RESULTS.md``. Exit 0 whatever the ratio; with ``--check``, 1 when
it is over the target. Usage::

    OMP_NUM_THREADS=1 python benchmarks/kd_overhead.py [--device cuda] [--check]
    python benchmarks/kd_overhead.py --rounds 2 --updates-per-round 1 --warmup 1 \\
        --json-out /tmp/k.json --results-md /tmp/k.md          # a smoke run
"""

import argparse
import contextlib
import itertools
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, REPO)

import torch  # noqa: E402

from benchmarks.common import corpus_lines, fairseq_cfg, preprocess_lines  # noqa: E402
from benchmarks.harness import (RATIO_TABLE_HEAD, LoadWindow, Ratio,  # noqa: E402
                                check_exit, device_sync, header_lines, load_note,
                                machine_info, machine_line, md_section, publish, resolve,
                                run_stamp, time_interleaved, torch_isolated)
from benchmarks.kd_run import STUDENT_ARCH, TEACHER_ARCH  # noqa: E402

import fairseq_magic  # noqa: E402,F401  (registers the models and criteria)
from fairseq_magic.core.cost import child_cost  # noqa: E402

DEFAULT_JSON = os.path.join("benchmarks", "results", "kd_overhead.json")
DEFAULT_MD = os.path.join("benchmarks", "RESULTS.md")
DEFAULT_DATA = os.path.join(REPO, "data", "kjv", "data-bin")
MD_BEGIN = "<!-- kd_overhead:begin -->"
MD_END = "<!-- kd_overhead:end -->"
SLACK = 0.1
UPDATE_OVER_FORWARD = 3


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="a masked-LM data-bin; missing: one is made (--corpus)")
    p.add_argument("--corpus", default="auto", choices=("auto", "kjv", "synthetic"),
                   help="text of the data-bin made when --data is missing")
    p.add_argument("--verses", type=int, default=3000, help="lines of that data-bin")
    p.add_argument("--vocab", type=int, default=4001, help="its vocabulary (with <mask>)")
    p.add_argument("--teacher", default=None,
                   help="an existing magic_child teacher checkpoint (default: a random one "
                        "of --teacher-arch / --teacher-hidden)")
    p.add_argument("--teacher-arch", default=TEACHER_ARCH)
    p.add_argument("--teacher-hidden", type=int, default=128)
    p.add_argument("--student-arch", default=STUDENT_ARCH)
    p.add_argument("--student-hidden", type=int, default=96)
    p.add_argument("--kd-alpha", type=float, default=0.5)
    p.add_argument("--kd-temperature", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=32, help="--tokens-per-sample")
    p.add_argument("--batches", type=int, default=6, help="distinct batches cycled through")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--updates-per-round", type=int, default=5)
    p.add_argument("--warmup", type=int, default=5, help="untimed updates per model first")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json-out", default=None, help=f"default {DEFAULT_JSON}")
    p.add_argument("--results-md", default=None, help=f"default {DEFAULT_MD}")
    p.add_argument("--check", action="store_true", help="exit 1 when over the target")
    args = p.parse_args(argv)
    args.json_out = resolve(args.json_out, DEFAULT_JSON)
    args.results_md = resolve(args.results_md, DEFAULT_MD)
    return args


def data_bin(args, root):
    if os.path.isfile(os.path.join(args.data, "dict.txt")):
        return args.data, {"source": args.data}
    lines, source = corpus_lines(args.corpus, args.verses, args.vocab,
                                 f"kd-overhead-synthetic:{args.seed}")
    dest, info = preprocess_lines(root, lines, args.vocab)
    return dest, {"source": source, **info}


def train_argv(args, data, spec, hidden, criterion, save_dir="/nonexistent-unused"):
    user_dir = os.path.dirname(os.path.abspath(fairseq_magic.__file__))
    a = [data, "--user-dir", user_dir, "--task", "masked_lm", "--arch", "magic_child",
         "--magic-arch", spec, "--encoder-embed-dim", str(hidden),
         "--max-positions", str(args.seq_len), "--tokens-per-sample", str(args.seq_len),
         "--sample-break-mode", "complete", "--batch-size", str(args.batch_size),
         "--dropout", "0.1", "--attention-dropout", "0.1",
         "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-6",
         "--weight-decay", "0.01", "--lr", "1e-4", "--seed", str(args.seed),
         "--num-workers", "0", "--save-dir", save_dir, *criterion]
    if args.device == "cpu":
        a.append("--cpu")
    return a


def save_teacher(args, data, path):
    """A magic_child checkpoint of the teacher (random weights), in the layout
    fairseq-train and magic-export write."""
    from fairseq import tasks
    from omegaconf import OmegaConf

    cfg = fairseq_cfg(train_argv(args, data, args.teacher_arch, args.teacher_hidden,
                                 ["--criterion", "masked_lm"]))
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(args.seed + 1)
    model = task.build_model(cfg.model)
    state = {"args": None, "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
             "model": model.state_dict(), "criterion": {},
             "optimizer_history": [{"criterion_name": "MaskedLmLoss", "optimizer_name": None,
                                    "lr_scheduler_state": {"best": None}, "num_updates": 0}],
             "task_state": {}, "extra_state": {}, "last_optimizer_state": None}
    torch.save(state, path)
    return path


def teacher_spec(path):
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = state["cfg"]["model"]
    if not str(model.get("_name", "")).startswith("magic_child"):
        raise SystemExit(f"--teacher {path}: a {model.get('_name')} checkpoint; the FLOPs "
                         "bound needs a magic_child teacher")
    return model["magic_arch"], int(model["encoder_embed_dim"])


def build(args, data, criterion, device):
    """(task, model, criterion, optimizer) as fairseq-train builds them."""
    from fairseq import optim, tasks

    cfg = fairseq_cfg(train_argv(args, data, args.student_arch, args.student_hidden, criterion))
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(args.seed)  # the same initial student for both
    model = task.build_model(cfg.model).to(device)
    crit = task.build_criterion(cfg.criterion).to(device)
    params = [p for p in itertools.chain(model.parameters(), crit.parameters())
              if p.requires_grad]
    return task, model, crit, optim.build_optimizer(cfg.optimizer, params)


def flops(spec, hidden, vocab, seq_len):
    arch = spec.split(",")
    return child_cost(arch, hidden, vocab, seq_len + 2, seq_len=seq_len)


def run(args):
    from fairseq_magic.evaluation import fixed_batches

    device = torch.device(args.device)
    sync = device_sync(device)
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(tempfile.TemporaryDirectory(prefix="kd_overhead_"))
        data, data_info = data_bin(args, root)
        teacher = args.teacher or save_teacher(args, data, os.path.join(root, "teacher.pt"))
        t_spec, t_hidden = teacher_spec(teacher)
        kd_flags = ["--criterion", "magic_kd", "--kd-teacher", teacher,
                    "--kd-alpha", str(args.kd_alpha), "--kd-temperature", str(args.kd_temperature)]
        runs = {"plain": build(args, data, ["--criterion", "magic_alignment"], device),
                "kd": build(args, data, kd_flags, device)}
        task = runs["plain"][0]
        vocab = len(task.source_dictionary)
        got = fixed_batches(task, "train", max_batches=2 * args.batches + 2,
                            batch_size=args.batch_size, device=args.device)
        batches = [b for b in got if int(b["nsentences"]) == args.batch_size][:args.batches]
        if not batches:
            raise SystemExit(f"no full batch of {args.batch_size}: raise --verses")
        same_init = all(torch.equal(v, runs["kd"][1].state_dict()[k])
                        for k, v in runs["plain"][1].state_dict().items())

        def step(name):
            t, model, crit, opt = runs[name]

            def one_update(i):
                _, _, log = t.train_step(batches[i % len(batches)], model, crit, opt, i)
                opt.step()
                opt.zero_grad()
                return float(log["loss"])
            return one_update

        with LoadWindow() as load:
            timing = time_interleaved({n: step(n) for n in runs}, args.rounds,
                                      args.updates_per_round, args.warmup, sync=sync)
        teacher_params = sum(p.numel() for p in runs["kd"][2].teacher.parameters())
        student_params = sum(p.numel() for p in runs["kd"][1].parameters())
    cs = flops(args.student_arch, args.student_hidden, vocab, args.seq_len)
    ct = flops(t_spec, t_hidden, vocab, args.seq_len)
    bound = 1 + ct["flops"] / (UPDATE_OVER_FORWARD * cs["flops"]) + SLACK
    ratio = Ratio(timing.ratio("kd", "plain"), round(bound, 4))
    return {
        "kd_over_plain": ratio.value, **ratio.record(),
        "median_update_ms": timing.ms("median"), "quartiles_update_ms": timing.quartiles_ms(),
        "round_ratios": timing.round_ratios("kd", "plain"),
        "updates_timed_per_model": timing.timed_per_name, "load_avg": load.record(),
        "same_initial_student": same_init,
        "teacher": {"arch": t_spec, "hidden": t_hidden, "params": teacher_params,
                    "forward_flops": ct["flops"], "body_flops": ct["body_flops"],
                    "checkpoint": args.teacher or "random weights (saved by the script)"},
        "student": {"arch": args.student_arch, "hidden": args.student_hidden,
                    "params": student_params, "forward_flops": cs["flops"],
                    "body_flops": cs["body_flops"]},
        "flops_seq_len": args.seq_len, "vocab": vocab, "batch_size": args.batch_size,
        "kd_alpha": args.kd_alpha, "kd_temperature": args.kd_temperature,
        "device": args.device, "data": data_info,
    }


def markdown_section(res) -> str:
    r = res
    t, s = r["teacher"], r["student"]
    lines = header_lines(r["command"], r["date"], machine_line(
        r["host"], threads=r["threads"], load=r["load_avg"], device=r["device"])) + [
        f"- Student `{s['arch']}` at hidden {s['hidden']} ({s['params']:,} parameters, "
        f"{s['forward_flops']:.3e} forward FLOPs per {r['flops_seq_len']}-token sequence); "
        f"teacher `{t['arch']}` at hidden {t['hidden']} ({t['params']:,} parameters, "
        f"{t['forward_flops']:.3e}); batch {r['batch_size']} x {r['flops_seq_len']} tokens, "
        f"{r['updates_timed_per_model']} timed updates each in interleaved rounds.",
        f"- Median update: plain {r['median_update_ms']['plain']:.1f} ms, KD "
        f"{r['median_update_ms']['kd']:.1f} ms.",
        "",
        *RATIO_TABLE_HEAD,
        Ratio(r["kd_over_plain"], r["target"]).row(
            "KD update / plain update (target: 1 + teacher fwd / (3 x student fwd) + 0.1)"),
    ]
    return md_section(MD_BEGIN, MD_END, "kd_overhead: the frozen teacher's cost per update",
                      lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    with torch_isolated(threads=args.threads, device=args.device):
        res = run(args)
        threads = torch.get_num_threads()
    res.update(run_stamp(__file__, sys.argv[1:] if argv is None else argv),
               host=machine_info(args.device), threads=threads)
    publish(args.json_out, {"kd_overhead": res}, args.results_md,
            [(MD_BEGIN, MD_END, markdown_section(res))],
            [load_note(res["load_avg"], threads)])
    return check_exit(args.check, [res["pass"]])


if __name__ == "__main__":
    sys.exit(main())
