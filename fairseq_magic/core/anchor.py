"""MAGIC-A anchor model: bookkeeping and replacement rules (fairseq-free).

The anchor is the child whose hidden states the sampled children are aligned
to (section 4 of the paper). Two policies:

``best`` (section 4, appendix B -- the paper's MAGIC-A / MAGIC-AT): keep the
    best child seen; every ``interval`` updates the freshly trained child is
    compared with the anchor and replaces it when it validates better.
``top_p`` (section 5.2, Figure 3b): at each epoch end score ``population``
    random children and use the top-p% one as anchor, but keep the previous
    anchor while it still ranks within the top (p +- r)% -- the exact top-p%
    child changes every epoch and swapping the alignment target that often
    destabilises training.

Scores are validation MLM losses: LOWER IS BETTER. The scorer is injected
(``scorer(arch) -> float``) so this module is pure logic and testable without
a model. All state is plain Python so checkpoints load with weights_only=True,
and no global RNG is touched (see samplers.py for why).
"""

import inspect
import math
import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from .samplers import random_arch
from .space import Arch, MagicConfigError, SearchSpace

Scorer = Callable[[Arch], float]


@dataclass
class AnchorState:
    """The current anchor and the history needed to resume exactly."""

    arch: Optional[Arch] = None
    score: Optional[float] = None            # the anchor's score at its last evaluation
    replacements: int = 0                    # anchor changes, initialisation excluded
    last_eval_update: Optional[int] = None   # update of the last BestAnchorPolicy.step
    last_epoch: Optional[int] = None         # epoch of the last TopPAnchorPolicy.step_epoch

    def state_dict(self) -> dict:
        return {
            "arch": str(self.arch) if self.arch is not None else None,
            "score": float(self.score) if self.score is not None else None,
            "replacements": int(self.replacements),
            "last_eval_update": self.last_eval_update,
            "last_epoch": self.last_epoch,
        }

    def load_state_dict(self, state: dict, space: Optional[SearchSpace] = None) -> None:
        """Restore from ``state_dict()``; with ``space``, check the anchor is a
        path of it (a checkpoint from a different super-net fails loudly)."""
        spec = state.get("arch")
        if spec is None:
            self.arch = None
        elif space is not None:
            self.arch = space.parse(spec)
        else:
            self.arch = Arch(spec.split(","))
        score = state.get("score")
        self.score = float(score) if score is not None else None
        self.replacements = int(state.get("replacements", 0))
        self.last_eval_update = state.get("last_eval_update")
        self.last_epoch = state.get("last_epoch")


def _score(scorer: Scorer, arch: Arch) -> float:
    return float(scorer(arch))


def _rank_key(score: float) -> float:
    # A NaN loss (a diverged child) ranks last; NaN would otherwise make every
    # comparison False and break sorting.
    return math.inf if math.isnan(score) else score


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class BestAnchorPolicy:
    """The paper's rule: the anchor is replaced by a child that validates better.

    ``step`` calls the scorer exactly:
      * 1 time when there is no anchor yet (the candidate initialises it),
      * 1 time when the candidate is the anchor (the anchor is rescored),
      * 2 times otherwise: first the candidate, then the anchor.

    Why rescore the anchor: its stored score was measured with the weights of
    an earlier update, and the shared weights have moved since (pulled by every
    child trained in between). While the loss falls, the stale score is too
    high and any fresh candidate would look better, so the anchor would be
    replaced almost every time; if the anchor's operators drifted, the stale
    score is too low and a decayed anchor would never be replaced. Only scores
    taken with the same weights are comparable, so both are scored now.
    """

    name = "best"

    def __init__(self, interval: int):
        if not _is_int(interval) or interval < 1:
            raise MagicConfigError(
                f"--magic-anchor-interval {interval!r}: expected an integer >= 1 "
                "(updates between anchor evaluations)")
        self.interval = interval

    def due(self, update_num: int) -> bool:
        """Whether to evaluate at ``update_num`` (fairseq's finished-update count)."""
        return update_num > 0 and update_num % self.interval == 0

    def step(self, state: AnchorState, candidate: Arch, scorer: Scorer,
             update_num: int) -> bool:
        """Compare ``candidate`` with the anchor; returns True iff the anchor was
        replaced (initialisation and keeping return False).

        Replacement needs ``candidate_score < anchor_score`` strictly: a tie
        keeps the anchor, so the alignment target does not flip between equals.
        A NaN candidate never replaces; a NaN anchor is replaced by any
        non-NaN candidate. ``state.score`` becomes the winner's fresh score.
        """
        candidate = Arch(candidate)
        state.last_eval_update = update_num
        if state.arch is None:
            state.arch, state.score = candidate, _score(scorer, candidate)
            return False
        if candidate == state.arch:
            state.score = _score(scorer, state.arch)
            return False
        cand_score = _score(scorer, candidate)
        anchor_score = _score(scorer, state.arch)
        if _rank_key(cand_score) < _rank_key(anchor_score):
            state.arch, state.score = candidate, cand_score
            state.replacements += 1
            return True
        state.score = anchor_score
        return False


