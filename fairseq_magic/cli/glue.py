"""magic-glue: fine-tune an exported child on GLUE tasks and score the dev sets.

    magic-glue TASK CHECKPOINT_DIR GLUE_DIR [OUT] [options]     (scripts/glue.sh)

TASK: MNLI, QQP, QNLI, SST-2, CoLA, STS-B, MRPC, RTE, or ``all`` (in that
order: RTE, MRPC and STS-B then start from the MNLI-fine-tuned model, the
paper's protocol). CHECKPOINT_DIR: a magic-export folder (model.pt, dict.txt,
spm.model; ``--spm`` names another sentencepiece model). GLUE_DIR/TASK/ holds
the official train.tsv and dev.tsv (MNLI: dev_matched.tsv, dev_mismatched.tsv).
OUT (default ``glue-out``) gets, per task, OUT/TASK/{text,bin,checkpoints,
train.log,result.json} (OUT/TASK-scratch/ with --from-scratch) and, across tasks, OUT/results.{json,md} with the
paper's Table 2 (dev) rows beside ours. A task whose result.json exists is
skipped on a rerun; an unfinished one restarts from its start.

Per task: read the TSVs; encode every sentence with the sentencepiece model;
binarise with the export's dict.txt (fairseq-preprocess, in-process); run
fairseq-train (a subprocess) with ``--task sentence_prediction --arch
magic_child`` restored from the export (or, with ``--from-scratch``, the same
architecture from random weights), RoBERTa's per-task recipe, the best
checkpoint chosen on the dev set by accuracy (loss for STS-B, as upstream);
then predict the dev set(s) with that checkpoint and score them with the
official metrics. Every recipe value is a flag; the same flags can be given
through the environment variable GLUE_ARGS (split on spaces, flags on the
command line win).

Fine-tuning distillation (paper section 5.4): ``--kd-teacher TEACHER_OUT``
trains with ``--criterion sentence_prediction_kd`` against the teacher that
magic-glue fine-tuned on the same task into TEACHER_OUT/TASK/ (for one task a
checkpoint file also works): loss = (1 - --kd-alpha) x the task's loss +
alpha x T^2 x KL to the teacher's logits (regression: squared distance to
its output), into OUT/TASK-kd, keyed TASK/kd. Every task's teacher is
checked (file, dictionary, head, positions) before the first task trains.
"""

import argparse
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

from ..core import glue
from ..core.space import MagicConfigError

USER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAD = "sentence_classification_head"


