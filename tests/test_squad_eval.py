"""magic-squad-eval and core/squad_metrics: the official SQuAD definitions checked on
hand-worked cases, the command as a user runs it, and every bad input."""

import json
import os
import subprocess
import sys

import pytest

from fairseq_magic.core import squad_metrics as S
from fairseq_magic.core.space import MagicConfigError

from conftest import cli_in_process


# ------------------------------------------------------------------ definitions

@pytest.mark.parametrize("text, normalized", [
    ("The Denver Broncos", "denver broncos"),
    ("an apple a day", "apple day"),
    ("Anthem of THE theatre", "anthem of theatre"),      # articles only as whole words
    ("U.S.A.", "usa"),
    ("rock-n-roll!", "rocknroll"),
    ("the-end", "theend"),                                # punctuation goes first, then articles
    ("(a) thing", "thing"),
    ("  New\n York \t City ", "new york city"),
    ("1,000 km", "1000 km"),
    ("\u201cquoted\u201d", "\u201cquoted\u201d"),         # only ASCII punctuation is dropped
    ("The", ""),
    ("", ""),
])
def test_normalize_answer(text, normalized):
    assert S.normalize_answer(text) == normalized


def test_exact_match():
    assert S.exact_match("The Denver Broncos", "denver  broncos.") == 1
    assert S.exact_match("Denver Broncos", "Broncos") == 0
    assert S.exact_match("", "the") == 1  # both normalise to nothing
    assert S.exact_match("", "x") == 0


def test_token_f1_hand_worked():
    # gold [quick, brown, fox], pred [quick, fox, jumps]: 2 shared, P = R = 2/3
    assert S.token_f1("the quick brown fox", "a quick fox jumps") == pytest.approx(2 / 3)
    # overlap counts multiplicity: min(2, 3) dogs shared, P = 2/3, R = 2/3
    assert S.token_f1("dog dog cat", "dog dog dog") == pytest.approx(2 / 3)
    # P = 1/5, R = 1: F1 = 2 * 0.2 / 1.2
    assert S.token_f1("Paris", "in the city of Paris, France") == pytest.approx(1 / 3)
    assert S.token_f1("apple", "pear") == 0.0
    # empty side: 1 only when both are empty
    assert S.token_f1("", "") == 1.0
    assert S.token_f1("", "the") == 1.0
    assert S.token_f1("", "Normandy") == 0.0
    assert S.token_f1("Normandy", "") == 0.0


def test_gold_answers_and_max_over_golds():
    assert S.gold_answers(["The", "Paris", "  ", "city of Paris"]) == ["Paris", "city of Paris"]
    assert S.gold_answers([]) == [""]             # unanswerable
    assert S.gold_answers(["the", "..."]) == [""]  # every gold normalises away
    pred = "in the city of Paris, France"
    # golds "Paris" (F1 1/3) and "city of Paris" (3 shared of 5 predicted: P 3/5, R 1)
    assert S.score_question(S.token_f1, ["Paris", "city of Paris"], pred) == pytest.approx(0.75)
    assert S.score_question(S.exact_match, ["Paris", "France", "paris."], "PARIS") == 1
    assert S.score_question(S.exact_match, [], "") == 1
    assert S.score_question(S.token_f1, [], "Paris") == 0.0
    assert S.score_question(S.exact_match, ["The"], "") == 1


# ------------------------------------------------------------------ files

def _write(path, obj):
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def _qa(qid, answers, impossible=None):
    qa = {"id": qid, "question": f"question {qid}?",
          "answers": [{"text": t, "answer_start": 0} for t in answers]}
    if impossible is not None:
        qa["is_impossible"] = impossible
        if impossible:
            qa["plausible_answers"] = [{"text": "plausible", "answer_start": 0}]
    return qa


def squad_v2(questions):
    """questions: (qid, answers) with [] for unanswerable; two articles."""
    qas = [_qa(qid, ans, impossible=not ans) for qid, ans in questions]
    half = len(qas) // 2
    return {"version": "v2.0", "data": [
        {"title": "A", "paragraphs": [{"context": "...", "qas": qas[:half]}]},
        {"title": "B", "paragraphs": [{"context": "...", "qas": qas[half:half + 1]},
                                      {"context": "...", "qas": qas[half + 1:]}]}]}


