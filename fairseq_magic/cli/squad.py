"""magic-squad: fine-tune an exported child on SQuAD v1.1 or v2.0 and score the dev set.

    magic-squad VERSION CHECKPOINT_DIR SQUAD_DIR [OUT] [options]     (scripts/squad.sh)

VERSION: 1.1 or 2.0. CHECKPOINT_DIR: a magic-export folder (model.pt,
dict.txt, spm.model; ``--spm`` names another sentencepiece model). SQUAD_DIR
holds the official train-vVERSION.json and dev-vVERSION.json. OUT (default
``squad-out``) gets OUT/vVERSION/{text,bin,checkpoints,train.log,
predictions.json,result.json,...} and, across versions, OUT/results.{json,md}
with the paper's Table 4 (dev) rows beside ours. A version whose result.json
exists is skipped on a rerun; an unfinished one restarts from its start.

Steps: read both files (the version is checked: a v1.1 file where v2.0 is
expected, or the reverse, fails naming the file); tokenise questions and
contexts with the sentencepiece model, keeping every token's characters; cut
the contexts into windows (``--max-length``, ``--doc-stride``,
``--max-query-length``) and label them (fairseq_magic/core/squad.py); binarise
with the export's dict.txt (fairseq-preprocess, in-process); run fairseq-train
(a subprocess) with ``--task magic_squad --criterion squad_span --arch
magic_child`` restored from the export, the recipe of
../shared/notes/downstream-facts.md (batch 32 windows, lr 2e-5, 3 epochs, 10%
warm-up, weight decay 0.01, Adam (0.9, 0.98), eps 1e-6, polynomial decay);
predict every dev window with the last checkpoint and keep each question's best
valid span (``--n-best``, ``--max-answer-length``); score with the official
definitions (core/squad_metrics.py, the code of magic-squad-eval).

Files of a run (OUT/vVERSION/): predictions.json (the official format, question id ->
answer text, "" = no answer); for v2.0 also na_probs.json (null score minus best
span score: higher means no answer) and predictions_best_span.json (every
question's best span, the input of the threshold search); dev.json when the dev
set was subsampled; scores.json, what ``magic-squad-eval DEV
predictions.json`` prints for v1.1 and ``magic-squad-eval DEV
predictions_best_span.json --na-prob-file na_probs.json --na-prob-thresh T``
(T = --null-score-threshold) for v2.0: exact/f1 are then those of
predictions.json, best_* the best threshold on this dev set.

Every recipe value is a flag; the same flags can be given through the
environment variable SQUAD_ARGS (split on spaces, flags on the command line win).

Fine-tuning distillation (paper section 5.4): ``--kd-teacher TEACHER_OUT``
trains with ``--criterion squad_span_kd`` against the teacher that magic-squad
fine-tuned on the same version into TEACHER_OUT/vVERSION/ (its
checkpoints/checkpoint_last.pt, the checkpoint its result.json scores; a
checkpoint file also works): each of the start and end losses is (1 -
--kd-alpha) x the cross-entropy on the gold position + alpha x T^2 x KL to the
teacher's distribution, both over the positions an answer may use. The run goes
to OUT/vVERSION-kd, keyed vVERSION-kd, beside the plain run of the same export
(TEACHER_OUT may be OUT itself). The teacher (file, dictionary, span head,
positions), alpha and temperature are checked before anything is written.
"""

import argparse
import json
import os
import shlex
import shutil
import sys
import time
import warnings

from ..core import squad, squad_metrics
from ..core.space import MagicConfigError
from .glue import (USER_DIR, _atomic_json, fairseq_preprocess, load_export, model_flags,
                   quiet_fairseq, run_train, unk_rate)

PROG = "magic-squad"
R = squad.RECIPE