class TopPAnchorPolicy:
    """Section 5.2: a top-p% anchor that is kept while it stays in the p +- r band.

    At each epoch end ``step_epoch`` draws ``population`` children with
    ``random.Random(f"magic-anchor-top-p:{seed}:{epoch}")`` -- the same list on
    every rank and after a resume -- scores them, and sorts them ascending by
    score (stable: ties keep draw order; NaN ranks last). The top-p% child is
    the one at rank index ``clip(ceil(p/100 * population) - 1, 0, population-1)``.

    The anchor's percentile is ``100 * (#population scores strictly below its
    fresh score) / population``. It is kept while
    ``max(0, p - r) <= percentile <= min(100, p + r)``; otherwise it is replaced
    by the top-p% child. An anchor that is no longer a path of ``space``
    (progressive shrinking removed one of its operators) is always replaced.
    If the top-p% child is the anchor itself nothing changes.

    Scorer calls per effective step: one per DISTINCT child drawn (duplicates
    are scored once: weights do not change within the step), plus one for the
    anchor when it exists, is still in the space, and was not drawn. A second
    call for the same epoch is a no-op (no scorer calls, returns False) so a
    job resumed from the end-of-epoch checkpoint does not re-draw.
    """

    name = "top_p"

    def __init__(self, p: float, r: float = 10.0, *, population: int):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 100:
            raise MagicConfigError(
                f"--magic-anchor-top-p {p!r}: expected a percentage in (0, 100]")
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not r >= 0:
            raise MagicConfigError(
                f"--magic-anchor-band {r!r}: expected a percentage >= 0 (the paper uses 10)")
        if not _is_int(population) or population < 1:
            raise MagicConfigError(
                f"--magic-anchor-population {population!r}: expected an integer >= 1 "
                "(children scored at each epoch end; the paper uses 10000)")
        self.p = float(p)
        self.r = float(r)
        self.population = population

    def top_index(self) -> int:
        # round() first: 30/100*10 is 3.0000000000000004 in floating point,
        # whose ceil would pick rank 3 instead of rank 2.
        k = math.ceil(round(self.p * self.population / 100.0, 9)) - 1
        return max(0, min(self.population - 1, k))

    def band(self):
        return max(0.0, self.p - self.r), min(100.0, self.p + self.r)

    def draw_population(self, space: SearchSpace, seed: int, epoch: int) -> List[Arch]:
        rng = random.Random(f"magic-anchor-top-p:{seed}:{epoch}")
        return [random_arch(space, rng) for _ in range(self.population)]

    def step_epoch(self, state: AnchorState, space: SearchSpace, scorer: Scorer,
                   epoch: int, seed: int) -> bool:
        """Returns True iff the anchor was replaced (initialisation returns False)."""
        if state.last_epoch is not None and state.last_epoch == epoch:
            return False
        children = self.draw_population(space, seed, epoch)
        cache: Dict[Arch, float] = {}
        for child in children:
            if child not in cache:
                cache[child] = _score(scorer, child)
        scores = [cache[c] for c in children]
        order = sorted(range(len(children)), key=lambda i: _rank_key(scores[i]))
        top = order[self.top_index()]
        top_arch, top_score = children[top], scores[top]
        state.last_epoch = epoch

        if state.arch is None:
            state.arch, state.score = top_arch, top_score
            return False
        if space.contains(state.arch):
            anchor_score = cache.get(state.arch)
            if anchor_score is None:
                anchor_score = _score(scorer, state.arch)
            key = _rank_key(anchor_score)
            better = sum(1 for s in scores if _rank_key(s) < key)
            percentile = 100.0 * better / len(scores)
            lo, hi = self.band()
            eps = 1e-9  # 100 * k / n is inexact in floating point; the band is inclusive
            if lo - eps <= percentile <= hi + eps or top_arch == state.arch:
                state.score = anchor_score
                return False
        state.arch, state.score = top_arch, top_score
        state.replacements += 1
        return True


ANCHOR_POLICIES = {"best": BestAnchorPolicy, "top_p": TopPAnchorPolicy}


def _params(cls) -> set:
    return {n for n in inspect.signature(cls.__init__).parameters if n != "self"}


def build_anchor_policy(name: str, **opts):
    """``build_anchor_policy("best", interval=...)`` or
    ``build_anchor_policy("top_p", p=..., r=..., population=...)``.

    Options that belong to the OTHER policy are dropped (and so not
    validated), so a caller can pass every ``--magic-anchor-*`` flag whatever
    the policy; an option no policy knows is still a TypeError (a typo).
    """
    if name not in ANCHOR_POLICIES:
        raise MagicConfigError(
            f"--magic-anchor {name!r}: expected one of {sorted(ANCHOR_POLICIES)}")
    cls = ANCHOR_POLICIES[name]
    foreign = set().union(*(_params(c) for c in ANCHOR_POLICIES.values())) - _params(cls)
    return cls(**{k: v for k, v in opts.items() if k not in foreign})
