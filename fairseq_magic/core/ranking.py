"""Ranking metrics for weight-sharing predictors, with bootstrap intervals (fairseq-free).

A *predictor* gives every child a score (a super-net's weight-sharing validation
loss, a fine-tuned score, any proxy); the *ground truth* is each child trained
alone, averaged over seeds. Lower is better for both, so a good predictor has a
positive rank correlation with the truth.

Metrics follow Zhang et al., "Deeper insights into weight sharing in neural
architecture search" (section 3.2): their GT-Tau, tau(R, R_gt), is
``kendall_tau_b(pred, truth)`` here; TnR and S-Tau are below. Kendall tau-b and Spearman come from
``scipy.stats`` (both tie-aware). Intervals are percentile bootstraps over
children: resample the children with replacement, recompute the metric, take
the 2.5 and 97.5 percentiles. Every interval and paired difference of one
analysis uses the same resamples (``bootstrap_indices`` from one explicit seed
and a local ``numpy.random.Generator``), so differences are paired.

File formats (JSON lines, lower is better):

* ground truth: ``{"arch": SPEC, "seed": S, "loss": X}``, one line per trained
  (child, seed); a child's truth is the mean over its seeds. Other keys are
  ignored. A unit whose training failed (``"failed": true``, ``"status"``
  other than ``"ok"``/``"done"``, or a loss that is null or not finite) is kept
  out of the means and reported.
* scores: ``{"arch": SPEC, "loss": X}``, one line per child.
"""

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .space import MagicConfigError, parse_arch_spec

Metric = Callable[[np.ndarray, Optional[np.ndarray]], float]


# ---------------------------------------------------------------- correlations

def _pair(pred, truth) -> Tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=float)
    t = np.asarray(truth, dtype=float)
    if p.ndim != 1 or p.shape != t.shape:
        raise ValueError(f"expected two 1-D arrays of equal length, got {p.shape} and {t.shape}")
    return p, t


def kendall_tau_b(pred, truth) -> float:
    """Kendall's tau-b (``scipy.stats.kendalltau``, variant ``b``): ties in either
    ranking are corrected for, so tied losses neither count as agreement nor as
    disagreement. NaN when either side is constant (no ordering to compare)."""
    from scipy import stats

    p, t = _pair(pred, truth)
    if len(p) < 2 or np.all(p == p[0]) or np.all(t == t[0]):
        return float("nan")
    return float(stats.kendalltau(p, t, variant="b").statistic)


def spearman(pred, truth) -> float:
    """Spearman's rho (``scipy.stats.spearmanr``): Pearson correlation of the
    average ranks, so tied values share the mean of their ranks. NaN when
    either side is constant."""
    from scipy import stats

    p, t = _pair(pred, truth)
    if len(p) < 2 or np.all(p == p[0]) or np.all(t == t[0]):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(p, t).statistic)


# ------------------------------------------------------------------------- TnR

def ground_truth_ranks(truth) -> np.ndarray:
    """1-based ranks of the truth (rank 1 = lowest loss), tied children sharing
    the best of their ranks: rank = 1 + number of children strictly better."""
    from scipy import stats

    return stats.rankdata(np.asarray(truth, dtype=float), method="min").astype(int)


def tnr(pred, truth, n: int) -> float:
    """Top-n-Rank, as defined in "deeper insights" (section 3.2):

        "Top-n-Rank (TnR): It is to measure how good an instance is at finding
        the top child model(s). TnR is obtained by choosing the top n child
        models from the generated rank of an instance and finding the best
        ground truth rank of these n child models."

    So TnR = min over the predictor's n best children of their ground-truth
    rank; 1 is perfect, lower is better (their T1R/T3R over 64 children ranged
    from 1.6 to 18.5).

    Ties, which the paper does not discuss, are read as follows:

    * ground-truth rank: 1 + the number of children with a strictly lower true
      loss (tied children share the better rank: a child tied with the best is
      as good as the best);
    * the predictor's top n: when predicted scores tie across the n-th place,
      the top n is drawn uniformly among the tied children and TnR is the
      *expected* best rank over that draw, computed exactly. Including all tied
      children instead would reward ties (a constant predictor would get a
      perfect TnR); breaking them by position would depend on file order. With
      this reading a constant predictor gets the chance level (``tnr_random``).
    """
    p, t = _pair(pred, truth)
    n = int(n)
    if not 1 <= n <= len(p):
        raise MagicConfigError(f"top-n {n}: expected 1 <= n <= {len(p)} (the number of children)")
    ranks = ground_truth_ranks(t)
    v = np.sort(p)[n - 1]  # the predicted score at the n-th place
    sure = ranks[p < v]
    best_sure = float(sure.min()) if len(sure) else math.inf
    tied = np.sort(ranks[p == v]).astype(float)
    m, s = len(tied), n - len(sure)  # s of the m tied children enter the top n
    total = math.comb(m, s)
    expected = 0.0
    for j in range(m - s + 1):  # tied[j] is the draw's best with prob C(m-j-1, s-1)/C(m, s)
        expected += math.comb(m - j - 1, s - 1) / total * min(best_sure, tied[j])
    return float(expected)


