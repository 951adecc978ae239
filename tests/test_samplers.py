"""MAGIC-T and FairNAS samplers, the sampler registry and its options (no fairseq).

All samplers are seeded with fixed seeds, so every number below is
deterministic; the statistical bounds are still set at ~5 standard deviations
so that a correct sampler passes for any seed, while a biased one (an operator
never proposed, a layer never picked) fails by a wide margin.
"""

import collections
import io
import math

import pytest

from fairseq_magic.core.samplers import (SAMPLERS, FairSampler, MagicTSampler,
                                         SPOSSampler, build_sampler)
from fairseq_magic.core.space import Arch, MagicConfigError, SearchSpace

OPS = "mha2d32,ffn,conv3,conv5"


def space_of(num_layers, choices=None):
    space = SearchSpace.from_config(OPS, num_layers, 32)
    if choices is not None:
        space = SearchSpace(space.candidates, num_layers, 32, choices=choices)
    return space


def walk(sampler, start, stop):
    return [sampler.path_for_update(u) for u in range(start, stop)]


# ---------------------------------------------------------------- MAGIC-T

@pytest.mark.parametrize("k", [1, 2, 8])
def test_magic_t_changes_exactly_k_layers_and_is_uniform_in_the_long_run(k):
    n_layers, n_ops, draws = 8, 4, 6000
    space = space_of(n_layers)
    s = build_sampler("magic_t", space, seed=3, k=k)
    assert isinstance(s, MagicTSampler) and s.k == k
    paths = walk(s, 0, draws)

    layer_changes = collections.Counter()
    proposals = collections.Counter()  # (old op, new op) on changed layers
    for prev, cur in zip(paths, paths[1:]):
        changed = cur.diff(prev)
        assert len(changed) == k, (prev, cur)
        layer_changes.update(changed)
        proposals.update((prev[i], cur[i]) for i in changed)
    if k == n_layers:
        assert all(layer_changes[i] == draws - 1 for i in range(n_layers))

    # Which layers change: uniform over layers, each step a k-subset, so a
    # layer changes w.p. k/N (binomial over the steps; trivially exact at k=N).
    steps = draws - 1
    p = k / n_layers
    sd = math.sqrt(steps * p * (1 - p))
    for i in range(n_layers):
        assert abs(layer_changes[i] - steps * p) <= 5 * sd + 1e-9, (i, layer_changes)
    # The replacement is uniform among the other 3 operators: each of the 12
    # ordered (old, new) pairs ~ total/12 (old ops are ~uniform, see below).
    total = steps * k
    for a in space.candidates:
        for b in space.candidates:
            if a != b:
                expect = total / 12
                assert abs(proposals[a, b] - expect) < 5 * math.sqrt(expect) + 0.05 * expect, \
                    (a, b, proposals[a, b], expect)

    # Stationary distribution: the walk's transition matrix is symmetric, so
    # per-layer operator frequencies converge to 1/|ops|. Per layer the chain is
    # P = (1-p) I + p (J - I)/(M-1) with second eigenvalue lam = 1 - p M/(M-1);
    # the count of one operator then has variance n q(1-q) (1+lam)/(1-lam),
    # q = 1/M (the autocorrelation inflates it 11x for k=1: sd ~ 111 here).
    counts = collections.Counter((i, op) for path in paths for i, op in enumerate(path))
    lam = 1 - p * n_ops / (n_ops - 1)
    q = 1 / n_ops
    sd = math.sqrt(draws * q * (1 - q) * (1 + lam) / (1 - lam))
    worst = 0.0
    for i in range(n_layers):
        for op in space.candidates:
            assert counts[i, op] > 0, f"layer {i} never used {op}"
            z = abs(counts[i, op] - draws * q) / sd
            worst = max(worst, z)
            assert z < 5, (i, op, counts[i, op], draws * q, sd)
    assert len(set(paths)) > draws // 2  # it really wanders over 4^8 = 65536 paths


