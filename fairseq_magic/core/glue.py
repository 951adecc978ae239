"""GLUE without fairseq: the official TSV layouts, RoBERTa's fine-tuning recipe
per task, and the official dev-set metrics.

Readers follow fairseq's ``examples/roberta/preprocess_GLUE_tasks.sh``: the
files are split on tabs with quoting OFF (GLUE's sentences hold unbalanced
``"`` characters: a CSV reader with quoting would swallow the lines that
follow), QQP keeps only rows with exactly 6 fields, CoLA has no header, MNLI's
label is the last column (12th in train, 16th in the dev sets) and its dev set
is two files (matched, mismatched). Every other file's header is checked
against the official column names, so a file of the wrong task fails before
any work.

The recipe table is fairseq's ``examples/roberta/config/finetuning/*.yaml``
(10 epochs, Adam (0.9, 0.98), eps 1e-6, weight decay 0.1, polynomial decay,
warm-up 6% of the updates, 25% for QQP as upstream keeps it; STS-B a
regression on labels / 5). The paper's Table 2 (dev set) is kept here so
result tables can show it beside ours.
"""

import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .space import MagicConfigError


@dataclass(frozen=True)
class GlueTask:
    name: str = field(metadata={"help": "the task's official name (its folder in GLUE_DIR)"})
    num_classes: int = field(metadata={"help": "classes; 1 = regression"})
    lr: float = field(metadata={"help": "RoBERTa's peak learning rate"})
    batch_size: int = field(metadata={"help": "RoBERTa's sentences per update"})
    roberta_updates: int = field(metadata={"help": "RoBERTa's total updates (10 epochs "
                                                   "of the full train set)"})
    warmup_frac: float = field(metadata={"help": "warm-up fraction of the updates"})
    inputs: Tuple[int, ...] = field(metadata={"help": "0-based input columns"})
    label: int = field(metadata={"help": "0-based label column (-1 = last)"})
    header: Optional[Dict[int, str]] = field(
        metadata={"help": "expected header names by 0-based column; None = no header"})
    dev_files: Tuple[str, ...] = field(metadata={"help": "dev set files, in split order"})
    metrics: Tuple[str, ...] = field(metadata={"help": "official metrics, the first is "
                                                       "the one Table 2 reports"})
    exact_fields: Optional[int] = field(
        default=None, metadata={"help": "keep only rows with exactly this many fields"})
    positive: Optional[str] = field(default=None, metadata={"help": "F1's positive label"})
    from_mnli: bool = field(default=False, metadata={"help": "start from the "
                                                             "MNLI-fine-tuned model"})

    @property
    def regression(self) -> bool:
        return self.num_classes == 1


TASKS: Dict[str, GlueTask] = {t.name: t for t in [
    GlueTask("MNLI", 3, 1e-5, 32, 123873, 0.06, (8, 9), -1,
             {8: "sentence1", 9: "sentence2", -1: "gold_label"},
             ("dev_matched.tsv", "dev_mismatched.tsv"), ("accuracy",)),
    GlueTask("QQP", 2, 1e-5, 32, 113272, 0.25, (3, 4), 5,
             {3: "question1", 4: "question2", 5: "is_duplicate"}, ("dev.tsv",),
             ("accuracy", "f1"), exact_fields=6, positive="1"),
    GlueTask("QNLI", 2, 1e-5, 32, 33112, 0.06, (1, 2), 3,
             {1: "question", 2: "sentence", 3: "label"}, ("dev.tsv",), ("accuracy",)),
    GlueTask("SST-2", 2, 1e-5, 32, 20935, 0.06, (0,), 1,
             {0: "sentence", 1: "label"}, ("dev.tsv",), ("accuracy",)),
    GlueTask("CoLA", 2, 1e-5, 16, 5336, 0.06, (3,), 1, None, ("dev.tsv",),
             ("matthews",)),
    GlueTask("STS-B", 1, 2e-5, 16, 3598, 0.06, (7, 8), 9,
             {7: "sentence1", 8: "sentence2", 9: "score"}, ("dev.tsv",),
             ("spearman", "pearson"), from_mnli=True),
    GlueTask("MRPC", 2, 1e-5, 16, 2296, 0.06, (3, 4), 0,
             {0: "Quality", 3: "#1 String", 4: "#2 String"}, ("dev.tsv",),
             ("accuracy", "f1"), positive="1", from_mnli=True),
    GlueTask("RTE", 2, 2e-5, 16, 2036, 0.06, (1, 2), 3,
             {1: "sentence1", 2: "sentence2", 3: "label"}, ("dev.tsv",), ("accuracy",),
             from_mnli=True),
]}

