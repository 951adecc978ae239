"""Core search strategies (fairseq_magic.core.search) on toy spaces with a
synthetic additive score (known unique optimum) and the real cost model."""

import itertools
import json
import random
import statistics

import pytest

from fairseq_magic.core.cost import child_cost
from fairseq_magic.core.search import (Constraints, EvolutionSearch, RandomSearch,
                                       build_search, cost_range)
from fairseq_magic.core.space import MagicConfigError, SearchSpace

OPS4 = ["mha2", "ffn", "conv3", "conv5"]


def cost_fn(arch):
    return child_cost(arch, 128, 1000, 64)


def toy(num_layers=8, ops=OPS4, seed="w"):
    space = SearchSpace(ops, num_layers, 128)
    rng = random.Random(seed)
    weights = [{o: rng.random() for o in ops} for _ in range(num_layers)]

    def score(arch):
        return sum(weights[i][o] for i, o in enumerate(arch))

    optimum = ",".join(min(w, key=w.get) for w in weights)
    return space, score, optimum


def counting(score):
    calls = []

    def f(arch):
        calls.append(str(arch))
        return score(arch)

    return f, calls


def small_evolution(space, seed=0, constraints=None, **kw):
    args = dict(population=20, parents=5, mutation_num=10, crossover_num=10,
                generations=30, seed=seed)
    args.update(kw)
    return EvolutionSearch(space, constraints, cost_fn, **args)


def test_evolution_finds_the_known_optimum():
    space, score, optimum = toy()
    s = EvolutionSearch(space, None, cost_fn, seed=0)  # SPOS defaults
    s.run(score)
    assert s.top_k(1)[0]["spec"] == optimum
    assert s.num_evaluations < 0.02 * space.size()
    assert len(s.history) == 21 and s.history[0]["generation"] == 0
    bests = [h["best_score"] for h in s.history]
    assert bests == sorted(bests, reverse=True)  # never gets worse
    assert all(len(h["population"]) == 50 for h in s.history)


def test_never_rescores_a_child():
    space, score, _ = toy()
    f, calls = counting(score)
    s = small_evolution(space)
    s.run(f)
    assert len(calls) == len(set(calls)) == s.num_evaluations


@pytest.mark.parametrize("budget", [150, 300])
def test_evolution_beats_random_at_equal_budget(budget):
    space, score, _ = toy()
    evo, rnd = [], []
    for seed in range(5):
        e = small_evolution(space, seed=seed, generations=1000)
        e.run(score, max_evaluations=budget)
        r = RandomSearch(space, None, cost_fn, samples=budget, seed=seed)
        r.run(score)
        assert e.num_evaluations == r.num_evaluations == budget
        evo.append(e.top_k(1)[0]["score"])
        rnd.append(r.top_k(1)[0]["score"])
    assert statistics.mean(evo) < statistics.mean(rnd)
    assert statistics.median(evo) <= statistics.median(rnd)


def brute_force(space, score, constraints):
    rows = []
    for arch in itertools.product(*space.choices):
        if constraints.ok(cost_fn(arch)):
            rows.append((score(arch), ",".join(arch)))
    return min(rows)


def test_constraints_hold_and_constrained_optimum_is_found():
    space, score, optimum = toy(5, ["mha2", "ffn", "conv3"], seed="c")
    opt_params = cost_fn(optimum.split(","))["params"]
    lo, hi = cost_range(space, cost_fn)["params"]
    assert lo < opt_params
    constraints = Constraints(max_params=opt_params - 1)
    best_score, best_spec = brute_force(space, score, constraints)
    assert best_spec != optimum
    s = EvolutionSearch(space, constraints, cost_fn, population=10, parents=4,
                        mutation_num=8, crossover_num=8, generations=15, seed=1)
    s.run(score)
    assert s.top_k(1)[0]["spec"] == best_spec
    assert s.top_k(1)[0]["score"] == pytest.approx(best_score)
    for row in s.all_evaluated() + [p for h in s.history for p in h["population"]]:
        assert row["params"] < opt_params
        assert constraints.ok(cost_fn(row["spec"].split(",")))
    r = RandomSearch(space, constraints, cost_fn, samples=30, seed=0)
    r.run(score)
    assert all(row["params"] < opt_params for row in r.all_evaluated())


def test_cost_range_is_exact():
    space = SearchSpace(["mha2", "ffn", "conv3"], 4, 128,
                        choices=[["mha2", "ffn"], ["conv3"], ["ffn", "conv3"], ["mha2", "ffn", "conv3"]])
    costs = [cost_fn(a) for a in itertools.product(*space.choices)]
    rng = cost_range(space, cost_fn)
    for k in ("params", "flops"):
        assert rng[k] == (min(c[k] for c in costs), max(c[k] for c in costs))