def test_magic_t_first_path_is_uniform_and_seeded_per_update():
    # No previous path: a uniform draw from the string-seeded per-update RNG, so
    # the first path depends on the update it is drawn at (resume at update u).
    space = space_of(8)
    firsts = [MagicTSampler(space, seed=5).path_for_update(u) for u in range(200)]
    # 200 uniform draws from 4^8 = 65536 paths: ~0.3 repeats expected (birthday)
    assert len(set(firsts)) >= 195
    counts = collections.Counter(op for path in firsts for op in path)
    for op in space.candidates:  # 1600 draws, q = 1/4: sd ~ 17
        assert abs(counts[op] - 400) < 90, counts


def test_magic_t_is_deterministic_and_resumes_exactly():
    space = space_of(8)
    a, b = MagicTSampler(space, seed=11, k=2), MagicTSampler(space, seed=11, k=2)
    full = walk(a, 0, 1000)
    assert walk(b, 0, 1000) == full
    assert a.path_for_update(999) is full[-1]  # cached for the update's micro-batches
    other = walk(MagicTSampler(space, seed=12, k=2), 0, 1000)
    assert sum(x != y for x, y in zip(full, other)) > 900

    # Interrupt after update 500, save, restore into a sampler built with
    # another seed (the checkpoint's seed and K win), and continue.
    c = MagicTSampler(space, seed=11, k=2)
    walk(c, 0, 501)
    state = c.state_dict()
    assert state == {"name": "magic_t", "seed": 11, "update": 500,
                     "path": list(full[500]), "k": 2}
    assert all(type(v) in (str, int, list) for v in state.values())
    assert all(type(op) is str for op in state["path"])

    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"sampler": state}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["sampler"]  # as fairseq checkpoints load

    d = MagicTSampler(space, seed=99, k=2)
    d.load_state_dict(loaded)
    assert d.state_dict() == state
    assert d.path_for_update(500) == full[500]  # same update: the cached path
    assert walk(d, 501, 1000) == full[501:]


def test_magic_t_checkpoint_k_wins_and_bad_states_are_rejected():
    space = space_of(4)
    src = MagicTSampler(space, seed=0, k=3)
    walk(src, 0, 10)
    dst = MagicTSampler(space, seed=0, k=1)
    dst.load_state_dict(src.state_dict())
    assert dst.k == 3 and walk(dst, 10, 50) == walk(src, 10, 50)

    with pytest.raises(MagicConfigError, match="checkpoint sampler 'magic_t' does not match "
                                               "--magic-sampler 'spos'"):
        SPOSSampler(space, 0).load_state_dict(src.state_dict())
    with pytest.raises(MagicConfigError, match="'spos' does not match --magic-sampler 'magic_t'"):
        MagicTSampler(space, 0).load_state_dict(SPOSSampler(space, 0).state_dict())
    no_k = dict(src.state_dict())
    del no_k["k"]
    with pytest.raises(MagicConfigError, match="has no 'k'"):
        MagicTSampler(space, 0).load_state_dict(no_k)
    with pytest.raises(MagicConfigError, match=r"--magic-t-k 9: expected 1 <= K <= N=4"):
        MagicTSampler(space, 0).load_state_dict(dict(src.state_dict(), k=9))
    with pytest.raises(MagicConfigError, match="unknown operator 'gru' at layer 1"):
        MagicTSampler(space, 0).load_state_dict(
            dict(src.state_dict(), path=["ffn", "gru", "ffn", "ffn"]))
    with pytest.raises(MagicConfigError, match="has 3 layers: expected 4"):
        MagicTSampler(space, 0).load_state_dict(dict(src.state_dict(), path=["ffn"] * 3))