V2 = [("q1", ["Denver Broncos", "The Denver Broncos", "Broncos"]),
      ("q2", ["quick brown fox"]),
      ("q3", ["Paris", "city of Paris"]),
      ("q4", []),
      ("q5", []),
      ("q6", ["dog dog cat"])]
PREDS = {"q1": "the Denver  Broncos.",          # EM 1, F1 1
         "q2": "a quick fox jumps",             # EM 0, F1 2/3
         "q3": "in the city of Paris, France",  # EM 0, F1 max(1/3, 3/4) = 3/4
         "q4": "",                              # unanswerable, no answer: 1, 1
         "q5": "Normandy",                      # unanswerable, answered: 0, 0
         "q6": "dog dog dog"}                   # EM 0, F1 2/3
NA = {"q1": 0.1, "q2": 0.6, "q3": 0.3, "q4": 0.9, "q5": 0.8, "q6": 0.6}


def _eval(*args):
    """magic-squad-eval in-process; exit codes and messages are the console script's."""
    return cli_in_process("fairseq_magic.cli.squad_eval", "magic-squad-eval", *args)


@pytest.fixture
def v2(tmp_path):
    return (_write(tmp_path / "dev-v2.0.json", squad_v2(V2)),
            _write(tmp_path / "preds.json", PREDS), _write(tmp_path / "na.json", NA))


def _approx(expected):
    return {k: pytest.approx(v, abs=1e-9) for k, v in expected.items()}


