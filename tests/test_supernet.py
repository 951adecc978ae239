"""The super-net through fairseq: only the active path runs and trains, a path
equals the same child built as magic_child, exact resume, bad input, hydra."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import (REPO, USER_DIR, build_in_process, masked_batch, run_train, train_args,
                      train_in_process)
from fairseq_magic.core.space import MagicConfigError

PATH = "mha2d32,conv5,ffn,conv3"


@pytest.fixture(scope="module")
def supernet(data_bin):
    task, model, criterion = build_in_process(data_bin)
    return task, model, criterion


def test_child_param_count_equals_cost_model(data_bin, supernet):
    _, model, _ = supernet
    _, child, _ = build_in_process(data_bin, "--magic-arch", PATH, arch="magic_child")
    n = sum(p.numel() for p in child.parameters())
    assert n == model.child_cost(PATH)["params"]
    assert n < sum(p.numel() for p in model.parameters())
    assert set(child.state_dict()) == set(model.child_state_dict(PATH))


def test_supernet_path_equals_child_with_same_weights(data_bin, supernet):
    task, model, _ = supernet
    _, child, _ = build_in_process(data_bin, "--magic-arch", PATH, arch="magic_child")
    child.load_state_dict(model.child_state_dict(PATH), strict=True)
    model.eval(), child.eval()
    sample = masked_batch(task)
    model.set_active_path(PATH)
    with torch.no_grad():
        a, ea = model(**sample["net_input"], return_all_hiddens=True)
        b, eb = child(**sample["net_input"], return_all_hiddens=True)
    assert a.shape[-1] == len(task.source_dictionary)
    assert torch.equal(a, b), (a - b).abs().max()
    assert all(torch.equal(x, y) for x, y in zip(ea["inner_states"], eb["inner_states"]))
    # and a different path gives a different function
    model.set_active_path("ffn,ffn,ffn,ffn")
    with torch.no_grad():
        c, _ = model(**sample["net_input"])
    assert (a - c).abs().max() > 1e-3


def test_only_the_active_path_gets_gradients(supernet):
    task, model, criterion = supernet
    model.train()
    model.zero_grad(set_to_none=True)
    model.set_active_path(PATH)
    loss, _, _ = criterion(model, masked_batch(task))
    loss.backward()
    for name, p in model.named_parameters():
        if ".layers." in name:
            layer, op = name.split(".layers.")[1].split(".")[0], name.split(".candidates.")[1].split(".")[0]
            on_path = PATH.split(",")[int(layer)] == op
            assert (p.grad is not None) == on_path, name
        else:
            assert p.grad is not None, name
    model.zero_grad(set_to_none=True)


def test_set_active_path_rejects_bad_specs(supernet):
    _, model, _ = supernet
    with pytest.raises(MagicConfigError, match="has 3 layers: expected 4"):
        model.set_active_path("ffn,ffn,ffn")
    with pytest.raises(MagicConfigError, match="unknown operator 'mha12'"):
        model.set_active_path("mha12,ffn,ffn,ffn")


def _paths(log):
    with open(log) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def runs(data_bin, tmp_path_factory):
    """One 20-update run saving a checkpoint after every update, and the same
    run stopped at 10 and resumed to 20 (a stale log line from a crashed later
    run in between)."""
    root = tmp_path_factory.mktemp("supernet_runs")
    full, split = root / "full", root / "split"
    train_in_process(train_args(data_bin, full, "--magic-path-log", str(full / "p.jsonl"),
                                "--save-interval-updates", "1", updates=20))
    train_in_process(train_args(data_bin, split, "--magic-path-log", str(split / "p.jsonl"),
                                updates=10))
    with open(split / "p.jsonl", "a") as f:
        f.write(json.dumps({"update": 11, "rank": 0, "path": "stale"}) + "\n")
    train_in_process(train_args(data_bin, split, "--magic-path-log", str(split / "p.jsonl"),
                                updates=20))
    return full, split


def _candidate(key):
    return int(key.split(".layers.")[1].split(".")[0]), key.split(".candidates.")[1].split(".")[0]


def test_fairseq_update_leaves_unused_candidates_bit_identical(runs):
    # Consecutive checkpoints of one run: Adam with weight decay 0.01 would move
    # every parameter it touches, so only the update's path may change.
    full, _ = runs
    paths = [r["path"].split(",") for r in _paths(full / "p.jsonl")]
    weights = {u: torch.load(full / f"checkpoint_1_{u}.pt")["model"] for u in range(2, 21)}
    for u in range(2, 20):  # update u + 1 trains paths[u]; lr > 0 from update 2 on
        before, after, path = weights[u], weights[u + 1], paths[u]
        moved, still = 0, 0
        for k in before:
            if ".candidates." not in k:
                continue
            layer, op = _candidate(k)
            if op == path[layer]:
                moved += int(not torch.equal(before[k], after[k]))
            else:
                assert torch.equal(before[k], after[k]), f"update {u + 1}: unused {k} changed"
                still += 1
        assert still > 0 and moved > 0, u + 1


def test_resume_equals_uninterrupted_run(runs):
    full, split = runs
    wf = torch.load(full / "checkpoint_last.pt")  # weights-only load (torch default)
    ws = torch.load(split / "checkpoint_last.pt")
    diff = max((wf["model"][k] - ws["model"][k]).abs().max().item() for k in wf["model"])
    assert diff == 0.0
    assert _paths(full / "p.jsonl") == _paths(split / "p.jsonl")
    assert [r["update"] for r in _paths(split / "p.jsonl")] == list(range(1, 21))
    assert ws["extra_state"]["MagicTask"]["sampler"]["update"] == 19


@pytest.mark.parametrize("extra,arch,needle", [
    (["--magic-ops", "mha2d32,ffn,bogus"], "magic_supernet", "unknown operator 'bogus'"),
    (["--magic-ops", ""], "magic_supernet", "non-empty comma-separated operator list"),
    (["--magic-valid-arch", "ffn,ffn"], "magic_supernet", "has 2 layers: expected 4"),
    (["--magic-sampler", "nope"], "magic_supernet", "--magic-sampler 'nope'"),
    ([], "magic_child", "needs --magic-arch SPEC"),
])
def test_bad_input_fails_before_training(data_bin, extra, arch, needle):
    # TINY_MODEL sets --magic-ops; a later flag overrides it. fairseq-train
    # builds the task, model and criterion first: a bad value fails there.
    with pytest.raises(MagicConfigError) as err:
        build_in_process(data_bin, *extra, arch=arch)
    assert needle in str(err.value)


def test_missing_data_fails_before_training_end_to_end(tmp_path):
    # One bad input through the real fairseq-train: a non-zero exit, the
    # message, nothing trained or written.
    proc = run_train(train_args(str(tmp_path / "nope"), tmp_path / "ck"), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "has no dict.txt" in proc.stderr and "nope" in proc.stderr
    assert "begin training" not in out
    assert not (tmp_path / "ck" / "checkpoint_last.pt").exists()
    with pytest.raises(MagicConfigError, match="has no dict.txt"):
        build_in_process(str(tmp_path / "nope"))


def test_child_trains_from_scratch(data_bin, tmp_path):
    proc = train_in_process(train_args(data_bin, tmp_path / "c", "--magic-arch", PATH,
                                       arch="magic_child", updates=3))
    assert "MagicChildModel" in proc.stdout + proc.stderr
    state = torch.load(tmp_path / "c" / "checkpoint_last.pt")
    assert not any(".candidates.ffn." in k for k in state["model"] if ".layers.0." in k)


def test_hydra_train_with_shipped_config(data_bin, tmp_path):
    cmd = [os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train"),
           "--config-dir", os.path.join(REPO, "configs"), "--config-name", "spos_tiny",
           f"task.data={data_bin}", f"checkpoint.save_dir={tmp_path / 'ck'}",
           f"common.user_dir={USER_DIR}", "optimization.max_update=3",
           "task.tokens_per_sample=32", "dataset.batch_size=4",
           "model.encoder_layers=2", "model.encoder_embed_dim=32",
           "model.magic_ops='mha2d32,ffn,conv3'", f"hydra.run.dir={tmp_path / 'out'}",
           f"+task.magic_path_log={tmp_path / 'p.jsonl'}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["update"] for r in _paths(tmp_path / "p.jsonl")] == [1, 2, 3]
    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt")
    assert state["cfg"]["model"]["magic_ops"] == "mha2d32,ffn,conv3"