def test_magic_t_shrinking_repairs_removed_ops_and_keeps_exact_k():
    n = 8
    full = space_of(n)
    s = MagicTSampler(full, seed=21, k=2)
    before = walk(s, 0, 100)
    last = before[-1]
    others = {i: [o for o in full.candidates if o != last[i]] for i in range(n)}

    # Shrink: layer 0 loses the operator `last` uses (one repair), layer 3 keeps
    # only its current operator (valid, can never change again), layers 5 and 6
    # lose two operators the path does not use; the rest keep all four.
    choices = [list(full.candidates) for _ in range(n)]
    choices[0] = others[0]
    choices[3] = [last[3]]
    choices[5] = [last[5], others[5][0]]
    choices[6] = [others[6][1], last[6], others[6][2]]
    shrunk = SearchSpace(full.candidates, n, 32, choices=choices)
    s.space = shrunk  # shrinking replaces the space object between updates

    first = s.path_for_update(100)
    shrunk.validate(first)
    changed = first.diff(last)
    # The repair of layer 0 counts as one of the K=2 changes.
    assert 0 in changed and len(changed) == 2 and 3 not in changed

    after = walk(s, 101, 2100)
    seen = collections.defaultdict(set)
    for prev, cur in zip([first] + after, after):
        shrunk.validate(cur)
        assert cur[3] == last[3]
        assert len(cur.diff(prev)) == 2
        for i, op in enumerate(cur):
            seen[i].add(op)
    assert all(seen[i] == set(choices[i]) for i in range(n)), seen  # still explores

    # The new space travels in the state; the saved path is valid in it.
    state = s.state_dict()
    t = MagicTSampler(shrunk, seed=0, k=2)
    t.load_state_dict(state)
    assert walk(t, 2100, 2200) == walk(s, 2100, 2200)


def test_magic_t_more_repairs_than_k_repairs_all():
    n = 6
    full = space_of(n)
    s = MagicTSampler(full, seed=4, k=1)
    last = walk(s, 0, 30)[-1]
    # Three layers lose the operator they use: validity wins over K=1, so this
    # one step changes exactly those three layers (and nothing else).
    choices = [[o for o in full.candidates if o != last[i]] if i in (1, 2, 4)
               else list(full.candidates) for i in range(n)]
    s.space = SearchSpace(full.candidates, n, 32, choices=choices)
    step = s.path_for_update(30)
    s.space.validate(step)
    assert step.diff(last) == [1, 2, 4]
    nxt = walk(s, 31, 500)
    for prev, cur in zip([step] + nxt, nxt):
        assert len(cur.diff(prev)) == 1  # back to exactly K once valid

    # A checkpoint saved before the shrink (path now invalid) still loads into
    # a sampler on the shrunk space; its first draw repairs the same way.
    fresh = MagicTSampler(full, seed=4, k=1)
    walk(fresh, 0, 30)
    saved = fresh.state_dict()
    resumed = MagicTSampler(SearchSpace(full.candidates, n, 32, choices=choices), seed=4)
    resumed.load_state_dict(saved)
    assert resumed.path_for_update(30) == step


def test_magic_t_k_larger_than_changeable_layers_changes_all_that_can():
    # 4 layers, two of them fixed to one operator: K=3 and K=4 change both
    # changeable layers every step; no changeable layer at all -> path stays.
    space = space_of(4, choices=[["ffn"], ["mha2d32", "ffn", "conv3"], ["conv5"],
                                 ["ffn", "conv3"]])
    for k in (2, 3, 4):
        paths = walk(MagicTSampler(space, seed=1, k=k), 0, 300)
        for prev, cur in zip(paths, paths[1:]):
            space.validate(cur)
            assert cur.diff(prev) == [1, 3]
    # Layer 3 has two operators and changes every step: it alternates.
    assert [p[3] for p in paths[:6]] in (["ffn", "conv3"] * 3, ["conv3", "ffn"] * 3)

    frozen = space_of(3, choices=[["ffn"], ["conv3"], ["ffn"]])
    assert set(walk(MagicTSampler(frozen, seed=0, k=2), 0, 20)) == {Arch(["ffn", "conv3", "ffn"])}


@pytest.mark.parametrize("bad", [0, 5, -1])
def test_magic_t_bad_k_names_value_and_range(bad):
    space = space_of(4)
    with pytest.raises(MagicConfigError, match=rf"--magic-t-k {bad}: expected 1 <= K <= N=4"):
        build_sampler("magic_t", space, 0, k=bad)
    with pytest.raises(MagicConfigError, match=rf"--magic-t-k {bad}: expected 1 <= K <= N=4"):
        MagicTSampler(space, 0, k=bad)


def test_magic_t_non_integer_k_is_a_config_error():
    space = space_of(4)
    for bad in (1.5, "2", None, True):
        with pytest.raises(MagicConfigError, match=r"expected an integer 1 <= K <= N=4"):
            MagicTSampler(space, 0, k=bad)
    assert MagicTSampler(space, 0, k=4).k == 4  # K = N is allowed (~ SPOS)


