"""Architecture search over a trained super-net (fairseq-free, no torch).

SPOS-style evolutionary search (Guo et al., 2020, section 3.3) and a random
search baseline, both driven by an injected ``score_fn(arch) -> float`` (lower is
better: the validation MLM loss in bits) and a ``cost_fn(arch) -> {"params",
"flops", ...}`` (e.g. ``model.child_cost(arch, seq_len)``).

Evolution (one *generation* = one step):

* generation 0: ``population`` distinct random children satisfying the
  constraints (rejection sampling, at most ``max_sample_attempts`` draws per
  child; too few found -> :class:`MagicConfigError`);
* generation g >= 1: the ``parents`` best of the population breed
  ``mutation_num`` children by mutation (each layer resampled with probability
  ``mutation_prob`` from that layer's allowed operators) and ``crossover_num``
  by uniform crossover of two distinct parents. Children already evaluated,
  duplicates and constraint violators are discarded (at most ``10 x num``
  attempts each, as SPOS); the new ones are scored and the population becomes
  the ``population`` best of (population + new children).

Every score is cached per spec: a child is never scored twice. The generation's
RNG is ``random.Random(f"magic-search:{seed}:{g}")`` (``magic-random`` for the
random search), never the global one, so a search is a pure function of its seed
and of the scores. ``state_dict()`` is plain Python (JSON-ready); a search
stopped after K generations (``run(..., max_generations=K)``), by an exception
inside ``score_fn``, or by ``max_evaluations`` and resumed with
``load_state_dict`` finishes exactly like an uninterrupted one: candidates of
generation g are derived only from children evaluated *before* g, and the ones
already scored come from the cache.

Ties between equal scores are broken by the spec string, so the order (and the
population) never depends on evaluation order.
"""

import math
import random
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .space import Arch, MagicConfigError, SearchSpace

CostFn = Callable[[Arch], Dict[str, int]]
ScoreFn = Callable[[Arch], float]

_BOUNDS = ("min_params", "max_params", "min_flops", "max_flops")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MagicConfigError(
            f"--{name.replace('_', '-')} {value!r}: expected an integer >= {minimum}")
    return value


def _fmt(x) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:.4g}"


def cost_range(space: SearchSpace, cost_fn: CostFn) -> Dict[str, Tuple[int, int]]:
    """Smallest and largest params and FLOPs over every child of ``space``.

    Our cost model is additive over layers (embeddings and LM head are a constant
    offset), so the extremes are exact: take a reference child, measure each
    layer's per-operator delta against it (``sum_l |choices_l|`` cost calls) and
    add the per-layer minima (maxima)."""
    ref = [c[0] for c in space.choices]
    base = cost_fn(Arch(ref))
    out = {}
    lo = {k: base[k] for k in ("params", "flops")}
    hi = dict(lo)
    for layer, ops in enumerate(space.choices):
        deltas = {k: [] for k in lo}
        for op in ops:
            arch = list(ref)
            arch[layer] = op
            c = base if op == ref[layer] else cost_fn(Arch(arch))
            for k in lo:
                deltas[k].append(c[k] - base[k])
        for k in lo:
            lo[k] += min(deltas[k])
            hi[k] += max(deltas[k])
    for k in lo:
        out[k] = (lo[k], hi[k])
    return out


