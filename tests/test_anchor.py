"""MAGIC-A anchor policies with scripted scorers (no model, except one test of
the task's epoch hook driving the top_p policy)."""

import math
import random

import pytest
import torch

from fairseq_magic.core.anchor import (ANCHOR_POLICIES, AnchorState, BestAnchorPolicy,
                                       TopPAnchorPolicy, build_anchor_policy)
from fairseq_magic.core.samplers import random_arch
from fairseq_magic.core.space import Arch, MagicConfigError, SearchSpace

from conftest import Scripted


A, B, C = Arch(["ffn", "ffn"]), Arch(["conv3", "ffn"]), Arch(["ffn", "conv3"])


# ---------------------------------------------------------------- best policy

def test_due_pattern():
    pol = BestAnchorPolicy(5)
    assert [u for u in range(11) if pol.due(u)] == [5, 10]
    assert [u for u in range(4) if BestAnchorPolicy(1).due(u)] == [1, 2, 3]


def test_best_initialisation_is_not_a_replacement():
    pol, state, scorer = BestAnchorPolicy(5), AnchorState(), Scripted({str(A): 2.0})
    assert pol.step(state, A, scorer, 5) is False
    assert (state.arch, state.score, state.replacements, state.last_eval_update) == (A, 2.0, 0, 5)
    assert scorer.calls == [str(A)]


def test_best_replaces_when_candidate_beats_rescored_anchor():
    pol, state = BestAnchorPolicy(5), AnchorState()
    scorer = Scripted({str(A): 2.0, str(B): 1.5})
    pol.step(state, A, scorer, 5)
    scorer.calls.clear()
    assert pol.step(state, B, scorer, 10) is True
    assert scorer.calls == [str(B), str(A)]  # candidate first, then the anchor
    assert (state.arch, state.score, state.replacements, state.last_eval_update) == (B, 1.5, 1, 10)


def test_best_rescoring_candidate_worse_than_stale_but_better_than_fresh():
    pol, state = BestAnchorPolicy(5), AnchorState()
    scorer = Scripted({str(A): 2.0})
    pol.step(state, A, scorer, 5)
    assert state.score == 2.0
    # Training moved the weights: the anchor now scores 3.0 (stale record: 2.0).
    scorer.table.update({str(A): 3.0, str(B): 2.5})
    assert pol.step(state, B, scorer, 10) is True  # 2.5 > stale 2.0, but < fresh 3.0
    assert state.arch == B and state.score == 2.5 and state.replacements == 1


def test_best_rescoring_candidate_better_than_stale_but_worse_than_fresh():
    pol, state = BestAnchorPolicy(5), AnchorState()
    scorer = Scripted({str(A): 2.0})
    pol.step(state, A, scorer, 5)
    scorer.table.update({str(A): 1.0, str(B): 1.5})
    assert pol.step(state, B, scorer, 10) is False  # 1.5 < stale 2.0, but > fresh 1.0
    assert state.arch == A and state.score == 1.0 and state.replacements == 0
    assert state.last_eval_update == 10


def test_best_tie_keeps_anchor_and_same_child_is_scored_once():
    pol, state = BestAnchorPolicy(5), AnchorState()
    scorer = Scripted({str(A): 2.0, str(B): 2.0})
    pol.step(state, A, scorer, 5)
    assert pol.step(state, B, scorer, 10) is False
    assert state.arch == A and state.replacements == 0
    scorer.calls.clear()
    scorer.table[str(A)] = 1.25
    assert pol.step(state, Arch(["ffn", "ffn"]), scorer, 15) is False
    assert scorer.calls == [str(A)] and state.score == 1.25


def test_best_nan_scores():
    pol, state = BestAnchorPolicy(5), AnchorState()
    scorer = Scripted({str(A): 2.0, str(B): math.nan})
    pol.step(state, A, scorer, 5)
    assert pol.step(state, B, scorer, 10) is False  # a diverged candidate never wins
    scorer.table.update({str(A): math.nan, str(C): 9.0})
    assert pol.step(state, C, scorer, 15) is True   # a diverged anchor always loses
    assert state.arch == C and state.replacements == 1


