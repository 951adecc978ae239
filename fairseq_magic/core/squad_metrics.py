"""SQuAD scoring with the official v2.0 evaluation script's definitions (fairseq-free,
torch-free).

Used by ``magic-squad-eval`` (any system's predictions) and meant to be imported by
the SQuAD pipeline, so both report the same numbers. The definitions, as
/work/shared/notes/downstream-facts.md records them:

* ``normalize_answer``: lower-case, drop ASCII punctuation (``string.punctuation``),
  drop the whole words a/an/the, collapse whitespace, in that order (so
  ``"the-end"`` becomes ``"theend"``: punctuation goes before articles are looked for).
* ``exact_match``: the normalised strings are equal (0 or 1).
* ``token_f1``: F1 of the normalised tokens, overlap counted with multiplicity
  (``Counter`` intersection); if either side has no tokens, 1 if both have none,
  else 0.
* ``gold_answers``: the gold texts whose normalisation is not empty; a question
  with none left (an unanswerable question, or one whose answers normalise away)
  has the single gold ``""``.
* A question's score is the maximum over its golds (``score_question``).
* ``apply_na_threshold``: a question whose no-answer probability is above the
  threshold (strictly; default 1.0) is taken as answered "no answer": it scores 1
  if it has no gold answer, else 0.
* ``best_threshold``: the threshold search of the official script (its rule for
  ties is in that function's docstring).

Percentages (``100 x``) are reported as the official script does, in its key order:
exact, f1, total, HasAns_* (if the data has answerable questions), NoAns_* (if it
has unanswerable ones) and, with no-answer probabilities, best_exact,
best_exact_thresh, best_f1, best_f1_thresh. Whether a question is answerable is
the official rule: it has at least one entry in ``answers``.

Questions without a prediction score 0 everywhere (the official v1.1 script's
rule; the v2.0 script would drop them): they count in every total, never in the
threshold walk. ``missing_predictions`` lists them so a caller can warn.

Data files: the official JSON, ``{"version": ..., "data": [{"paragraphs": [{"qas":
[{"id", "answers": [{"text", ...}], "is_impossible"?}]}]}]}``. The version is
detected from ``"version"`` ("1.1", "v2.0") or, when that is absent or unknown,
from the presence of ``is_impossible``. Bad input raises ``MagicConfigError``
naming the file, the place in it and what was expected.
"""

import collections
import json
import math
import re
import string
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .space import MagicConfigError

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


# ---------------------------------------------------------------- definitions

def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the words a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_tokens(text: str) -> List[str]:
    return normalize_answer(text).split()


def exact_match(gold: str, pred: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(pred))


def token_f1(gold: str, pred: str) -> float:
    gold_toks, pred_toks = answer_tokens(gold), answer_tokens(pred)
    if not gold_toks or not pred_toks:
        # "" is the no-answer answer: right only against "" on the other side
        return float(gold_toks == pred_toks)
    same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answer_texts: Sequence[str]) -> List[str]:
    """Golds that survive normalisation; ``[""]`` when none does."""
    golds = [a for a in answer_texts if normalize_answer(a)]
    return golds or [""]


def score_question(metric: Callable[[str, str], float], answer_texts: Sequence[str],
                   pred: str) -> float:
    """``metric`` (``exact_match`` or ``token_f1``) maximised over the question's golds."""
    return max(metric(g, pred) for g in gold_answers(answer_texts))


# ---------------------------------------------------------------- data

@dataclass(frozen=True)
class SquadQuestion:
    qid: str
    answers: Tuple[str, ...]  # gold texts as in the file (before dropping empty ones)

    @property
    def has_answer(self) -> bool:
        return bool(self.answers)


@dataclass(frozen=True)
class SquadData:
    version: str  # "1.1" or "2.0"
    questions: Tuple[SquadQuestion, ...]  # in file order

    def has_ans(self) -> Dict[str, bool]:
        return {q.qid: q.has_answer for q in self.questions}


def _no_duplicate_keys(source):
    def hook(pairs):
        obj = {}
        for k, v in pairs:
            if k in obj:
                raise MagicConfigError(f"{source}: key {k!r} appears twice in one JSON object")
            obj[k] = v
        return obj
    return hook