def get_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("version", help="SQuAD version: 1.1 or 2.0")
    p.add_argument("checkpoint_dir", help="a magic-export folder (model.pt, dict.txt)")
    p.add_argument("squad_dir", help="folder holding train-vVERSION.json and dev-vVERSION.json")
    p.add_argument("out", nargs="?", default="squad-out", help="output folder")
    p.add_argument("--spm", help="sentencepiece model (default CHECKPOINT_DIR/spm.model)")
    g = p.add_argument_group("recipe")
    g.add_argument("--lr", type=float, default=R["lr"], help="peak learning rate (%(default)s)")
    g.add_argument("--batch-size", type=int, default=R["batch_size"],
                   help="windows per update (%(default)s)")
    g.add_argument("--epochs", type=int, default=R["epochs"], help="epochs (%(default)s)")
    g.add_argument("--max-update", type=int,
                   help="total updates (default: epochs x ceil(train windows / batch))")
    g.add_argument("--warmup-frac", type=float, default=R["warmup_frac"],
                   help="warm-up fraction of the updates (%(default)s)")
    g.add_argument("--weight-decay", type=float, default=R["weight_decay"],
                   help="Adam weight decay (%(default)s)")
    g.add_argument("--dropout", type=float, default=0.1, help="dropout (%(default)s)")
    g.add_argument("--attention-dropout", type=float, default=0.1,
                   help="attention dropout (%(default)s)")
    g.add_argument("--clip-norm", type=float, default=0.0,
                   help="gradient clipping, 0 = none (%(default)s)")
    g.add_argument("--seed", type=int, default=1,
                   help="fairseq-train seed and subsampling seed (%(default)s)")
    g.add_argument("--max-train-examples", type=int,
                   help="subsample the train questions to this many (seeded by --seed)")
    g.add_argument("--max-dev-examples", type=int,
                   help="subsample the dev questions to this many (seeded by --seed)")
    g.add_argument("--log-interval", type=int, default=50,
                   help="updates between progress lines (%(default)s)")
    g.add_argument("--cpu", action="store_true", help="train on the CPU even with a GPU")
    g.add_argument("--train-extra", default="",
                   help="more fairseq-train flags, appended verbatim (shell-split)")
    w = p.add_argument_group("windows and answers")
    w.add_argument("--max-length", type=int,
                   help=f"tokens per window, specials included (default: {R['max_length']}, "
                        "or the export's max_positions when smaller)")
    w.add_argument("--doc-stride", type=int,
                   help=f"tokens between window starts (default: {R['doc_stride']}, or a third "
                        "of --max-length when that is smaller, so windows overlap)")
    w.add_argument("--max-query-length", type=int,
                   help=f"question tokens kept (default: {R['max_query_length']}, or a "
                        "quarter of --max-length when that is smaller)")
    w.add_argument("--n-best", type=int, default=R["n_best"],
                   help="start and end candidates per window (%(default)s)")
    w.add_argument("--max-answer-length", type=int, default=R["max_answer_length"],
                   help="tokens of an answer at most (%(default)s)")
    w.add_argument("--null-score-threshold", type=float, default=R["null_score_threshold"],
                   help="v2.0: answer \"\" when null score - best span score exceeds "
                        "this (%(default)s)")
    k = p.add_argument_group(
        "fine-tuning distillation (paper section 5.4; --criterion squad_span_kd)")
    k.add_argument("--kd-teacher", metavar="DIR_OR_CKPT",
                   help="distill from a teacher fine-tuned on the same SQuAD version: the "
                        "teacher's magic-squad OUT folder (its OUT/vVERSION/checkpoints/"
                        "checkpoint_last.pt, the checkpoint its result.json scores, is the "
                        "teacher) or a checkpoint with a span head; results go to "
                        "OUT/vVERSION-kd, keyed vVERSION-kd")
    k.add_argument("--kd-alpha", type=float, default=0.5,
                   help="weight of the teacher's term in [0, 1] (%(default)s)")
    k.add_argument("--kd-temperature", type=float, default=1.0,
                   help="softmax temperature > 0, the KL term scaled by T^2 (%(default)s)")
    return p


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # argparse keeps an option's last value: the command line wins over SQUAD_ARGS
    return get_parser().parse_args(shlex.split(os.environ.get("SQUAD_ARGS", "")) + argv)


