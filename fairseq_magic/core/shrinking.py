"""Progressive shrinking of the search space (fairseq-free, no torch).

Paper section 5.1 ("Architecture search and re-training"), after NAS-BERT
(Xu et al., 2021): at the end of each super-net training epoch, delete five
unpromising operators from the search space, until only one child is left.

One shrinking step (:meth:`ProgressiveShrinking.step`):

1. :meth:`sample_children` draws ``num_children`` children of the current space
   from ``random.Random(f"magic-shrink:{seed}:{epoch}")`` (never the global
   RNGs, so data order and dropout elsewhere are untouched, and every rank
   derives the same children). The first ``max_l |C_l|`` children form a
   *cover*: each layer's allowed operators are shuffled and child ``i`` uses
   operator ``i mod |C_l|`` of layer ``l``, so every remaining (layer, op)
   candidate appears in at least one child whenever
   ``num_children >= max_l |C_l|``. The rest are uniform random children.
2. The caller scores each child (``score_fn(arch) -> float``: validation loss of
   the child with inherited super-net weights, lower is better).
3. :meth:`rate`: a candidate's rating is the mean score of the sampled children
   that contain it.
4. :meth:`shrink` removes the ``per_epoch`` worst-rated candidates (highest
   mean loss) across all layers.

Edge-case rules of :meth:`shrink`:

* A layer's last allowed operator is never removed.
* Candidates are tried worst first; ties are broken by layer, then operator
  name, so the result is deterministic. NaN ratings count as +inf (a diverged
  child is the worst evidence there is).
* Candidates with no rating (in no sampled child) are never removed: there is
  no evidence against them.
* Constraints stay satisfiable: with a ``constraint_fn``, a removal is only made
  if ``constraint_fn(space_after_removal)`` returns ``None``; if it returns an
  error string the candidate is skipped (kept) and the next worst one is tried.
  ``constraint_fn(space)`` must return ``None`` when *some* child of ``space``
  satisfies the constraint (e.g. a parameter budget: the space still contains a
  child with at most B parameters), and a message saying why not otherwise.
* If fewer than ``per_epoch`` candidates can be removed, what can be is removed
  and the shortfall is logged; the returned ``removed`` list shows it. A step
  that removes nothing while the space has more than one child means the
  constraint (or missing ratings) blocks all progress: the caller should stop.
* The input space is never modified: a NEW :class:`SearchSpace` is returned
  with the same ``candidates`` (the super-net's full operator set) and reduced
  per-layer ``choices`` (remaining operators keep their order).
"""

import logging
import math
import random
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .samplers import random_arch
from .space import Arch, MagicConfigError, SearchSpace

logger = logging.getLogger(__name__)

Candidate = Tuple[int, str]  # (layer, operator name)
ConstraintFn = Callable[[SearchSpace], Optional[str]]


