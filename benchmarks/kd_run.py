#!/usr/bin/env python3
"""Two-stage knowledge distillation, end to end (paper section 5.4, issue 12's
real run): a teacher child, a student child at about half its parameters, the
student with distillation at both stages versus the same student without,
same budget.

Stages and units (each one fairseq run; a unit's result is appended to
``--units-log``, default benchmarks/results/kd_units.jsonl, and a finished unit
is skipped on a rerun, so the script resumes unit by unit; inside a unit
fairseq-train resumes from its checkpoint_last.pt and magic-glue from its
finished tasks):

1. ``teacher_pretrain``: the teacher child (``--teacher-arch`` at
   ``--teacher-hidden``, default 12 layers x 128, 1.6M parameters) pre-trained
   with ``--task masked_lm --criterion masked_lm`` for ``--teacher-updates``.
2. ``student_plain_pretrain``: the student (``--student-arch`` at
   ``--student-hidden``, default 8 layers x 96, 0.84M parameters: 0.51 of the
   teacher's), the same recipe, ``--student-updates``.
3. ``student_kd_pretrain``: the same student, same seed, same updates, with
   ``--criterion magic_kd --kd-teacher <1> --kd-alpha --pd-alpha
   --kd-temperature --pd-temperature`` (pre-training distillation, PD).
4. ``teacher_finetune``: magic-glue SST-2 on the packaged Rotten Tomatoes data
   (``scripts/packaged_glue_data.py``), from the teacher.
5. ``student_plain_finetune``: magic-glue SST-2 from <2>, plain.
6. ``student_kd_finetune``: magic-glue SST-2 from <3> with ``--kd-teacher <4>``
   (fine-tuning distillation, FD): the paper's PD + FD.

Pre-training recipe (``/work/shared/notes/downstream-facts.md``, the one this
corpus learns with): KJV data-bin of ``make demo``, 64 x 32 tokens
(``--sample-break-mode complete``), Adam (0.9, 0.98), lr 5e-4, 100 warm-up,
polynomial decay over the run, clip 1.0, dropout 0.1, no validation during
training. Metric per stage, the same evaluator for the three models:
pre-training, the MLM loss in bits per masked token of each final checkpoint on
the valid and test splits (eval mode, the split's own seeded masking, so the
same tokens for every model; lower is better); fine-tuning, the SST-2 dev
accuracy of magic-glue's best checkpoint (3 epochs, lr ``--ft-lr``, batch 32).

Writes benchmarks/results/kd.json (``teacher``, ``student_plain``,
``student_kd``: params, ``pretrain`` and ``finetune`` metrics, seconds; plus
the settings, each unit's command and ``kd_ahead`` per stage) and its section
of benchmarks/RESULTS.md. Usage::

    OMP_NUM_THREADS=1 python benchmarks/kd_run.py          # the real run (~1-2 h CPU)
    python benchmarks/kd_run.py --smoke --out /tmp/kd-smoke   # minutes: plumbing only

``--smoke`` trains a few updates on a few examples and writes its records under
--out (never the results files), for checking the script. On two cores the
units can run as two processes (each summarises every unit finished so far)::

    python benchmarks/kd_run.py --units teacher_pretrain,student_kd_pretrain,teacher_finetune,student_kd_finetune &
    python benchmarks/kd_run.py --units student_plain_pretrain,student_plain_finetune

A second seed trains all three models anew in OUT-s2 (``--seed 2``);
``--seeds 1,2`` makes the summary report both, their means and the KD gain
seed by seed (``--units ""`` only summarises)::

    python benchmarks/kd_run.py --seed 2 --seeds 1,2
"""

import argparse
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, REPO)

from benchmarks.common import host_info, write_json, write_markdown  # noqa: E402
from benchmarks.harness import header_lines, machine_line, md_section, run_stamp  # noqa: E402

