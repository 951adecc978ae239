"""Path samplers: which child the super-net trains at each update (fairseq-free).

A sampler's path is a pure function of (seed, update number, sampler state), so
every data-parallel rank derives the same child without communicating, and all
``--update-freq`` micro-batches of one update train the same child. Samplers
never touch the global RNGs (fairseq reseeds torch each update; reseeding
``random``/``numpy`` here would perturb data order and dropout elsewhere).
Their state is plain Python (lists, ints, strings) so it survives torch's
weights-only checkpoint loading.

Every per-update RNG is a ``random.Random`` seeded with a *string* such as
``"magic-t:<seed>:<update>"``: ``random`` hashes string seeds with SHA-512,
identically in every process and Python version we support (unlike ``hash()``,
which PYTHONHASHSEED randomises), and a fresh generator per update means a
resumed run needs no RNG state in the checkpoint.

Samplers read ``self.space`` at draw time. Progressive shrinking *replaces*
``sampler.space`` with a new :class:`SearchSpace` whose per-layer ``choices``
are smaller; do it between updates (a path already cached for an update is
returned as is for that update's remaining micro-batches).

Samplers
--------
``spos``     uniform path per update (Guo et al., 2020).
``magic_t``  MAGIC-T: a random walk that changes K layers per update (``k=``).
``fair``     FairNAS strict fairness: per layer, every allowed operator once per
             block of M_l updates.
"""

import logging
import operator
import random
from typing import Dict, List, Tuple, Type

from .space import Arch, MagicConfigError, SearchSpace

logger = logging.getLogger(__name__)


def random_arch(space: SearchSpace, rng: random.Random) -> Arch:
    """A uniform sample: each layer picks one of its allowed operators."""
    return Arch(rng.choice(c) for c in space.choices)


