"""Ranking metrics (fairseq_magic.core.ranking): scipy and hand-computed values with
ties, TnR/S-Tau as the "deeper insights" paper defines them, bootstrap intervals,
ground-truth reading."""

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from fairseq_magic.core import ranking as R
from fairseq_magic.core.space import MagicConfigError


# ---------------------------------------------------------------- correlations

def test_kendall_and_spearman_with_ties_hand_computed():
    p, t = [1, 2, 2, 3], [1, 3, 2, 2]
    # pairs: 3 concordant, 1 discordant, 1 tied in p only, 1 tied in t only
    # tau-b = (3 - 1) / sqrt((6 - 1) * (6 - 1))
    assert R.kendall_tau_b(p, t) == pytest.approx(0.4, abs=1e-12)
    # average ranks p: 1, 2.5, 2.5, 4; t: 1, 4, 2.5, 2.5 -> Pearson 2.25 / 4.5
    assert R.spearman(p, t) == pytest.approx(0.5, abs=1e-12)


def test_kendall_and_spearman_match_scipy_on_tied_data():
    rng = np.random.default_rng(5)
    for _ in range(20):
        p = rng.integers(0, 4, size=15).astype(float)  # heavy ties on both sides
        t = rng.integers(0, 5, size=15).astype(float)
        assert R.kendall_tau_b(p, t) == pytest.approx(stats.kendalltau(p, t).statistic, abs=1e-12)
        assert R.spearman(p, t) == pytest.approx(stats.spearmanr(p, t).statistic, abs=1e-12)


def test_constant_side_is_undefined_not_zero():
    assert math.isnan(R.kendall_tau_b([1, 1, 1], [1, 2, 3]))
    assert math.isnan(R.spearman([1, 2, 3], [4, 4, 4]))


# ------------------------------------------------------------------------- TnR

def test_ground_truth_ranks_share_the_best_rank_on_ties():
    assert R.ground_truth_ranks([3.0, 1.0, 1.0, 2.0]).tolist() == [4, 1, 1, 3]


def test_tnr_hand_cases():
    truth = [3.0, 1.0, 2.0, 5.0, 4.0]  # true ranks 3, 1, 2, 5, 4
    pred = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert R.tnr(pred, truth, 1) == 3.0
    assert R.tnr(pred, truth, 2) == 1.0
    assert R.tnr(pred, truth, 5) == 1.0
    # tied truth: children 1 and 2 share rank 1
    assert R.tnr([4.0, 3.0, 1.0, 2.0], [2.0, 1.0, 1.0, 3.0], 1) == 1.0
    # tied predictions across the n-th place: child 0 is in for sure (true
    # rank 4); one (n=2) or two (n=3) of the tied children 1..3 (true ranks
    # 1, 2, 3) join at random: E = (1 + 2 + 3) / 3 and (1 + 1 + 2) / 3
    pred, truth = [1.0, 2.0, 2.0, 2.0], [4.0, 1.0, 2.0, 3.0]
    assert R.tnr(pred, truth, 2) == pytest.approx(2.0)
    assert R.tnr(pred, truth, 3) == pytest.approx(4 / 3)
    assert R.tnr(pred, truth, 4) == 1.0


def _tnr_brute_force(pred, truth, n):
    """Average over every order of the tied predictions (uniform tie-breaking)."""
    ranks = R.ground_truth_ranks(truth)
    vals = []
    for perm in itertools.permutations(range(len(pred))):
        # a permutation breaks ties: sort by (score, position in the permutation)
        pos = {c: i for i, c in enumerate(perm)}
        order = sorted(range(len(pred)), key=lambda c: (pred[c], pos[c]))
        vals.append(min(ranks[c] for c in order[:n]))
    return float(np.mean(vals))


def test_tnr_equals_brute_force_tie_breaking():
    rng = np.random.default_rng(1)
    for _ in range(6):
        pred = rng.integers(0, 3, size=6).astype(float)
        truth = rng.integers(0, 4, size=6).astype(float)
        for n in (1, 2, 4):
            assert R.tnr(pred, truth, n) == pytest.approx(_tnr_brute_force(pred, truth, n))


