"""MAGIC-T / MAGIC-A / MAGIC-AT through fairseq-train: alignment, warm-up,
anchor bookkeeping, exact resume and bad values."""

import json
import re

import pytest
import torch

from conftest import build_in_process, masked_batch, train_args, train_in_process
from fairseq_magic.core.space import MagicConfigError

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


def test_magic_at_resume_equals_uninterrupted(data_bin, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    train_in_process(train_args(data_bin, full, *AT, "--magic-path-log", str(full / "p.jsonl"),
                                updates=20))
    train_in_process(train_args(data_bin, split, *AT, "--magic-path-log", str(split / "p.jsonl"),
                                updates=10))
    train_in_process(train_args(data_bin, split, *AT, "--magic-path-log", str(split / "p.jsonl"),
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
    # no anchor until the first evaluation (update_num 3, logged as update 4)
    # chooses one by validation; from then on always a path of the space
    assert [r["anchor"] for r in log[:3]] == [None] * 3
    assert all(r["anchor"] and len(r["anchor"].split(",")) == 4 for r in log[3:])
    assert sa["anchor"]["last_eval_update"] == 18


@pytest.mark.parametrize("extra,needle", [
    (["--magic-method", "magic_t", "--magic-t-k", "0"], "--magic-t-k 0"),
    (["--magic-method", "magic_t", "--magic-t-k", "5"], "expected 1 <= K <= N=4"),
    (["--magic-align-lambda", "-0.5"], "--magic-align-lambda -0.5"),
    (["--magic-method", "magic_at", "--magic-align-every", "0"],
     "--magic-align-every 0: expected a positive integer"),
    (["--magic-align-target", "average", "--magic-align-every", "-2"],
     "--magic-align-every -2: expected a positive integer"),
    (["--magic-anchor", "worst"], "--magic-anchor 'worst'"),
    (["--magic-method", "magic_x"], "--magic-method 'magic_x'"),
    (["--magic-method", "magic_a", "--magic-anchor-interval", "0"], "--magic-anchor-interval"),
    (["--magic-align-target", "median"], "--magic-align-target 'median'"),
])
def test_bad_method_values_fail_before_training(data_bin, extra, needle):
    # fairseq-train builds the task, model and criterion before anything else
    # (tests/test_supernet.py launches one such failure end to end)
    with pytest.raises(MagicConfigError) as err:
        build_in_process(data_bin, *extra)
    assert needle in str(err.value)


def test_top_p_anchor_warmup_and_interference_monitor_through_fairseq(data_bin, tmp_path):
    # 1,200 lines / 64 sentences: a few updates per epoch. The exact values are
    # checked in-process (test_anchor.py, test_task_in_process.py); this run
    # shows fairseq-train drives them: epoch hooks, logging, the checkpoint.
    proc = train_in_process(train_args(
        data_bin, tmp_path / "tp", "--magic-method", "magic_t", "--magic-anchor", "top_p",
        "--magic-anchor-population", "4", "--magic-anchor-valid-batches", "1",
        "--magic-align-warmup-epochs", "2", "--batch-size", "64", "--max-epoch", "3",
        "--magic-interference-interval", "2", updates=1000))
    out = proc.stdout + proc.stderr
    # top_p picks an anchor at the start of every epoch (= end of the previous),
    # never from the untrained weights of epoch 1
    assert re.search(r"anchor at epoch 2: [a-z0-9,]+ \(valid loss", out)
    assert "anchor at epoch 1:" not in out
    state = torch.load(tmp_path / "tp" / "checkpoint_last.pt")["extra_state"]["MagicTask"]
    assert state["anchor"]["last_epoch"] == 3 and state["anchor"]["arch"]
    # warm-up: epoch 2 has an anchor, yet only epoch 3 aligns
    summaries = {int(m.group(1)): m.group(0) for m in
                 re.finditer(r"\| train \| epoch (\d+) \|[^\n]*", out)}
    assert sorted(summaries) == [1, 2, 3]
    assert "align_loss" not in summaries[1] and "align_loss" not in summaries[2]
    assert re.search(r"align_loss [0-9.]+", summaries[3])
    cos = [float(x) for x in re.findall(r"interference_cos=(-?[0-9.]+)", out)]
    assert cos and all(-1.0 <= c <= 1.0 for c in cos)


def test_update_freq_trains_one_path_per_update(data_bin, tmp_path):
    # With 2 micro-batches per update, a second path would move candidates off
    # the logged path; the probe checks every off-path tensor is bit-identical.
    # The script runs fairseq-train in-process around its probe: here, in ours.
    import importlib.util
    from conftest import REPO, fairseq_run_in_process

    spec = importlib.util.spec_from_file_location(
        "check_unused_candidates", f"{REPO}/scripts/check_unused_candidates.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = train_args(data_bin, tmp_path / "uf", "--update-freq", "2", "--magic-method",
                      "magic_at", "--magic-align-warmup-epochs", "0",
                      "--magic-anchor-interval", "2", "--magic-anchor-valid-batches", "1",
                      "--magic-path-log", str(tmp_path / "uf.jsonl"), updates=5)
    with fairseq_run_in_process() as out:
        code = script.main(["--report", str(tmp_path / "rep.json"), "--", *map(str, args)])
    rep = json.load(open(tmp_path / "rep.json"))
    assert code == 0 and rep["updates"] == 5, out.getvalue()[-2000:]
    assert "check_unused_candidates: " in out.getvalue()
    assert rep["off_path_tensors_changed"] == 0 and rep["off_path_tensors_checked"] > 0
    assert [r["update"] for r in _log(tmp_path / "uf.jsonl")] == [1, 2, 3, 4, 5]
