"""magic-rank end to end: score files and a trained super-net against a ground truth
made here; bad inputs fail before any work with one message."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from conftest import REPO, cli_in_process


def _rank(*args):
    """magic-rank in-process; exit codes and messages are the console script's."""
    return cli_in_process("fairseq_magic.cli.rank", "magic-rank", *args)


def _jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


# children of the tiny super-net (4 layers of mha2d32, ffn, conv3, conv5)
OPS = ["mha2d32", "ffn", "conv3", "conv5"]
CHILDREN = ["ffn,ffn,ffn,ffn", "conv3,conv3,conv3,conv3", "mha2d32,ffn,mha2d32,ffn",
            "conv5,ffn,conv3,ffn", "mha2d32,conv3,ffn,conv5", "conv3,mha2d32,conv5,ffn",
            "ffn,conv5,mha2d32,mha2d32", "mha2d32,mha2d32,mha2d32,mha2d32"]
SEED1 = [5.0, 5.4, 5.9, 6.1, 6.3, 6.8, 7.0, 7.7]
SEED2 = [5.2, 5.1, 6.2, 6.0, 6.9, 6.6, 7.3, 7.5]
TRUTH = (np.array(SEED1) + np.array(SEED2)) / 2
GOOD = [5.1, 5.0, 6.3, 6.3, 6.2, 7.1, 7.4, 7.2]  # near the truth, one tie
BAD = [7.0, 6.0, 6.5, 5.5, 6.5, 5.0, 4.0, 4.5]   # mostly reversed, one tie


@pytest.fixture
def files(tmp_path):
    assert len(CHILDREN) == 8
    gt = _jsonl(tmp_path / "gt.jsonl", [{"arch": c, "seed": s, "loss": x}
                                        for s, col in ((1, SEED1), (2, SEED2))
                                        for c, x in zip(CHILDREN, col)])
    good = _jsonl(tmp_path / "good.jsonl", [{"arch": c, "loss": x} for c, x in zip(CHILDREN, GOOD)]
                  + [{"arch": "ffn,ffn,conv5,conv5", "loss": 1.0}])  # not in the truth: ignored
    bad = _jsonl(tmp_path / "bad.jsonl", [{"arch": c, "loss": x} for c, x in zip(CHILDREN, BAD)])
    return tmp_path, gt, good, bad