TEACHER_ARCH = "conv3,ffn,mha2,ffn,conv5,ffn,mha2,ffn,conv3,ffn,mha2,ffn"
STUDENT_ARCH = "conv3,ffn,mha2,ffn,conv5,ffn,mha2,ffn"
UNITS = ("teacher_pretrain", "student_plain_pretrain", "student_kd_pretrain",
         "teacher_finetune", "student_plain_finetune", "student_kd_finetune")
MD_BEGIN = "<!-- kd_run:begin -->"
MD_END = "<!-- kd_run:end -->"
USER_DIR = os.path.join(REPO, "fairseq_magic")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=os.path.join(REPO, "data", "kjv", "data-bin"),
                   help="pre-training data-bin (make demo's KJV)")
    p.add_argument("--spm", default=os.path.join(REPO, "data", "kjv", "spm.model"),
                   help="the data-bin's sentencepiece model (for fine-tuning text)")
    p.add_argument("--glue-dir", default=os.path.join(REPO, "data", "packaged-glue"),
                   help="GLUE-layout folder with SST-2/ (scripts/packaged_glue_data.py)")
    p.add_argument("--task", default="SST-2", help="the fine-tuning task")
    p.add_argument("--out", default=os.path.join(REPO, "outputs", "kd_run"),
                   help="working folder (checkpoints, exports, magic-glue outputs) of seed "
                        "1; seed S > 1 works in OUT-sS")
    p.add_argument("--json-out", default=None,
                   help="default benchmarks/results/kd.json (--smoke: OUT/kd.json)")
    p.add_argument("--results-md", default=None,
                   help="default benchmarks/RESULTS.md (--smoke: OUT/RESULTS.md)")
    p.add_argument("--units-log", default=None,
                   help="default benchmarks/results/kd_units.jsonl (--smoke: OUT/kd_units.jsonl)")
    p.add_argument("--units", default=",".join(UNITS),
                   help="units to run (the others are read from the log); a unit whose "
                        "inputs are missing fails naming them")
    p.add_argument("--teacher-arch", default=TEACHER_ARCH)
    p.add_argument("--teacher-hidden", type=int, default=128)
    p.add_argument("--student-arch", default=STUDENT_ARCH)
    p.add_argument("--student-hidden", type=int, default=96)
    p.add_argument("--teacher-updates", type=int, default=3000)
    p.add_argument("--student-updates", type=int, default=1500)
    p.add_argument("--lr", type=float, default=5e-4, help="pre-training peak lr")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tokens", type=int, default=32, help="--tokens-per-sample")
    p.add_argument("--pd-alpha", type=float, default=0.5, help="pre-training --kd-alpha")
    p.add_argument("--pd-temperature", type=float, default=1.0,
                   help="pre-training --kd-temperature")
    p.add_argument("--fd-alpha", type=float, default=0.5, help="fine-tuning --kd-alpha")
    p.add_argument("--fd-temperature", type=float, default=1.0,
                   help="fine-tuning --kd-temperature")
    p.add_argument("--ft-lr", type=float, default=5e-4,
                   help="fine-tuning lr (benchmarks/results/finetune.json: 5e-4 beat 1e-4 "
                        "on this data)")
    p.add_argument("--ft-epochs", type=int, default=3)
    p.add_argument("--ft-batch-size", type=int, default=32)
    p.add_argument("--max-train-examples", type=int, default=None,
                   help="fine-tuning train subsample (default: all)")
    p.add_argument("--max-dev-examples", type=int, default=None)
    p.add_argument("--seed", type=int, default=1, help="the seed of the units run now")
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds the summary reports (each from its finished "
                        "units in the log; mean and per-seed values); default: --seed")
    p.add_argument("--smoke", action="store_true",
                   help="a few updates and examples, records under --out: plumbing check")
    args = p.parse_args(argv)
    if args.smoke:
        args.teacher_updates = min(args.teacher_updates, 6)
        args.student_updates = min(args.student_updates, 4)
        args.max_train_examples = args.max_train_examples or 64
        args.max_dev_examples = args.max_dev_examples or 32
        args.ft_epochs = 1
    root = args.out if args.smoke else os.path.join(REPO, "benchmarks")
    args.json_out = args.json_out or (os.path.join(root, "kd.json") if args.smoke else
                                      os.path.join(root, "results", "kd.json"))
    args.results_md = args.results_md or os.path.join(root, "RESULTS.md")
    args.units_log = args.units_log or (os.path.join(root, "kd_units.jsonl") if args.smoke
                                        else os.path.join(root, "results", "kd_units.jsonl"))
    args.out_base = args.out
    args.out = out_for(args.out_base, args.seed)
    try:
        args.seeds = ([int(x) for x in args.seeds.split(",") if x.strip()] if args.seeds
                      else [args.seed])
    except ValueError:
        p.error(f"--seeds {args.seeds!r}: expected comma-separated integers")
    if not args.seeds:
        p.error("--seeds: expected at least one seed")
    args.units = [u for u in args.units.split(",") if u]
    bad = [u for u in args.units if u not in UNITS]
    if bad:
        p.error(f"--units {','.join(bad)}: expected some of {','.join(UNITS)}")
    return args


