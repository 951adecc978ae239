"""magic-children: scores children of a trained super-net with shared weights.

Reads the shared 5-update super-net (conftest's ``trained_supernet``); the tool
runs in-process."""

import json

import pytest
import torch

from conftest import cli_in_process, reference_loss_bits, run_as_console_script

FIXED = ["ffn,ffn,ffn,ffn", "conv3,conv3,conv3,conv3"]
ARGS = ["--num-random", "3", "--arch", FIXED[0], "--arch", FIXED[1], "--max-batches", "2"]


def children(*argv):
    return cli_in_process("fairseq_magic.cli.children", "magic-children", *argv)


@pytest.fixture(scope="module")
def two_runs(trained_supernet, tmp_path_factory):
    """The same command twice, into two output files."""
    d = tmp_path_factory.mktemp("children")
    runs = []
    for name in ("a.json", "b.json"):
        code, out, err = children(trained_supernet, *ARGS, "--json-out", d / name)
        runs.append({"code": code, "stdout": out, "stderr": err, "json": d / name})
    return runs


def test_same_command_twice_gives_identical_results(two_runs):
    a, b = two_runs
    assert a["code"] == 0 and b["code"] == 0, a["stderr"][-2000:] + b["stderr"][-2000:]
    assert a["json"].read_bytes() == b["json"].read_bytes()
    assert a["stdout"] == b["stdout"]
    assert "loss in bits per masked token on 2 'valid' batches" in a["stdout"]


def test_scores_equal_a_hand_computed_mlm_loss(two_runs, trained_supernet):
    from fairseq_magic.evaluation import fixed_batches, load_supernet

    rows = json.loads(two_runs[0]["json"].read_text())["children"]
    assert len(rows) == 5 and [r["arch"] for r in rows[:2]] == FIXED
    model, task, _, _ = load_supernet(trained_supernet)
    batches = fixed_batches(task, "valid", 2, 16)  # the tool's --max-batches 2, default size
    for r in rows:
        assert abs(r["valid_loss"] - reference_loss_bits(model, r["arch"], batches)) < 1e-5, r
        assert r["params"] == model.child_cost(r["arch"])["params"] and r["seq_len"] == 128
        assert f"{r['valid_loss']:.3f}" in two_runs[0]["stdout"]
    # distinct children, distinct scores: the tool really switched paths
    assert len({r["valid_loss"] for r in rows}) == len({r["arch"] for r in rows}) >= 4
    assert rows[0]["params"] > rows[1]["params"] and rows[0]["flops"] > rows[1]["flops"]


def test_stored_anchor_is_scored_first(trained_supernet, tmp_path):
    state = torch.load(trained_supernet, weights_only=True)
    anchor = "conv5,ffn,mha2d32,conv3"
    state["extra_state"]["MagicTask"]["anchor"]["arch"] = anchor
    torch.save(state, tmp_path / "magic_a.pt")
    out = tmp_path / "c.json"
    code, stdout, err = children(tmp_path / "magic_a.pt", "--num-random", "1",
                                 "--max-batches", "1", "--json-out", out)
    assert code == 0, err[-2000:]
    rows = json.loads(out.read_text())["children"]
    assert [r["anchor"] for r in rows] == [True, False] and rows[0]["arch"] == anchor
    assert f"{anchor}" in stdout and "(anchor)" in stdout
    code, _, _ = children(tmp_path / "magic_a.pt", "--num-random", "1", "--max-batches", "1",
                          "--no-anchor", "--json-out", out)
    assert code == 0 and [r["anchor"] for r in json.loads(out.read_text())["children"]] == [False]


def test_bad_inputs(trained_supernet, tmp_path):
    from fairseq_magic.cli.export import main as export

    # a magic_child checkpoint: the super-net's child exported here
    assert export([trained_supernet, "--arch", "ffn,ffn,conv3,mha2d32",
                   "--out", str(tmp_path / "child")]) == 0
    for ckpt, args, needle in [
        (tmp_path / "child" / "model.pt", [], "expected a magic_supernet checkpoint"),
        (trained_supernet, ["--arch", "ffn,ffn"], "has 2 layers: expected 4"),
        (trained_supernet, ["--arch", "ffn,ffn,conv7,ffn"], "unknown operator 'conv7'"),
        (trained_supernet, ["--max-batches", "0"], "--max-batches >= 1"),
    ]:
        code, _, err = children(ckpt, "--num-random", "1", *args)
        assert code == 2 and needle in err, (args, err[-2000:])
        assert err.strip().splitlines()[-1].startswith("magic-children: error: ")
    # the console script / python -m entry: same message, exit 2
    code, _, err = run_as_console_script("fairseq_magic.cli.children", "magic-children",
                                         tmp_path / "missing.pt")
    assert code == 2, err[-2000:]
    assert "magic-children: error: checkpoint" in err and "does not exist" in err