def test_tnr_of_a_constant_predictor_is_the_chance_level():
    # E[best rank of 2 children out of 4] = (1+1+1+2+2+3)/6
    assert R.tnr_random(4, 2) == pytest.approx(10 / 6)
    assert R.tnr_random(64, 1) == pytest.approx(32.5)
    assert R.tnr(np.zeros(4), [0.4, 0.1, 0.3, 0.2], 2) == pytest.approx(10 / 6)


def test_tnr_rejects_n_out_of_range():
    with pytest.raises(MagicConfigError, match="top-n 4: expected 1 <= n <= 3"):
        R.tnr([1, 2, 3], [1, 2, 3], 4)


# ----------------------------------------------------------------------- S-Tau

def test_s_tau_hand_case():
    ranks = [[1, 2, 3], [1, 3, 2], [3, 2, 1]]
    # pairwise taus: 1/3, -1, -1/3; S-Tau = 2 / (3 * 2) * their sum
    assert R.s_tau(ranks) == pytest.approx(-1 / 3)
    taus = R.pairwise_taus(ranks)
    assert taus[0, 1] == pytest.approx(1 / 3) and taus[0, 2] == pytest.approx(-1)


def test_s_tau_with_ties_is_the_mean_scipy_tau_b():
    m = np.array([[1, 1, 2, 3, 3], [2, 1, 1, 3, 4], [1, 2, 2, 2, 5], [5, 4, 3, 2, 1]], float)
    want = np.mean([stats.kendalltau(m[i], m[j]).statistic
                    for i, j in itertools.combinations(range(4), 2)])
    assert R.s_tau(m) == pytest.approx(want, abs=1e-12)
    with pytest.raises(MagicConfigError, match="at least 2 rankings"):
        R.s_tau([[1, 2, 3]])


# ------------------------------------------------------------------- bootstrap

def _clean_case(n=30, noise=2.0):
    truth = np.arange(n, dtype=float)
    pred = truth + np.random.default_rng(3).normal(0, noise, n)
    return pred, truth


def test_bootstrap_is_deterministic_and_leaves_global_rng_alone():
    pred, truth = _clean_case()
    state = np.random.get_state()[1].copy()
    a = R.bootstrap_interval(R.kendall_tau_b, pred, truth, n_boot=300, seed=7)
    b = R.bootstrap_interval(R.kendall_tau_b, pred, truth, n_boot=300, seed=7)
    c = R.bootstrap_interval(R.kendall_tau_b, pred, truth, n_boot=300, seed=8)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)
    assert np.array_equal(np.random.get_state()[1], state)
    assert a.estimate == R.kendall_tau_b(pred, truth)
    assert a.low < a.estimate < a.high and a.high - a.low < 0.5
    assert a.n_boot == a.n_valid == 300


def test_bootstrap_interval_contains_estimate_for_every_metric():
    pred, truth = _clean_case()
    for metric in (R.kendall_tau_b, R.spearman, lambda p, t: R.tnr(p, t, 3)):
        iv = R.bootstrap_interval(metric, pred, truth, n_boot=200, seed=0)
        assert iv.low <= iv.estimate <= iv.high


def test_undefined_resamples_are_dropped_and_counted():
    # two children: a third of resamples draw one child twice -> tau undefined
    iv = R.bootstrap_interval(R.kendall_tau_b, [1.0, 2.0], [1.0, 2.0], n_boot=400, seed=0)
    assert 0 < iv.n_valid < 400 and iv.low == iv.high == 1.0


def test_paired_difference_with_itself_is_exactly_zero():
    pred, truth = _clean_case()
    for metric in (R.kendall_tau_b, R.spearman, lambda p, t: R.tnr(p, t, 3)):
        d = R.paired_bootstrap_diff(metric, pred, pred, truth, n_boot=200, seed=1)
        assert d.estimate == 0.0 and d.low == 0.0 and d.high == 0.0