def get_parser():
    p = argparse.ArgumentParser(prog="magic-glue", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", help="a GLUE task name or 'all'")
    p.add_argument("checkpoint_dir", help="a magic-export folder (model.pt, dict.txt)")
    p.add_argument("glue_dir", help="folder holding one sub-folder per task (official TSVs)")
    p.add_argument("out", nargs="?", default="glue-out", help="output folder")
    p.add_argument("--spm", help="sentencepiece model (default CHECKPOINT_DIR/spm.model)")
    p.add_argument("--from-scratch", action="store_true",
                   help="train the export's architecture from random weights "
                        "(into OUT/TASK-scratch, keyed TASK/scratch in the results; no MNLI start)")
    p.add_argument("--no-mnli-init", action="store_true",
                   help="do not start RTE/MRPC/STS-B from OUT/MNLI's model")
    g = p.add_argument_group("recipe (default: RoBERTa's per-task value)")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--batch-size", type=int, help="sentences per update")
    g.add_argument("--epochs", type=int, help=f"epochs (default {glue.EPOCHS})")
    g.add_argument("--max-update", type=int,
                   help="total updates (default: epochs x ceil(train / batch))")
    g.add_argument("--warmup-frac", type=float,
                   help="warm-up fraction of the updates (0.06; QQP 0.25)")
    g.add_argument("--weight-decay", type=float, default=0.1, help="Adam weight decay (%(default)s)")
    g.add_argument("--dropout", type=float, default=0.1, help="dropout (%(default)s)")
    g.add_argument("--attention-dropout", type=float, default=0.1,
                   help="attention dropout (%(default)s)")
    g.add_argument("--clip-norm", type=float, default=0.0,
                   help="gradient clipping, 0 = none (%(default)s)")
    g.add_argument("--max-positions", type=int,
                   help="tokens per example, longer ones truncated (default: the export's)")
    g.add_argument("--seed", type=int, default=1,
                   help="fairseq-train seed and subsampling seed (%(default)s)")
    g.add_argument("--max-train-examples", type=int,
                   help="subsample the train set to this many (seeded by --seed)")
    g.add_argument("--max-dev-examples", type=int,
                   help="subsample each dev set to this many (seeded by --seed)")
    g.add_argument("--log-interval", type=int, default=50,
                   help="updates between progress lines (%(default)s)")
    g.add_argument("--cpu", action="store_true", help="train on the CPU even with a GPU")
    g.add_argument("--train-extra", default="",
                   help="more fairseq-train flags, appended verbatim (shell-split)")
    k = p.add_argument_group(
        "fine-tuning distillation (paper section 5.4; --criterion sentence_prediction_kd)")
    k.add_argument("--kd-teacher", metavar="DIR_OR_CKPT",
                   help="distill from a teacher fine-tuned on the same task: a magic-glue "
                        "OUT folder of the teacher (its OUT/TASK/checkpoints/"
                        "checkpoint_best.pt is each task's teacher) or, for one task, a "
                        "checkpoint; results go to OUT/TASK-kd, keyed TASK/kd")
    k.add_argument("--kd-alpha", type=float, default=0.5,
                   help="weight of the teacher's term in [0, 1] (%(default)s)")
    k.add_argument("--kd-temperature", type=float, default=1.0,
                   help="softmax temperature > 0, the KL term scaled by T^2 (%(default)s)")
    return p


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # argparse keeps an option's last value: the command line wins over GLUE_ARGS
    return get_parser().parse_args(shlex.split(os.environ.get("GLUE_ARGS", "")) + argv)


# ---- checks (before any work) ----

def load_export(ckpt_dir: str, spm_path=None) -> dict:
    """The export's model config, dictionary and sentencepiece paths, checked."""
    import torch

    model_pt = os.path.join(ckpt_dir, "model.pt")
    if not os.path.isfile(model_pt):
        raise MagicConfigError(f"checkpoint folder {ckpt_dir!r}: no model.pt (a "
                               "magic-export folder holds model.pt and dict.txt)")
    dict_txt = os.path.join(ckpt_dir, "dict.txt")
    if not os.path.isfile(dict_txt):
        raise MagicConfigError(f"checkpoint folder {ckpt_dir!r}: no dict.txt")
    spm_path = spm_path or os.path.join(ckpt_dir, "spm.model")
    if not os.path.isfile(spm_path):
        raise MagicConfigError(f"no sentencepiece model {spm_path!r} (pass --spm PATH)")
    try:
        state = torch.load(model_pt, map_location="cpu", weights_only=False)
        model_cfg = dict(state["cfg"]["model"])
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one message
        raise MagicConfigError(f"{model_pt!r} is not a fairseq checkpoint: {e}") from None
    name = model_cfg.get("_name")
    if name != "magic_child" or not model_cfg.get("magic_arch"):
        raise MagicConfigError(f"{model_pt!r} is not an exported child: its model is "
                               f"{name!r}, expected 'magic_child' (run magic-export)")
    return {"model_pt": os.path.abspath(model_pt), "dict": os.path.abspath(dict_txt),
            "spm": os.path.abspath(spm_path), "model": model_cfg}


def model_flags(model_cfg: dict, max_positions: int):
    flags = ["--arch", "magic_child", "--magic-arch", model_cfg["magic_arch"],
             "--encoder-embed-dim", str(model_cfg["encoder_embed_dim"]),
             "--magic-ops", model_cfg["magic_ops"],
             "--magic-embed-dim", str(model_cfg.get("magic_embed_dim") or 0),
             "--max-positions", str(max_positions)]
    if model_cfg.get("activation_dropout") is not None:
        flags += ["--activation-dropout", str(model_cfg["activation_dropout"])]
    return flags


def kd_teacher_for(args, name):
    """The teacher checkpoint of task ``name`` under ``--kd-teacher``, or None."""
    if not args.kd_teacher:
        return None
    src = args.kd_teacher
    if os.path.isdir(src):
        per_task = os.path.join(src, name, "checkpoints", "checkpoint_best.pt")
        if os.path.isfile(per_task):
            return per_task
        for fname in ("checkpoint_best.pt", "model.pt"):
            if os.path.isfile(os.path.join(src, fname)):
                return os.path.join(src, fname)
        raise MagicConfigError(
            f"--kd-teacher {src!r}: no {per_task!r}: expected the teacher's magic-glue output "
            f"folder with {name} fine-tuned (or a checkpoint)")
    if not os.path.isfile(src):
        raise MagicConfigError(f"--kd-teacher {src!r} does not exist: expected the teacher's "
                               "magic-glue output folder or a fine-tuned checkpoint")
    return src


def check_kd(args, names, exp):
    """Every task's teacher, checked before the first task trains: the file,
    alpha and temperature, the export's dictionary, the classification head."""
    if not args.kd_teacher:
        return
    from fairseq.data import Dictionary

    from ..core.distill import check_kd_params
    from ..teacher import check_teacher

    check_kd_params(args.kd_alpha, args.kd_temperature)
    if len(names) > 1 and os.path.isfile(args.kd_teacher):
        raise MagicConfigError(
            f"--kd-teacher {args.kd_teacher!r} is one checkpoint for {len(names)} tasks: "
            "pass the teacher's magic-glue output folder (one fine-tuned teacher per task)")
    dictionary = Dictionary.load(exp["dict"])
    dictionary.add_symbol("<mask>")  # as sentence_prediction loads it
    for name in names:
        task = glue.get_task(name)
        check_teacher(kd_teacher_for(args, name), dictionary,
                      args.max_positions or int(exp["model"]["max_positions"]),
                      classification_head=HEAD, num_classes=task.num_classes,
                      student_dict_file=exp["dict"])


# ---- data ----

def subsample(examples, n, seed):
    if n is None or n >= len(examples):
        return examples
    idx = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in idx]


