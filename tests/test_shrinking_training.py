"""Progressive shrinking inside fairseq training (paper section 5.1)."""

import json

import torch

from conftest import run_train, train_args

SHRINK = ["--magic-shrink", "--magic-shrink-per-epoch", "3", "--magic-shrink-children", "8",
          "--magic-anchor-valid-batches", "1", "--batch-size", "64",
          "--magic-method", "magic_t"]


def _state(save):
    return torch.load(save / "checkpoint_last.pt")["extra_state"]["MagicTask"]


def test_shrinks_each_epoch_to_one_child_and_resumes_exactly(data_bin, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    log = ["--magic-path-log"]
    run_train(train_args(data_bin, full, *SHRINK, *log, str(full / "p.jsonl"),
                         "--max-epoch", "6", updates=10000))
    history = _state(full)["shrink_history"]
    # 4 layers x 4 ops = 16 candidates; 3 removed per epoch end -> 1 child after 4
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert [len(h["removed"]) for h in history] == [3, 3, 3, 3]
    assert [h["size"] for h in history][-1] == 1
    space = _state(full)["search_space"]
    assert all(len(c) == 1 for c in space["choices"])
    final = ",".join(c[0] for c in space["choices"])
    # after shrinking finished, every trained child is the final one
    with open(full / "p.jsonl") as f:
        paths = [json.loads(line)["path"] for line in f]
    assert paths[-1] == final
    # removed candidates never come back
    removed = {(l, o) for h in history for l, o, _ in h["removed"]}
    assert not any((i, op) in removed for i, op in enumerate(final.split(",")))
    # stop after epoch 2, resume to 6: same shrinking, same weights
    run_train(train_args(data_bin, split, *SHRINK, *log, str(split / "p.jsonl"),
                         "--max-epoch", "2", updates=10000))
    run_train(train_args(data_bin, split, *SHRINK, *log, str(split / "p.jsonl"),
                         "--max-epoch", "6", updates=10000))
    assert _state(split)["shrink_history"] == history
    a = torch.load(full / "checkpoint_last.pt")["model"]
    b = torch.load(split / "checkpoint_last.pt")["model"]
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0


def test_impossible_budget_fails_before_training(data_bin, tmp_path):
    proc = run_train(train_args(data_bin, tmp_path / "ck", *SHRINK, "--magic-max-params", "100"),
                     check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "--magic-max-params 100" in out
    assert "begin training" not in out