def test_flops_bounds_and_min_bounds():
    space, score, _ = toy(5, ["mha2", "ffn", "conv3"])
    (plo, phi), (flo, fhi) = (cost_range(space, cost_fn)[k] for k in ("params", "flops"))
    c = Constraints(min_params=(plo + phi) // 2, max_flops=fhi - 1)
    s = EvolutionSearch(space, c, cost_fn, population=6, parents=3, mutation_num=4,
                        crossover_num=4, generations=3, seed=0)
    s.run(score)
    assert all(r["params"] >= (plo + phi) // 2 and r["flops"] < fhi for r in s.all_evaluated())


@pytest.mark.parametrize("kw,needle", [
    ({"max_params": 10}, "--max-params 10 is below the smallest child's"),
    ({"min_params": 10 ** 12}, "--min-params"),
    ({"max_flops": 1}, "--max-flops 1 is below"),
    ({"min_flops": 10 ** 15}, "--min-flops"),
])
def test_impossible_constraints_name_the_range(kw, needle):
    space, _, _ = toy(5, ["mha2", "ffn", "conv3"])
    (plo, phi) = cost_range(space, cost_fn)["params"]
    with pytest.raises(MagicConfigError) as e:
        EvolutionSearch(space, Constraints(**kw), cost_fn)
    msg = str(e.value)
    assert needle in msg and f"{plo:,} .. {phi:,}" in msg
    with pytest.raises(MagicConfigError):
        RandomSearch(space, Constraints(**kw), cost_fn, samples=5)


def test_bad_numbers():
    space, _, _ = toy(3, ["mha2", "ffn"])
    for kw in [{"population": 0}, {"parents": 0}, {"parents": 60}, {"mutation_prob": 1.5},
               {"mutation_num": -1}, {"generations": -1}, {"population": 2.5}]:
        with pytest.raises(MagicConfigError):
            EvolutionSearch(space, None, cost_fn, **kw)
    with pytest.raises(MagicConfigError, match="larger than --max-params"):
        Constraints(min_params=10, max_params=5)
    with pytest.raises(MagicConfigError):
        Constraints(max_flops=-1)
    with pytest.raises(MagicConfigError):
        RandomSearch(space, None, cost_fn, samples=0)
    with pytest.raises(MagicConfigError, match="--strategy"):
        build_search("grid", space, None, cost_fn)


def test_too_few_valid_children_is_a_clear_error():
    space, score, _ = toy(3, ["mha2", "ffn"])  # 8 children
    s = EvolutionSearch(space, None, cost_fn, population=20, parents=2)
    with pytest.raises(MagicConfigError, match="found only 8 of 20 distinct children"):
        s.run(score)


def test_deterministic_for_a_seed():
    space, score, _ = toy()
    runs = []
    for seed in (0, 0, 1):
        s = small_evolution(space, seed=seed, generations=5)
        s.run(score)
        runs.append((s.history, s.top_k(10), list(s.evaluated)))
    assert runs[0] == runs[1]
    assert runs[0][2] != runs[2][2]


@pytest.mark.parametrize("strategy", ["evolution", "random"])
def test_resume_after_k_generations_matches_uninterrupted(strategy):
    space, score, _ = toy()

    def make():
        if strategy == "evolution":
            return small_evolution(space, seed=3, generations=8)
        return RandomSearch(space, None, cost_fn, samples=95, batch=10, seed=3)

    full = make()
    full.run(score)
    part = make()
    part.run(score, max_generations=3)
    assert len(part.history) == 3 and not part.done
    state = json.loads(json.dumps(part.state_dict()))  # plain python types
    resumed = make()
    resumed.load_state_dict(state)
    f, calls = counting(score)
    resumed.run(f)
    assert resumed.done
    assert resumed.top_k(10) == full.top_k(10)
    assert resumed.history == full.history
    assert resumed.state_dict() == full.state_dict()
    assert not set(calls) & {s for s, e in part.evaluated.items()}  # no re-scoring


def test_resume_after_exception_and_budget_matches_uninterrupted():
    space, score, _ = toy()
    full = small_evolution(space, seed=4, generations=6)
    full.run(score)

    s = small_evolution(space, seed=4, generations=6)
    n = [0]

    def flaky(arch):
        n[0] += 1
        if n[0] == 47:  # mid-generation
            raise KeyboardInterrupt
        return score(arch)

    with pytest.raises(KeyboardInterrupt):
        s.run(flaky)
    state = json.loads(json.dumps(s.state_dict()))
    s2 = small_evolution(space, seed=4, generations=6)
    s2.load_state_dict(state)
    s2.run(score, max_evaluations=70)  # stops mid-generation on the budget
    assert s2.num_evaluations == 70 and not s2.done
    s3 = small_evolution(space, seed=4, generations=6)
    s3.load_state_dict(json.loads(json.dumps(s2.state_dict())))
    s3.run(score)
    assert s3.state_dict() == full.state_dict()


def test_load_state_with_other_config_is_refused():
    space, score, _ = toy()
    s = small_evolution(space, generations=2)
    s.run(score)
    with pytest.raises(MagicConfigError, match="population"):
        small_evolution(space, population=21, generations=2).load_state_dict(s.state_dict())
    with pytest.raises(MagicConfigError, match="strategy"):
        RandomSearch(space, None, cost_fn, samples=5).load_state_dict(s.state_dict())


def test_progress_and_history_entries():
    space, score, _ = toy()
    seen = []
    s = small_evolution(space, generations=3)
    s.run(score, progress=seen.append)
    assert [h["generation"] for h in seen] == [0, 1, 2, 3]
    assert seen == s.history
    assert [h["evaluations"] for h in seen] == sorted(h["evaluations"] for h in seen)
    h = seen[-1]
    assert h["best_score"] == s.top_k(1)[0]["score"] and h["best_spec"] == s.top_k(1)[0]["spec"]
    assert set(h["population"][0]) == {"spec", "score", "params", "flops"}