def tnr_random(num_children: int, n: int) -> float:
    """Chance level of TnR: the expected best rank among n children drawn at
    random from ``num_children`` with distinct true losses."""
    return tnr(np.zeros(num_children), np.arange(num_children, dtype=float), n)


# ----------------------------------------------------------------------- S-Tau

def s_tau(preds) -> float:
    """S-Tau, as defined in "deeper insights" (section 3.2, eq. 2):

        "S-Tau is to measure the stability of generated ranks from multiple
        instances. For N instances with ranks R1, R2, ..., RN, S-Tau can be
        calculated as  2 / (N(N-1)) * sum_{1<=i<j<=N} tau(Ri, Rj)"

    i.e. the mean Kendall tau over all pairs of instances (super-nets trained
    with different seeds, or one super-net at different epochs), each scoring
    the same children. ``preds`` is an (N, children) array, N >= 2. The paper
    writes Kendall's tau without a variant; we use tau-b, which equals the
    original tau when nothing ties and stays in [-1, 1] when something does.
    Pairs whose tau is undefined (a constant ranking) make S-Tau NaN."""
    taus = pairwise_taus(preds)
    return float(np.mean(list(taus.values())))


def pairwise_taus(preds) -> Dict[Tuple[int, int], float]:
    """tau-b of every pair (i, j), i < j, of the rows of ``preds``."""
    m = np.asarray(preds, dtype=float)
    if m.ndim != 2 or m.shape[0] < 2:
        raise MagicConfigError(
            f"S-Tau needs at least 2 rankings of the same children: got array of shape {m.shape}")
    return {(i, j): kendall_tau_b(m[i], m[j])
            for i in range(m.shape[0]) for j in range(i + 1, m.shape[0])}


def mean_over_rows(metric: Metric) -> Metric:
    """A metric of several predictors (rows) against one truth: the rows' mean.
    Used for a group of super-nets of one method (the paper's Table 2 averages
    GT-Tau and TnR over instances)."""

    def f(preds, truth):
        m = np.asarray(preds, dtype=float)
        if m.ndim == 1:
            return metric(m, truth)
        return float(np.mean([metric(row, truth) for row in m]))

    return f


# ------------------------------------------------------------------- bootstrap

@dataclass
class Interval:
    """A point estimate with its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    n_valid: int  # resamples where the metric was defined (not NaN)

    def as_list(self) -> List[Optional[float]]:
        return [_finite_or_none(self.low), _finite_or_none(self.high)]

    def to_dict(self) -> dict:
        return {"estimate": _finite_or_none(self.estimate), "interval": self.as_list(),
                "level": self.level, "n_boot": self.n_boot, "n_valid": self.n_valid}


def _finite_or_none(x):
    return float(x) if x is not None and math.isfinite(x) else None


def bootstrap_indices(num_children: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, num_children) indices of children drawn with replacement, from a
    local generator seeded with ``seed`` (the global numpy RNG is not touched)."""
    if n_boot < 1:
        raise MagicConfigError(f"bootstrap resamples {n_boot}: expected >= 1")
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_children, size=(n_boot, num_children))


def _take(a, idx):
    return None if a is None else np.asarray(a, dtype=float)[..., idx]


def replicates(metric: Metric, pred, truth, indices: np.ndarray) -> np.ndarray:
    """The metric on every resample of the children (rows of ``indices``);
    ``pred`` may be 1-D or (rows, children): children are the last axis."""
    return np.array([metric(_take(pred, idx), _take(truth, idx)) for idx in indices], dtype=float)


def percentile_interval(estimate: float, reps: np.ndarray, level: float = 0.95) -> Interval:
    if not 0 < level < 1:
        raise MagicConfigError(f"interval level {level}: expected 0 < level < 1")
    ok = reps[np.isfinite(reps)]
    if len(ok):
        low, high = np.percentile(ok, [50 * (1 - level), 50 * (1 + level)])
    else:
        low = high = float("nan")
    return Interval(float(estimate), float(low), float(high), level, len(reps), len(ok))