# ---------------------------------------------------------------- records

def out_for(base, seed) -> str:
    """The working folder of one seed: seed 1 keeps --out (the first runs were
    made there), another seed works beside it."""
    return base if seed == 1 else f"{base}-s{seed}"


def for_seed(args, seed):
    """A copy of ``args`` as a run of ``seed`` (its folder, so its settings key)."""
    other = argparse.Namespace(**vars(args))
    other.seed, other.out = seed, out_for(args.out_base, seed)
    return other


def settings(args) -> dict:
    """Everything a unit's result depends on: a changed value reruns the units."""
    keys = ("data", "spm", "glue_dir", "task", "teacher_arch", "teacher_hidden",
            "student_arch", "student_hidden", "teacher_updates", "student_updates", "lr",
            "warmup", "batch_size", "tokens", "pd_alpha", "pd_temperature", "fd_alpha",
            "fd_temperature", "ft_lr", "ft_epochs", "ft_batch_size", "max_train_examples",
            "max_dev_examples", "seed", "out")
    return {k: getattr(args, k) for k in keys}


def settings_key(args) -> str:
    return hashlib.sha256(json.dumps(settings(args), sort_keys=True).encode()).hexdigest()[:16]


def read_units(path, key):
    """{unit: its last record under these settings}."""
    done = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    if r.get("settings_key") == key:
                        done[r["unit"]] = r
    return done


def append_unit(path, record):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


# ---------------------------------------------------------------- pre-training

def pretrain_command(args, save_dir, arch, hidden, updates, teacher=None):
    cmd = [sys.executable, "-m", "fairseq_cli.train", args.data, "--user-dir", USER_DIR,
           "--task", "masked_lm", "--arch", "magic_child", "--magic-arch", arch,
           "--encoder-embed-dim", str(hidden), "--max-positions", str(args.tokens),
           "--tokens-per-sample", str(args.tokens), "--sample-break-mode", "complete",
           "--skip-invalid-size-inputs-valid-test", "--batch-size", str(args.batch_size),
           "--dropout", "0.1", "--attention-dropout", "0.1",
           "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-6",
           "--weight-decay", "0.01", "--lr", str(args.lr), "--lr-scheduler",
           "polynomial_decay", "--warmup-updates", str(min(args.warmup, updates - 1)),
           "--total-num-update", str(updates), "--max-update", str(updates),
           "--clip-norm", "1.0", "--cpu", "--num-workers", "0", "--seed", str(args.seed),
           "--log-format", "simple", "--log-interval", "100", "--disable-validation",
           "--save-interval-updates", "500", "--keep-interval-updates", "1",
           "--no-epoch-checkpoints", "--save-dir", save_dir]
    if teacher is None:
        cmd += ["--criterion", "masked_lm"]
    else:
        cmd += ["--criterion", "magic_kd", "--kd-teacher", teacher,
                "--kd-alpha", str(args.pd_alpha), "--kd-temperature", str(args.pd_temperature)]
    return cmd


