"""Issue 7: every trained child is a MAGIC-A anchor candidate.

Core rules with scripted scorers (CandidateBuffer, BestAnchorPolicy.evaluate,
best_scored), the task's wiring in-process with a fake ``score_arch`` (real
train_step on the tiny model), and one short fairseq run for the log."""

import json
import math
import re

import pytest
import torch

from conftest import build_in_process, run_train, train_args

from fairseq_magic.core.anchor import (DEFAULT_CANDIDATES, AnchorState, BestAnchorPolicy,
                                       CandidateBuffer, best_scored, build_anchor_policy)
from fairseq_magic.core.space import Arch, MagicConfigError, SearchSpace

from conftest import Scripted

LN2 = math.log(2)


def children(n):
    ops = ["ffn", "conv3", "conv5"]
    return [Arch([ops[i % 3], ops[(i // 3) % 3]]) for i in range(n)]


# ------------------------------------------------------------ core: the rules

def test_buffer_ranks_by_mean_training_loss_and_dedupes():
    a, b, c, d = children(4)
    buf = CandidateBuffer()
    # (update, child, loss sum in nats, masked tokens); two micro-batches of update 1
    for u, arch, loss, n in [(0, a, 40.0, 10), (1, b, 10.0, 5), (1, b, 12.0, 5),
                             (2, c, 30.0, 20), (3, a, 9.0, 10), (4, d, 0.0, 0)]:
        buf.add(u, arch, loss, n)
    assert buf.sums(1) == (22.0, 10)
    # means: a 4.0 then 0.9 (kept: its best), b 2.2, c 1.5; d saw no token
    got = buf.select(3)
    assert [(x, u) for x, _, u in got] == [(a, 3), (c, 2), (b, 1)]
    assert [m for _, m, _ in got] == pytest.approx([0.9 / LN2, 1.5 / LN2, 2.2 / LN2])
    assert [x for x, _, _ in buf.select(1)] == [a]
    assert [x for x, _, _ in buf.select(5, exclude=a)] == [c, b]   # the anchor is skipped
    assert (a, b, c) == (Arch(["ffn", "ffn"]), Arch(["conv3", "ffn"]), Arch(["conv5", "ffn"]))
    shrunk = SearchSpace(["ffn", "conv3", "conv5"], 2, 32,
                         choices=[["ffn", "conv3"], ["ffn", "conv3", "conv5"]])
    assert [x for x, _, _ in buf.select(5, space=shrunk)] == [a, b]  # c left the space
    with pytest.raises(ValueError, match="one child per update"):
        buf.add(2, a, 1.0, 1)
    # ties on the mean: the later update first; NaN last
    tie = CandidateBuffer()
    tie.add(0, a, 2.0, 1)
    tie.add(1, b, 2.0, 1)
    tie.add(2, c, math.nan, 1)
    assert [x for x, _, _ in tie.select(3)] == [b, a, c]


def test_buffer_global_sums_replace_local_ones():
    a, b = children(2)
    buf = CandidateBuffer()
    buf.add(0, a, 10.0, 10)   # this rank: a looks better...
    buf.add(1, b, 20.0, 10)
    assert buf.local_updates() == [0, 1]
    buf.set_total(0, 10.0 + 50.0, 20)   # ...but over every rank b is (3.0 vs 2.0)
    buf.set_total(1, 20.0 + 20.0, 20)
    assert buf.local_updates() == []
    assert [x for x, _, _ in buf.select(2)] == [b, a]


def test_every_child_of_an_interval_can_win_the_best_validating_one_does():
    # Five children trained in one interval; by training loss the top 3 are
    # updates 3, 1, 4. Update 1's child -- neither the first nor the last one
    # trained -- validates best and becomes the anchor.
    kids = children(5)
    buf = CandidateBuffer()
    for u, loss in enumerate([5.0, 2.0, 4.5, 1.0, 3.0]):
        buf.add(u, kids[u], loss * 100, 100)
    ranked = [x for x, _, _ in buf.select(3)]
    assert ranked == [kids[3], kids[1], kids[4]]
    pol, state = BestAnchorPolicy(5, candidates=3), AnchorState(arch=kids[0], score=9.9)
    scorer = Scripted({str(kids[3]): 3.0, str(kids[1]): 2.5, str(kids[4]): 3.5,
                       str(kids[0]): 2.9})
    ev = pol.evaluate(state, ranked, scorer, 5)
    assert scorer.calls == [str(kids[3]), str(kids[1]), str(kids[4]), str(kids[0])]
    assert ev.replaced and state.arch == kids[1] and state.score == 2.5
    assert state.replacements == 1 and state.last_eval_update == 5
    assert ev.scores == [(kids[3], 3.0), (kids[1], 2.5), (kids[4], 3.5)]
    assert (ev.previous, ev.previous_score, ev.anchor) == (kids[0], 2.9, kids[1])
    # the anchor (freshly rescored) beats them all: kept, with its fresh score
    scorer.table[str(kids[1])] = 1.0
    ev = pol.evaluate(state, [kids[3], kids[4]], scorer, 10)
    assert not ev.replaced and state.arch == kids[1] and state.score == 1.0
    # a tie with the anchor keeps it; among tied candidates the first wins
    scorer.table.update({str(kids[3]): 1.0, str(kids[4]): 1.0})
    assert not pol.evaluate(state, [kids[3], kids[4]], scorer, 15).replaced
    scorer.table[str(kids[1])] = 2.0
    assert pol.evaluate(state, [kids[4], kids[3]], scorer, 20).anchor == kids[4]


def test_first_anchor_is_chosen_by_validation_among_the_candidates():
    kids = children(3)
    pol, state = BestAnchorPolicy(4, candidates=3), AnchorState()
    scorer = Scripted({str(kids[0]): 3.0, str(kids[1]): 2.0, str(kids[2]): 2.5})
    ev = pol.evaluate(state, kids, scorer, 4)
    assert scorer.calls == [str(k) for k in kids]   # no anchor to rescore
    assert state.arch == kids[1] and state.score == 2.0
    assert not ev.replaced and state.replacements == 0 and ev.previous is None
    # duplicates and the anchor itself are not scored as candidates
    scorer.calls.clear()
    pol.evaluate(state, [kids[1], kids[0], kids[0]], scorer, 8)
    assert scorer.calls == [str(kids[0]), str(kids[1])]
    # nothing to validate and no anchor: nothing happens
    empty = AnchorState()
    ev = pol.evaluate(empty, [], scorer, 4)
    assert empty.arch is None and ev.scores == [] and ev.anchor is None


def test_best_scored_child_of_a_space():
    space = SearchSpace(["ffn", "conv3"], 2, 32, choices=[["ffn"], ["ffn", "conv3"]])
    kids = [Arch(["conv3", "ffn"]), Arch(["ffn", "conv3"]), Arch(["ffn", "ffn"]),
            Arch(["ffn", "conv3"])]
    # the best score (conv3,ffn: 0.5) left the space; the tie 1.0 goes to the first
    assert best_scored(kids, [0.5, 1.0, 1.5, 1.0], space) == (kids[1], 1.0)
    assert best_scored(kids, [0.5, math.nan, 1.5, 2.0], space) == (kids[2], 1.5)
    assert best_scored(kids[:1], [0.5], space) is None
    assert best_scored(kids, [0.5, 1.0, 1.5, 1.0]) == (kids[0], 0.5)


def test_bad_candidates_value_fails_naming_the_value(data_bin):
    for bad in (0, -2, 1.5, True, "3"):
        with pytest.raises(MagicConfigError, match=re.escape(f"--magic-anchor-candidates {bad!r}")):
            BestAnchorPolicy(10, candidates=bad)
    assert BestAnchorPolicy(10).candidates == DEFAULT_CANDIDATES >= 1
    assert build_anchor_policy("best", interval=3, candidates=4).candidates == 4
    # top_p has no candidates: the flag is ignored there, not validated
    assert build_anchor_policy("top_p", p=10, population=4, candidates=0).population == 4
    # through the task, before any data is read
    with pytest.raises(MagicConfigError, match="--magic-anchor-candidates 0: expected an "
                                               "integer >= 1"):
        build_in_process(data_bin, "--magic-method", "magic_a",
                         "--magic-anchor-candidates", "0")


# ---------------------------------------------------- the task, in-process

class PlainSGD:
    """What task.train_step needs of fairseq's optimizer (backward), plus a step."""

    def __init__(self, model):
        self.opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def backward(self, loss):
        loss.backward()

    def step(self):
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def fake_scorer(task, table, default=9.0):
    """Replace the task's validation with a table: no model runs."""
    scorer = Scripted(table, default)
    task.score_arch = lambda model, arch: scorer(arch)
    return scorer


def train_batches(task, n):
    from fairseq_magic.evaluation import fixed_batches

    return fixed_batches(task, "train", max_batches=n, batch_size=8)


def test_task_validates_the_lowest_training_loss_children_and_the_best_wins(data_bin):
    interval, c = 5, 3
    task, model, criterion = build_in_process(
        data_bin, "--magic-method", "magic_a", "--magic-anchor-interval", str(interval),
        "--magic-anchor-candidates", str(c), "--magic-align-warmup-epochs", "0")
    opt = PlainSGD(model)
    batches = train_batches(task, interval + 1)
    scorer = fake_scorer(task, {})
    trained, align_on = [], []
    for u in range(interval):
        _, _, log = task.train_step(batches[u], model, criterion, opt, u)
        opt.step()
        trained.append((Arch(model.get_active_path()), float(log["mlm_loss"]),
                        int(log["sample_size"])))
        align_on.append(int(log["align_on"]))
    # no anchor before the first evaluation, so no alignment either
    assert task.alignment_anchor() is None and align_on == [0] * interval
    assert scorer.calls == []
    # the buffer holds each update's child with its training MLM loss
    entries = task.anchor_candidates.state_dict()["entries"]
    assert [(e[0], e[1], e[2], e[3]) for e in entries] == [
        (u, str(a), loss, n) for u, (a, loss, n) in enumerate(trained)]
    # the C children with the lowest mean training loss, computed here from
    # train_step's own logging outputs
    by_loss = sorted(range(interval), key=lambda u: trained[u][1] / trained[u][2])
    top = [trained[u][0] for u in by_loss[:c]]
    assert len(set(top)) == c
    # script validation so that the winner is a middle child: neither the
    # first child trained nor the last one
    winner = next(a for u, a in zip(by_loss, top) if u not in (0, interval - 1))
    scorer.table = {str(a): 5.0 for a in top}
    scorer.table[str(winner)] = 4.0
    _, _, log = task.train_step(batches[interval], model, criterion, opt, interval)
    assert scorer.calls == [str(a) for a in top]   # the candidates, best training loss first
    assert task.anchor.arch == winner and task.anchor.score == 4.0
    assert task.anchor.replacements == 0 and task.anchor.last_eval_update == interval
    assert int(log["align_on"]) == 1   # alignment starts with the anchor
    # the buffer restarted: only the update just trained
    assert [e[0] for e in task.anchor_candidates.state_dict()["entries"]] == [interval]


def test_trainer_sums_replace_local_sums_validation_does_not(data_bin):
    task, model, criterion = build_in_process(
        data_bin, "--magic-method", "magic_a", "--magic-anchor-interval", "10")
    opt = PlainSGD(model)
    batch = train_batches(task, 1)[0]
    criterion.train()
    _, _, log = task.train_step(batch, model, criterion, opt, 0)
    entry = task.anchor_candidates.state_dict()["entries"][0]
    assert entry[2:] == [float(log["mlm_loss"]), int(log["sample_size"]), False]
    # validation's reduce (criterion in eval mode) leaves the entry alone
    criterion.eval()
    task.reduce_metrics([dict(log, mlm_loss=torch.tensor(1.0), sample_size=1)], criterion)
    assert task.anchor_candidates.state_dict()["entries"][0] == entry
    # the trainer's reduce after the update: the sums over every rank and
    # micro-batch (here: two ranks' outputs) replace this rank's own
    criterion.train()
    other = dict(log, mlm_loss=torch.tensor(123.0), sample_size=40)
    task.reduce_metrics([log, other], criterion)
    assert task.anchor_candidates.state_dict()["entries"][0][2:] == [
        float(log["mlm_loss"]) + 123.0, int(log["sample_size"]) + 40, True]
    # once per update: a second reduce (validation right after) changes nothing
    task.reduce_metrics([other], criterion)
    assert task.anchor_candidates.state_dict()["entries"][0][2] == float(log["mlm_loss"]) + 123.0


def test_shrinking_replaces_the_anchor_with_the_best_scored_child_of_the_new_space(data_bin):
    task, model, _ = build_in_process(
        data_bin, "--magic-method", "magic_a", "--magic-shrink",
        "--magic-shrink-per-epoch", "3", "--magic-shrink-children", "8")
    space = task.search_space
    anchor = space.parse("conv5,ffn,conv3,mha2d32")
    task.anchor.arch, task.anchor.score, task.anchor.replacements = anchor, 3.0, 2
    ops = list(space.candidates)

    def score(arch):
        # children using the anchor's first operator are terrible, so shrinking
        # removes (0, conv5); the rest get distinct made-up losses
        if arch[0] == anchor[0]:
            return 50.0
        return 3.0 + 0.01 * sum(i * ops.index(op) for i, op in enumerate(arch, 1))

    calls = []
    task.score_arch = lambda model, arch: (calls.append(str(arch)), score(arch))[1]
    task.begin_epoch(2, model)   # the end of epoch 1
    new_space = task.search_space
    assert "conv5" not in new_space.choices[0] and not new_space.contains(anchor)
    kids = task.shrinker.sample_children(space, task.cfg.seed, 1)
    assert calls == [str(k) for k in kids]   # the shrinker's scoring only: nothing re-validated
    inside = [(score(k), i) for i, k in enumerate(kids) if new_space.contains(k)]
    expected = kids[min(inside)[1]]
    assert task.anchor.arch == expected and task.anchor.score == score(expected)
    assert task.anchor.replacements == 3 and new_space.contains(task.anchor.arch)


def test_top_p_picks_no_anchor_from_untrained_weights(data_bin):
    task, model, _ = build_in_process(
        data_bin, "--magic-method", "magic_t", "--magic-anchor", "top_p",
        "--magic-anchor-population", "3")
    scorer = fake_scorer(task, {}, default=2.0)
    task.begin_epoch(1, model)
    assert scorer.calls == [] and task.anchor.arch is None and task.alignment_anchor() is None
    task.begin_epoch(2, model)   # the end of epoch 1: the first pick
    assert len(scorer.calls) == 3 and task.anchor.arch is not None
    assert task.anchor.last_epoch == 2


def test_checkpoint_round_trip_of_the_candidate_buffer(data_bin, tmp_path):
    args = ("--magic-method", "magic_a", "--magic-anchor-interval", "50")
    task, model, criterion = build_in_process(data_bin, *args)
    opt = PlainSGD(model)
    for u, batch in enumerate(train_batches(task, 3)):
        task.train_step(batch, model, criterion, opt, u)
        opt.step()
    task.anchor_candidates.set_total(1, 77.5, 31)   # one entry as the trainer leaves it
    state = task.get_checkpoint_dict()
    torch.save(state, tmp_path / "extra.pt")
    loaded = torch.load(tmp_path / "extra.pt", weights_only=True)["MagicTask"]
    saved = loaded["anchor_candidates"]
    assert [e[0] for e in saved["entries"]] == [0, 1, 2]
    assert saved["entries"][1][2:] == [77.5, 31, True]

    other, _, _ = build_in_process(data_bin, *args)
    other.set_checkpoint_dict(loaded)
    assert other.anchor_candidates.state_dict() == saved
    assert other.anchor_candidates.select(2) == task.anchor_candidates.select(2)
    # a checkpoint from before the buffer existed loads with an empty one
    old = {k: v for k, v in loaded.items() if k != "anchor_candidates"}
    other.set_checkpoint_dict(old)
    assert len(other.anchor_candidates) == 0
    # a buffer of another depth is refused
    bad = dict(loaded, anchor_candidates={"entries": [[0, "ffn,ffn", 1.0, 1, True]]})
    with pytest.raises(MagicConfigError, match="'ffn,ffn' has 2 layers: expected 4"):
        other.set_checkpoint_dict(bad)


# ------------------------------------------------------ one fairseq run

def test_fairseq_run_logs_each_evaluation_and_the_path_log_follows(data_bin, tmp_path):
    save = tmp_path / "ev"
    proc = run_train(train_args(
        data_bin, save, "--magic-method", "magic_at", "--magic-anchor-interval", "3",
        "--magic-anchor-candidates", "2", "--magic-anchor-valid-batches", "2",
        "--magic-align-warmup-epochs", "0", "--update-freq", "2",
        "--magic-path-log", str(save / "p.jsonl"), updates=10))
    out = proc.stdout + proc.stderr
    evals = re.findall(r"anchor evaluation at update (\d+): candidates \[(.*?)\] "
                       r"\(bits per masked token\); (.*)", out)
    assert [int(u) for u, _, _ in evals] == [3, 6, 9]
    with open(save / "p.jsonl") as f:
        log = [json.loads(line) for line in f]
    anchors = {r["update"]: r["anchor"] for r in log}
    assert [anchors[u] for u in (1, 2, 3)] == [None] * 3   # none before the first evaluation
    for u, cands, outcome in evals:
        u = int(u)
        scored = re.findall(r"([a-z0-9,]+) \(train ([0-9.]+), valid ([0-9.]+)\)", cands)
        assert len(scored) == 2, cands
        best_spec, best = min(((s, float(v)) for s, _, v in scored), key=lambda x: x[1])
        trains = [float(t) for _, t, _ in scored]
        assert trains == sorted(trains)   # most promising first
        m = re.match(r"anchor ([a-z0-9,]+) valid ([0-9.]+); anchor (replaced by|kept)", outcome)
        if u == 3:
            assert outcome == f"first anchor {best_spec}"
            expected = best_spec
        elif m.group(3) == "kept":
            assert float(m.group(2)) <= best
            expected = m.group(1)
        else:
            assert best < float(m.group(2)) and outcome.split("replaced by ")[1].startswith(
                best_spec + " (")
            expected = best_spec
        # the path log records, from the update evaluated at on, the winner
        assert anchors[u + 1] == expected
    state = torch.load(save / "checkpoint_last.pt")["extra_state"]["MagicTask"]
    # updates 9 (evaluated at 9, then trained) is the buffer at the end, with
    # the trainer's sums over both micro-batches
    [entry] = state["anchor_candidates"]["entries"]
    assert entry[0] == 9 and entry[1] == log[-1]["path"] and entry[3] > 0 and entry[4] is True