class Constraints:
    """Bounds on a child's params and FLOPs (None = unbounded; inclusive)."""

    def __init__(self, min_params=None, max_params=None, min_flops=None, max_flops=None):
        values = dict(min_params=min_params, max_params=max_params,
                      min_flops=min_flops, max_flops=max_flops)
        for name, v in values.items():
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise MagicConfigError(
                    f"--{name.replace('_', '-')} {v!r}: expected a finite number >= 0")
        for what in ("params", "flops"):
            lo, hi = values[f"min_{what}"], values[f"max_{what}"]
            if lo is not None and hi is not None and lo > hi:
                raise MagicConfigError(
                    f"--min-{what} {_fmt(lo)} is larger than --max-{what} {_fmt(hi)}")
        self.min_params, self.max_params = min_params, max_params
        self.min_flops, self.max_flops = min_flops, max_flops

    def ok(self, cost: dict) -> bool:
        return not self.violations(cost)

    def violations(self, cost: dict) -> List[str]:
        bad = []
        for what in ("params", "flops"):
            lo, hi = getattr(self, f"min_{what}"), getattr(self, f"max_{what}")
            if lo is not None and cost[what] < lo:
                bad.append(f"{what} {_fmt(cost[what])} < --min-{what} {_fmt(lo)}")
            if hi is not None and cost[what] > hi:
                bad.append(f"{what} {_fmt(cost[what])} > --max-{what} {_fmt(hi)}")
        return bad

    def check_satisfiable(self, space: SearchSpace, cost_fn: CostFn) -> Dict[str, Tuple[int, int]]:
        """Raise MagicConfigError if a bound lies outside what the space can reach
        (the message names the bound and the achievable range); returns the
        range. Each bound is checked exactly on its own; a combination of
        in-range bounds that no single child meets is reported later, by the
        search's rejection sampling."""
        rng = cost_range(space, cost_fn)
        problems = []
        for what in ("params", "flops"):
            lo, hi = rng[what]
            mn, mx = getattr(self, f"min_{what}"), getattr(self, f"max_{what}")
            if mx is not None and mx < lo:
                problems.append(f"--max-{what} {_fmt(mx)} is below the smallest child's "
                                f"{_fmt(lo)}")
            if mn is not None and mn > hi:
                problems.append(f"--min-{what} {_fmt(mn)} is above the largest child's "
                                f"{_fmt(hi)}")
        if problems:
            raise MagicConfigError(
                "impossible constraints: " + "; ".join(problems) + ". Achievable: params "
                f"{_fmt(rng['params'][0])} .. {_fmt(rng['params'][1])}, FLOPs "
                f"{_fmt(rng['flops'][0])} .. {_fmt(rng['flops'][1])}")
        return rng

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in _BOUNDS}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Constraints":
        return cls(**{k: state.get(k) for k in _BOUNDS})

    def __eq__(self, other):
        return isinstance(other, Constraints) and self.state_dict() == other.state_dict()

    def __repr__(self):
        set_ = ", ".join(f"{k}={_fmt(v)}" for k, v in self.state_dict().items() if v is not None)
        return f"Constraints({set_})"