def trained_updates(ckpt) -> int:
    import torch

    if not os.path.isfile(ckpt):
        return 0
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    return int(state["optimizer_history"][-1]["num_updates"])


def run_logged(cmd, log_path, env_extra=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(env_extra or {})
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        log.flush()
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        raise RuntimeError(f"{cmd[2] if len(cmd) > 2 else cmd[0]} failed (exit {rc}); "
                           f"log: {log_path}")


def pretrain(args, name, arch, hidden, updates, teacher=None):
    save = os.path.join(args.out, name)
    os.makedirs(save, exist_ok=True)
    ckpt = os.path.join(save, "checkpoint_last.pt")
    cmd = pretrain_command(args, save, arch, hidden, updates, teacher)
    t0 = time.time()
    # fairseq-train resumed at --max-update would still train one more update
    if trained_updates(ckpt) < updates:
        print(f"[kd_run] {name}: fairseq-train, {updates} updates -> {save}", flush=True)
        run_logged(cmd, os.path.join(save, "train.log"))
    seconds = time.time() - t0
    bits = valid_bits(ckpt, args.data)
    return {"checkpoint": ckpt, "arch": arch, "hidden": hidden, "updates": updates,
            "params": params_of(ckpt), "pretrain": bits, "seconds": round(seconds, 1),
            "command": " ".join(shlex.quote(c) for c in cmd)}


def params_of(ckpt) -> int:
    import torch

    weights = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
    # the LM head's output matrix is the token embedding (tied), stored twice
    return sum(v.numel() for k, v in weights.items() if k != "encoder.lm_head.weight")


def valid_bits(ckpt, data, splits=("valid", "test")) -> dict:
    """MLM loss (bits per masked token) of a child checkpoint on each split:
    eval mode, every batch of the split, the task's seeded masking."""
    import math

    import torch
    from fairseq import checkpoint_utils

    from fairseq_magic.evaluation import fixed_batches, import_plugin
    from fairseq_magic.model_utils import mlm_loss

    import_plugin()
    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [ckpt], arg_overrides={"data": data})
    model = models[0].eval()
    out = {}
    for split in splits:
        total, count = 0.0, 0
        with torch.no_grad():
            for sample in fixed_batches(task, split, max_batches=10 ** 6, batch_size=64):
                loss, n, _ = mlm_loss(model, sample, task.source_dictionary.pad())
                total += float(loss)
                count += n
        out[f"{split}_bits"] = round(total / max(count, 1) / math.log(2), 4)
        out[f"{split}_masked_tokens"] = count
    return out


def package(args, ckpt, out_dir):
    """A magic-export-like folder of a trained child for magic-glue: model.pt
    (weights, the child's config with its position table explicit), dict.txt,
    spm.model."""
    import shutil

    import torch

    os.makedirs(out_dir, exist_ok=True)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    state["cfg"]["model"]["max_positions"] = args.tokens
    state["last_optimizer_state"] = None  # magic-glue restores with --reset-optimizer
    torch.save(state, os.path.join(out_dir, "model.pt"))
    shutil.copyfile(os.path.join(args.data, "dict.txt"), os.path.join(out_dir, "dict.txt"))
    shutil.copyfile(args.spm, os.path.join(out_dir, "spm.model"))
    return out_dir


# ---------------------------------------------------------------- fine-tuning