def test_best_sequence_counts_replacements():
    pol, state = BestAnchorPolicy(2), AnchorState()
    scorer = Scripted({str(A): 3.0, str(B): 2.0, str(C): 2.5})
    results = [pol.step(state, arch, scorer, u) for arch, u in [(A, 2), (B, 4), (C, 6), (A, 8)]]
    assert results == [False, True, False, False]
    assert state.arch == B and state.replacements == 1 and state.score == 2.0
    assert len(scorer.calls) == 1 + 2 + 2 + 2


# --------------------------------------------------------------- top-p policy

SPACE = SearchSpace(["ffn", "conv3", "conv5", "mha2d32"], 8, 32)  # 65536 children
SCORES = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 1.0]
# Ascending: 0.1 0.2 0.3 | 0.4 0.5 0.6 0.7 0.8 0.9 1.0 -> top 30% of 10 is rank
# index ceil(0.3 * 10) - 1 = 2, the child scoring 0.3 (draw index 3).


def scripted_population(seed=7, epoch=1, scores=SCORES):
    children = TopPAnchorPolicy(30, population=len(scores)).draw_population(SPACE, seed, epoch)
    assert len(set(children)) == len(children)  # no duplicates: one score each
    return children, Scripted({str(c): s for c, s in zip(children, scores)})


def outsider(children):
    rng = random.Random(123)
    while True:
        a = random_arch(SPACE, rng)
        if a not in children:
            return a


def test_top_p_population_is_deterministic_and_private():
    pol = TopPAnchorPolicy(30, population=10)
    before = random.getstate()
    pop = pol.draw_population(SPACE, seed=7, epoch=1)
    assert random.getstate() == before  # the global RNG is never used
    assert pol.draw_population(SPACE, seed=7, epoch=1) == pop
    rng = random.Random("magic-anchor-top-p:7:1")
    assert pop == [random_arch(SPACE, rng) for _ in range(10)]
    assert pol.draw_population(SPACE, seed=7, epoch=2) != pop
    assert pol.draw_population(SPACE, seed=8, epoch=1) != pop


def test_top_p_index():
    assert TopPAnchorPolicy(30, population=10).top_index() == 2   # not 3: float ceil trap
    assert TopPAnchorPolicy(1, population=10).top_index() == 0
    assert TopPAnchorPolicy(100, population=10).top_index() == 9
    assert TopPAnchorPolicy(55, population=10).top_index() == 5
    assert TopPAnchorPolicy(50, population=1).top_index() == 0
    assert TopPAnchorPolicy(10, population=10000).top_index() == 999


def test_top_p_initialisation_picks_exact_child():
    children, scorer = scripted_population()
    pol, state = TopPAnchorPolicy(30, population=10), AnchorState()
    assert pol.step_epoch(state, SPACE, scorer, epoch=1, seed=7) is False
    assert state.arch == children[3] and state.score == 0.3
    assert state.replacements == 0 and state.last_epoch == 1
    assert len(scorer.calls) == 10


def test_top_p_keeps_anchor_inside_band():
    children, scorer = scripted_population()
    pol = TopPAnchorPolicy(30, r=10, population=10)  # band [20, 40]
    anchor = outsider(children)
    for fresh, pct in [(0.45, 40), (0.25, 20), (0.35, 30)]:  # both edges are inclusive
        scorer.table[str(anchor)] = fresh
        scorer.calls.clear()
        state = AnchorState(arch=anchor, score=99.0)
        assert pol.step_epoch(state, SPACE, scorer, epoch=1, seed=7) is False, pct
        assert state.arch == anchor and state.score == fresh and state.replacements == 0
        assert len(scorer.calls) == 11  # population + the anchor's rescoring
    # An anchor drawn in the population is not scored twice: 0.5 -> 4 better -> 40%.
    state = AnchorState(arch=children[0], score=99.0)
    scorer.calls.clear()
    assert pol.step_epoch(state, SPACE, scorer, epoch=1, seed=7) is False
    assert state.arch == children[0] and len(scorer.calls) == 10