def write_text(task, examples, sp, text_dir, split):
    for j in range(len(task.inputs)):
        with open(os.path.join(text_dir, f"{split}.input{j}"), "w", encoding="utf-8") as f:
            for ex in examples:
                f.write(" ".join(sp.encode(ex.inputs[j].strip(), out_type=str)) + "\n")
    with open(os.path.join(text_dir, f"{split}.label"), "w", encoding="utf-8") as f:
        for ex in examples:
            lab = f"{float(ex.label) / glue.STSB_SCALE:.6f}" if task.regression else ex.label
            f.write(lab + "\n")


def quiet_fairseq():
    """fairseq's preprocessing and loaders log every step at INFO: in this
    process only warnings, so the per-task progress lines stay readable
    (fairseq-train's own log goes to OUT/TASK/train.log)."""
    import logging

    for name in ("fairseq", "fairseq_magic", "fairseq_cli"):
        logging.getLogger(name).setLevel(logging.WARNING)


def fairseq_preprocess(*argv, quiet=True):
    """fairseq-preprocess ARGV in this process (a subprocess spends seconds
    importing fairseq); ``quiet`` lowers fairseq's loggers to WARNING first."""
    import logging

    if quiet:
        quiet_fairseq()

    from fairseq import options
    from fairseq_cli import preprocess

    args = options.get_preprocessing_parser().parse_args([str(a) for a in argv])
    log = logging.getLogger("fairseq_cli.preprocess")
    handlers = list(log.handlers)
    try:
        preprocess.main(args)
    finally:
        for h in log.handlers:  # main() adds a file handler per call
            if h not in handlers:
                log.removeHandler(h)
                h.close()


def binarize(task, text_dir, bin_dir, dict_txt, n_dev):
    valid = ",".join(os.path.join(text_dir, "valid" if i == 0 else f"valid{i}")
                     for i in range(n_dev))
    fields = [f"input{j}" for j in range(len(task.inputs))]
    for fld in fields + ([] if task.regression else ["label"]):
        extra = ["--srcdict", dict_txt] if fld != "label" else []
        fairseq_preprocess("--only-source", "--trainpref", os.path.join(text_dir, f"train.{fld}"),
                           "--validpref", ",".join(f"{v}.{fld}" for v in valid.split(",")),
                           "--destdir", os.path.join(bin_dir, fld), "--workers", "1", *extra)
    if task.regression:  # sentence_prediction reads regression targets as text
        os.makedirs(os.path.join(bin_dir, "label"), exist_ok=True)
        for i in range(n_dev + 1):
            split = "train" if i == 0 else ("valid" if i == 1 else f"valid{i - 1}")
            shutil.copy(os.path.join(text_dir, f"{split}.label"),
                        os.path.join(bin_dir, "label", f"{split}.label"))