def finetune(args, name, ckpt, teacher_glue=None):
    from fairseq_magic.cli import glue as magic_glue

    export = package(args, ckpt, os.path.join(args.out, name + "-export"))
    out = os.path.join(args.out, "glue-" + name)
    argv = [args.task, export, args.glue_dir, out, "--spm", args.spm, "--epochs",
            str(args.ft_epochs), "--lr", str(args.ft_lr), "--batch-size",
            str(args.ft_batch_size), "--log-interval", "200", "--seed", str(args.seed), "--cpu"]
    if args.max_train_examples:
        argv += ["--max-train-examples", str(args.max_train_examples)]
    if args.max_dev_examples:
        argv += ["--max-dev-examples", str(args.max_dev_examples)]
    if teacher_glue:
        argv += ["--kd-teacher", teacher_glue, "--kd-alpha", str(args.fd_alpha),
                 "--kd-temperature", str(args.fd_temperature)]
    print(f"[kd_run] {name}: magic-glue {args.task} -> {out}", flush=True)
    t0 = time.time()
    rc = magic_glue.main(argv)
    if rc != 0:
        raise RuntimeError(f"magic-glue failed ({rc}) for {name}")
    key = args.task + ("/kd" if teacher_glue else "")
    with open(os.path.join(out, "results.json")) as f:
        result = json.load(f)[key]
    scores = next(iter(result["scores"].values()))
    return {"glue_out": out, "finetune": {"metric": result["metric"],
                                          "value": scores[result["metric"]],
                                          "scores": scores, "updates": result["updates"]},
            "seconds": round(time.time() - t0, 1),
            "command": "magic-glue " + " ".join(shlex.quote(a) for a in argv)}


# ---------------------------------------------------------------- driver

def need(done, unit, what):
    if unit not in done:
        raise RuntimeError(f"{what} needs the unit {unit!r}, which has not run with these "
                           "settings: run it (--units) first")
    return done[unit]


def run_unit(args, unit, done):
    if unit == "teacher_pretrain":
        return pretrain(args, "teacher", args.teacher_arch, args.teacher_hidden,
                        args.teacher_updates)
    if unit == "student_plain_pretrain":
        return pretrain(args, "student_plain", args.student_arch, args.student_hidden,
                        args.student_updates)
    if unit == "student_kd_pretrain":
        teacher = need(done, "teacher_pretrain", unit)["checkpoint"]
        return pretrain(args, "student_kd", args.student_arch, args.student_hidden,
                        args.student_updates, teacher=teacher)
    if unit == "teacher_finetune":
        return finetune(args, "teacher", need(done, "teacher_pretrain", unit)["checkpoint"])
    if unit == "student_plain_finetune":
        return finetune(args, "student_plain",
                        need(done, "student_plain_pretrain", unit)["checkpoint"])
    if unit == "student_kd_finetune":
        teacher_glue = need(done, "teacher_finetune", unit)["glue_out"]
        return finetune(args, "student_kd", need(done, "student_kd_pretrain", unit)["checkpoint"],
                        teacher_glue=teacher_glue)
    raise ValueError(unit)


WHO = ("teacher", "student_plain", "student_kd")


def seed_models(done) -> dict:
    """{who: its record} of one seed's finished units (None where a unit has not run)."""
    models = {}
    for who in WHO:
        pre, ft = done.get(f"{who}_pretrain"), done.get(f"{who}_finetune")
        models[who] = {
            "arch": pre and pre["arch"], "hidden": pre and pre["hidden"],
            "params": pre and pre["params"], "updates": pre and pre["updates"],
            "pretrain": pre and pre["pretrain"], "finetune": ft and ft["finetune"],
            "seconds": {"pretrain": pre and pre["seconds"], "finetune": ft and ft["seconds"]},
            "commands": {"pretrain": pre and pre["command"], "finetune": ft and ft["command"]},
        }
    return models


def _mean(values):
    return round(statistics.fmean(values), 4) if values else None


def stage_values(per_seed, who):
    """({seed: valid bits}, {seed: fine-tuning value}) of one model."""
    pre = {s: m[who]["pretrain"]["valid_bits"] for s, m in per_seed.items()
           if m[who]["pretrain"]}
    ft = {s: m[who]["finetune"]["value"] for s, m in per_seed.items() if m[who]["finetune"]}
    return pre, ft