def test_paired_difference_uses_the_same_resamples():
    pred, truth = _clean_case()
    worse = truth + np.random.default_rng(4).normal(0, 12.0, len(truth))
    d = R.paired_bootstrap_diff(R.kendall_tau_b, pred, worse, truth, n_boot=300, seed=2)
    idx = R.bootstrap_indices(len(truth), 300, 2)
    reps = (R.replicates(R.kendall_tau_b, pred, truth, idx)
            - R.replicates(R.kendall_tau_b, worse, truth, idx))
    assert d.estimate == pytest.approx(R.kendall_tau_b(pred, truth) - R.kendall_tau_b(worse, truth))
    assert [d.low, d.high] == pytest.approx(np.percentile(reps, [2.5, 97.5]), abs=1e-12)
    assert d.low > 0  # the better predictor is better on every plausible resample
    # unpaired intervals would overlap much more: pairing removes the shared part
    ia = R.bootstrap_interval(R.kendall_tau_b, pred, truth, n_boot=300, seed=2)
    ib = R.bootstrap_interval(R.kendall_tau_b, worse, truth, n_boot=300, seed=2)
    assert d.high - d.low < (ia.high - ia.low) + (ib.high - ib.low)


def test_group_metric_is_the_mean_over_members():
    pred, truth = _clean_case()
    other = pred[::-1].copy()
    f = R.mean_over_rows(R.kendall_tau_b)
    assert f(np.stack([pred, other]), truth) == pytest.approx(
        (R.kendall_tau_b(pred, truth) + R.kendall_tau_b(other, truth)) / 2)


# ------------------------------------------------------------------ file input

