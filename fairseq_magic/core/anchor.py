"""MAGIC-A anchor model: bookkeeping and replacement rules (fairseq-free).

The anchor is the child whose hidden states the sampled children are aligned
to (section 4 of the paper). Two policies:

``best`` (section 4, appendix B -- the paper's MAGIC-A / MAGIC-AT): keep the
    best child seen; a trained child replaces the anchor when it validates
    better. Validating every child would score the anchor subset at every
    update, so every child is recorded with its training MLM loss (a
    ``CandidateBuffer``) and every ``interval`` updates the ``candidates``
    children with the lowest training loss are validated against the
    rescored anchor. The first anchor is the best-validating candidate of the
    first evaluation, not whichever child happened to be trained first.
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
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .samplers import random_arch
from .space import Arch, MagicConfigError, SearchSpace

Scorer = Callable[[Arch], float]

# Children validated per evaluation (--magic-anchor-candidates). Each costs one
# scoring of the anchor subset, as does rescoring the anchor: C = 2 is 3
# scorings per interval, about 4% of training time at the task's defaults
# (benchmarks/step_overhead.py, tiny preset on CPU); the target is <= 5%.
DEFAULT_CANDIDATES = 2


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


@dataclass
class AnchorEvaluation:
    """What one ``BestAnchorPolicy.evaluate`` saw and decided (for the log)."""

    update: int
    scores: List[Tuple[Arch, float]]      # each candidate validated, in order
    previous: Optional[Arch]              # the anchor before the evaluation
    previous_score: Optional[float]       # ...rescored now (None without anchor)
    anchor: Optional[Arch]                # the anchor after it
    replaced: bool                        # a replacement (initialisation is not)


class BestAnchorPolicy:
    """The paper's rule: the anchor is replaced by a child that validates better.

    ``evaluate(state, candidates, ...)`` scores each distinct candidate other
    than the anchor, in the given order, then the anchor; so it calls the
    scorer ``len(distinct candidates) + (1 if there is an anchor)`` times:
    with no anchor yet the best candidate initialises it, with no candidate
    left the anchor is only rescored. ``step`` is the one-candidate case.

    Why rescore the anchor: its stored score was measured with the weights of
    an earlier update, and the shared weights have moved since (pulled by every
    child trained in between). While the loss falls, the stale score is too
    high and any fresh candidate would look better, so the anchor would be
    replaced almost every time; if the anchor's operators drifted, the stale
    score is too low and a decayed anchor would never be replaced. Only scores
    taken with the same weights are comparable, so all are scored now.
    """

    name = "best"

    def __init__(self, interval: int, candidates: int = DEFAULT_CANDIDATES):
        if not _is_int(interval) or interval < 1:
            raise MagicConfigError(
                f"--magic-anchor-interval {interval!r}: expected an integer >= 1 "
                "(updates between anchor evaluations)")
        if not _is_int(candidates) or candidates < 1:
            raise MagicConfigError(
                f"--magic-anchor-candidates {candidates!r}: expected an integer >= 1 "
                "(children validated against the anchor at each evaluation)")
        self.interval = interval
        self.candidates = candidates

    def due(self, update_num: int) -> bool:
        """Whether to evaluate at ``update_num`` (fairseq's finished-update count)."""
        return update_num > 0 and update_num % self.interval == 0

    def evaluate(self, state: AnchorState, candidates: Sequence[Arch], scorer: Scorer,
                 update_num: int) -> AnchorEvaluation:
        """Validate ``candidates`` (most promising first) against the anchor.

        The best-scoring candidate (ties: the earlier one) replaces the anchor
        only when ``candidate_score < anchor_score`` strictly: a tie keeps the
        anchor, so the alignment target does not flip between equals. A NaN
        candidate never replaces; a NaN anchor is replaced by any non-NaN
        candidate. ``state.score`` becomes the winner's fresh score.
        """
        distinct: List[Arch] = []
        for c in candidates:
            c = Arch(c)
            if c != state.arch and c not in distinct:
                distinct.append(c)
        state.last_eval_update = update_num
        scores = [(c, _score(scorer, c)) for c in distinct]
        previous = state.arch
        previous_score = _score(scorer, previous) if previous is not None else None
        best = min(scores, key=lambda cs: _rank_key(cs[1]), default=None)
        replaced = False
        if previous is None:
            if best is not None:
                state.arch, state.score = best
        elif best is not None and _rank_key(best[1]) < _rank_key(previous_score):
            state.arch, state.score = best
            state.replacements += 1
            replaced = True
        else:
            state.score = previous_score
        return AnchorEvaluation(update_num, scores, previous, previous_score,
                                state.arch, replaced)

    def step(self, state: AnchorState, candidate: Arch, scorer: Scorer,
             update_num: int) -> bool:
        """``evaluate`` with one candidate; True iff the anchor was replaced
        (initialisation and keeping return False)."""
        return self.evaluate(state, [candidate], scorer, update_num).replaced


class CandidateBuffer:
    """The children trained since the last evaluation, with their training loss.

    One entry per update: the child and its MLM loss summed over the update's
    masked tokens (nats) with the token count, accumulated over micro-batches
    by ``add``. The sums start as this process's own; ``set_total`` replaces
    them with the sums over every data-parallel rank (ranks train the same
    child on different data, so only the global sums rank children the same
    way everywhere) and marks the entry global.

    ``select(k)`` ranks the children by mean training loss per masked token
    (lowest first; NaN last; ties: the later update first) and returns the
    best ``k`` distinct ones, each with its best entry. The training loss is
    only a filter -- it is measured on different batches and weights for
    every update -- so the winner is still decided by validation.
    """

    def __init__(self):
        self._entries: Dict[int, list] = {}  # update -> [Arch, loss_sum, count, global]

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, update: int, arch: Sequence[str], loss_sum: float, count: int) -> None:
        arch = Arch(arch)
        entry = self._entries.get(update)
        if entry is None:
            self._entries[update] = [arch, float(loss_sum), int(count), False]
            return
        if entry[0] != arch:
            raise ValueError(f"update {update} trained {entry[0]} and {arch}: expected "
                             "one child per update")
        entry[1] += float(loss_sum)
        entry[2] += int(count)

    def set_total(self, update: int, loss_sum: float, count: int) -> None:
        entry = self._entries[update]
        entry[1], entry[2], entry[3] = float(loss_sum), int(count), True

    def local_updates(self) -> List[int]:
        """Updates whose sums are still this process's own, ascending."""
        return sorted(u for u, e in self._entries.items() if not e[3])

    def sums(self, update: int) -> Tuple[float, int]:
        entry = self._entries[update]
        return entry[1], entry[2]

    def select(self, k: int, exclude: Optional[Sequence[str]] = None,
               space: Optional[SearchSpace] = None) -> List[Tuple[Arch, float, int]]:
        """Up to ``k`` distinct children as ``(arch, mean loss in bits per
        masked token, update)``, best first; ``exclude`` (the anchor) and
        children outside ``space`` (removed by shrinking) are skipped, as are
        updates that saw no masked token."""
        best: Dict[Arch, Tuple[float, int]] = {}
        for update, (arch, loss_sum, count, _) in self._entries.items():
            if count <= 0 or arch == exclude or (space is not None and not space.contains(arch)):
                continue
            mean = loss_sum / count / math.log(2)
            if arch not in best or (_rank_key(mean), -update) < (_rank_key(best[arch][0]),
                                                                 -best[arch][1]):
                best[arch] = (mean, update)
        ranked = sorted(best.items(), key=lambda kv: (_rank_key(kv[1][0]), -kv[1][1]))
        return [(arch, mean, update) for arch, (mean, update) in ranked[:k]]

    def clear(self) -> None:
        self._entries.clear()

    def state_dict(self) -> dict:
        return {"entries": [[int(u), str(e[0]), float(e[1]), int(e[2]), bool(e[3])]
                            for u, e in sorted(self._entries.items())]}

    def load_state_dict(self, state: dict, num_layers: Optional[int] = None) -> None:
        """Restore from ``state_dict()``; with ``num_layers``, check every child
        has that depth (its children may have left a shrunk space since, so
        they are not checked against one)."""
        entries = {}
        for update, spec, loss_sum, count, is_global in state.get("entries", []):
            arch = Arch(spec.split(","))
            if num_layers is not None and len(arch) != num_layers:
                raise MagicConfigError(
                    f"anchor candidate '{spec}' has {len(arch)} layers: expected "
                    f"{num_layers} (a checkpoint of another super-net?)")
            entries[int(update)] = [arch, float(loss_sum), int(count), bool(is_global)]
        self._entries = entries


def best_scored(children: Sequence[Sequence[str]], scores: Sequence[float],
                space: Optional[SearchSpace] = None) -> Optional[Tuple[Arch, float]]:
    """The best-scoring child (ties: the first) among those in ``space``, or
    None. Replaces an anchor that progressive shrinking removed, from the
    scores shrinking has just taken with the same weights on the same subset."""
    best = None
    for child, score in zip(children, scores):
        if space is not None and not space.contains(child):
            continue
        if best is None or _rank_key(float(score)) < _rank_key(best[1]):
            best = (Arch(child), float(score))
    return best


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
    """``build_anchor_policy("best", interval=..., candidates=...)`` or
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
