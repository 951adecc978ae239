"""Path samplers: which child the super-net trains at each update (fairseq-free).

A sampler's path is a pure function of (seed, update number, sampler state), so
every data-parallel rank derives the same child without communicating, and all
``--update-freq`` micro-batches of one update train the same child. Samplers
never touch the global RNGs (fairseq reseeds torch each update; reseeding
``random``/``numpy`` here would perturb data order and dropout elsewhere).
Their state is plain Python (lists, ints, strings) so it survives torch's
weights-only checkpoint loading.
"""

import random
from typing import Dict, Type

from .space import Arch, MagicConfigError, SearchSpace


def random_arch(space: SearchSpace, rng: random.Random) -> Arch:
    """A uniform sample: each layer picks one of its allowed operators."""
    return Arch(rng.choice(c) for c in space.choices)


class PathSampler:
    """Base class. Subclasses implement ``_draw(update_num)``."""

    name = "base"

    def __init__(self, space: SearchSpace, seed: int):
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
            self.space.validate(self._path)


class SPOSSampler(PathSampler):
    """Single-path one-shot (Guo et al., 2020): a fresh uniform path per update."""

    name = "spos"

    def _draw(self, update_num: int) -> Arch:
        # A string seed is hashed with SHA-512 by `random`, identically in every
        # process (unlike hash(), which PYTHONHASHSEED randomises).
        rng = random.Random(f"magic-spos:{self.seed}:{update_num}")
        return random_arch(self.space, rng)


SAMPLERS: Dict[str, Type[PathSampler]] = {"spos": SPOSSampler}


def build_sampler(name: str, space: SearchSpace, seed: int, **kwargs) -> PathSampler:
    if name not in SAMPLERS:
        raise MagicConfigError(
            f"--magic-sampler {name!r}: expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](space, seed, **kwargs)