def window_config(args, max_positions: int) -> squad.WindowConfig:
    max_length = args.max_length or min(R["max_length"], max_positions)
    cfg = squad.WindowConfig(
        max_length=max_length,
        doc_stride=args.doc_stride or min(R["doc_stride"], max(1, max_length // 3)),
        max_query_length=args.max_query_length or min(R["max_query_length"],
                                                      max(1, max_length // 4)))
    return cfg.check(max_positions)


def run_name(version, args) -> str:
    """The run's folder under OUT and its key in results.json: vVERSION, or
    vVERSION-kd beside it when distilling (the plain run is never overwritten)."""
    return f"v{version}" + ("-kd" if args.kd_teacher else "")


# ---- distillation checks (before any work) ----

def kd_teacher_for(args, version):
    """The teacher checkpoint under ``--kd-teacher``, or None."""
    if not args.kd_teacher:
        return None
    src = args.kd_teacher
    if os.path.isdir(src):
        run = os.path.join(src, f"v{version}")
        # checkpoint_last.pt: magic-squad predicts (and scores) with it; its
        # checkpoint_best.pt is only the lowest dev loss
        ckpt = os.path.join(run, "checkpoints", "checkpoint_last.pt")
        if os.path.isfile(ckpt):
            if not os.path.isfile(os.path.join(run, "result.json")):
                raise MagicConfigError(
                    f"--kd-teacher {src!r}: the teacher's v{version} run has no result.json "
                    f"yet ({run!r} is unfinished or failed): expected a finished magic-squad run")
            return ckpt
        for fname in ("checkpoint_last.pt", "checkpoint_best.pt"):  # a checkpoints folder
            if os.path.isfile(os.path.join(src, fname)):
                return os.path.join(src, fname)
        raise MagicConfigError(
            f"--kd-teacher {src!r}: no {ckpt!r}: expected the teacher's magic-squad output "
            f"folder with v{version} fine-tuned (or a checkpoint)")
    if not os.path.isfile(src):
        raise MagicConfigError(f"--kd-teacher {src!r} does not exist: expected the teacher's "
                               "magic-squad output folder or a fine-tuned checkpoint")
    return src


def check_kd(args, version, exp):
    """The teacher, alpha and temperature, checked before anything is written:
    the file, the export's dictionary (symbol for symbol), the span head, the
    positions. The criterion checks them again when fairseq-train builds it."""
    if not args.kd_teacher:
        return
    from fairseq.data import Dictionary

    from ..core.distill import check_kd_params
    from ..teacher import check_teacher

    check_kd_params(args.kd_alpha, args.kd_temperature)
    dictionary = Dictionary.load(exp["dict"])
    dictionary.add_symbol("<mask>")  # as the magic_squad task loads it
    check_teacher(kd_teacher_for(args, version), dictionary, int(exp["model"]["max_positions"]),
                  span_head=True, student_dict_file=exp["dict"])


# ---- data ----

def write_windows(encoded, text_dir, split):
    n = 0
    with open(os.path.join(text_dir, f"{split}.input0"), "w", encoding="utf-8") as q, \
            open(os.path.join(text_dir, f"{split}.input1"), "w", encoding="utf-8") as c, \
            open(os.path.join(text_dir, f"{split}.label"), "w", encoding="utf-8") as lab:
        for enc in encoded:
            for win in enc.windows:
                lq, lc, ll = squad.window_lines(enc, win)
                q.write(lq + "\n")
                c.write(lc + "\n")
                lab.write(ll + "\n")
                n += 1
    return n


def binarize(text_dir, bin_dir, dict_txt):
    for fld in ("input0", "input1"):
        fairseq_preprocess("--only-source", "--trainpref", os.path.join(text_dir, f"train.{fld}"),
                           "--validpref", os.path.join(text_dir, f"valid.{fld}"),
                           "--destdir", os.path.join(bin_dir, fld), "--workers", "1",
                           "--srcdict", dict_txt)
    os.makedirs(os.path.join(bin_dir, "label"), exist_ok=True)
    for split in ("train", "valid"):  # the task reads labels as text
        shutil.copy(os.path.join(text_dir, f"{split}.label"),
                    os.path.join(bin_dir, "label", f"{split}.label"))


# ---- training and prediction ----

def train_command(exp, bin_dir, save_dir, args, n_windows, version):
    import torch

    total, warmup = squad.schedule(n_windows, args.batch_size, args.epochs, args.warmup_frac)
    if args.max_update:
        total = args.max_update
        warmup = int(round(args.warmup_frac * total))
    cmd = [sys.executable, "-m", "fairseq_cli.train", bin_dir, "--user-dir", USER_DIR,
           "--task", "magic_squad", "--criterion", "squad_span",
           # the export's position table as it is (windows are at most that long)
           *model_flags(exp["model"], int(exp["model"]["max_positions"])),
           "--batch-size", str(args.batch_size), "--required-batch-size-multiple", "1",
           "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-06",
           "--weight-decay", str(args.weight_decay), "--clip-norm", str(args.clip_norm),
           "--lr", str(args.lr), "--lr-scheduler", "polynomial_decay",
           "--total-num-update", str(total), "--warmup-updates", str(warmup),
           "--max-update", str(total), "--max-epoch", str(args.epochs),
           "--dropout", str(args.dropout), "--attention-dropout", str(args.attention_dropout),
           "--valid-subset", "valid", "--best-checkpoint-metric", "loss",
           "--save-dir", save_dir, "--no-epoch-checkpoints", "--num-workers", "0",
           "--seed", str(args.seed), "--log-format", "simple",
           "--log-interval", str(args.log_interval),
           "--restore-file", exp["model_pt"], "--reset-optimizer", "--reset-dataloader",
           "--reset-meters", "--reset-lr-scheduler"]
    teacher = kd_teacher_for(args, version)
    if teacher:
        cmd[cmd.index("--criterion") + 1] = "squad_span_kd"
        cmd += ["--kd-teacher", os.path.abspath(teacher), "--kd-alpha", str(args.kd_alpha),
                "--kd-temperature", str(args.kd_temperature)]
    if args.cpu or not torch.cuda.is_available():
        cmd += ["--cpu"]
    cmd += shlex.split(args.train_extra)
    return cmd, total, warmup


def predict_logits(ckpt, bin_dir, batch_size=64):
    """(start logits, end logits) of every valid window, in file order, each over
    the window's own positions."""
    import torch
    from fairseq import checkpoint_utils

    from ..evaluation import import_plugin
    from ..tasks.squad_task import span_logits

    quiet_fairseq()
    import_plugin()
    models, _, ftask = checkpoint_utils.load_model_ensemble_and_task(
        [ckpt], arg_overrides={"data": bin_dir})
    model = models[0].eval()
    ftask.load_dataset("valid", combine=False, epoch=1)
    ds = ftask.dataset("valid")
    out = [None] * len(ds)
    with torch.no_grad(), warnings.catch_warnings():
        # torch warns that pin_memory is useless without an accelerator
        warnings.simplefilter("ignore", UserWarning)
        itr = ftask.get_batch_iterator(dataset=ds, max_sentences=batch_size,
                                       ignore_invalid_inputs=False).next_epoch_itr(shuffle=False)
        for sample in itr:
            src = sample["net_input"]["src_tokens"]
            logits = span_logits(model, src).float().numpy()
            # float32 rows, each cut to its window: SQuAD v2.0's dev set has about
            # 12,000 windows of 384 positions
            for i, row, n in zip(sample["id"].tolist(), logits,
                                 sample["net_input"]["src_lengths"].tolist()):
                out[i] = (row[:n, 0].copy(), row[:n, 1].copy())
    return out


def run_version(version, exp, args, out_dir, train_path, dev_path):
    # absolute: result.json names files
    vdir = os.path.abspath(os.path.join(out_dir, run_name(version, args)))
    result_path = os.path.join(vdir, "result.json")
    if os.path.isfile(result_path):
        print(f"[{run_name(version, args)}] done already ({result_path}), skipped", flush=True)
        with open(result_path) as f:
            return json.load(f)
    max_pos = int(exp["model"]["max_positions"])
    wcfg = window_config(args, max_pos)
    train = squad.read_squad(train_path, version)
    dev_obj = squad_metrics.read_json(dev_path)
    dev = squad.read_squad(dev_path, version)
    train = squad.subsample(train, args.max_train_examples, args.seed)
    dev = squad.subsample(dev, args.max_dev_examples, args.seed + 1)
    shutil.rmtree(vdir, ignore_errors=True)  # an unfinished earlier try
    for sub in ("text", "bin", "checkpoints"):
        os.makedirs(os.path.join(vdir, sub))
    try:
        return _run_version(version, vdir, train, dev, dev_obj, dev_path, wcfg, exp, args)
    except MagicConfigError:
        shutil.rmtree(vdir, ignore_errors=True)  # bad input: nothing left behind
        raise


def _run_version(version, vdir, train, dev, dev_obj, dev_path, wcfg, exp, args):
    import sentencepiece as spm

    tag = f"[{run_name(version, args)}]"
    t0 = time.time()
    tokenize = squad.spm_tokenizer(spm.SentencePieceProcessor(model_file=exp["spm"]))
    train_enc = squad.encode_all(train, tokenize, wcfg)
    lost = [e for e in train_enc if e.answer_lost]
    train_enc = [e for e in train_enc if not e.answer_lost]
    if not train_enc:
        raise MagicConfigError(f"{train_path_of(args, version)}: no training question whose "
                               "answer text is found in its context")
    dev_enc = squad.encode_all(dev, tokenize, wcfg)
    text_dir, bin_dir = os.path.join(vdir, "text"), os.path.join(vdir, "bin")
    n_train = write_windows(train_enc, text_dir, "train")
    n_dev = write_windows(dev_enc, text_dir, "valid")
    unk = unk_rate(bin_dir, exp["dict"], text_dir)
    if unk > 0.2:
        raise MagicConfigError(f"{unk:.0%} of the encoded SQuAD question tokens are unknown "
                               f"to {exp['dict']!r}: is {exp['spm']!r} this export's "
                               "sentencepiece model?")
    binarize(text_dir, bin_dir, exp["dict"])
    if args.max_dev_examples is not None:
        data_file = os.path.join(vdir, "dev.json")
        _atomic_json(data_file, squad.restrict_file(dev_obj, [e.qid for e in dev]))
    else:
        data_file = os.path.abspath(dev_path)
    cmd, total, warmup = train_command(exp, bin_dir, os.path.join(vdir, "checkpoints"), args,
                                       n_train, version)
    answered = sum(1 for e in train_enc for w in e.windows if w.start != squad.CLS)
    print(f"{tag} {len(train_enc)} train questions ({len(lost)} skipped: answer not found "
          f"in the context) -> {n_train} windows ({answered} holding the answer); "
          f"{len(dev_enc)} dev questions -> {n_dev} windows; windows of {wcfg.max_length} "
          f"tokens, stride {wcfg.doc_stride}, questions cut to {wcfg.max_query_length}; "
          f"{total} updates ({warmup} warm-up) from {exp['model_pt']}", flush=True)
    load0 = os.getloadavg()[0]
    run_train(cmd, os.path.join(vdir, "train.log"))
    load1 = os.getloadavg()[0]  # timings on a shared machine mean little without it
    ckpt = os.path.join(vdir, "checkpoints", "checkpoint_last.pt")
    logits = predict_logits(ckpt, bin_dir)
    preds, spans, na = squad.predict(dev_enc, logits, version, args.n_best,
                                     args.max_answer_length, args.null_score_threshold)
    _atomic_json(os.path.join(vdir, "predictions.json"), preds)
    data = squad_metrics.load_squad(data_file)
    if version == "2.0":
        _atomic_json(os.path.join(vdir, "na_probs.json"), na)
        _atomic_json(os.path.join(vdir, "predictions_best_span.json"), spans)
        scores = squad_metrics.evaluate(data, spans, na, args.null_score_threshold)
        eval_cmd = ["magic-squad-eval", data_file, os.path.join(vdir, "predictions_best_span.json"),
                    "--na-prob-file", os.path.join(vdir, "na_probs.json"),
                    "--na-prob-thresh", str(args.null_score_threshold)]
    else:
        scores = squad_metrics.evaluate(data, preds)
        eval_cmd = ["magic-squad-eval", data_file, os.path.join(vdir, "predictions.json")]
    _atomic_json(os.path.join(vdir, "scores.json"), scores)
    result = {"version": version, "scores": scores, "data_file": data_file,
              "eval_command": eval_cmd,
              "train_questions": len(train_enc), "train_questions_skipped": len(lost),
              "train_windows": n_train, "dev_questions": len(dev_enc), "dev_windows": n_dev,
              "max_length": wcfg.max_length, "doc_stride": wcfg.doc_stride,
              "max_query_length": wcfg.max_query_length, "n_best": args.n_best,
              "max_answer_length": args.max_answer_length,
              "null_score_threshold": args.null_score_threshold,
              "updates": total, "warmup_updates": warmup, "lr": args.lr,
              "batch_size": args.batch_size, "epochs": args.epochs,
              "from": exp["model_pt"], "arch": exp["model"]["magic_arch"], "unk_rate": unk,
              "seconds": round(time.time() - t0, 1),
              "load_avg_1min": [round(load0, 2), round(load1, 2)], "command": cmd}
    if args.kd_teacher:
        result["kd"] = {"teacher": os.path.abspath(kd_teacher_for(args, version)),
                        "alpha": args.kd_alpha, "temperature": args.kd_temperature}
    _atomic_json(os.path.join(vdir, "result.json"), result)
    print(f"{tag} " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in scores.items()), flush=True)
    return result


def train_path_of(args, version):
    return os.path.join(args.squad_dir, squad.FILES[version][0])


# ---- results ----

def results_table(results) -> str:
    def cell(pair):
        return "- | -" if pair is None else f"{pair[0]:.1f} | {pair[1]:.1f}"

    lines = ["| model | v1.1 EM | v1.1 F1 | v2.0 EM | v2.0 F1 |", "|---|---|---|---|---|"]
    ours = {}  # variant ("" or "kd") -> version -> (EM, F1)
    for r in results.values():
        variant = "kd" if r.get("kd") else ""
        ours.setdefault(variant, {})[r["version"]] = (r["scores"]["exact"], r["scores"]["f1"])
    for variant in sorted(ours):
        label = "this child" + (f" ({variant})" if variant else "")
        row = ours[variant]
        lines.append(f"| {label} | {cell(row.get('1.1'))} | {cell(row.get('2.0'))} |")
    for model, row in squad.PAPER_TABLE4_DEV.items():
        lines.append(f"| {model} (paper, Table 4 dev) | {cell(row['1.1'])} | {cell(row['2.0'])} |")
    lines.append("")
    notes = ["EM and F1 (official definitions, percent) on the dev set"]
    for v2 in (r for r in results.values() if r["version"] == "2.0"):
        s = v2["scores"]
        which = " (kd)" if v2.get("kd") else ""
        notes.append(f"v2.0{which} at null-score threshold {v2['null_score_threshold']}; the "
                     f"best threshold on this dev set gives EM {s['best_exact']:.1f} "
                     f"(at {s['best_exact_thresh']:.3f}), F1 {s['best_f1']:.1f} "
                     f"(at {s['best_f1_thresh']:.3f})")
    lines.append("; ".join(notes) + ".")
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
    tmp = md + ".tmp"
    with open(tmp, "w") as f:
        f.write(results_table(results))
    os.replace(tmp, md)
    return results


def main(argv=None):
    args = parse_args(argv)
    version = squad.parse_version(args.version)
    exp = load_export(args.checkpoint_dir, args.spm)
    window_config(args, int(exp["model"]["max_positions"]))  # bad values fail here
    if args.n_best < 1 or args.max_answer_length < 1:  # used after training: check now
        raise MagicConfigError(f"--n-best {args.n_best} and --max-answer-length "
                               f"{args.max_answer_length}: expected >= 1")
    paths = [os.path.join(args.squad_dir, f) for f in squad.FILES[version]]
    for path in paths:
        if not os.path.isfile(path):
            raise MagicConfigError(f"SQuAD v{version}: no file {path!r} (SQUAD_DIR holds the "
                                   "official train-vX.json and dev-vX.json)")
    check_kd(args, version, exp)
    os.makedirs(args.out, exist_ok=True)
    r = run_version(version, exp, args, args.out, *paths)
    write_results(args.out, {run_name(version, args): {k: v for k, v in r.items()
                                                       if k != "command"}})
    print(f"results: {os.path.join(args.out, 'results.md')}")
    return 0


def cli_main():
    from . import run_main

    run_main(main, PROG, runtime_errors=True)


if __name__ == "__main__":
    cli_main()