def bootstrap_interval(metric: Metric, pred, truth, n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95, indices: Optional[np.ndarray] = None) -> Interval:
    """``metric(pred, truth)`` with a percentile bootstrap interval over children.
    Resamples where the metric is undefined (e.g. every drawn child the same)
    are left out; ``n_valid`` says how many remained."""
    p = np.asarray(pred, dtype=float)
    if indices is None:
        indices = bootstrap_indices(p.shape[-1], n_boot, seed)
    return percentile_interval(metric(pred, truth), replicates(metric, pred, truth, indices), level)


def paired_bootstrap_diff(metric: Metric, pred_a, pred_b, truth, n_boot: int = 1000,
                          seed: int = 0, level: float = 0.95,
                          indices: Optional[np.ndarray] = None) -> Interval:
    """metric(a) - metric(b) with a paired bootstrap interval: both predictors are
    evaluated on the same resampled children in every replicate, so what the
    children have in common (easy or hard sets) cancels out."""
    a = np.asarray(pred_a, dtype=float)
    if a.shape[-1] != np.asarray(pred_b, dtype=float).shape[-1]:
        raise ValueError("paired predictors must score the same children")
    if indices is None:
        indices = bootstrap_indices(a.shape[-1], n_boot, seed)
    reps = replicates(metric, pred_a, truth, indices) - replicates(metric, pred_b, truth, indices)
    return percentile_interval(metric(pred_a, truth) - metric(pred_b, truth), reps, level)


# ------------------------------------------------------------------ file input

def _json_lines(path: str, kind: str):
    """(line number, object) of every non-blank line; a malformed line fails
    naming the file and the line."""
    if not os.path.isfile(path):
        raise MagicConfigError(f"{kind} file {path!r} does not exist")
    with open(path) as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise MagicConfigError(f"{path}:{no}: not valid JSON ({e.msg}): {line.strip()[:80]!r}")
            if not isinstance(obj, dict):
                raise MagicConfigError(f"{path}:{no}: expected a JSON object such as "
                                       f'{{"arch": "mha2,ffn", "loss": 5.1}}, got {line.strip()[:80]!r}')
            yield no, obj


def _arch(path, no, obj) -> str:
    if "arch" not in obj:
        raise MagicConfigError(f"{path}:{no}: no \"arch\" key (expected a child spec such as 'mha2,ffn')")
    spec = obj["arch"]
    if not (isinstance(spec, str) or (isinstance(spec, list) and all(isinstance(o, str) for o in spec))):
        raise MagicConfigError(f"{path}:{no}: arch {spec!r}: expected a child spec such as 'mha2,ffn'")
    try:
        return str(parse_arch_spec(spec))
    except MagicConfigError as e:
        raise MagicConfigError(f"{path}:{no}: {e}") from None


def _loss(path, no, obj, allow_failed: bool):
    if "loss" not in obj:
        raise MagicConfigError(f"{path}:{no}: no \"loss\" key (expected a number, lower is better)")
    x = obj["loss"]
    if x is None and allow_failed:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise MagicConfigError(f"{path}:{no}: loss {x!r}: expected a number")
    if not math.isfinite(x):
        if allow_failed:
            return None
        raise MagicConfigError(f"{path}:{no}: loss {x!r}: expected a finite number")
    return float(x)


@dataclass
class GroundTruth:
    """Per-child losses by seed, read from a ground-truth file."""

    path: str
    losses: Dict[str, Dict[object, float]]  # arch -> seed -> loss (finished units)
    failed: List[dict] = field(default_factory=list)  # units that did not train

    @property
    def children(self) -> List[str]:
        """Children with at least one finished seed, in file order."""
        return [a for a, by_seed in self.losses.items() if by_seed]

    @property
    def excluded(self) -> List[str]:
        """Children every seed of which failed."""
        return [a for a, by_seed in self.losses.items() if not by_seed]

    def mean(self, archs: Optional[Sequence[str]] = None) -> np.ndarray:
        archs = self.children if archs is None else archs
        return np.array([np.mean(list(self.losses[a].values())) for a in archs])

    def seed_counts(self) -> Dict[str, int]:
        return {a: len(self.losses[a]) for a in self.children}

    def seeds(self) -> List[object]:
        return sorted({s for by_seed in self.losses.values() for s in by_seed}, key=_seed_key)


def _seed_key(s):
    return (0, s, "") if isinstance(s, (int, float)) else (1, 0, str(s))