def test_v2_hand_worked_default_threshold(v2):
    data, preds, _ = v2
    r = _eval(data, preds)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    got = r.json
    assert list(got) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
                         "NoAns_exact", "NoAns_f1", "NoAns_total"]
    has_f1 = 1 + 2 / 3 + 3 / 4 + 2 / 3
    assert got == _approx({"exact": 100 * 2 / 6, "f1": 100 * (has_f1 + 1) / 6, "total": 6,
                           "HasAns_exact": 100 * 1 / 4, "HasAns_f1": 100 * has_f1 / 4,
                           "HasAns_total": 4,
                           "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2})
    assert isinstance(got["total"], int)


def test_v2_na_probs_threshold_and_best_threshold(v2, tmp_path):
    data, preds, na = v2
    base = _eval(data, preds).json
    r = _eval(data, preds, "--na-prob-file", na)  # default 1.0: nothing is above it
    assert r.returncode == 0, r.stderr
    got = r.json
    assert {k: got[k] for k in base} == base
    assert list(got)[len(base):] == ["best_exact", "best_exact_thresh", "best_f1",
                                     "best_f1_thresh"]
    # walk from "all no-answer" (2: q4, q5) by increasing probability:
    # EM: q1 (0.1) +1 = 3 best; q3 0, q2 0, q6 0, q5 -1 (answered), q4 0 (predicted "")
    assert got["best_exact"] == pytest.approx(100 * 3 / 6)
    assert got["best_exact_thresh"] == 0.1
    # F1: q1 +1 = 3 (0.1), q3 +3/4 = 3.75 (0.3), q2 +2/3, q6 +2/3 = 5.083 (0.6), q5 -1, q4 0
    assert got["best_f1"] == pytest.approx(100 * (3 + 3 / 4 + 4 / 3) / 6)
    assert got["best_f1_thresh"] == 0.6

    # --na-prob-thresh 0.5: q2, q6 (0.6) and q5, q4 (0.8, 0.9) become "no answer"
    out = tmp_path / "eval.json"
    r = _eval(data, preds, "--na-prob-file", na, "--na-prob-thresh", "0.5", "--out-file", out)
    assert r.returncode == 0, r.stderr
    got = r.json
    assert {k: got[k] for k in base} == _approx(
        {"exact": 100 * 3 / 6, "f1": 100 * (1 + 3 / 4 + 2) / 6, "total": 6,
         "HasAns_exact": 25.0, "HasAns_f1": 100 * (1 + 3 / 4) / 4, "HasAns_total": 4,
         "NoAns_exact": 100.0, "NoAns_f1": 100.0, "NoAns_total": 2})
    # the best-threshold search does not depend on the threshold applied
    assert got["best_f1"] == pytest.approx(100 * (3 + 3 / 4 + 4 / 3) / 6)
    assert json.loads(out.read_text()) == got
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []

    # strictly above: at 0.6, q2 and q6 (0.6) keep their answers; only q5, q4 flip
    got = _eval(data, preds, "-n", na, "-t", "0.6").json
    assert (got["exact"], got["f1"], got["NoAns_exact"]) == pytest.approx(
        (100 * 3 / 6, 100 * (1 + 2 / 3 + 3 / 4 + 2 / 3 + 2) / 6, 100.0))


# ties: q1 0.2 (answerable, right), q2 0.5 (unanswerable, answered), q3 0.5 (answerable,
# right), q4 0.9 (unanswerable, predicted ""). Start: 2 (q2, q4).
TIE_DATA = [("q1", ["one"]), ("q2", []), ("q3", ["three"]), ("q4", [])]
TIE_PREDS = {"q1": "one", "q2": "two", "q3": "three", "q4": ""}


@pytest.mark.parametrize("preds, na, best, thresh", [
    # file order q2 before q3: q1 -> 3 (best, 0.2), q2 -> 2, q3 -> 3 (not > 3), q4 -> 3
    (TIE_PREDS, {"q1": 0.2, "q2": 0.5, "q3": 0.5, "q4": 0.9}, 3, 0.2),
    # q3 before q2: q1 -> 3 (0.2), q3 -> 4 (best, 0.5) half-way through the tie, q2 -> 3
    (TIE_PREDS, {"q3": 0.5, "q4": 0.9, "q2": 0.5, "q1": 0.2}, 4, 0.5),
    # every answer is wrong: answering nothing stays best, at the initial threshold 0.0
    # although every probability is above it
    ({**TIE_PREDS, "q1": "uno", "q3": "tres"}, {"q1": 0.2, "q2": 0.5, "q3": 0.5, "q4": 0.9},
     2, 0.0),
])
def test_best_threshold_walks_ties_one_question_at_a_time_in_file_order(tmp_path, preds, na,
                                                                        best, thresh):
    data = S.parse_squad(squad_v2(TIE_DATA))
    exact, f1 = S.raw_scores(data, preds)
    for raw in (exact, f1):
        assert S.best_threshold(preds, raw, na, data.has_ans(), 4) == (100 * best / 4, thresh)
    r = _eval(_write(tmp_path / "d.json", squad_v2(TIE_DATA)), _write(tmp_path / "p.json", preds),
              "--na-prob-file", _write(tmp_path / "n.json", na))
    assert r.returncode == 0, r.stderr
    assert (r.json["best_exact"], r.json["best_exact_thresh"]) == (100 * best / 4, thresh)


def test_tie_split_best_is_not_reproduced_by_its_threshold(tmp_path):
    """The official rule's consequence, documented in best_threshold: a best reached
    half-way through a tie is higher than what applying its threshold scores."""
    d = _write(tmp_path / "d.json", squad_v2(TIE_DATA))
    p = _write(tmp_path / "p.json", TIE_PREDS)
    n = _write(tmp_path / "n.json", {"q3": 0.5, "q4": 0.9, "q2": 0.5, "q1": 0.2})
    best = _eval(d, p, "-n", n).json
    assert (best["best_exact"], best["best_exact_thresh"]) == (100.0, 0.5)
    applied = _eval(d, p, "-n", n, "-t", "0.5").json
    assert applied["exact"] == 75.0  # q1, q2, q3 answered (q2 wrongly), q4 "no answer"


def test_v1_file(tmp_path):
    v1 = {"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": "...", "qas": [
        _qa("a", ["Saint Bernadette Soubirous", "a copper statue of Christ"]),
        _qa("b", ["the Main Building"]),
        _qa("c", ["1879", "1879."])]}]}]}
    data = _write(tmp_path / "dev-v1.1.json", v1)
    assert S.load_squad(data).version == "1.1"
    preds = _write(tmp_path / "p.json", {"a": "copper statue of Christ", "b": "Main Building",
                                         "c": "in 1879"})
    got = _eval(data, preds).json
    # a: EM 1 (articles), b: EM 1, c: F1 2/3 (P 1/2, R 1)
    assert got == _approx({"exact": 100 * 2 / 3, "f1": 100 * (2 + 2 / 3) / 3, "total": 3,
                           "HasAns_exact": 100 * 2 / 3, "HasAns_f1": 100 * (2 + 2 / 3) / 3,
                           "HasAns_total": 3})