# MNLI first: RTE, MRPC and STS-B start from its fine-tuned model.
TASK_ORDER = ("MNLI", "QQP", "QNLI", "SST-2", "CoLA", "STS-B", "MRPC", "RTE")
EPOCHS = 10
STSB_SCALE = 5.0  # STS-B scores 0..5 are regressed as score / 5

# The paper's Table 2, dev set (magic-arxiv-with-appendix.txt): Spearman for
# STS-B, Matthews for CoLA, accuracy elsewhere; None = not reported.
PAPER_TABLE2_DEV = {
    "BERT-base": dict(MNLI=84.4, QQP=89.9, QNLI=88.4, CoLA=54.3, **{"SST-2": 92.7},
                      **{"STS-B": 88.9}, RTE=71.1, MRPC=86.7, AVG=82.1),
    "RoBERTa-base": dict(MNLI=85.3, QQP=91.1, QNLI=91.1, CoLA=61.0, **{"SST-2": 92.7},
                         **{"STS-B": 90.0}, RTE=77.5, MRPC=87.9, AVG=84.6),
    "SPOS": dict(MNLI=84.7, QQP=91.4, QNLI=91.4, CoLA=59.6, **{"SST-2": 92.1},
                 **{"STS-B": 89.7}, RTE=80.9, MRPC=86.3, AVG=84.4),
    "MAGIC-AT": dict(MNLI=85.6, QQP=91.3, QNLI=91.8, CoLA=61.1, **{"SST-2": 93.5},
                     **{"STS-B": 90.3}, RTE=80.9, MRPC=90.9, AVG=85.7),
    "E-MAGIC-AT": dict(MNLI=86.3, QQP=91.7, QNLI=92.5, CoLA=65.8, **{"SST-2": 92.5},
                       **{"STS-B": 91.0}, RTE=84.0, MRPC=89.7, AVG=86.7),
}


def get_task(name: str) -> GlueTask:
    if name not in TASKS:
        raise MagicConfigError(f"unknown GLUE task {name!r}: expected one of "
                               f"{', '.join(TASK_ORDER)} or 'all'")
    return TASKS[name]


@dataclass
class Example:
    inputs: Tuple[str, ...]
    label: str


def read_tsv(task: GlueTask, path: str) -> List[Example]:
    """Examples of one official GLUE TSV file. Raises MagicConfigError naming
    the file on a missing file, a wrong header or a row without the columns."""
    if not os.path.isfile(path):
        raise MagicConfigError(f"{task.name}: no file {path!r}")
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    start = 0
    if task.header is not None:
        _check_header_line(task, path, lines[0] if lines else "")
        start = 1
    needed = max(max(task.inputs), task.label) + 1
    out = []
    for i, line in enumerate(lines[start:], start + 1):
        row = line.split("\t")
        if task.exact_fields is not None and len(row) != task.exact_fields:
            continue  # fairseq's QQP recipe drops the rows with embedded tabs/newlines
        if len(row) < needed:
            raise MagicConfigError(f"{path!r} line {i}: {len(row)} tab-separated fields, "
                                   f"{task.name} needs at least {needed}")
        out.append(Example(tuple(row[c] for c in task.inputs), row[task.label]))
    if not out:
        raise MagicConfigError(f"{path!r}: no {task.name} examples")
    if task.regression:
        for i, ex in enumerate(out):
            try:
                float(ex.label)
            except ValueError:
                raise MagicConfigError(f"{path!r} example {i + 1}: {task.name} score "
                                       f"{ex.label!r} is not a number") from None
    return out


def _check_header_line(task: GlueTask, path: str, line: str) -> None:
    head = line.split("\t")
    for col, name in task.header.items():
        got = head[col] if -len(head) <= col < len(head) else None
        if got != name:
            where = col + 1 if col >= 0 else "last"
            raise MagicConfigError(
                f"{path!r} is not a {task.name} file: header column {where} is {got!r}, "
                f"expected {name!r} (header: {line[:200]!r})")


