"""MAGIC-T / MAGIC-A / MAGIC-AT through fairseq-train: alignment, warm-up,
anchor bookkeeping, exact resume and bad values."""

import json
import re

import pytest
import torch

from conftest import build_in_process, masked_batch, run_train, train_args

AT = ["--magic-method", "magic_at", "--magic-anchor-interval", "3",
      "--magic-anchor-valid-batches", "2", "--magic-align-warmup-epochs", "0"]


def _log(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_alignment_is_zero_when_child_is_anchor_and_spares_anchor_weights(data_bin):
    task, model, criterion = build_in_process(
        data_bin, "--magic-method", "magic_a", "--magic-align-warmup-epochs", "0",
        "--dropout", "0", "--attention-dropout", "0")
    sample = masked_batch(task)
    model.train()
    task.anchor.arch = model.set_active_path("mha2d32,ffn,conv3,conv5")
    _, _, out = criterion(model, sample)
    assert out["align_on"] == 1 and float(out["align_loss"]) == 0.0
    # A different child: positive alignment; gradients reach only the child's
    # path -- the anchor supplies targets and must get none.
    task.anchor.arch = model.search_space.parse("ffn,conv5,ffn,mha2d32")
    model.set_active_path("mha2d32,ffn,conv3,conv5")
    model.zero_grad(set_to_none=True)
    loss, n, out = criterion(model, sample)
    loss.backward()
    assert float(out["align_loss"]) > 0
    assert float(out["loss"]) == pytest.approx(
        float(out["mlm_loss"]) + 0.5 * float(out["align_loss"]), rel=1e-5)
    for name, p in model.named_parameters():
        if ".candidates." in name:
            layer = int(name.split(".layers.")[1].split(".")[0])
            op = name.split(".candidates.")[1].split(".")[0]
            child_op = "mha2d32,ffn,conv3,conv5".split(",")[layer]
            assert (p.grad is not None) == (op == child_op), name
    model.zero_grad(set_to_none=True)


def test_warmup_switches_alignment_on_at_the_right_epoch(data_bin, tmp_path):
    # 1,200 lines / 64 sentences: a few updates per epoch; warm-up 2 epochs.
    proc = run_train(train_args(data_bin, tmp_path / "w", "--magic-method", "magic_a",
                                "--magic-anchor-interval", "2", "--magic-align-warmup-epochs", "2",
                                "--magic-anchor-valid-batches", "1", "--batch-size", "64",
                                "--max-epoch", "3", updates=1000))
    summaries = {int(m.group(1)): m.group(0) for m in
                 re.finditer(r"\| train \| epoch (\d+) \|[^\n]*", proc.stdout + proc.stderr)}
    assert sorted(summaries) == [1, 2, 3]
    assert "align_loss" not in summaries[1] and "align_loss" not in summaries[2]
    assert re.search(r"align_loss [0-9.]+", summaries[3])


def test_magic_at_resume_equals_uninterrupted(data_bin, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    run_train(train_args(data_bin, full, *AT, "--magic-path-log", str(full / "p.jsonl"),
                         updates=20))
    run_train(train_args(data_bin, split, *AT, "--magic-path-log", str(split / "p.jsonl"),
                         updates=10))
    run_train(train_args(data_bin, split, *AT, "--magic-path-log", str(split / "p.jsonl"),
                         updates=20))
    a, b = torch.load(full / "checkpoint_last.pt"), torch.load(split / "checkpoint_last.pt")
    assert max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"]) == 0.0
    assert _log(full / "p.jsonl") == _log(split / "p.jsonl")
    sa, sb = a["extra_state"]["MagicTask"], b["extra_state"]["MagicTask"]
    assert sa["anchor"] == sb["anchor"] and sa["sampler"] == sb["sampler"]
    log = _log(full / "p.jsonl")
    # MAGIC-T: consecutive children differ in exactly one layer
    for prev, cur in zip(log, log[1:]):
        assert sum(x != y for x, y in zip(prev["path"].split(","), cur["path"].split(","))) == 1
    # the anchor is always a path of the space, set from the first update on
    assert all(r["anchor"] and len(r["anchor"].split(",")) == 4 for r in log)
    assert sa["anchor"]["last_eval_update"] == 18


@pytest.mark.parametrize("extra,needle", [
    (["--magic-method", "magic_t", "--magic-t-k", "0"], "--magic-t-k 0"),
    (["--magic-method", "magic_t", "--magic-t-k", "5"], "expected 1 <= K <= N=4"),
    (["--magic-align-lambda", "-0.5"], "--magic-align-lambda -0.5"),
    (["--magic-method", "magic_at", "--magic-align-every", "3"],
     "--magic-align-every 3 does not divide"),
    (["--magic-align-target", "average", "--magic-align-every", "3"],
     "--magic-align-every 3 does not divide"),
    (["--magic-anchor", "worst"], "--magic-anchor 'worst'"),
    (["--magic-method", "magic_x"], "--magic-method 'magic_x'"),
    (["--magic-method", "magic_a", "--magic-anchor-interval", "0"], "--magic-anchor-interval"),
    (["--magic-align-target", "median"], "--magic-align-target 'median'"),
])
def test_bad_method_values_fail_before_training(data_bin, tmp_path, extra, needle):
    proc = run_train(train_args(data_bin, tmp_path / "ck") + extra, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and needle in out, out[-2000:]
    assert "begin training" not in out