def _check_positive_int(value, flag: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MagicConfigError(f"{flag} {value!r}: expected an integer >= 1")
    return value


class ProgressiveShrinking:
    """Removes ``per_epoch`` unpromising (layer, operator) candidates per epoch.

    ``per_epoch`` is ``--magic-shrink-per-epoch`` (paper: 5), ``num_children``
    is ``--magic-shrink-children`` (how many children are scored per epoch to
    rate candidates). See the module docstring for the rules.
    """

    def __init__(self, per_epoch: int = 5, num_children: int = 50,
                 constraint_fn: Optional[ConstraintFn] = None):
        self.per_epoch = _check_positive_int(per_epoch, "--magic-shrink-per-epoch")
        self.num_children = _check_positive_int(num_children, "--magic-shrink-children")
        if constraint_fn is not None and not callable(constraint_fn):
            raise MagicConfigError(
                f"shrinking constraint {constraint_fn!r}: expected a callable "
                "space -> Optional[str]")
        self.constraint_fn = constraint_fn

    # -- 1. sampling ---------------------------------------------------------
    def sample_children(self, space: SearchSpace, seed: int, epoch: int) -> List[Arch]:
        """``num_children`` children of ``space``: a cover first, then uniform.

        A pure function of (space, seed, epoch)."""
        rng = random.Random(f"magic-shrink:{int(seed)}:{int(epoch)}")
        orders = []
        for ops in space.choices:
            order = list(ops)
            rng.shuffle(order)
            orders.append(order)
        width = max(len(c) for c in space.choices)
        children = []
        for i in range(min(width, self.num_children)):
            children.append(Arch(order[i % len(order)] for order in orders))
        while len(children) < self.num_children:
            children.append(random_arch(space, rng))
        return children

    # -- 3. rating -----------------------------------------------------------
    @staticmethod
    def rate(children: Sequence[Sequence[str]],
             scores: Sequence[float]) -> Dict[Candidate, float]:
        """Each (layer, op) candidate's mean score over the children holding it.

        Lower is better (validation loss). NaN scores count as +inf."""
        if len(children) != len(scores):
            raise ValueError(
                f"{len(children)} children but {len(scores)} scores: expected one "
                "score per child")
        sums: Dict[Candidate, float] = {}
        counts: Dict[Candidate, int] = {}
        for arch, score in zip(children, scores):
            s = float(score)
            if math.isnan(s):
                s = math.inf
            for layer, op in enumerate(arch):
                key = (layer, op)
                sums[key] = sums.get(key, 0.0) + s
                counts[key] = counts.get(key, 0) + 1
        return {k: sums[k] / counts[k] for k in sorted(sums)}

    # -- 4. shrinking --------------------------------------------------------
    def shrink(self, space: SearchSpace, ratings: Dict[Candidate, float]
               ) -> Tuple[SearchSpace, List[Tuple[int, str, float]]]:
        """Remove up to ``per_epoch`` worst-rated candidates.

        Returns ``(new_space, removed)`` with ``removed`` a list of
        ``(layer, op, rating)`` in removal order (worst first)."""
        choices = [list(c) for c in space.choices]

        def key(item):
            (layer, op), rating = item
            r = float(rating)
            if math.isnan(r):
                r = math.inf
            return (-r, layer, op)

        ranked = sorted(
            ((k, v) for k, v in ratings.items()
             if 0 <= k[0] < space.num_layers and k[1] in space.choices[k[0]]),
            key=key)
        removed: List[Tuple[int, str, float]] = []
        blocked = 0
        for (layer, op), rating in ranked:
            if len(removed) >= self.per_epoch:
                break
            if len(choices[layer]) <= 1:
                continue  # never empty a layer
            trial = [list(c) for c in choices]
            trial[layer].remove(op)
            if self.constraint_fn is not None:
                candidate_space = SearchSpace(space.candidates, space.num_layers,
                                              space.hidden, trial)
                error = self.constraint_fn(candidate_space)
                if error is not None:
                    blocked += 1
                    logger.info("shrinking: keeping layer %d %s (rating %.4g): "
                                "removing it would make the constraint "
                                "unsatisfiable: %s", layer, op, rating, error)
                    continue
            choices = trial
            removed.append((layer, op, float(rating)))
        new_space = SearchSpace(space.candidates, space.num_layers, space.hidden,
                                choices)
        if len(removed) < self.per_epoch and new_space.size() > 1:
            logger.warning(
                "shrinking: removed %d of %d candidates (%d blocked by the "
                "constraint; the rest are last operators of their layer or "
                "unrated); %d children remain", len(removed), self.per_epoch,
                blocked, new_space.size())
        return new_space, removed

    @staticmethod
    def done(space: SearchSpace) -> bool:
        return space.size() == 1

    def step(self, space: SearchSpace, score_fn: Callable[[Arch], float],
             seed: int, epoch: int):
        """Sample, score, rate and shrink: ``(new_space, removed, children,
        scores)``. A space already down to one child is returned as is, with
        nothing sampled or scored."""
        if self.done(space):
            return space, [], [], []
        children = self.sample_children(space, seed, epoch)
        scores = [float(score_fn(arch)) for arch in children]
        ratings = self.rate(children, scores)
        new_space, removed = self.shrink(space, ratings)
        return new_space, removed, children, scores
