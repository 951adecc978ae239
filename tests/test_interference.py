"""magic-interference: gradient cosine similarity of children on a shared operator.

Exact cases on a hand-made torch chain (cosines computed by hand), the path
rules on the paper's table6 space, and the command on the shared tiny
super-net (4 layers of mha2d32, ffn, conv3, conv5 at hidden 32).
"""

import contextlib
import hashlib
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from fairseq_magic.core.interference import (build_case, check_case, cosine_matrix,
                                             label_aligned_mean, mean_off_diagonal,
                                             path_gradients, plan_cases, valid_layers)
from fairseq_magic.core.space import MagicConfigError, SearchSpace

from conftest import cli_in_process

R2 = 1 / math.sqrt(2)


# ---- a hand-computable chain ----

class ToyChain(nn.Module):
    """3 layers of bias-free 2x2 linear maps; loss = sum of outputs. For a path
    (g, A, I): dL/dW_g = (A^T 1) x^T."""

    def __init__(self):
        super().__init__()
        mats = {
            0: {"g": torch.eye(2), "h": 2 * torch.eye(2)},
            1: {"p": torch.eye(2), "q": torch.diag(torch.tensor([1.0, 0.0])),
                "r": torch.diag(torch.tensor([0.0, -1.0]))},
            2: {"z": torch.eye(2)},
        }
        self.layers = nn.ModuleList()
        for i in range(3):
            d = nn.ModuleDict()
            for name, w in mats[i].items():
                lin = nn.Linear(2, 2, bias=False)
                with torch.no_grad():
                    lin.weight.copy_(w)
                d[name] = lin
            self.layers.append(d)
        self.dropout = nn.Dropout(0.5)  # must be off: gradients may differ only by path
        self.path = None

    def set_active_path(self, path):
        self.path = tuple(path)

    def get_active_path(self):
        return self.path

    def forward(self, x):
        for layer, op in zip(self.layers, self.path):
            x = layer[op](self.dropout(x))
        return x


def toy_loss(model, x):
    return model(x).sum(), x.size(0)


def test_hand_computed_cosines_and_nothing_else_touched():
    model = ToyChain().train()
    model.set_active_path(("h", "q", "z"))
    frozen = model.layers[2]["z"].weight
    frozen.requires_grad_(False)  # a flag the helper must put back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    og = list(model.layers[0]["g"].parameters())
    x = torch.ones(1, 2)
    paths = [("g", "p", "z"), ("g", "q", "z"), ("g", "r", "z"), ("g", "p", "z")]
    grads = path_gradients(model, og, paths, [x], toy_loss)
    assert grads[0].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert grads[1].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert grads[2].tolist() == [0.0, 0.0, -1.0, -1.0]
    s = cosine_matrix(grads)
    want = [[1, R2, -R2, 1], [R2, 1, 0, R2], [-R2, 0, 1, -R2], [1, R2, -R2, 1]]
    for row, wrow in zip(s, want):
        assert row == pytest.approx(wrow, abs=1e-12)
    # the 12 off-diagonal cells of ``want`` sum to 2: the +-1/sqrt(2) cancel, two 1s remain
    assert mean_off_diagonal(s) == pytest.approx(2 / 12, abs=1e-12)
    # nothing else got a gradient, flags, mode, path and weights are as before
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == \
        [p is not frozen for p in model.parameters()]
    assert model.training and model.get_active_path() == ("h", "q", "z")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_pieces_give_the_one_batch_gradient_and_bad_calls_fail():
    model = ToyChain()
    og = list(model.layers[0]["g"].parameters())
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    whole = path_gradients(model, og, [("g", "q", "z")], [x], toy_loss)[0]
    pieces = path_gradients(model, og, [("g", "q", "z")], [x[:2], x[2:]], toy_loss)[0]
    # mean over the 3 rows of (A^T 1) x^T with A^T 1 = (1, 0)
    assert whole.tolist() == pytest.approx([1.5, 0.5, 0.0, 0.0], abs=1e-12)
    assert torch.allclose(whole, pieces, atol=1e-12)
    with pytest.raises(ValueError, match="does not use the given parameters"):
        path_gradients(model, og, [("h", "q", "z")], [x], toy_loss)
    with pytest.raises(ValueError, match="subset of model.parameters"):
        path_gradients(model, [nn.Parameter(torch.ones(2))], [("g", "q", "z")], [x], toy_loss)
    with pytest.raises(ValueError, match="zero gradient"):
        cosine_matrix([torch.ones(3), torch.zeros(3)])
    # the failed calls restored everything too
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