def test_score_files_metrics_groups_pairs(files):
    d, gt, good, bad = files
    out = d / "out"
    args = [gt, "--scores", good, "--scores", f"rev={bad}", "--out", out, "--tnr-n", "1,3",
            "--bootstrap", "300", "--group", "both=good,rev", "--pairs", "good:rev"]
    proc = _rank(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.load(open(out / "rank.json"))
    assert res["num_children"] == 8 and res["tnr_n"] == 1
    g, b = res["predictors"]["good"], res["predictors"]["rev"]
    assert g["kendall_tau"] == pytest.approx(stats.kendalltau(GOOD, TRUTH).statistic)
    assert g["spearman"] == pytest.approx(stats.spearmanr(GOOD, TRUTH).statistic)
    assert b["kendall_tau"] == pytest.approx(stats.kendalltau(BAD, TRUTH).statistic)
    # GOOD's best child (index 1) is truly 2nd (5.25 vs 5.1); its top 3 hold the true best
    assert g["tnr"] == 2.0 and g["tnr_by_n"] == {"1": 2.0, "3": 1.0}
    # BAD's best child (index 6) is truly 7th; its top 3 (6, 7, 5) are truly 7th, 8th, 6th
    assert b["tnr_by_n"] == {"1": 7.0, "3": 6.0}
    assert g["ignored_children"] == 1 and "ignored_children" not in b
    for e in (g, b):
        for k in ("kendall_tau", "spearman", "tnr"):
            lo, hi = e["intervals"][k]
            assert lo <= e[k] <= hi, (k, e)
        assert (out / e["plot"]).stat().st_size > 5000
    grp = res["groups"]["both"]
    assert grp["members"] == ["good", "rev"]
    assert grp["s_tau"] == pytest.approx(stats.kendalltau(GOOD, BAD).statistic)
    assert grp["s_tau_min"] == grp["s_tau_max"] == pytest.approx(grp["s_tau"])
    assert grp["kendall_tau"] == pytest.approx((g["kendall_tau"] + b["kendall_tau"]) / 2)
    [pair] = res["paired_differences"]
    assert (pair["a"], pair["b"]) == ("good", "rev")
    assert pair["kendall_tau"]["estimate"] == pytest.approx(g["kendall_tau"] - b["kendall_tau"])
    assert pair["kendall_tau"]["interval"][0] > 0  # clearly better on the same children
    assert pair["tnr"]["estimate"] == pytest.approx(2.0 - 7.0)
    st = res["ground_truth_seed_tau"]
    assert st["value"] == pytest.approx(stats.kendalltau(SEED1, SEED2).statistic)
    assert st["halves"] == [[1], [2]]
    assert res["ground_truth"]["seed_counts"] == {"2": 8}
    assert "good" in proc.stdout and "both (group)" in proc.stdout
    # the same command gives the same file (seeded bootstrap)
    again = _rank(*args)
    assert again.returncode == 0 and json.load(open(out / "rank.json")) == res
    # default pairs: every pair of predictors and of groups; default TnR n = 10% rounded up
    other = _rank(gt, "--scores", good, "--scores", bad, "--out", d / "o2", "--bootstrap", "50")
    assert other.returncode == 0, other.stderr[-2000:]
    res2 = json.load(open(d / "o2" / "rank.json"))
    assert [(p["a"], p["b"]) for p in res2["paired_differences"]] == [("good", "bad")]
    assert res2["tnr_n"] == 1 and res2["tnr_random"] == pytest.approx(4.5)


def test_console_script_runs_as_users_run_it(files):
    d, gt, good, bad = files
    exe = os.path.join(os.path.dirname(sys.executable), "magic-rank")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([exe, gt, "--scores", good, "--scores", bad, "--baseline", "bad",
                           "--bootstrap", "100", "--out", str(d / "cli")],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.load(open(d / "cli" / "rank.json"))
    assert [(p["a"], p["b"]) for p in res["paired_differences"]] == [("good", "bad")]
    assert set(os.listdir(d / "cli")) == {"rank.json", "scatter-good.png", "scatter-bad.png"}


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


SCORING = ["--max-batches", "2", "--batch-size", "8", "--no-progress", "--bootstrap", "100"]


def test_checkpoint_scores_match_evaluation_and_are_reusable(trained_supernet, files):
    d, _, good, _ = files
    gt = _jsonl(d / "gt1.jsonl", [{"arch": c, "seed": 0, "loss": x}
                                  for c, x in zip(CHILDREN, TRUTH)])
    before = _sha(trained_supernet)
    out = d / "ck"
    proc = _rank(gt, "--scores", good, f"sn={trained_supernet}", "--out", out, *SCORING)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.load(open(out / "rank.json"))
    entry = res["predictors"]["sn"]
    assert entry["source"] == "checkpoint" and entry["scores_file"] == "scores/sn.jsonl"
    rows = [json.loads(l) for l in open(out / "scores" / "sn.jsonl")]
    assert [r["arch"] for r in rows] == CHILDREN
    # the same numbers magic-search's scoring gives, computed directly
    from fairseq_magic.evaluation import fixed_batches, load_supernet, score_child

    model, task, _, _ = load_supernet(trained_supernet)
    batches = fixed_batches(task, "valid", 2, 8)
    direct = [score_child(model, c, batches) for c in CHILDREN]
    assert [r["loss"] for r in rows] == direct
    assert len(set(direct)) == 8 and all(3.0 < x < 12.0 for x in direct)
    assert entry["kendall_tau"] == pytest.approx(stats.kendalltau(direct, TRUTH).statistic)
    assert res["ground_truth_seed_tau"]["value"] is None  # one seed only
    # the written score file reproduces the checkpoint's metrics
    again = _rank(gt, "--scores", out / "scores" / "sn.jsonl", "--out", d / "ck2", *SCORING)
    assert again.returncode == 0, again.stderr[-2000:]
    res2 = json.load(open(d / "ck2" / "rank.json"))
    for k in ("kendall_tau", "spearman", "tnr", "intervals"):
        assert res2["predictors"]["sn"][k] == entry[k]
    # fine-tuning before ranking changes the scores, never the checkpoint
    ft = _rank(gt, f"sn={trained_supernet}", "--out", d / "ft", "--finetune-steps", "2",
               "--finetune-lr", "1e-3", *SCORING)
    assert ft.returncode == 0, ft.stderr[-3000:]
    tuned = [json.loads(l)["loss"] for l in open(d / "ft" / "scores" / "sn.jsonl")]
    assert tuned != direct and all(3.0 < x < 12.0 for x in tuned)
    assert _sha(trained_supernet) == before


def test_group_of_checkpoint_paths_gives_s_tau(trained_supernet, files):
    d, gt, good, _ = files
    # the same super-net twice (a copy elsewhere): identical rankings, S-Tau 1
    import shutil

    os.makedirs(d / "copy")
    twin = shutil.copy(trained_supernet, d / "copy" / "checkpoint_last.pt")
    proc = _rank(gt, "--group", f"spos={trained_supernet},{twin}", "--out", d / "grp", *SCORING)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.load(open(d / "grp" / "rank.json"))
    names = list(res["predictors"])
    assert len(names) == 2 and names[1] == "copy/checkpoint_last", names
    assert res["groups"]["spos"]["members"] == names
    assert res["groups"]["spos"]["s_tau"] == pytest.approx(1.0, abs=1e-12)
    assert res["groups"]["spos"]["intervals"]["s_tau"] == pytest.approx([1.0, 1.0], abs=1e-12)
    a, b = (res["predictors"][n] for n in names)
    assert a["kendall_tau"] == b["kendall_tau"]


def _fails(proc, *fragments, out=None):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "magic-rank: error:" in proc.stderr
    for f in fragments:
        assert f in proc.stderr, proc.stderr
    if out is not None:
        assert not os.path.exists(out), "nothing is written when the input is bad"


def test_ground_truth_child_the_supernet_cannot_build(trained_supernet, tmp_path):
    out = tmp_path / "o"
    for spec, why in (("ffn,ffn,ffn", "has 3 layers: expected 4"),
                      ("ffn,ffn,conv7,ffn", "unknown operator 'conv7' at layer 2")):
        gt = _jsonl(tmp_path / "gt.jsonl", [{"arch": "ffn,ffn,ffn,ffn", "seed": 1, "loss": 5.0},
                                            {"arch": spec, "seed": 1, "loss": 6.0}])
        _fails(_rank(gt, trained_supernet, "--out", out, *SCORING),
               f"ground-truth child {spec} cannot be built", why, out=out)


def test_bad_inputs_fail_before_any_work(files):
    d, gt, good, bad = files
    out = d / "never"

    def run(*args):
        return _rank(*args, "--out", out, "--bootstrap", "20")

    one = _jsonl(d / "one.jsonl", [{"arch": CHILDREN[0], "seed": s, "loss": 5.0} for s in (1, 2)])
    _fails(run(one, "--scores", good), "1 child(ren)", "expected at least 2", out=out)
    short = _jsonl(d / "short.jsonl", [{"arch": c, "loss": 1.0} for c in CHILDREN[:5]])
    _fails(run(gt, "--scores", short), "short.jsonl has no score for 3 of the 8 ground-truth "
                                       f"children: {CHILDREN[5]}", out=out)
    broken = _jsonl(d / "broken.jsonl", [{"arch": CHILDREN[0], "loss": 1.0}, '{"arch": "ffn",'])
    _fails(run(gt, "--scores", broken), "broken.jsonl:2: not valid JSON", out=out)
    dup = _jsonl(d / "dup.jsonl", [{"arch": c, "loss": 1.0} for c in CHILDREN + CHILDREN[2:3]])
    _fails(run(gt, "--scores", dup), f"dup.jsonl:9: child {CHILDREN[2]} already scored on line 3",
           out=out)
    badgt = _jsonl(d / "badgt.jsonl", [{"arch": CHILDREN[0], "seed": 1, "loss": 5.0},
                                       {"arch": CHILDREN[1], "loss": 5.0}])
    _fails(run(badgt, "--scores", good), 'badgt.jsonl:2: no "seed" key', out=out)
    _fails(run(d / "nope.jsonl", "--scores", good), "ground-truth file", "does not exist", out=out)
    _fails(run(gt), "no predictors", out=out)
    _fails(run(gt, d / "missing.pt"), "checkpoint", "missing.pt' does not exist", out=out)
    _fails(run(gt, "--scores", good, "--tnr-n", "9"), "--tnr-n 9: expected 1 <= n <= 8", out=out)
    _fails(run(gt, "--scores", good, "--scores", bad, "--pairs", "good:worse"),
           "'worse' is not a predictor or group", out=out)
    _fails(run(gt, "--scores", good, "--scores", bad, "--group", "g=good,other"),
           "member 'other' is neither a predictor name", out=out)
    _fails(run(gt, "--scores", good, "--scores", good), "good.jsonl' is given twice", out=out)
    _fails(run(gt, "--scores", f"x={good}", "--scores", f"x={bad}"),
           "predictor name 'x' is used twice", out=out)
    _fails(_rank(gt, "--scores", good, "--bootstrap", "0", "--out", out),
           "--bootstrap 0: expected >= 1", out=out)