def read_ground_truth(path: str) -> GroundTruth:
    """Read ``{"arch", "seed", "loss"}`` lines. A repeated (arch, seed) fails
    naming both lines; failed units are kept out of the means (see module doc)."""
    losses: Dict[str, Dict[object, float]] = {}
    where: Dict[Tuple[str, object], int] = {}
    failed = []
    for no, obj in _json_lines(path, "ground-truth"):
        arch = _arch(path, no, obj)
        if "seed" not in obj:
            raise MagicConfigError(f"{path}:{no}: no \"seed\" key (expected the seed the child "
                                   "was trained with)")
        seed = obj["seed"]
        if not isinstance(seed, (int, str)) or isinstance(seed, bool):
            raise MagicConfigError(f"{path}:{no}: seed {seed!r}: expected an integer or a string")
        if (arch, seed) in where:
            raise MagicConfigError(f"{path}:{no}: child {arch} with seed {seed!r} already "
                                   f"appeared on line {where[arch, seed]}")
        where[arch, seed] = no
        loss = _loss(path, no, obj, allow_failed=True)
        status = obj.get("status")
        by_seed = losses.setdefault(arch, {})
        if loss is None or obj.get("failed") or status not in (None, "ok", "done"):
            failed.append({"arch": arch, "seed": seed, "line": no,
                           "reason": obj.get("reason") or obj.get("error") or status
                           or f"loss {obj.get('loss')!r}"})
            continue
        by_seed[seed] = loss
    return GroundTruth(path, losses, failed)


def read_scores(path: str) -> Dict[str, float]:
    """Read ``{"arch", "loss"}`` lines into {spec: loss}; a repeated child fails
    naming both lines (two scores for one child leave its rank undefined)."""
    scores: Dict[str, float] = {}
    where: Dict[str, int] = {}
    for no, obj in _json_lines(path, "score"):
        arch = _arch(path, no, obj)
        if arch in where:
            raise MagicConfigError(f"{path}:{no}: child {arch} already scored on line {where[arch]} "
                                   "(expected one score per child)")
        where[arch] = no
        scores[arch] = _loss(path, no, obj, allow_failed=False)
    return scores


def align_scores(scores: Dict[str, float], children: Sequence[str], source: str) -> np.ndarray:
    """The scores of ``children`` in order; missing children fail naming them."""
    missing = [c for c in children if c not in scores]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise MagicConfigError(f"{source} has no score for {len(missing)} of the "
                               f"{len(children)} ground-truth children: {shown}")
    return np.array([scores[c] for c in children], dtype=float)


# -------------------------------------------------- agreement of ground-truth seeds

def seed_agreement(gt: GroundTruth, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> dict:
    """How well the ground truth agrees with itself across seeds.

    ``value``: Kendall tau-b between the children's mean loss over the first half
    of the (sorted) seeds and over the second half (with 2 seeds: between the two
    seeds; with 3: the first seed vs the mean of the other two), over the
    children that finished every seed, with a bootstrap interval over children.
    A half holds half the seeds, so this understates how reliable the mean over
    all seeds is. ``pairwise``: S-Tau over individual seeds (mean tau of every
    pair of seeds) with its min and max, the paper's Table 1 "Ground truth" row."""
    seeds = gt.seeds()
    complete = [a for a in gt.children if all(s in gt.losses[a] for s in seeds)]
    out = {"seeds": seeds, "children": len(complete)}
    if len(seeds) < 2:
        return {**out, "value": None, "reason": f"needs >= 2 seeds, the file has {len(seeds)}"}
    if len(complete) < 2:
        return {**out, "value": None,
                "reason": f"needs >= 2 children that finished all {len(seeds)} seeds"}
    by_seed = np.array([[gt.losses[a][s] for a in complete] for s in seeds])
    half = len(seeds) // 2
    a, b = by_seed[:half].mean(axis=0), by_seed[half:].mean(axis=0)
    iv = bootstrap_interval(kendall_tau_b, a, b, n_boot, seed, level)
    taus = pairwise_taus(by_seed)
    vals = np.array(list(taus.values()))
    return {**out, "value": _finite_or_none(iv.estimate), "interval": iv.as_list(),
            "halves": [seeds[:half], seeds[half:]],
            "pairwise": {"s_tau": _finite_or_none(float(np.mean(vals))),
                         "min": _finite_or_none(float(np.min(vals))),
                         "max": _finite_or_none(float(np.max(vals))),
                         "taus": {f"{seeds[i]}:{seeds[j]}": _finite_or_none(t)
                                  for (i, j), t in taus.items()}}}