# ---- path rules ----

TABLE6 = SearchSpace.from_config("table6", 12, 768)


@pytest.mark.parametrize("m", [1, 2, 4])
def test_paths_agree_outside_the_varied_layers(m):
    for seed in range(20):
        rng = random.Random(seed)
        j = rng.randint(1, 12 - m)
        case = build_case(TABLE6, j, m, random.Random(f"case{seed}"))
        varied = set(range(j + 1, j + m + 1))
        assert case.varied_layers == sorted(varied) and len(case.paths) == 6
        for p in case.paths:
            TABLE6.validate(p)
            assert p[j - 1] == case.op  # o_g at layer j (1-based)
            assert [p[k - 1] for k in range(1, 13) if k not in varied] == \
                [case.paths[0][k - 1] for k in range(1, 13) if k not in varied]
        for a in range(6):  # every pair differs in every varied layer: in exactly m operators
            for b in range(a + 1, 6):
                assert len(case.paths[a].diff(case.paths[b])) == m
        if m == 1:  # rows of Figure 2a: the candidates in the space's order
            assert case.labels == list(TABLE6.candidates)
    again = build_case(TABLE6, 3, 2, random.Random("x"), children=4, op="conv5")
    assert again == build_case(TABLE6, 3, 2, random.Random("x"), children=4, op="conv5")
    assert len(again.paths) == 4 and again.op == "conv5"


def test_plan_is_deterministic_and_paired_across_m():
    plan = plan_cases(TABLE6, [1, 2, 4], repeats=5, seed=7)
    assert plan == plan_cases(TABLE6, [1, 2, 4], repeats=5, seed=7)
    assert plan != plan_cases(TABLE6, [1, 2, 4], repeats=5, seed=8)
    assert len(plan) == 15
    for r in range(5):
        same = [c for c in plan if c.repeat == r]
        assert len({(c.layer, c.op) for c in same}) == 1
        j = same[0].layer
        assert j + 4 <= 12
        # the layers no m varies are the same for every m of a repeat
        keep = [k for k in range(1, 13) if not j < k <= j + 4]
        assert len({tuple(c.paths[0][k - 1] for k in keep) for c in same}) == 1
    assert len({(c.layer, c.op) for c in plan}) > 1  # repeats draw o_g and j afresh
    swept = plan_cases(TABLE6, [1, 3], repeats=2, seed=0, by_layer=True)
    assert sorted({c.layer for c in swept if c.m == 1}) == list(range(1, 12))
    assert sorted({c.layer for c in swept if c.m == 3}) == list(range(1, 10))
    fixed = plan_cases(TABLE6, [2], repeats=3, seed=0, layer=5, op="ffn832")
    assert {(c.layer, c.op) for c in fixed} == {(5, "ffn832")}


def test_bad_requests_name_the_value():
    shrunk = SearchSpace(["ffn", "conv3", "conv5"], 4, 32,
                         choices=[["ffn", "conv3"], ["ffn"], ["ffn", "conv3", "conv5"],
                                  ["conv3", "conv5"]])
    with pytest.raises(MagicConfigError, match=r"--layer 11 with --m 2: .*beyond the last layer 12"):
        check_case(TABLE6, 11, 2)
    with pytest.raises(MagicConfigError, match=r"--children 1: expected >= 2"):
        plan_cases(TABLE6, [1], 1, 0, children=1)
    with pytest.raises(MagicConfigError, match=r"--children 7: layer 4 offers only 6"):
        check_case(TABLE6, 3, 1, children=7)
    with pytest.raises(MagicConfigError, match=r"unknown operator 'mha7' for o_g \(--op\)"):
        plan_cases(TABLE6, [1], 1, 0, op="mha7")
    with pytest.raises(MagicConfigError, match=r"--op 'attention'"):
        plan_cases(TABLE6, [1], 1, 0, op="attention")
    with pytest.raises(MagicConfigError, match=r"layer 2 offers only \['ffn'\]"):
        plan_cases(shrunk, [1], 1, 0, layer=1)
    with pytest.raises(MagicConfigError, match=r"'conv5' \(--op\) is not allowed in layer 1"):
        check_case(shrunk, 1, 1, op="conv5")
    with pytest.raises(MagicConfigError, match=r"--m 0"):
        plan_cases(TABLE6, [0], 1, 0)
    # a random layer avoids the single-operator layer; none left -> one message
    assert valid_layers(shrunk, 1) == [2, 3]
    assert {c.layer for c in plan_cases(shrunk, [1], 10, 0)} <= {2, 3}
    with pytest.raises(MagicConfigError, match=r"no layer j can hold o_g with --m 3"):
        plan_cases(shrunk, [3], 1, 0)