def unk_rate(bin_dir, dict_txt, text_dir):
    """Fraction of train tokens the dictionary does not know: a wrong --spm shows here."""
    from fairseq.data import Dictionary

    d = Dictionary.load(dict_txt)
    total = unk = 0
    with open(os.path.join(text_dir, "train.input0"), encoding="utf-8") as f:
        for line in f:
            for tok in line.split():
                total += 1
                unk += d.index(tok) == d.unk()
    return unk / max(total, 1)


# ---- training and evaluation ----

def valid_splits(n_dev):
    return ["valid"] + [f"valid{i}" for i in range(1, n_dev)]


def train_command(task, exp, bin_dir, save_dir, args, n_train, n_dev, restore):
    import torch

    batch = args.batch_size or task.batch_size
    total, warmup = glue.schedule(task, n_train, batch, args.epochs, args.warmup_frac)
    if args.max_update:
        total = args.max_update
        frac = task.warmup_frac if args.warmup_frac is None else args.warmup_frac
        warmup = int(round(frac * total))
    max_pos = args.max_positions or int(exp["model"]["max_positions"])
    cmd = [sys.executable, "-m", "fairseq_cli.train", bin_dir, "--user-dir", USER_DIR,
           "--task", "sentence_prediction", "--criterion", "sentence_prediction",
           *model_flags(exp["model"], max_pos),
           "--num-classes", str(task.num_classes), "--init-token", "0",
           "--separator-token", "2", "--shorten-method", "truncate",
           "--classification-head-name", HEAD,
           "--batch-size", str(batch), "--required-batch-size-multiple", "1",
           "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-06",
           "--weight-decay", str(args.weight_decay), "--clip-norm", str(args.clip_norm),
           "--lr", str(args.lr or task.lr), "--lr-scheduler", "polynomial_decay",
           "--total-num-update", str(total), "--warmup-updates", str(warmup),
           "--max-update", str(total),
           "--max-epoch", str(args.epochs if args.epochs is not None else glue.EPOCHS),
           "--dropout", str(args.dropout), "--attention-dropout", str(args.attention_dropout),
           "--valid-subset", ",".join(valid_splits(n_dev)),
           "--save-dir", save_dir, "--no-epoch-checkpoints", "--num-workers", "0",
           "--seed", str(args.seed), "--log-format", "simple",
           "--log-interval", str(args.log_interval)]
    if task.regression:
        cmd += ["--regression-target", "--best-checkpoint-metric", "loss"]
    else:
        cmd += ["--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric"]
    if restore:
        cmd += ["--restore-file", restore, "--reset-optimizer", "--reset-dataloader",
                "--reset-meters", "--reset-lr-scheduler"]
    teacher = kd_teacher_for(args, task.name)
    if teacher:
        cmd[cmd.index("--criterion") + 1] = "sentence_prediction_kd"
        cmd += ["--kd-teacher", os.path.abspath(teacher), "--kd-alpha", str(args.kd_alpha),
                "--kd-temperature", str(args.kd_temperature)]
    if args.cpu or not torch.cuda.is_available():
        cmd += ["--cpu"]
    cmd += shlex.split(args.train_extra)
    return cmd, total, warmup


def run_train(cmd, log_path):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"  # progress as it happens, not in 8 kB bursts
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env)
        for line in proc.stdout:
            log.write(line)
            # progress: fairseq's per-interval and per-epoch summary lines
            if " | train_inner | " in line or " | valid | " in line or " | train | " in line:
                print("    " + line.split(" | INFO | ")[-1].rstrip(), flush=True)
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"fairseq-train failed (exit {rc}); log: {log_path}")


def predict(ckpt, bin_dir, task, n_dev):
    """Dev predictions per split, in file order: label strings, or scores
    on the 0..5 scale for the regression task."""
    import torch
    from fairseq import checkpoint_utils

    from ..evaluation import import_plugin

    quiet_fairseq()
    import_plugin()
    models, cfg, ftask = checkpoint_utils.load_model_ensemble_and_task(
        [ckpt], arg_overrides={"data": bin_dir})
    model = models[0].eval()
    out = []
    for split in valid_splits(n_dev):
        ftask.load_dataset(split, combine=False, epoch=1)
        ds = ftask.dataset(split)
        preds = [None] * len(ds)
        itr = ftask.get_batch_iterator(dataset=ds, max_sentences=64,
                                       ignore_invalid_inputs=False).next_epoch_itr(shuffle=False)
        with torch.no_grad(), warnings.catch_warnings():
            # torch warns that pin_memory is useless without an accelerator
            warnings.simplefilter("ignore", UserWarning)
            for sample in itr:
                logits, _ = model(**sample["net_input"], features_only=True,
                                  classification_head_name=HEAD)
                for i, row in zip(sample["id"].tolist(), logits):
                    if task.regression:
                        preds[i] = float(row[0]) * glue.STSB_SCALE
                    else:
                        sym = int(row.argmax()) + ftask.label_dictionary.nspecial
                        preds[i] = ftask.label_dictionary[sym]
        out.append(preds)
    return out


