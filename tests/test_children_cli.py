"""magic-children: scores children of a trained super-net with shared weights."""

import json
import subprocess
import sys

import pytest

from conftest import run_train, train_args


def _children(*args):
    return subprocess.run([sys.executable, "-m", "fairseq_magic.cli.children", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(data_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("sn")
    run_train(train_args(data_bin, d / "sn", updates=5, ))
    run_train(train_args(data_bin, d / "child", "--magic-arch", "ffn,ffn,conv3,mha2d32",
                         arch="magic_child", updates=2))
    return d


def test_scores_children_with_params_and_flops(trained, tmp_path):
    out = tmp_path / "c.json"
    proc = _children(str(trained / "sn" / "checkpoint_last.pt"), "--num-random", "3",
                     "--arch", "ffn,ffn,ffn,ffn", "--arch", "conv3,conv3,conv3,conv3",
                     "--json-out", str(out), "--max-batches", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.load(open(out))["children"]
    assert len(rows) == 5 and rows[0]["arch"] == "ffn,ffn,ffn,ffn"
    assert all(3.0 < r["valid_loss"] < 8.0 for r in rows)  # log2(vocab ~60) ~ 5.9 at init
    assert rows[0]["params"] > rows[1]["params"] and rows[0]["flops"] > rows[1]["flops"]
    assert "ffn,ffn,ffn,ffn" in proc.stdout
    # same children, same batches: the scores are deterministic
    again = _children(str(trained / "sn" / "checkpoint_last.pt"), "--num-random", "3",
                      "--arch", "ffn,ffn,ffn,ffn", "--arch", "conv3,conv3,conv3,conv3",
                      "--json-out", str(out), "--max-batches", "2")
    assert json.load(open(out))["children"] == rows, again.stderr[-500:]


@pytest.mark.parametrize("which,args,needle", [
    ("child", [], "expected a magic_supernet checkpoint"),
    ("sn", ["--arch", "ffn,ffn"], "has 2 layers: expected 4"),
    ("missing", [], "does not exist"),
])
def test_bad_inputs(trained, which, args, needle):
    proc = _children(str(trained / which / "checkpoint_last.pt"), "--num-random", "1", *args)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr[-2000:]