def test_top_p_replaces_anchor_outside_band():
    children, scorer = scripted_population()
    pol = TopPAnchorPolicy(30, r=10, population=10)
    anchor = outsider(children)
    for fresh in (0.55, 0.15, 5.0):  # 50%, 10%, 100%: all outside [20, 40]
        scorer.table[str(anchor)] = fresh
        state = AnchorState(arch=anchor, score=0.35, replacements=2)  # stale score in band
        assert pol.step_epoch(state, SPACE, scorer, epoch=1, seed=7) is True, fresh
        assert state.arch == children[3] and state.score == 0.3 and state.replacements == 3
    # Too good is also outside the band: p=50, r=10 -> [40, 60]; 0 better -> 0%.
    pol50 = TopPAnchorPolicy(50, r=10, population=10)
    scorer.table[str(anchor)] = 0.01
    state = AnchorState(arch=anchor)
    assert pol50.step_epoch(state, SPACE, scorer, epoch=1, seed=7) is True
    assert state.arch == children[0]  # ceil(5) - 1 = 4 -> score 0.5


def test_top_p_anchor_removed_from_space_is_replaced():
    # Progressive shrinking removed ffn from the last layer; the anchor used it.
    shrunk = SearchSpace(SPACE.candidates, 8, 32,
                         choices=[SPACE.candidates] * 7 + [("conv3", "conv5", "mha2d32")])
    anchor = Arch(["ffn"] * 8)
    scorer = Scripted(default=0.35)  # all children tie: stable order, rank 2 = draw 2
    pol = TopPAnchorPolicy(30, population=10)
    state = AnchorState(arch=anchor, score=0.35)
    assert pol.step_epoch(state, shrunk, scorer, epoch=1, seed=7) is True
    assert state.arch == pol.draw_population(shrunk, 7, 1)[2] and state.replacements == 1
    assert str(anchor) not in scorer.calls and len(scorer.calls) <= 10


def test_top_p_same_epoch_is_a_no_op():
    children, scorer = scripted_population()
    pol, state = TopPAnchorPolicy(30, population=10), AnchorState()
    pol.step_epoch(state, SPACE, scorer, epoch=1, seed=7)
    snapshot, n_calls = state.state_dict(), len(scorer.calls)
    scorer.table = {k: -v for k, v in scorer.table.items()}  # would change the choice
    assert pol.step_epoch(state, SPACE, scorer, epoch=1, seed=7) is False
    assert state.state_dict() == snapshot and len(scorer.calls) == n_calls
    # A resumed job (state restored from a checkpoint) skips the epoch too.
    resumed = AnchorState()
    resumed.load_state_dict(snapshot)
    assert pol.step_epoch(resumed, SPACE, scorer, epoch=1, seed=7) is False


def test_top_p_next_epoch_redraws():
    children1, scorer = scripted_population(epoch=1)
    pol, state = TopPAnchorPolicy(30, population=10), AnchorState()
    pol.step_epoch(state, SPACE, scorer, epoch=1, seed=7)
    children2, scorer2 = scripted_population(epoch=2, scores=[s + 1 for s in SCORES])
    scorer2.table[str(state.arch)] = 10.0  # the old anchor is now the worst: 100%
    assert pol.step_epoch(state, SPACE, scorer2, epoch=2, seed=7) is True
    assert state.arch == children2[3] and state.last_epoch == 2 and state.replacements == 1


def test_top_p_duplicate_children_scored_once():
    tiny = SearchSpace(["ffn", "conv3"], 1, 32)  # only 2 children
    scorer = Scripted({"ffn": 1.0, "conv3": 2.0})
    pol, state = TopPAnchorPolicy(100, population=20), AnchorState()
    pol.step_epoch(state, tiny, scorer, epoch=0, seed=0)
    assert sorted(scorer.calls) == ["conv3", "ffn"]
    assert state.arch == Arch(["conv3"])  # top 100% = the worst of the population