def test_cosine_and_label_aligned_average():
    s = cosine_matrix([[1.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    assert s[0] == pytest.approx([1.0, R2, 1.0]) and s[1][1] == pytest.approx(1.0)
    recs = [{"labels": ["a", "b"], "matrix": [[1.0, 0.2], [0.2, 1.0]]},
            {"labels": ["a", "c"], "matrix": [[1.0, 0.6], [0.6, 1.0]]},
            {"labels": ["a", "b"], "matrix": [[1.0, 0.4], [0.4, 1.0]]}]
    h = label_aligned_mean(recs, ["a", "b", "c"])
    assert h["matrix"][0] == pytest.approx([1.0, 0.3, 0.6])
    assert h["matrix"][1][2] is None and h["counts"][0] == [3, 2, 1]


# ---- the real super-net ----

def test_supernet_gradients_only_on_og(trained_supernet):
    from fairseq_magic.cli.interference import fixed_batch
    from fairseq_magic.evaluation import load_supernet
    from fairseq_magic.model_utils import mlm_loss

    model, task, _, _ = load_supernet(trained_supernet)
    model.train()
    model.set_active_path("ffn,ffn,ffn,ffn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pad = model.encoder.dictionary.pad()

    def loss_fn(m, sample):
        return mlm_loss(m, sample, pad)[:2]

    case = build_case(model.search_space, 2, 1, random.Random(0), op="conv3")
    paths = list(case.paths) + [case.paths[0]]  # the first child again, separately
    og = list(model.sentence_encoder.layers[1].candidates["conv3"].parameters())
    whole, n = fixed_batch(task, "valid", 16, 16, "cpu")
    pieces, _ = fixed_batch(task, "valid", 16, 5, "cpu")
    assert n == 16 and len(whole) == 1 and len(pieces) == 4
    grads = path_gradients(model, og, paths, whole, loss_fn)
    s = cosine_matrix(grads)
    for i in range(5):
        assert s[i][i] == pytest.approx(1.0, abs=1e-12)
    assert s[0][4] == pytest.approx(1.0, abs=1e-9)  # same child, separate passes
    off = [s[i][k] for i in range(4) for k in range(4) if i != k]
    assert all(-1.0 <= v < 1.0 - 1e-7 for v in off)  # the paths do change the gradient
    # the batch in pieces of 5 is the same batch: the same gradient up to float32
    # rounding (other matmul shapes; measured 2.4e-7 relative)
    again = path_gradients(model, og, paths[:1], pieces, loss_fn)[0]
    assert float((again - grads[0]).norm() / grads[0].norm()) < 1e-5
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert model.training and str(model.get_active_path()) == "ffn,ffn,ffn,ffn"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_table6_space_in_process(data_bin):
    from conftest import build_in_process, masked_batch
    from fairseq_magic.model_utils import mlm_loss

    task, model, _ = build_in_process(data_bin, "--magic-ops", "table6",
                                      "--encoder-embed-dim", "48")
    space = model.search_space
    assert space.candidates == ("mha6d24", "mha8d24", "ffn48", "ffn52", "conv3", "conv5")
    case = plan_cases(space, [1], 1, 0, layer=1, op="mha8d24")[0]
    pad = task.source_dictionary.pad()
    og = model.sentence_encoder.layers[0].candidates["mha8d24"].parameters()
    grads = path_gradients(model, og, case.paths, [masked_batch(task, n=8)],
                           lambda m, b: mlm_loss(m, b, pad)[:2])
    s = cosine_matrix(grads)
    assert case.labels == list(space.candidates) and len(s) == 6
    assert all(s[i][i] == pytest.approx(1.0, abs=1e-12) for i in range(6))
    assert all(-1.0 <= s[i][k] < 1.0 for i in range(6) for k in range(6) if i != k)


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _inprocess(*args):
    """cli_main in-process: (exit code, stdout, stderr)."""
    return cli_in_process("fairseq_magic.cli.interference", "magic-interference", *args)


RUN = ["--m", "1", "2", "--repeats", "2", "--by-layer", "--sentences", "12",
       "--batch-size", "5", "--seed", "3", "--no-progress"]


def test_command_end_to_end_and_deterministic(trained_supernet, tmp_path):
    digest = _sha(trained_supernet)
    script = os.path.join(os.path.dirname(sys.executable), "magic-interference")
    cmd = [script] if os.path.exists(script) else [sys.executable, "-m",
                                                    "fairseq_magic.cli.interference"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([*cmd, trained_supernet, "--out", str(tmp_path / "a"), *RUN],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _sha(trained_supernet) == digest  # the super-net is only read
    res = json.load(open(tmp_path / "a" / "interference.json"))
    for name in ("heatmap.png", "similarity_vs_m.png", "similarity_vs_layer.png"):
        assert (tmp_path / "a" / name).stat().st_size > 1000
    assert res["layer_numbering"].startswith("1-based")
    assert res["batch"] == {"sentences": 12, "masked_tokens": res["batch"]["masked_tokens"],
                            "pieces": 3}
    cases = res["cases"]
    # 4 layers: m = 1 fits j = 1..3, m = 2 fits j = 1..2; 2 repeats each
    assert sorted((c["m"], c["layer"]) for c in cases) == \
        sorted([(1, j) for j in (1, 2, 3)] * 2 + [(2, j) for j in (1, 2)] * 2)
    for c in cases:
        mat, paths = c["matrix"], [p.split(",") for p in c["paths"]]
        assert len(mat) == len(paths) == 4 and c["og_params"] > 0
        assert all(mat[i][i] == pytest.approx(1.0, abs=1e-9) for i in range(4))
        assert all(-1.0 <= mat[i][k] < 1.0 for i in range(4) for k in range(4) if i != k)
        assert all(p[c["layer"] - 1] == c["op"] for p in paths)
        assert c["varied_layers"] == list(range(c["layer"] + 1, c["layer"] + c["m"] + 1))
        assert c["mean_off_diagonal"] == pytest.approx(
            sum(mat[i][k] for i in range(4) for k in range(4) if i != k) / 12)
    s = res["summary"]
    assert s["by_m"]["1"]["n"] == 6 and s["by_m"]["2"]["n"] == 4
    assert s["by_m"]["2"]["mean"] == pytest.approx(
        sum(c["mean_off_diagonal"] for c in cases if c["m"] == 2) / 4)
    assert sorted(s["by_layer"]["1"]) == ["1", "2", "3"]
    assert s["heatmap"]["labels"] == ["mha2d32", "ffn", "conv3", "conv5"]
    assert s["heatmap"]["counts"][0][1] == 6
    assert "mean off-diag" in proc.stdout

    # the same command in this process: the same numbers
    code, _, err = _inprocess(trained_supernet, "--out", tmp_path / "b", *RUN)
    assert code == 0, err[-2000:]
    again = json.load(open(tmp_path / "b" / "interference.json"))
    assert [c["paths"] for c in again["cases"]] == [c["paths"] for c in cases]
    for c, d in zip(again["cases"], cases):
        for row, drow in zip(c["matrix"], d["matrix"]):
            assert row == pytest.approx(drow, rel=1e-6, abs=1e-9)
    assert _sha(trained_supernet) == digest


@pytest.fixture(scope="module")
def odd_checkpoints(trained_supernet, tmp_path_factory):
    """A copy of the super-net whose stored (shrunk) space leaves layer 2 with
    one operator, and a magic_child export (not a super-net)."""
    from fairseq_magic.cli import export

    d = tmp_path_factory.mktemp("interference_ckpts")
    state = torch.load(trained_supernet, weights_only=False)
    space = state["extra_state"]["MagicTask"]["search_space"]
    space["choices"][1] = ["ffn"]
    shrunk = str(d / "shrunk.pt")
    torch.save(state, shrunk)
    with contextlib.redirect_stdout(io.StringIO()):
        export.main([trained_supernet, "--arch", "ffn,conv3,conv5,mha2d32",
                     "--out", str(d / "child")])
    return {"shrunk": shrunk, "child": str(d / "child" / "model.pt"),
            "sn": trained_supernet, "missing": str(d / "nope.pt")}


@pytest.mark.parametrize("which,args,needle", [
    ("sn", ["--layer", "4"], "--layer 4 with --m 1: the children would differ in layers 5..5, "
                             "beyond the last layer 4"),
    ("sn", ["--layer", "2", "--m", "3"], "beyond the last layer 4"),
    ("sn", ["--children", "1"], "--children 1: expected >= 2"),
    ("sn", ["--children", "5"], "--children 5: layer"),
    ("sn", ["--op", "conv7"], "unknown operator 'conv7' for o_g (--op)"),
    ("sn", ["--sentences", "100000"], "--sentences 100000: split 'valid' has only"),
    ("sn", ["--layer", "1", "--by-layer"], "--layer and --by-layer exclude each other"),
    ("shrunk", ["--layer", "1"], "layer 2 offers only ['ffn']"),
    ("child", [], "expected a magic_supernet checkpoint"),
    ("missing", [], "does not exist"),
])
def test_bad_inputs_fail_before_any_work(odd_checkpoints, tmp_path, monkeypatch, which, args, needle):
    from fairseq_magic.cli import interference

    calls = []
    monkeypatch.setattr(interference, "path_gradients", lambda *a, **k: calls.append(a))
    digest = _sha(odd_checkpoints[which]) if which != "missing" else None
    code, _, err = _inprocess(odd_checkpoints[which], "--out", tmp_path / "o", "--no-progress",
                              *args)
    assert code == 2 and needle in err, err[-2000:]
    assert not calls and not (tmp_path / "o").exists()
    if digest:
        assert _sha(odd_checkpoints[which]) == digest


def test_shrunk_space_random_layer_avoids_the_single_operator_layer(odd_checkpoints, tmp_path):
    code, _, err = _inprocess(odd_checkpoints["shrunk"], "--out", tmp_path / "s", "--repeats", "3",
                              "--sentences", "4", "--no-progress")
    assert code == 0, err[-2000:]
    res = json.load(open(tmp_path / "s" / "interference.json"))
    assert {c["layer"] for c in res["cases"]} <= {2, 3}
    assert res["space"]["choices"][1] == ["ffn"]
    assert not (tmp_path / "s" / "similarity_vs_layer.png").exists()


def test_default_batch_takes_every_usable_sentence(monkeypatch):
    """Sentences longer than the model's positions are skipped by the batch
    iterator: the default (--sentences unset) then takes every usable one, while
    an explicit count that cannot be met still fails naming it."""
    import torch

    from fairseq_magic import evaluation
    from fairseq_magic.cli import interference as itf
    from fairseq_magic.core.space import MagicConfigError

    class Task:
        datasets = {"valid": list(range(380))}

        def dataset(self, split):
            return self.datasets[split]

    def piece(n):
        return {"net_input": {"src_tokens": torch.zeros(n, 4, dtype=torch.long)}}

    # 214 usable of 380: pieces of 32 then a last one of 22
    monkeypatch.setattr(evaluation, "fixed_batches",
                        lambda task, split, max_batches, batch_size, device:
                        [piece(32)] * 6 + [piece(22)])
    out, used = itf.fixed_batch(Task(), "valid", None, 32, "cpu")
    assert used == 214 and sum(p["net_input"]["src_tokens"].size(0) for p in out) == 214
    out, used = itf.fixed_batch(Task(), "valid", 100, 32, "cpu")
    assert used == 100
    with pytest.raises(MagicConfigError, match="--sentences 300: only 214 usable"):
        itf.fixed_batch(Task(), "valid", 300, 32, "cpu")