def read_json(path: str):
    """A JSON file, with one-line errors naming it (missing, not UTF-8, not JSON,
    a key given twice in one object)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=_no_duplicate_keys(path))
    except OSError as e:
        raise MagicConfigError(f"{path}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise MagicConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise MagicConfigError(f"{path}: not JSON ({e.msg} at line {e.lineno} "
                               f"column {e.colno})") from None


def _type(x) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(x), "a number" if isinstance(x, (int, float)) else
                                     type(x).__name__)


def _version(obj) -> Optional[str]:
    v = obj.get("version")
    if isinstance(v, str):
        v = v.strip().lower().lstrip("v")
        if v.startswith("1."):
            return "1.1"
        if v.startswith("2."):
            return "2.0"
    return None


def parse_squad(obj, source: str = "DATA_FILE") -> SquadData:
    """The questions of an official SQuAD JSON object (v1.1 or v2.0)."""
    def need(ok, where, msg):
        if not ok:
            raise MagicConfigError(f"{source}: {where}: {msg}")

    need(isinstance(obj, dict) and isinstance(obj.get("data"), list), "top level",
         "expected the official SQuAD JSON, an object whose 'data' is a list of articles "
         f"(got {_type(obj) if not isinstance(obj, dict) else _type(obj.get('data'))})")
    version = _version(obj)
    questions, seen, impossible_seen = [], {}, False
    for i, article in enumerate(obj["data"]):
        where = f"data[{i}]"
        need(isinstance(article, dict) and isinstance(article.get("paragraphs"), list), where,
             "expected an article object with a 'paragraphs' list")
        for j, para in enumerate(article["paragraphs"]):
            pwhere = f"{where}.paragraphs[{j}]"
            need(isinstance(para, dict) and isinstance(para.get("qas"), list), pwhere,
                 "expected a paragraph object with a 'qas' list")
            for k, qa in enumerate(para["qas"]):
                qwhere = f"{pwhere}.qas[{k}]"
                need(isinstance(qa, dict), qwhere, f"expected a question object, got {_type(qa)}")
                qid = qa.get("id")
                need(isinstance(qid, str), qwhere, f"expected a string 'id', got {_type(qid)}")
                qwhere = f"question {qid!r} ({qwhere})"
                need(qid not in seen, qwhere, f"the id is used twice (also at {seen.get(qid)})")
                seen[qid] = qwhere
                answers = qa.get("answers")
                need(isinstance(answers, list), qwhere,
                     f"expected 'answers' as a list, got {_type(answers)}")
                texts = []
                for n, a in enumerate(answers):
                    need(isinstance(a, dict) and isinstance(a.get("text"), str), qwhere,
                         f"answers[{n}]: expected an object with a string 'text'")
                    texts.append(a["text"])
                if "is_impossible" in qa:
                    impossible_seen = True
                    imp = qa["is_impossible"]
                    need(isinstance(imp, bool), qwhere,
                         f"expected 'is_impossible' as true or false, got {imp!r}")
                    need(imp == (not texts), qwhere,
                         f"'is_impossible' is {str(imp).lower()} but the question has "
                         f"{len(texts)} answers (v2.0: unanswerable questions, and only they, "
                         "have an empty 'answers' list)")
                questions.append(SquadQuestion(qid, tuple(texts)))
    if version is None:
        version = "2.0" if impossible_seen else "1.1"
    if version == "1.1":
        for q in questions:
            need(q.has_answer, f"question {q.qid!r}",
                 "no answers in a v1.1 file (every v1.1 question has one; v2.0 files mark "
                 "unanswerable questions with \"is_impossible\": true and a version of \"v2.0\")")
    need(questions, "top level", "no questions in the file")
    return SquadData(version, tuple(questions))


def load_squad(path: str) -> SquadData:
    return parse_squad(read_json(path), source=path)


def _id_map(obj, data: SquadData, source: str, data_source: str, what: str):
    if not isinstance(obj, dict):
        raise MagicConfigError(f"{source}: expected a JSON object question id -> {what}, "
                               f"got {_type(obj)}")
    known = data.has_ans()
    unknown = [qid for qid in obj if qid not in known]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise MagicConfigError(f"{source}: question id {unknown[0]!r}{more} is not in "
                               f"{data_source}")


def parse_predictions(obj, data: SquadData, source: str = "PRED_FILE",
                      data_source: str = "DATA_FILE") -> Dict[str, str]:
    """question id -> answer text ("" = no answer); every id must be in ``data``."""
    _id_map(obj, data, source, data_source, "answer text")
    for qid, text in obj.items():
        if not isinstance(text, str):
            raise MagicConfigError(f"{source}: question {qid!r}: expected the answer text as a "
                                   f"string (\"\" for no answer), got {_type(text)} {text!r}")
    return dict(obj)


def parse_na_probs(obj, data: SquadData, preds: Dict[str, str], source: str = "NA_FILE",
                   data_source: str = "DATA_FILE",
                   pred_source: str = "PRED_FILE") -> Dict[str, float]:
    """question id -> no-answer probability (any finite number: some systems give a
    score difference). Every predicted question needs one; the order of the ids is
    kept (``best_threshold`` walks ties in it)."""
    _id_map(obj, data, source, data_source, "no-answer probability")
    out = {}
    for qid, p in obj.items():
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p):
            raise MagicConfigError(f"{source}: question {qid!r}: expected a finite number, "
                                   f"got {_type(p)} {p!r}")
        out[qid] = float(p)
    lacking = [qid for qid in preds if qid not in out]
    if lacking:
        more = f" (and {len(lacking) - 1} more)" if len(lacking) > 1 else ""
        raise MagicConfigError(f"{source}: no no-answer probability for question {lacking[0]!r}"
                               f"{more}, which has a prediction in {pred_source}")
    return out


# ---------------------------------------------------------------- scoring

def missing_predictions(data: SquadData, preds: Dict[str, str]) -> List[str]:
    return [q.qid for q in data.questions if q.qid not in preds]


def raw_scores(data: SquadData, preds: Dict[str, str]
               ) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Per-question EM and F1 (max over golds) of the predicted questions, in data order."""
    exact, f1 = {}, {}
    for q in data.questions:
        if q.qid in preds:
            exact[q.qid] = score_question(exact_match, q.answers, preds[q.qid])
            f1[q.qid] = score_question(token_f1, q.answers, preds[q.qid])
    return exact, f1