def summary(args, done_by_seed, stamp) -> dict:
    """kd.json: per model the mean over seeds of each stage's metric (``pretrain``
    valid/test bits, ``finetune`` value) and every seed's record (``by_seed``);
    ``kd_ahead`` per stage compares the KD and plain students on the seeds both
    finished (mean of the paired differences), ``kd_ahead_by_seed`` seed by seed."""
    per_seed = {s: seed_models(done) for s, done in sorted(done_by_seed.items())}
    models = {}
    for who in WHO:
        rows = {s: m[who] for s, m in per_seed.items()}
        first = next((r for r in rows.values() if r["pretrain"]), None)
        first_ft = next((r["finetune"] for r in rows.values() if r["finetune"]), None)
        pre = {s: r["pretrain"] for s, r in rows.items() if r["pretrain"]}
        ft = {s: r["finetune"]["value"] for s, r in rows.items() if r["finetune"]}
        models[who] = {
            "arch": first and first["arch"], "hidden": first and first["hidden"],
            "params": first and first["params"], "updates": first and first["updates"],
            "pretrain": pre and {
                "valid_bits": _mean([v["valid_bits"] for v in pre.values()]),
                "test_bits": _mean([v["test_bits"] for v in pre.values()]),
                "seeds": sorted(pre)},
            "finetune": ft and {"metric": first_ft["metric"], "value": _mean(list(ft.values())),
                                "seeds": sorted(ft)},
            "by_seed": {str(s): r for s, r in rows.items()},
        }
    kd_pre, kd_ft = stage_values(per_seed, "student_kd")
    plain_pre, plain_ft = stage_values(per_seed, "student_plain")
    # lower bits are better; every GLUE headline metric (accuracy, Matthews,
    # Spearman) is higher-better: a difference is signed so that > 0 favours KD
    gains = {"pretrain": {s: plain_pre[s] - kd_pre[s] for s in kd_pre if s in plain_pre},
             "finetune": {s: kd_ft[s] - plain_ft[s] for s in kd_ft if s in plain_ft}}
    ahead, by_seed, diffs = {}, {}, {}
    for stage, g in gains.items():
        if not g:
            continue
        ahead[stage] = statistics.fmean(g.values()) > 0
        diffs[stage] = {"by_seed": {str(s): round(v, 4) for s, v in g.items()},
                        "mean": _mean(list(g.values())),
                        "min": round(min(g.values()), 4), "max": round(max(g.values()), 4)}
        for s, v in g.items():
            by_seed.setdefault(str(s), {})[stage] = v > 0
    complete = {str(s): all(u in done for u in UNITS) for s, done in done_by_seed.items()}
    return {"kd_run": {**stamp, "host": host_info(), "settings": settings(args),
                       "seeds": sorted(done_by_seed), "complete": all(complete.values()),
                       "complete_by_seed": complete, "kd_ahead": ahead,
                       "kd_ahead_by_seed": by_seed, "kd_gain": diffs,
                       "metrics": {"pretrain": "MLM loss, bits per masked token (valid, "
                                               "test splits; lower is better)",
                                   "finetune": f"{args.task} dev set, magic-glue's "
                                               "headline metric (higher is better)",
                                   "kd_gain": "plain minus KD bits (pre-training), KD minus "
                                              "plain dev metric (fine-tuning): > 0 favours "
                                              "KD"}},
            **models}