def run_task(name, exp, args, out_dir, progress):
    task = glue.get_task(name)
    key = f"{name}/scratch" if args.from_scratch else name
    tdir = os.path.join(out_dir, name + ("-scratch" if args.from_scratch else ""))
    kd = "-kd" if args.kd_teacher else ""
    if kd:  # beside the plain run of the same export, in the same OUT
        key, tdir = key + "/kd", tdir + kd
    result_path = os.path.join(tdir, "result.json")
    if os.path.isfile(result_path):
        print(f"{progress} {key}: done already ({result_path}), skipped", flush=True)
        with open(result_path) as f:
            return json.load(f)
    train, devs = glue.read_task(task, os.path.join(args.glue_dir, name))
    if not task.regression:
        labels = sorted({ex.label for ex in train})
        if len(labels) > task.num_classes:
            raise MagicConfigError(f"{name} train set has {len(labels)} labels {labels[:10]}, "
                                   f"expected {task.num_classes}")
    train = subsample(train, args.max_train_examples, args.seed)
    devs = [(f, subsample(d, args.max_dev_examples, args.seed + 1 + i))
            for i, (f, d) in enumerate(devs)]
    restore = None if args.from_scratch else exp["model_pt"]
    mnli_ckpt = os.path.join(out_dir, "MNLI" + kd, "checkpoints", "checkpoint_best.pt")
    if (task.from_mnli and not args.from_scratch and not args.no_mnli_init
            and os.path.isfile(os.path.join(out_dir, "MNLI" + kd, "result.json"))
            and os.path.isfile(mnli_ckpt)):
        restore = mnli_ckpt  # the head (3 classes) is dropped on load: a fresh one
    shutil.rmtree(tdir, ignore_errors=True)  # an unfinished earlier try
    for sub in ("text", "bin", "checkpoints"):
        os.makedirs(os.path.join(tdir, sub))
    try:
        return _run_task(task, key, tdir, train, devs, restore, exp, args, progress)
    except MagicConfigError:
        shutil.rmtree(tdir, ignore_errors=True)  # bad input: nothing left behind
        raise


def _run_task(task, key, tdir, train, devs, restore, exp, args, progress):
    name = task.name
    result_path = os.path.join(tdir, "result.json")
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=exp["spm"])
    text_dir, bin_dir = os.path.join(tdir, "text"), os.path.join(tdir, "bin")
    write_text(task, train, sp, text_dir, "train")
    for i, (_, dev) in enumerate(devs):
        write_text(task, dev, sp, text_dir, "valid" if i == 0 else f"valid{i}")
    unk = unk_rate(bin_dir, exp["dict"], text_dir)
    if unk > 0.2:
        raise MagicConfigError(f"{unk:.0%} of the encoded {name} tokens are unknown to "
                               f"{exp['dict']!r}: is {exp['spm']!r} this export's "
                               "sentencepiece model?")
    binarize(task, text_dir, bin_dir, exp["dict"], len(devs))
    cmd, total, warmup = train_command(task, exp, bin_dir, os.path.join(tdir, "checkpoints"),
                                       args, len(train), len(devs), restore)
    print(f"{progress} {key}: {len(train)} train / {'+'.join(str(len(d)) for _, d in devs)} "
          f"dev examples, {total} updates ({warmup} warm-up), from "
          f"{'scratch' if restore is None else restore}", flush=True)
    t0, load0 = time.time(), os.getloadavg()[0]
    run_train(cmd, os.path.join(tdir, "train.log"))
    load1 = os.getloadavg()[0]  # timings on a shared machine mean little without it
    preds = predict(os.path.join(tdir, "checkpoints", "checkpoint_best.pt"), bin_dir, task,
                    len(devs))
    scores = {}
    for (fname, dev), pred in zip(devs, preds):
        gold = [float(ex.label) if task.regression else ex.label for ex in dev]
        split_name = os.path.splitext(fname)[0]
        scores[split_name] = glue.score(task, pred, gold)
        if not task.regression:
            scores[split_name]["majority_baseline"] = glue.majority_baseline(
                task, [ex.label for ex in train], gold)
    result = {"task": name, "key": key, "scores": scores, "metric": task.metrics[0],
              "train_examples": len(train), "dev_examples": [len(d) for _, d in devs],
              "updates": total, "warmup_updates": warmup,
              "lr": args.lr or task.lr, "batch_size": args.batch_size or task.batch_size,
              "from": "scratch" if restore is None else restore,
              "arch": exp["model"]["magic_arch"], "unk_rate": unk,
              "seconds": round(time.time() - t0, 1),
              "load_avg_1min": [round(load0, 2), round(load1, 2)], "command": cmd}
    if args.kd_teacher:
        result["kd"] = {"teacher": os.path.abspath(kd_teacher_for(args, name)),
                        "alpha": args.kd_alpha, "temperature": args.kd_temperature}
    _atomic_json(result_path, result)
    main_split = next(iter(scores))
    print(f"{progress} {key}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores[main_split].items()
                                            if v is not None), flush=True)
    return result