class PathSampler:
    """Base class. Subclasses implement ``_draw(update_num)``.

    Constructor options (keyword arguments after ``seed``) are declared in
    ``OPTIONS``; anything else raises :class:`MagicConfigError`, so a flag meant
    for another sampler (e.g. ``k`` given to ``spos``) is never silently ignored.
    """

    name = "base"
    #: keyword options the constructor accepts (beyond space and seed)
    OPTIONS: Tuple[str, ...] = ()

    def __init__(self, space: SearchSpace, seed: int, **options):
        if options:
            accepted = ", ".join(self.OPTIONS) if self.OPTIONS else "no options"
            given = ", ".join(f"{k}={v!r}" for k, v in sorted(options.items()))
            raise MagicConfigError(
                f"--magic-sampler {self.name!r} does not take {given}: it accepts "
                f"{accepted}")
        self.space = space
        self.seed = int(seed)
        self._update = None  # update number of the cached path
        self._path = None

    def path_for_update(self, update_num: int) -> Arch:
        """The child to train at ``update_num`` (0-based, fairseq's count of
        finished updates). Calling it again for the same update returns the
        same path: fairseq calls ``train_step`` once per micro-batch."""
        if self._update != update_num:
            self._path = self._draw(update_num)
            self._update = update_num
        return self._path

    def _draw(self, update_num: int) -> Arch:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {
            "name": self.name,
            "seed": self.seed,
            "update": self._update,
            "path": list(self._path) if self._path is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise MagicConfigError(
                f"checkpoint sampler {state.get('name')!r} does not match "
                f"--magic-sampler {self.name!r}")
        self.seed = int(state["seed"])
        self._update = state["update"]
        self._path = Arch(state["path"]) if state["path"] is not None else None
        if self._path is not None:
            self._check_loaded_path(self._path)

    def _check_loaded_path(self, path: Arch) -> None:
        self.space.validate(path)


class SPOSSampler(PathSampler):
    """Single-path one-shot (Guo et al., 2020): a fresh uniform path per update."""

    name = "spos"

    def _draw(self, update_num: int) -> Arch:
        # A string seed is hashed with SHA-512 by `random`, identically in every
        # process (unlike hash(), which PYTHONHASHSEED randomises).
        rng = random.Random(f"magic-spos:{self.seed}:{update_num}")
        return random_arch(self.space, rng)


class MagicTSampler(PathSampler):
    """MAGIC-T (paper section 4): each update's path differs from the previous
    update's path in exactly ``k`` layers.

    Draw rule for update ``u`` (``rng = random.Random(f"magic-t:{seed}:{u}")``,
    ``prev`` = the path of the previously drawn update, ``C_l`` = the layer's
    allowed operators in ``self.space`` *now*):

    1. No previous path (first update): a uniform path, as SPOS.
    2. Repair: every layer whose ``prev`` operator is no longer in ``C_l``
       (progressive shrinking removed it) gets a uniform operator of ``C_l``.
       These layers COUNT towards the ``k`` changes: the point of MAGIC-T is to
       bound how much of the topology moves in one step (more change = more
       gradient interference on shared operators), and a forced replacement is
       such a move. If more than ``k`` layers need repair, all are repaired
       (validity wins) and that one step changes more than ``k`` layers.
    3. The remaining ``k - repaired`` changes go to layers drawn uniformly
       without replacement among the *changeable* layers (``|C_l| > 1``, not
       repaired in step 2); each switches to a uniform operator of ``C_l``
       other than its current one. A layer with a single allowed operator can
       never change. If fewer layers can change than changes remain, all of
       them change; if none can, the path stays the same.

    So whenever the previous path is valid in the current space, the new path
    differs from it in exactly ``min(k, #changeable layers)`` layers.

    With uniform layer choice and uniform replacement the transition matrix is
    symmetric, so the uniform distribution over the space is stationary: over a
    long run every operator of a layer is visited equally often (the paper's
    random-walk argument). ``k = 1`` is the paper's default; ``k = N`` changes
    every layer each step (close to SPOS, but never repeating an operator).

    The path is a pure function of (seed, update number, previous path), which
    makes the sampler a chain: ask for updates in increasing order (fairseq
    does). ``state_dict()`` adds ``"k"``; its ``"path"`` is the previous path for
    the next draw, so a resumed run continues exactly as an uninterrupted one.
    """

    name = "magic_t"
    OPTIONS = ("k",)

    def __init__(self, space: SearchSpace, seed: int, k: int = 1, **options):
        super().__init__(space, seed, **options)
        self.k = self._check_k(k, space)

    @staticmethod
    def _check_k(k, space: SearchSpace) -> int:
        n = space.num_layers
        try:
            if isinstance(k, bool):
                raise TypeError
            value = operator.index(k)  # ints (and numpy ints), not 1.5 or "2"
        except TypeError:
            raise MagicConfigError(
                f"--magic-t-k {k!r}: expected an integer 1 <= K <= N={n}") from None
        if not 1 <= value <= n:
            raise MagicConfigError(f"--magic-t-k {k!r}: expected 1 <= K <= N={n}")
        return value

    def _draw(self, update_num: int) -> Arch:
        space = self.space  # read now: shrinking replaces it between updates
        choices = space.choices
        rng = random.Random(f"magic-t:{self.seed}:{update_num}")
        prev = self._path
        if prev is None:
            return random_arch(space, rng)
        if len(prev) != space.num_layers:
            raise MagicConfigError(
                f"MAGIC-T previous path '{prev}' has {len(prev)} layers: expected "
                f"{space.num_layers} (the search space's depth)")
        path = list(prev)
        # Step 2: repair operators that shrinking removed (they count as changes).
        repaired = [i for i, op in enumerate(path) if op not in choices[i]]
        for i in repaired:
            path[i] = rng.choice(choices[i])
        # Step 3: the remaining changes, on distinct changeable layers.
        remaining = self.k - len(repaired)
        if remaining > 0:
            skip = set(repaired)
            changeable = [i for i in range(space.num_layers)
                          if i not in skip and len(choices[i]) > 1]
            for i in rng.sample(changeable, min(remaining, len(changeable))):
                others = [op for op in choices[i] if op != path[i]]
                path[i] = rng.choice(others)
        return Arch(path)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["k"] = self.k
        return state

    def load_state_dict(self, state: dict) -> None:
        # Like the seed, K comes from the checkpoint: the chain it continues was
        # drawn with that K. A different --magic-t-k on resume is reported.
        if state.get("name") == self.name:  # else the base raises the name mismatch
            if "k" not in state:
                raise MagicConfigError("checkpoint MAGIC-T sampler state has no 'k'")
            k = self._check_k(state["k"], self.space)
            if k != self.k:
                logger.warning("MAGIC-T: checkpoint K=%d overrides --magic-t-k %d",
                               k, self.k)
        super().load_state_dict(state)
        self.k = k

    def _check_loaded_path(self, path: Arch) -> None:
        # The saved path may use operators shrinking has since removed: that is
        # fine, the next draw repairs them. Depth and operator names must match.
        space = self.space
        if len(path) != space.num_layers:
            space.validate(path)  # raises the usual "has D layers: expected N"
        for i, op in enumerate(path):
            if op not in space.ops:
                raise MagicConfigError(
                    f"unknown operator {op!r} at layer {i} of the checkpoint's MAGIC-T "
                    f"path: expected one of {list(space.candidates)}")


class FairSampler(PathSampler):
    """FairNAS strict fairness (Chu et al., 2021).

    For each layer ``l`` with ``M_l`` allowed operators, updates are grouped in
    consecutive blocks of ``M_l`` (block ``b`` = updates ``b*M_l .. b*M_l+M_l-1``).
    Within a block the layer uses every allowed operator exactly once, in the
    order of ``choices[l]`` shuffled by ``random.Random(f"fair:{seed}:{l}:{b}")``.
    So every operator of a layer is trained equally often, and the path is a
    pure function of (seed, update) -- no state to carry besides the cache.

    Layers are independent (with different ``M_l`` their blocks do not line up).
    After shrinking changes ``M_l``, blocks are recomputed from update 0 with the
    new size: blocks that start after the change are fair again, but the block
    straddling the change may repeat or skip an operator.
    """

    name = "fair"

    def __init__(self, space: SearchSpace, seed: int, **options):
        super().__init__(space, seed, **options)
        # layer -> (block, choices, shuffled order): reuse the shuffle within a
        # block instead of reseeding N generators every update.
        self._orders: Dict[int, Tuple[int, Tuple[str, ...], List[str]]] = {}

    def _order(self, layer: int, block: int, ops: Tuple[str, ...]) -> List[str]:
        cached = self._orders.get(layer)
        if cached is not None and cached[0] == block and cached[1] == ops:
            return cached[2]
        order = list(ops)
        random.Random(f"fair:{self.seed}:{layer}:{block}").shuffle(order)
        self._orders[layer] = (block, ops, order)
        return order

    def _draw(self, update_num: int) -> Arch:
        path = []
        for layer, ops in enumerate(self.space.choices):
            block, pos = divmod(update_num, len(ops))
            path.append(self._order(layer, block, ops)[pos])
        return Arch(path)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._orders.clear()  # the seed may have changed


SAMPLERS: Dict[str, Type[PathSampler]] = {
    "spos": SPOSSampler,
    "magic_t": MagicTSampler,
    "fair": FairSampler,
}


def build_sampler(name: str, space: SearchSpace, seed: int, **kwargs) -> PathSampler:
    """Build a registered sampler. ``kwargs`` go to its constructor (e.g. ``k=``
    for ``magic_t``); one it does not accept raises MagicConfigError (see
    ``SAMPLERS[name].OPTIONS``)."""
    if name not in SAMPLERS:
        raise MagicConfigError(
            f"--magic-sampler {name!r}: expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](space, seed, **kwargs)