def markdown(res) -> str:
    run, s = res["kd_run"], res["kd_run"]["settings"]
    seeds = run["seeds"]
    lines = header_lines(run["command"], run["date"], machine_line(run["host"], threads=1)) + [
        f"- Teacher `{s['teacher_arch']}` at hidden {s['teacher_hidden']}, "
        f"{s['teacher_updates']} updates; student `{s['student_arch']}` at hidden "
        f"{s['student_hidden']}, {s['student_updates']} updates with and without "
        f"distillation (PD alpha {s['pd_alpha']}, T {s['pd_temperature']}; FD alpha "
        f"{s['fd_alpha']}, T {s['fd_temperature']}); seeds "
        f"{', '.join(str(x) for x in seeds)} (each seed trains all three models anew).",
        "- Reproduce: `OMP_NUM_THREADS=1 python benchmarks/kd_run.py` (seed 1; two processes "
        "with `--units` on two cores), then the same with `--seed 2 --seeds 1,2`; every "
        "unit's own command (fairseq-train, magic-glue) is in `benchmarks/results/kd.json` "
        "(`<model>.by_seed.<seed>.commands`).",
        "",
        "| model | seed | params | pre-training: valid / test bits (lower is better) | "
        f"{s['task']} dev |",
        "|---|---|---:|---:|---:|"]

    def cells(pre, ft):
        return ((f"{pre['valid_bits']:.3f} / {pre['test_bits']:.3f}" if pre else "-"),
                (f"{ft['value']:.2f}" + (f" ({ft['metric']})" if "metric" in ft else "")
                 if ft else "-"))

    for who, label in (("teacher", "teacher"), ("student_plain", "student, no KD"),
                       ("student_kd", "student, KD at both stages")):
        m = res[who]
        params = f"{m['params']:,}" if m["params"] else "-"
        for seed, r in m["by_seed"].items():
            pre, ft = cells(r["pretrain"], r["finetune"])
            lines.append(f"| {label} | {seed} | {params} | {pre} | {ft} |")
        if len(m["by_seed"]) > 1:
            pre, ft = cells(m["pretrain"], m["finetune"])
            lines.append(f"| **{label}** | mean | {params} | {pre} | {ft} |")
    ahead, gain = run["kd_ahead"], run["kd_gain"]
    lines += [""]
    for stage, unit in (("pretrain", "bits (plain - KD)"), ("finetune", "points (KD - plain)")):
        if stage in gain:
            g = gain[stage]
            per = ", ".join(f"seed {k}: {v:+.3f}" for k, v in g["by_seed"].items())
            lines.append(f"- KD gain at {stage}: mean {g['mean']:+.3f} {unit}; {per}.")
    lines += ["", "KD student ahead (mean over seeds): "
              + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in ahead.items())
              + ("" if run["complete"] else " (not every unit has run)") + "."]
    return md_section(MD_BEGIN, MD_END, "kd_run: two-stage distillation (section 5.4)", lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    for path, what in ((args.data, "--data"), (args.spm, "--spm"),
                       (os.path.join(args.glue_dir, args.task), "--glue-dir")):
        if not os.path.exists(path):
            print(f"kd_run: {what} {path!r} does not exist (make demo; python "
                  "scripts/packaged_glue_data.py --out data/packaged-glue)", file=sys.stderr)
            return 2
    os.makedirs(args.out, exist_ok=True)
    key = settings_key(args)
    done = read_units(args.units_log, key)
    stamp = run_stamp(__file__, sys.argv[1:] if argv is None else argv)
    for unit in UNITS:
        if unit not in args.units:
            continue
        if unit in done:
            print(f"[kd_run] {unit}: done ({args.units_log}), skipped", flush=True)
            continue
        record = run_unit(args, unit, done)
        record.update({"unit": unit, "settings_key": key, "date": stamp["date"]})
        append_unit(args.units_log, record)
        done[unit] = record
        print(f"[kd_run] {unit}: " + json.dumps({k: record[k] for k in record
                                                 if k in ("pretrain", "finetune", "seconds")}),
              flush=True)
    # another process may have run other units meanwhile (--units split over two
    # processes, one core each): summarise every finished unit in the log
    done_by_seed = {s: read_units(args.units_log, settings_key(for_seed(args, s)))
                    for s in args.seeds}
    res = summary(args, done_by_seed, stamp)
    write_json(args.json_out, res)
    write_markdown(args.results_md, markdown(res), MD_BEGIN, MD_END)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