def _atomic_json(path, obj):
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def headline(result):
    """The Table 2 number of a result: the first split's first metric."""
    scores = next(iter(result["scores"].values()))
    return scores[result["metric"]]


def results_table(results) -> str:
    names = list(glue.TASK_ORDER)
    lines = ["| model | " + " | ".join(names) + " | AVG |",
             "|---" * (len(names) + 2) + "|"]
    variants = sorted({r["key"][len(r["task"]):].strip("/") for r in results.values()})
    for variant in variants:
        row = {r["task"]: headline(r) for r in results.values()
               if r["key"][len(r["task"]):].strip("/") == variant}
        avg = f"{sum(row.values()) / len(row):.1f}" if len(row) == len(names) else "-"
        label = "this child" + (f" ({variant})" if variant else "")
        lines.append(f"| {label} | " + " | ".join(
            f"{row[n]:.1f}" if n in row else "-" for n in names) + f" | {avg} |")
    for model, row in glue.PAPER_TABLE2_DEV.items():
        lines.append(f"| {model} (paper, Table 2 dev) | " + " | ".join(
            f"{row[n]:.1f}" for n in names) + f" | {row['AVG']:.1f} |")
    lines.append("")
    lines.append("Spearman for STS-B, Matthews for CoLA, accuracy elsewhere (MNLI: "
                 "matched); dev sets.")
    return "\n".join(lines) + "\n"


def write_results(out_dir, new):
    path = os.path.join(out_dir, "results.json")
    results = {}
    if os.path.isfile(path):
        with open(path) as f:
            results = json.load(f)
    results.update(new)
    _atomic_json(path, results)
    md = os.path.join(out_dir, "results.md")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=out_dir)
    with os.fdopen(fd, "w") as f:
        f.write(results_table(results))
    os.replace(tmp, md)
    return results


def main(argv=None):
    args = parse_args(argv)
    names = list(glue.TASK_ORDER) if args.task == "all" else [glue.get_task(args.task).name]
    exp = load_export(args.checkpoint_dir, args.spm)
    # every task's files checked before the first one trains
    for name in names:
        task = glue.get_task(name)
        tdir = os.path.join(args.glue_dir, name)
        for fname in ("train.tsv",) + task.dev_files:
            path = os.path.join(tdir, fname)
            if not os.path.isfile(path):
                raise MagicConfigError(f"{name}: no file {path!r}")
            glue.check_header(task, path)
    check_kd(args, names, exp)
    os.makedirs(args.out, exist_ok=True)
    new = {}
    for i, name in enumerate(names, 1):
        r = run_task(name, exp, args, args.out, f"[{i}/{len(names)}]")
        new[r["key"]] = {k: v for k, v in r.items() if k != "command"}
        write_results(args.out, new)
    print(f"results: {os.path.join(args.out, 'results.md')}")
    return 0


def cli_main():
    from . import run_main

    run_main(main, "magic-glue", runtime_errors=True)


if __name__ == "__main__":
    cli_main()