# ---------------------------------------------------------------- registry

def test_registry_and_options():
    space = space_of(4)
    assert set(SAMPLERS) == {"spos", "magic_t", "fair"}
    assert type(build_sampler("magic_t", space, 0)) is MagicTSampler
    assert build_sampler("magic_t", space, 0).k == 1  # the paper's default
    assert type(build_sampler("fair", space, 0)) is FairSampler
    assert type(build_sampler("spos", space, 0)) is SPOSSampler
    with pytest.raises(MagicConfigError, match=r"--magic-sampler 'magic-t': expected one of "
                                               r"\['fair', 'magic_t', 'spos'\]"):
        build_sampler("magic-t", space, 0)
    # An option a sampler does not take is an error, never silently ignored.
    with pytest.raises(MagicConfigError, match="'spos' does not take k=2: it accepts no options"):
        build_sampler("spos", space, 0, k=2)
    with pytest.raises(MagicConfigError, match="'fair' does not take k=1"):
        build_sampler("fair", space, 0, k=1)
    with pytest.raises(MagicConfigError, match="'magic_t' does not take bogus=1: it accepts k"):
        build_sampler("magic_t", space, 0, k=1, bogus=1)
    assert MagicTSampler.OPTIONS == ("k",) and SPOSSampler.OPTIONS == ()


# ---------------------------------------------------------------- FairNAS

def test_fair_uses_every_op_once_per_block():
    # Layers with 4, 3, 2, 1 and 4 allowed operators: blocks of M_l per layer.
    choices = [["mha2d32", "ffn", "conv3", "conv5"], ["ffn", "conv3", "conv5"],
               ["mha2d32", "conv5"], ["ffn"], ["conv5", "conv3", "ffn", "mha2d32"]]
    space = space_of(5, choices=choices)
    s = build_sampler("fair", space, seed=8)
    updates = 1200  # a multiple of 4, 3, 2 and 1
    paths = walk(s, 0, updates)
    for layer, ops in enumerate(choices):
        m = len(ops)
        column = [p[layer] for p in paths]
        orders = set()
        for b in range(updates // m):
            block = column[b * m:(b + 1) * m]
            assert sorted(block) == sorted(ops), (layer, b, block)
            orders.add(tuple(block))
        # the order is shuffled per block, not fixed (4! = 24 orders for M=4)
        assert len(orders) == math.factorial(m) if m <= 3 else len(orders) > 20
        assert collections.Counter(column) == {op: updates // m for op in ops}
    # Layers are shuffled independently: two 4-op layers do not move in lockstep.
    assert [p[0] for p in paths] != [p[4] for p in paths]


def test_fair_is_a_pure_function_of_seed_and_update():
    space = space_of(6)
    a, b = FairSampler(space, seed=2), FairSampler(space, seed=2)
    forward = walk(a, 0, 400)
    assert [b.path_for_update(u) for u in reversed(range(400))][::-1] == forward
    assert walk(FairSampler(space, seed=3), 0, 400) != forward
    # Resume: only the cache travels; a fresh sampler continues identically.
    c = FairSampler(space, seed=77)
    c.load_state_dict(a.state_dict())
    assert c.path_for_update(399) == forward[399]
    assert walk(c, 400, 800) == walk(a, 400, 800)
    with pytest.raises(MagicConfigError, match="does not take"):
        FairSampler(space, 0, k=1)


def test_fair_after_shrinking_is_fair_in_new_blocks():
    full = space_of(3)
    s = FairSampler(full, seed=1)
    walk(s, 0, 40)
    shrunk = SearchSpace(full.candidates, 3, 32,
                         choices=[["ffn", "conv3", "conv5"], ["mha2d32"], list(full.candidates)])
    s.space = shrunk
    paths = walk(s, 42, 42 + 300)  # 42 starts a block of 3 for layer 0
    for p in paths:
        shrunk.validate(p)
    col = [p[0] for p in paths]
    for b in range(100):
        assert sorted(col[3 * b:3 * b + 3]) == ["conv3", "conv5", "ffn"]
    assert {p[1] for p in paths} == {"mha2d32"}