def test_task_top_p_anchor_follows_a_scripted_ranking(data_bin, monkeypatch):
    """The task's epoch hook with the real policy and a scripted scorer: the
    exact child picked, then kept inside the band, then replaced."""
    from conftest import build_in_process

    task, model, _ = build_in_process(
        data_bin, "--magic-method", "magic_t", "--magic-anchor", "top_p",
        "--magic-anchor-top-p", "30", "--magic-anchor-band", "10",
        "--magic-anchor-population", "10")
    space, seed = task.search_space, task.cfg.seed
    scorer = Scripted()
    monkeypatch.setattr(task, "score_arch", lambda m, arch: scorer(arch))

    def population(epoch):  # drawn here from the documented local RNG
        rng = random.Random(f"magic-anchor-top-p:{seed}:{epoch}")
        children = [random_arch(space, rng) for _ in range(10)]
        assert len(set(children)) == 10
        scorer.table = {str(c): s for c, s in zip(children, SCORES)}
        scorer.calls.clear()
        return children

    # End of epoch 1: no anchor yet -> the top 30% child, SCORES' 0.3 (draw 3).
    first = population(2)[3]
    task.begin_epoch(2, model)
    assert task.anchor.arch == first and task.anchor.score == 0.3
    assert task.anchor.replacements == 0 and len(scorer.calls) == 10
    # End of epoch 2: the anchor (not drawn again) rescores 0.35 -> 3 of 10
    # children are better -> 30%, inside [20, 40]: kept, with its fresh score.
    assert first not in population(3)
    scorer.table[str(first)] = 0.35
    task.begin_epoch(3, model)
    assert task.anchor.arch == first and task.anchor.score == 0.35
    assert task.anchor.replacements == 0 and scorer.calls[-1] == str(first)
    # End of epoch 3: it rescores 0.75 -> 70%, outside the band: replaced by
    # this epoch's top 30% child.
    children = population(4)
    assert first not in children
    scorer.table[str(first)] = 0.75
    task.begin_epoch(4, model)
    assert task.anchor.arch == children[3] != first and task.anchor.score == 0.3
    assert task.anchor.replacements == 1 and len(scorer.calls) == 11
    # a resumed job re-entering epoch 4 scores nothing and keeps the anchor
    scorer.calls.clear()
    task.begin_epoch(4, model)
    assert scorer.calls == [] and task.anchor.arch == children[3]


# -------------------------------------------------------- state and validation

def test_state_dict_round_trip_weights_only(tmp_path):
    state = AnchorState(arch=A, score=1.5, replacements=3, last_eval_update=40, last_epoch=2)
    sd = state.state_dict()
    assert sd == {"arch": "ffn,ffn", "score": 1.5, "replacements": 3,
                  "last_eval_update": 40, "last_epoch": 2}
    torch.save({"anchor": sd}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)["anchor"]
    back = AnchorState()
    back.load_state_dict(loaded)
    assert back == state and isinstance(back.arch, Arch)
    empty = AnchorState()
    empty.load_state_dict(AnchorState().state_dict())
    assert empty == AnchorState()
    space = SearchSpace(["ffn", "conv3"], 2, 32)
    back.load_state_dict(loaded, space=space)
    assert back.arch == A
    with pytest.raises(MagicConfigError, match="3 layers"):
        back.load_state_dict({"arch": "ffn,ffn,ffn"}, space=space)


def test_bad_values_name_the_flag():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(MagicConfigError, match="--magic-anchor-interval"):
            BestAnchorPolicy(bad)
    for bad in (0, -5, 100.5, math.nan):
        with pytest.raises(MagicConfigError, match="--magic-anchor-top-p"):
            TopPAnchorPolicy(bad, population=10)
    for bad in (-1, math.nan):
        with pytest.raises(MagicConfigError, match="--magic-anchor-band"):
            TopPAnchorPolicy(30, r=bad, population=10)
    for bad in (0, -3, 1.5):
        with pytest.raises(MagicConfigError, match="--magic-anchor-population"):
            TopPAnchorPolicy(30, population=bad)
    TopPAnchorPolicy(100, r=0, population=1)  # the boundaries themselves are fine


def test_build_anchor_policy():
    best = build_anchor_policy("best", interval=3)
    assert isinstance(best, BestAnchorPolicy) and best.interval == 3
    top = build_anchor_policy("top_p", p=20, r=5, population=100)
    assert isinstance(top, TopPAnchorPolicy) and (top.p, top.r, top.population) == (20, 5, 100)
    with pytest.raises(MagicConfigError, match=r"--magic-anchor 'nope'.*\['best', 'top_p'\]"):
        build_anchor_policy("nope")
    # The task passes every --magic-anchor-* flag whatever the policy: the other
    # policy's options are ignored (not validated), a typo is still an error.
    every = dict(interval=0, p=30.0, r=10.0, population=5)
    assert build_anchor_policy("top_p", **every).population == 5
    assert build_anchor_policy("best", **dict(every, interval=4, p=-1)).interval == 4
    with pytest.raises(MagicConfigError, match="--magic-anchor-interval"):
        build_anchor_policy("best", **every)
    with pytest.raises(TypeError):
        build_anchor_policy("best", interval=4, intervall=5)
    assert sorted(ANCHOR_POLICIES) == ["best", "top_p"]