def check_header(task: GlueTask, path: str) -> None:
    """The cheap check of a large file before any work: it exists and its
    header is the task's (rows are read when the task runs)."""
    if not os.path.isfile(path):
        raise MagicConfigError(f"{task.name}: no file {path!r}")
    if task.header is not None:
        with open(path, encoding="utf-8", newline="") as f:
            _check_header_line(task, path, f.readline().rstrip("\r\n"))


def read_task(task: GlueTask, task_dir: str):
    """(train examples, [(dev file name, dev examples), ...])."""
    train = read_tsv(task, os.path.join(task_dir, "train.tsv"))
    devs = [(name, read_tsv(task, os.path.join(task_dir, name))) for name in task.dev_files]
    return train, devs


def schedule(task: GlueTask, n_train: int, batch_size: Optional[int] = None,
             epochs: Optional[int] = None, warmup_frac: Optional[float] = None):
    """(total updates, warm-up updates) of ``epochs`` over ``n_train`` examples,
    as RoBERTa's table derives them (10 x ceil(n / batch), warm-up a fraction)."""
    batch = batch_size or task.batch_size
    epochs = EPOCHS if epochs is None else epochs
    frac = task.warmup_frac if warmup_frac is None else warmup_frac
    total = epochs * math.ceil(n_train / batch)
    return total, int(round(frac * total))


# ---- metrics (the official definitions; checked against sklearn/scipy in tests) ----

def accuracy(pred: Sequence, gold: Sequence) -> float:
    _same_length(pred, gold)
    return sum(p == g for p, g in zip(pred, gold)) / len(gold)


def f1(pred: Sequence, gold: Sequence, positive) -> float:
    _same_length(pred, gold)
    tp = sum(p == positive and g == positive for p, g in zip(pred, gold))
    fp = sum(p == positive and g != positive for p, g in zip(pred, gold))
    fn = sum(p != positive and g == positive for p, g in zip(pred, gold))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews(pred: Sequence, gold: Sequence) -> float:
    """Matthews correlation, multi-class form (sklearn's): 0 when undefined."""
    _same_length(pred, gold)
    labels = sorted(set(pred) | set(gold), key=str)
    n = len(gold)
    correct = sum(p == g for p, g in zip(pred, gold))
    p_k = [sum(p == k for p in pred) for k in labels]
    t_k = [sum(g == k for g in gold) for k in labels]
    cov_ytyp = correct * n - sum(a * b for a, b in zip(p_k, t_k))
    cov_ypyp = n * n - sum(a * a for a in p_k)
    cov_ytyt = n * n - sum(b * b for b in t_k)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return cov_ytyp / math.sqrt(cov_ytyt * cov_ypyp)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    _same_length(x, y)
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return float("nan")
    return sxy / math.sqrt(sxx * syy)


def _ranks(x: Sequence[float]) -> List[float]:
    """1-based ranks, ties sharing their average rank (scipy's 'average')."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return pearson(_ranks(x), _ranks(y))


def _same_length(a, b):
    if len(a) != len(b) or not len(a):
        raise MagicConfigError(f"metric over {len(a)} predictions and {len(b)} gold "
                               "labels: expected the same non-zero count")


def score(task: GlueTask, pred: Sequence, gold: Sequence) -> Dict[str, float]:
    """The task's official metrics, in percent. ``pred``/``gold``: label
    strings, or floats (already back on the 0..5 scale) for STS-B."""
    out = {}
    for m in task.metrics:
        if m == "accuracy":
            v = accuracy(pred, gold)
        elif m == "f1":
            v = f1(pred, gold, task.positive)
        elif m == "matthews":
            v = matthews(pred, gold)
        elif m == "pearson":
            v = pearson([float(p) for p in pred], [float(g) for g in gold])
        elif m == "spearman":
            v = spearman([float(p) for p in pred], [float(g) for g in gold])
        else:  # pragma: no cover - the table above only names the ones here
            raise MagicConfigError(f"unknown metric {m!r}")
        out[m] = 100.0 * v
    return out


def majority_baseline(task: GlueTask, train_labels: Sequence[str],
                      dev_labels: Sequence[str]) -> Optional[float]:
    """Accuracy (percent) of always predicting the train set's most frequent
    label; None for the regression task."""
    if task.regression:
        return None
    counts: Dict[str, int] = {}
    for lab in train_labels:
        counts[lab] = counts.get(lab, 0) + 1
    top = max(sorted(counts), key=counts.get)
    return 100.0 * accuracy([top] * len(dev_labels), dev_labels)