class _Search:
    """Shared machinery: score/cost caches, the generation loop, state, top-k."""

    kind = "base"
    _rng_tag = "magic-search"

    def __init__(self, space: SearchSpace, constraints: Optional[Constraints],
                 cost_fn: CostFn, seed: int = 0, max_sample_attempts: int = 200):
        self.space = space
        self.constraints = constraints or Constraints()
        self.cost_fn = cost_fn
        self.seed = _check_int("seed", seed, -(2 ** 63))
        self.max_sample_attempts = _check_int("max_sample_attempts", max_sample_attempts, 1)
        self.achievable = self.constraints.check_satisfiable(space, cost_fn)
        self._costs: Dict[str, dict] = {}
        # spec -> {"score", "params", "flops", "generation"}, in evaluation order
        self.evaluated: Dict[str, dict] = {}
        self.population: List[str] = []
        self.history: List[dict] = []
        self.generation = 0  # the next generation to run

    # ---- subclasses ----
    def _config(self) -> dict:
        raise NotImplementedError

    def _num_generations(self) -> int:
        raise NotImplementedError

    def _candidates(self, g: int, rng: random.Random, seen: set) -> List[Arch]:
        raise NotImplementedError

    def _next_population(self, g: int, new: List[str]) -> List[str]:
        raise NotImplementedError

    # ---- helpers ----
    def config(self) -> dict:
        return {"strategy": self.kind, "seed": self.seed, **self._config(),
                "max_sample_attempts": self.max_sample_attempts,
                "space": self.space.state_dict(),
                "constraints": self.constraints.state_dict()}

    def cost(self, arch) -> dict:
        spec = str(Arch(arch))
        c = self._costs.get(spec)
        if c is None:
            full = self.cost_fn(Arch(arch))
            c = self._costs[spec] = {"params": int(full["params"]), "flops": int(full["flops"])}
        return c

    def valid(self, arch) -> bool:
        return self.space.contains(arch) and self.constraints.ok(self.cost(arch))

    def _key(self, spec: str):
        return (self.evaluated[spec]["score"], spec)

    def _ranked(self, specs) -> List[str]:
        return sorted(specs, key=self._key)

    def _row(self, spec: str) -> dict:
        e = self.evaluated[spec]
        return {"spec": spec, "score": e["score"], "params": e["params"], "flops": e["flops"]}

    def _sample_random(self, rng: random.Random, n: int, seen: set, what: str) -> List[Arch]:
        """``n`` distinct valid children not in ``seen`` by rejection sampling."""
        out, picked = [], set()
        attempts, cap = 0, self.max_sample_attempts * max(n, 1)
        while len(out) < n and attempts < cap:
            attempts += 1
            arch = Arch(rng.choice(c) for c in self.space.choices)
            spec = str(arch)
            if spec in seen or spec in picked or not self.valid(arch):
                continue
            picked.add(spec)
            out.append(arch)
        if len(out) < n:
            raise MagicConfigError(
                f"{what}: found only {len(out)} of {n} distinct children satisfying "
                f"{self.constraints} in {attempts} random draws (the space has "
                f"{self.space.size():,} children; achievable params "
                f"{_fmt(self.achievable['params'][0])} .. {_fmt(self.achievable['params'][1])}, "
                f"FLOPs {_fmt(self.achievable['flops'][0])} .. "
                f"{_fmt(self.achievable['flops'][1])}): loosen the constraints or ask "
                "for fewer children")
        return out

    @property
    def done(self) -> bool:
        return self.generation > self._num_generations()

    @property
    def num_evaluations(self) -> int:
        return len(self.evaluated)

    # ---- the loop ----
    def run(self, score_fn: ScoreFn, progress: Optional[Callable[[dict], None]] = None,
            max_evaluations: Optional[int] = None, max_generations: Optional[int] = None):
        """Run (or continue) the search; returns ``self.top_k(1)`` (or [] if none).

        ``progress(entry)`` is called with each generation's history entry.
        ``max_evaluations`` caps the total number of scored children (counting
        those of earlier runs): the search stops as soon as it is reached, the
        unfinished generation is not committed (a later ``run`` with a larger
        cap continues it). ``max_generations`` stops once generations
        ``0 .. max_generations - 1`` are done (generation 0 = the initial
        population)."""
        if max_evaluations is not None:
            _check_int("max_evaluations", max_evaluations, 0)
        while not self.done:
            if max_generations is not None and self.generation >= max_generations:
                break
            g = self.generation
            rng = random.Random(f"{self._rng_tag}:{self.seed}:{g}")
            seen = {s for s, e in self.evaluated.items() if e["generation"] < g}
            candidates = [str(a) for a in self._candidates(g, rng, seen)]
            for spec in candidates:
                if spec in self.evaluated:
                    continue
                if max_evaluations is not None and len(self.evaluated) >= max_evaluations:
                    return self.top_k(1)
                score = float(score_fn(Arch(spec.split(","))))
                if math.isnan(score):
                    score = math.inf
                c = self.cost(spec.split(","))
                self.evaluated[spec] = {"score": score, "params": c["params"],
                                        "flops": c["flops"], "generation": g}
            self.population = self._next_population(g, candidates)
            best = self._ranked(self.evaluated)[0] if self.evaluated else None
            entry = {"generation": g, "new": len(candidates),
                     "evaluations": len(self.evaluated),
                     "best_score": self.evaluated[best]["score"] if best else None,
                     "best_spec": best,
                     "population": [self._row(s) for s in self.population]}
            self.history.append(entry)
            self.generation = g + 1
            if progress is not None:
                progress(entry)
        return self.top_k(1)

    def top_k(self, k: int = 5) -> List[dict]:
        """The ``k`` best evaluated children (spec, score, params, flops), best
        first; every one satisfies the constraints (nothing else is scored)."""
        return [self._row(s) for s in self._ranked(self.evaluated)[:k]]

    def all_evaluated(self) -> List[dict]:
        return [{**self._row(s), "generation": e["generation"]}
                for s, e in self.evaluated.items()]

    # ---- state ----
    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "version": 1,
            "config": self.config(),
            "generation": self.generation,
            "evaluated": [[s, e["score"], e["params"], e["flops"], e["generation"]]
                          for s, e in self.evaluated.items()],
            "population": list(self.population),
            "history": [dict(h) for h in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        mine, theirs = self.config(), state.get("config", {})
        if state.get("kind") != self.kind or mine != theirs:
            keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            diff = "; ".join(f"{k}: saved {theirs.get(k)!r} vs now {mine.get(k)!r}"
                             for k in keys if k not in ("space",))
            if "space" in keys:
                diff = (diff + "; " if diff else "") + "the search space differs"
            raise MagicConfigError(f"saved search state does not match this search ({diff})")
        self.generation = int(state["generation"])
        self.evaluated = {}
        for spec, score, params, flops, gen in state["evaluated"]:
            self.evaluated[spec] = {"score": float(score), "params": int(params),
                                    "flops": int(flops), "generation": int(gen)}
            self._costs[spec] = {"params": int(params), "flops": int(flops)}
        self.population = list(state["population"])
        self.history = [dict(h) for h in state["history"]]


class EvolutionSearch(_Search):
    """SPOS evolutionary search (Guo et al., 2020): see the module docstring."""

    kind = "evolution"
    _rng_tag = "magic-search"

    def __init__(self, space: SearchSpace, constraints: Optional[Constraints], cost_fn: CostFn,
                 population: int = 50, parents: int = 10, mutation_prob: float = 0.1,
                 mutation_num: int = 25, crossover_num: int = 25, generations: int = 20,
                 seed: int = 0, max_sample_attempts: int = 200):
        self.population_size = _check_int("population", population, 1)
        self.parents = _check_int("parents", parents, 1)
        if self.parents > self.population_size:
            raise MagicConfigError(
                f"--parents {parents}: expected <= --population {population}")
        if isinstance(mutation_prob, bool) or not isinstance(mutation_prob, (int, float)) \
                or not 0.0 <= mutation_prob <= 1.0:
            raise MagicConfigError(f"--mutation-prob {mutation_prob!r}: expected 0 <= p <= 1")
        self.mutation_prob = float(mutation_prob)
        self.mutation_num = _check_int("mutation_num", mutation_num, 0)
        self.crossover_num = _check_int("crossover_num", crossover_num, 0)
        self.generations = _check_int("generations", generations, 0)
        super().__init__(space, constraints, cost_fn, seed, max_sample_attempts)

    def _config(self) -> dict:
        return {"population": self.population_size, "parents": self.parents,
                "mutation_prob": self.mutation_prob, "mutation_num": self.mutation_num,
                "crossover_num": self.crossover_num, "generations": self.generations}

    def _num_generations(self) -> int:
        return self.generations

    def _candidates(self, g, rng, seen):
        if g == 0:
            return self._sample_random(rng, self.population_size, seen, "initial population")
        parents = [p.split(",") for p in self._ranked(self.population)[:self.parents]]
        out, picked = [], set()

        def offer(arch):
            spec = str(arch)
            if spec in seen or spec in picked or not self.valid(arch):
                return
            picked.add(spec)
            out.append(arch)

        target = len(out) + self.mutation_num
        for _ in range(10 * self.mutation_num):
            if len(out) >= target:
                break
            p = rng.choice(parents)
            offer(Arch(rng.choice(c) if rng.random() < self.mutation_prob else op
                       for op, c in zip(p, self.space.choices)))
        target = len(out) + self.crossover_num
        if len(parents) >= 2:
            for _ in range(10 * self.crossover_num):
                if len(out) >= target:
                    break
                a, b = rng.sample(parents, 2)
                offer(Arch(x if rng.random() < 0.5 else y for x, y in zip(a, b)))
        return out

    def _next_population(self, g, new):
        return self._ranked(set(self.population) | set(new))[:self.population_size]


class RandomSearch(_Search):
    """Baseline: ``samples`` distinct uniformly random children satisfying the
    constraints, drawn ``batch`` per generation (for progress and resume); the
    history's population is the ``batch`` best so far."""

    kind = "random"
    _rng_tag = "magic-random"

    def __init__(self, space: SearchSpace, constraints: Optional[Constraints], cost_fn: CostFn,
                 samples: int = 1000, seed: int = 0, batch: int = 50,
                 max_sample_attempts: int = 200):
        self.samples = _check_int("samples", samples, 1)
        self.batch = _check_int("batch", batch, 1)
        super().__init__(space, constraints, cost_fn, seed, max_sample_attempts)

    def _config(self) -> dict:
        return {"samples": self.samples, "batch": self.batch}

    def _num_generations(self) -> int:
        return -(-self.samples // self.batch) - 1

    def _candidates(self, g, rng, seen):
        n = min(self.batch, self.samples - g * self.batch)
        return self._sample_random(rng, n, seen, "random search")

    def _next_population(self, g, new):
        return self._ranked(self.evaluated)[:self.batch]


def build_search(strategy: str, space: SearchSpace, constraints: Optional[Constraints],
                 cost_fn: CostFn, **kwargs) -> _Search:
    classes = {"evolution": EvolutionSearch, "random": RandomSearch}
    if strategy not in classes:
        raise MagicConfigError(f"--strategy {strategy!r}: expected one of {sorted(classes)}")
    return classes[strategy](space, constraints, cost_fn, **kwargs)