def test_version_detection():
    v2 = squad_v2(V2)
    assert S.parse_squad(v2).version == "2.0"
    del v2["version"]
    assert S.parse_squad(v2).version == "2.0"  # is_impossible says so
    v1 = {"data": [{"paragraphs": [{"qas": [_qa("x", ["y"])]}]}]}
    assert S.parse_squad(v1).version == "1.1"


def test_missing_predictions_score_zero_with_a_warning(tmp_path):
    data = _write(tmp_path / "d.json", squad_v2(V2))
    partial = {k: v for k, v in PREDS.items() if k not in ("q2", "q4")}
    preds = _write(tmp_path / "p.json", partial)
    na = _write(tmp_path / "n.json", {k: v for k, v in NA.items() if k in partial})
    r = _eval(data, preds, "--na-prob-file", na)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("\n") == 1
    assert "magic-squad-eval: warning: 2 of 6 questions" in r.stderr and "score 0" in r.stderr
    got = r.json
    # q2 and q4 score 0 (q4 too, though unanswerable) and still count in the totals
    assert got == _approx({
        "exact": 100 * 1 / 6, "f1": 100 * (1 + 3 / 4 + 2 / 3) / 6, "total": 6,
        "HasAns_exact": 25.0, "HasAns_f1": 100 * (1 + 3 / 4 + 2 / 3) / 4, "HasAns_total": 4,
        "NoAns_exact": 0.0, "NoAns_f1": 0.0, "NoAns_total": 2,
        # walk from 1 (q5 only; missing q4 is not counted): q1 +1 = 2 (0.1), q3, q6, q5 -1
        "best_exact": 100 * 2 / 6, "best_exact_thresh": 0.1,
        # F1: q1 +1 = 2 (0.1), q3 +3/4 (0.3), q6 +2/3 = 3.417 (0.6), q5 -1
        "best_f1": 100 * (2 + 3 / 4 + 2 / 3) / 6, "best_f1_thresh": 0.6})
    result, missing = S.evaluate_files(data, preds)
    assert missing == ["q2", "q4"]


# ------------------------------------------------------------------ the command

def test_console_script_as_a_user_runs_it(v2, tmp_path):
    data, preds, na = v2
    out = tmp_path / "scores.json"
    exe = os.path.join(os.path.dirname(sys.executable), "magic-squad-eval")
    proc = subprocess.run([exe, data, preds, "--na-prob-file", na, "--out-file", str(out)],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout)  # one JSON object and nothing else on stdout
    assert printed == json.loads(out.read_text())
    assert printed == _eval(data, preds, "--na-prob-file", na).json
    assert printed["best_f1_thresh"] == 0.6 and printed["total"] == 6


# ------------------------------------------------------------------ bad input

def _v2_with(mutate):
    obj = squad_v2(V2)
    mutate(obj)
    return obj


def _qas0(obj):
    return obj["data"][0]["paragraphs"][0]["qas"]


