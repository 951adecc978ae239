"""Progressive shrinking inside fairseq training (paper section 5.1)."""

import json
import re

import pytest
import torch

from conftest import build_in_process, train_args, train_in_process
from fairseq_magic.core.space import MagicConfigError

SHRINK = ["--magic-shrink", "--magic-shrink-per-epoch", "3", "--magic-shrink-children", "8",
          "--magic-anchor-valid-batches", "1", "--batch-size", "64",
          "--magic-method", "magic_t"]


def _state(save):
    return torch.load(save / "checkpoint_last.pt")["extra_state"]["MagicTask"]


def _log(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _epoch_ends(out):
    """{epoch: num_updates at its end} from fairseq's end-of-epoch summaries."""
    return {int(m.group(1)): int(m.group(2)) for m in re.finditer(
        r"\| train \| epoch (\d+) \|[^\n]*?\| num_updates (\d+) \|", out)}


def test_shrinks_each_epoch_to_one_child_and_resumes_exactly(data_bin, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    log = ["--magic-path-log"]
    proc = train_in_process(train_args(data_bin, full, *SHRINK, *log, str(full / "p.jsonl"),
                                       "--max-epoch", "6", updates=10000))
    history = _state(full)["shrink_history"]
    # 4 layers x 4 ops = 16 candidates; 3 removed per epoch end -> 1 child after 4
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert [len(h["removed"]) for h in history] == [3, 3, 3, 3]
    assert [h["size"] for h in history][-1] == 1
    space = _state(full)["search_space"]
    assert all(len(c) == 1 for c in space["choices"])
    final = ",".join(c[0] for c in space["choices"])

    # The path log, update by update. A removal after epoch e applies from the
    # first update of epoch e + 1 on.
    ends = _epoch_ends(proc.stdout + proc.stderr)
    assert sorted(ends) == [1, 2, 3, 4, 5, 6]
    records = _log(full / "p.jsonl")
    assert [r["update"] for r in records] == list(range(1, ends[6] + 1))

    def epoch_of(update):
        return min(e for e, end in ends.items() if update <= end)

    after_last_removal, used_before_removal = 0, set()
    for r in records:
        epoch, path = epoch_of(r["update"]), r["path"].split(",")
        gone = {(l, o) for h in history if h["epoch"] < epoch for l, o, _ in h["removed"]}
        # removed candidates never come back
        assert not gone & set(enumerate(path)), (r, sorted(gone & set(enumerate(path))))
        used_before_removal |= {(l, o) for h in history if h["epoch"] >= epoch
                                for l, o, _ in h["removed"]} & set(enumerate(path))
        # once shrinking finished, every child trained is the final one
        if epoch > history[-1]["epoch"]:
            assert r["path"] == final, r
            after_last_removal += 1
    assert after_last_removal == ends[6] - ends[4] > 0
    assert used_before_removal  # the log is not trivially clean: removed ops were trained

    # stop after epoch 2, resume to 6: same shrinking, same weights, same log
    train_in_process(train_args(data_bin, split, *SHRINK, *log, str(split / "p.jsonl"),
                                "--max-epoch", "2", updates=10000))
    train_in_process(train_args(data_bin, split, *SHRINK, *log, str(split / "p.jsonl"),
                                "--max-epoch", "6", updates=10000))
    assert _state(split)["shrink_history"] == history
    assert _log(split / "p.jsonl") == records
    a = torch.load(full / "checkpoint_last.pt")["model"]
    b = torch.load(split / "checkpoint_last.pt")["model"]
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0


def test_impossible_budget_fails_before_training(data_bin):
    # fairseq-train builds the model first: the budget check fails there
    with pytest.raises(MagicConfigError, match=r"--magic-max-params 100: the smallest child "
                                               r"of the space has \d+ parameters"):
        build_in_process(data_bin, *SHRINK, "--magic-max-params", "100")