def apply_na_threshold(scores: Dict[str, float], na_probs: Dict[str, float],
                       has_ans: Dict[str, bool], threshold: float) -> Dict[str, float]:
    """A probability strictly above ``threshold`` means "no answer": 1 for an
    unanswerable question, 0 for an answerable one."""
    return {qid: float(not has_ans[qid]) if na_probs[qid] > threshold else s
            for qid, s in scores.items()}


def best_threshold(preds: Dict[str, str], scores: Dict[str, float],
                   na_probs: Dict[str, float], has_ans: Dict[str, bool],
                   total: int) -> Tuple[float, float]:
    """(100 x best total / ``total``, threshold where it was reached): the official search.

    Start from "every predicted question is answered no-answer": the total is the
    number of predicted unanswerable questions, the threshold 0.0. Then walk the
    predicted questions by increasing no-answer probability, adding the question's
    score if it is answerable, -1 if it is unanswerable and its prediction is not
    "" (0 if it is ""). After EACH question the running total is compared with the
    best so far, and only a strictly greater total replaces it, together with that
    question's probability.

    Ties in the probabilities are walked one question at a time, in the order of
    ``na_probs`` (the NA file's order; a stable sort), exactly as the official
    script does. So a best total can be reached half-way through a run of equal
    probabilities, which no threshold reproduces (a threshold answers all of them
    or none), the result then depends on the file's order, and the reported
    threshold applied with ``apply_na_threshold`` gives a lower score. Likewise,
    when answering nothing is best the threshold stays 0.0, even if some
    probabilities are 0 or below. Kept so that numbers match published ones.

    Questions without a prediction (not in ``scores``) score 0: they are neither
    in the starting total nor walked, but count in ``total``.
    """
    cur = sum(1 for qid in scores if not has_ans[qid])
    best, best_thresh = cur, 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            cur += scores[qid]
        elif preds[qid]:
            cur -= 1
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / total, float(best_thresh)


def _split(exact, f1, qids):
    # sums in data order, as the official script adds them, so floats match it bit for bit
    n = len(qids)
    return [("exact", 100.0 * sum(exact.get(q, 0.0) for q in qids) / n),
            ("f1", 100.0 * sum(f1.get(q, 0.0) for q in qids) / n),
            ("total", n)]


def evaluate(data: SquadData, preds: Dict[str, str], na_probs: Optional[Dict[str, float]] = None,
             na_prob_thresh: float = 1.0) -> Dict[str, float]:
    """The official evaluation dict (see the module docstring). ``preds`` and
    ``na_probs`` as ``parse_predictions`` / ``parse_na_probs`` return them."""
    if not isinstance(na_prob_thresh, (int, float)) or math.isnan(na_prob_thresh):
        raise MagicConfigError(f"no-answer threshold {na_prob_thresh!r}: expected a number")
    has_ans = data.has_ans()
    exact_raw, f1_raw = raw_scores(data, preds)
    # without probabilities every prediction is an answer (0.0 <= the default 1.0)
    probs = na_probs if na_probs is not None else {qid: 0.0 for qid in exact_raw}
    exact = apply_na_threshold(exact_raw, probs, has_ans, na_prob_thresh)
    f1 = apply_na_threshold(f1_raw, probs, has_ans, na_prob_thresh)
    all_qids = [q.qid for q in data.questions]
    result = dict(_split(exact, f1, all_qids))
    for name, qids in (("HasAns", [q for q in all_qids if has_ans[q]]),
                       ("NoAns", [q for q in all_qids if not has_ans[q]])):
        if qids:
            result.update((f"{name}_{k}", v) for k, v in _split(exact, f1, qids))
    if na_probs is not None:
        for name, raw in (("exact", exact_raw), ("f1", f1_raw)):
            score, thresh = best_threshold(preds, raw, na_probs, has_ans, len(all_qids))
            result[f"best_{name}"] = score
            result[f"best_{name}_thresh"] = thresh
    return result


def evaluate_files(data_file: str, pred_file: str, na_prob_file: Optional[str] = None,
                   na_prob_thresh: float = 1.0) -> Tuple[Dict[str, float], List[str]]:
    """(evaluation dict, ids of questions without a prediction) from the three files;
    every file is read and checked before anything is scored."""
    data = load_squad(data_file)
    preds = parse_predictions(read_json(pred_file), data, pred_file, data_file)
    na_probs = None
    if na_prob_file is not None:
        na_probs = parse_na_probs(read_json(na_prob_file), data, preds, na_prob_file,
                                  data_file, pred_file)
    return evaluate(data, preds, na_probs, na_prob_thresh), missing_predictions(data, preds)