BAD = {
    "data_not_json": ("data", "{\"version\": \"v2.0\", \"data\": [", None, ["data", "not JSON"]),
    "preds_not_json": ("preds", "q1: Denver", None, ["preds", "not JSON", "line 1 column 1"]),
    "na_not_json": ("na", "{\"q1\": 0.1,}", None, ["na", "not JSON"]),
    "data_not_squad": ("data", {"q1": "x"}, None, ["data", "'data' is a list", "got null"]),
    "data_no_qas": ("data", {"data": [{"paragraphs": [{"context": "x"}]}]}, None,
                    ["data", "data[0].paragraphs[0]", "'qas' list"]),
    "answers_not_list": ("data", _v2_with(lambda o: _qas0(o)[0].update(answers="x")), None,
                         ["data", "'q1'", "'answers' as a list"]),
    "answer_text_not_str": ("data", _v2_with(lambda o: _qas0(o)[0].update(answers=[{"text": 3}])),
                            None, ["data", "'q1'", "answers[0]", "string 'text'"]),
    "duplicate_id": ("data", _v2_with(lambda o: _qas0(o)[1].update(id="q1")), None,
                     ["data", "'q1'", "used twice"]),
    "impossible_with_answers": ("data", _v2_with(lambda o: _qas0(o)[0].update(is_impossible=True)),
                                None, ["data", "'q1'", "'is_impossible' is true", "3 answers"]),
    "v1_unanswerable": ("data", {"version": "1.1", "data": [{"paragraphs": [{"qas": [
        _qa("x", ["y"]), _qa("z", [])]}]}]}, None, ["data", "'z'", "v1.1"]),
    "preds_list": ("preds", ["Denver"], None, ["preds", "expected a JSON object", "a list"]),
    "pred_not_str": ("preds", {**PREDS, "q3": ["Paris"]}, None, ["preds", "'q3'", "a string"]),
    "pred_unknown_id": ("preds", {**PREDS, "q99": "x", "q98": ""}, None,
                        ["preds", "'q99'", "(and 1 more)", "is not in", "data"]),
    "pred_duplicate_key": ("preds", '{"q1": "a", "q1": "b"}', None, ["preds", "'q1'", "twice"]),
    "na_unknown_id": ("na", {**NA, "q77": 0.5}, None, ["na", "'q77'", "is not in"]),
    "na_not_number": ("na", {**NA, "q2": "high"}, None, ["na", "'q2'", "finite number"]),
    "na_lacks_predicted": ("na", {k: v for k, v in NA.items() if k != "q5"}, None,
                           ["na", "'q5'", "preds"]),
    "missing_file": ("preds", None, None, ["preds", "cannot read"]),
    "bad_threshold": (None, None, ["--na-prob-thresh", "nan"], ["--na-prob-thresh"]),
    "out_dir_missing": (None, None, ["--out-file", "{tmp}/nowhere/x.json"],
                        ["--out-file", "nowhere"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_fails_with_one_message(tmp_path, case):
    which, content, extra, needles = BAD[case]
    files = {"data": squad_v2(V2), "preds": PREDS, "na": NA}
    paths = {}
    for name, obj in files.items():
        path = tmp_path / f"{name}.json"
        if name == which:
            if content is None:
                paths[name] = str(path)  # not written
                continue
            obj = content
        paths[name] = _write(path, obj)
    out = tmp_path / "out.json"
    args = [paths["data"], paths["preds"], "--na-prob-file", paths["na"]]
    args += [a.format(tmp=tmp_path) for a in extra] if extra else ["--out-file", out]
    r = _eval(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("magic-squad-eval: error: "), r.stderr
    for needle in needles:
        needle = paths[needle] if needle in paths else needle
        assert needle in lines[0], (needle, lines[0])
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(
        os.path.basename(p) for p in paths.values() if os.path.exists(p))


def test_core_raises_magic_config_error_for_pipeline_callers():
    data = S.parse_squad(squad_v2(V2))
    with pytest.raises(MagicConfigError, match="'q9' is not in DATA_FILE"):
        S.parse_predictions({"q9": "x"}, data)
    with pytest.raises(MagicConfigError, match="no no-answer probability for question 'q1'"):
        S.parse_na_probs({}, data, {"q1": "x"})
    with pytest.raises(MagicConfigError, match="no questions"):
        S.parse_squad({"version": "v2.0", "data": []})