def _write(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return str(path)


def test_ground_truth_mean_over_seeds_and_failed_units(tmp_path):
    f = _write(tmp_path / "gt.jsonl", [
        {"arch": "mha2,ffn", "seed": 1, "loss": 5.0, "status": "ok", "updates": 10},
        {"arch": "mha2, ffn", "seed": 2, "loss": 6.0},  # same child, spaces normalised
        "",
        {"arch": "conv3,ffn", "seed": 1, "loss": 4.0},
        # as magic-ground-truth records a diverged unit
        {"arch": "conv3,ffn", "seed": 2, "loss": None, "status": "failed", "reason": "NaN loss"},
        {"arch": "ffn,ffn", "seed": 1, "loss": float("nan")},
    ])
    gt = R.read_ground_truth(f)
    assert gt.children == ["mha2,ffn", "conv3,ffn"]
    assert gt.mean().tolist() == [5.5, 4.0]
    assert gt.seed_counts() == {"mha2,ffn": 2, "conv3,ffn": 1}
    assert gt.excluded == ["ffn,ffn"]
    assert [(u["arch"], u["seed"], u["line"]) for u in gt.failed] == [
        ("conv3,ffn", 2, 5), ("ffn,ffn", 1, 6)]
    assert gt.failed[0]["reason"] == "NaN loss"


@pytest.mark.parametrize("line,message", [
    ('{"arch": "mha2,ffn", "seed": 1, "loss": 5.0', r"gt.jsonl:2: not valid JSON"),
    ('[1, 2]', r"gt.jsonl:2: expected a JSON object"),
    ('{"seed": 1, "loss": 5.0}', r"gt.jsonl:2: no \"arch\" key"),
    ('{"arch": "mha2,ffn", "loss": 5.0}', r"gt.jsonl:2: no \"seed\" key"),
    ('{"arch": "mha2,ffn", "seed": 1}', r"gt.jsonl:2: no \"loss\" key"),
    ('{"arch": "mha2,ffn", "seed": 1, "loss": "low"}', r"gt.jsonl:2: loss 'low': expected a number"),
    ('{"arch": "mha2,bogus", "seed": 1, "loss": 5.0}', r"gt.jsonl:2: unknown operator 'bogus'"),
    ('{"arch": "conv3,ffn", "seed": 1, "loss": 5.0}', r"gt.jsonl:2: child conv3,ffn with seed 1 "
                                                      r"already appeared on line 1"),
])
def test_ground_truth_bad_lines_name_file_and_line(tmp_path, line, message):
    f = _write(tmp_path / "gt.jsonl", [{"arch": "conv3,ffn", "seed": 1, "loss": 4.0}, line])
    with pytest.raises(MagicConfigError, match=message):
        R.read_ground_truth(f)


def test_score_files_duplicates_and_missing_children(tmp_path):
    f = _write(tmp_path / "s.jsonl", [{"arch": "mha2,ffn", "loss": 5.0},
                                      {"arch": "conv3,ffn", "loss": 4.5}])
    assert R.read_scores(f) == {"mha2,ffn": 5.0, "conv3,ffn": 4.5}
    assert R.align_scores(R.read_scores(f), ["conv3,ffn", "mha2,ffn"], "x").tolist() == [4.5, 5.0]
    with pytest.raises(MagicConfigError, match=r"x has no score for 1 of the 3 ground-truth "
                                               r"children: ffn,ffn"):
        R.align_scores(R.read_scores(f), ["conv3,ffn", "mha2,ffn", "ffn,ffn"], "x")
    dup = _write(tmp_path / "d.jsonl", [{"arch": "mha2,ffn", "loss": 5.0},
                                        {"arch": "conv3,ffn", "loss": 4.5},
                                        {"arch": "mha2,ffn", "loss": 5.1}])
    with pytest.raises(MagicConfigError, match=r"d.jsonl:3: child mha2,ffn already scored on line 1"):
        R.read_scores(dup)
    nan = _write(tmp_path / "n.jsonl", ['{"arch": "mha2,ffn", "loss": NaN}'])
    with pytest.raises(MagicConfigError, match=r"n.jsonl:1: loss nan: expected a finite number"):
        R.read_scores(nan)


# -------------------------------------------------- agreement of ground-truth seeds

def _gt(tmp_path, table):
    """table: {arch: [loss per seed 1..k]}"""
    lines = [{"arch": a, "seed": s + 1, "loss": x} for a, xs in table.items()
             for s, x in enumerate(xs)]
    return R.read_ground_truth(_write(tmp_path / "gt.jsonl", lines))


def test_seed_agreement_two_seeds_is_tau_between_seeds(tmp_path):
    table = {"ffn,ffn": [1.0, 1.1], "conv3,ffn": [2.0, 3.5], "conv5,ffn": [3.0, 2.5],
             "mha2,ffn": [4.0, 4.2], "mha2,mha2": [5.0, 5.0]}
    out = R.seed_agreement(_gt(tmp_path, table), n_boot=200, seed=0)
    s1, s2 = zip(*table.values())
    assert out["value"] == pytest.approx(stats.kendalltau(s1, s2).statistic)
    assert out["halves"] == [[1], [2]] and out["children"] == 5
    assert out["interval"][0] <= out["value"] <= out["interval"][1]
    assert out["pairwise"]["s_tau"] == pytest.approx(out["value"])


def test_seed_agreement_halves_with_four_seeds(tmp_path):
    table = {"ffn,ffn": [1, 2, 1, 1], "conv3,ffn": [2, 1, 3, 3], "conv5,ffn": [3, 4, 2, 5],
             "mha2,ffn": [4, 3, 5, 2]}
    out = R.seed_agreement(_gt(tmp_path, table), n_boot=100, seed=0)
    m = np.array(list(table.values()), float)
    a, b = m[:, :2].mean(1), m[:, 2:].mean(1)  # seeds {1, 2} vs {3, 4}
    assert out["halves"] == [[1, 2], [3, 4]]
    assert out["value"] == pytest.approx(stats.kendalltau(a, b).statistic)
    assert out["pairwise"]["s_tau"] == pytest.approx(R.s_tau(m.T))
    assert out["pairwise"]["min"] <= out["pairwise"]["s_tau"] <= out["pairwise"]["max"]
    assert len(out["pairwise"]["taus"]) == 6


def test_seed_agreement_needs_two_seeds(tmp_path):
    out = R.seed_agreement(_gt(tmp_path, {"ffn,ffn": [1.0], "conv3,ffn": [2.0]}))
    assert out["value"] is None and "2 seeds" in out["reason"]
