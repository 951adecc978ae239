"""magic-search end to end on a tiny super-net (evolution, resume, fine-tune, errors)."""

import hashlib
import json
import sys

import pytest

from conftest import cli_in_process, reference_loss_bits

TINY = ["--population", "6", "--parents", "3", "--mutation-num", "4", "--crossover-num", "4",
        "--generations", "2", "--max-batches", "2", "--batch-size", "8", "--no-progress"]


def _search(*args):
    """magic-search in-process; exit codes and messages are the console script's."""
    return cli_in_process("fairseq_magic.cli.search", "magic-search", *args)


@pytest.fixture(scope="module")
def ckpt(trained_supernet):
    return trained_supernet  # read-only: the tests check it stays byte-identical


@pytest.fixture(scope="module")
def reference(ckpt):
    """spec -> MLM loss computed here on the search's batches (TINY: 2 x 8 sentences)."""
    from fairseq_magic.evaluation import fixed_batches, load_supernet

    model, task, _, _ = load_supernet(ckpt)
    batches = fixed_batches(task, "valid", 2, 8)
    return lambda spec: reference_loss_bits(model, spec, batches)


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_evolution_writes_results_and_resumes(ckpt, reference, tmp_path, monkeypatch):
    out = tmp_path / "evo"
    max_params = 14000
    proc = _search(ckpt, "--out", str(out), "--max-params", str(max_params), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.load(open(out / "search.json"))
    assert (out / "search.png").stat().st_size > 1000
    assert (out / "search_state.json").exists()
    assert 1 <= len(res["top_k"]) <= 5 and len(res["history"]) == 3
    assert res["num_evaluations"] == len(res["evaluated"]) >= 6
    assert all(r["params"] <= max_params for r in res["evaluated"])
    scores = [r["score"] for r in res["top_k"]]
    assert scores == sorted(scores)
    for r in res["top_k"]:  # shared-weight scores: the MLM loss computed by hand
        assert abs(r["score"] - reference(r["spec"])) < 1e-5, r
    assert res["top_k"][0]["spec"] in proc.stdout
    # --resume on a finished search: nothing is rescored, same result
    from fairseq_magic import evaluation

    calls = []
    monkeypatch.setattr(evaluation, "score_child", lambda *a: calls.append(a) or 0.0)
    again = _search(ckpt, "--out", str(out), "--max-params", str(max_params), "--resume", *TINY)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.load(open(out / "search.json")) == res
    assert calls == []
    monkeypatch.undo()
    # another config on the same directory is refused; no --resume is refused
    bad = _search(ckpt, "--out", str(out), "--max-params", str(max_params), "--resume",
                  *TINY, "--max-batches", "3")
    assert bad.returncode == 2 and "magic-search: error:" in bad.stderr, bad.stderr[-2000:]
    assert "max_batches: saved 2 vs now 3" in bad.stderr
    fresh = _search(ckpt, "--out", str(out), *TINY)
    assert fresh.returncode == 2 and "--resume" in fresh.stderr


def test_finetune_changes_the_scores_without_touching_the_supernet(ckpt, reference, tmp_path):
    before = _sha(ckpt)
    plain = _search(ckpt, "--out", str(tmp_path / "plain"), "--strategy", "random",
                    "--samples", "4", *TINY)
    assert plain.returncode == 0, plain.stderr[-3000:]
    base = {r["spec"]: r["score"]
            for r in json.load(open(tmp_path / "plain" / "search.json"))["evaluated"]}
    out = tmp_path / "ft"
    args = [ckpt, "--out", str(out), "--strategy", "random", "--samples", "4",
            "--finetune-steps", "2", "--finetune-lr", "1e-3", *TINY]
    proc = _search(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _sha(ckpt) == before
    res = json.load(open(out / "search.json"))
    assert res["num_evaluations"] == 4 and res["config"]["finetune_steps"] == 2
    tuned = {r["spec"]: r["score"] for r in res["evaluated"]}
    assert set(tuned) == set(base) and len(base) >= 3  # same children (same seed)
    for spec, score in base.items():
        assert abs(score - reference(spec)) < 1e-5  # without fine-tuning: shared weights
        # two private Adam steps at lr 1e-3 move a child's loss by ~0.05 bits here
        assert abs(tuned[spec] - score) > 1e-2, (spec, score, tuned[spec])
    # deterministic: the same search in another directory gives the same scores
    proc2 = _search(*[a if a != str(out) else str(tmp_path / "ft2") for a in args])
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert json.load(open(tmp_path / "ft2" / "search.json"))["top_k"] == res["top_k"]
    assert _sha(ckpt) == before


@pytest.mark.parametrize("args,needle", [
    (["--max-params", "100", "--min-flops", "1e15"], "is below the smallest child's"),
    (["--finetune-lr", "0"], "--finetune-lr"),
])
def test_bad_inputs(ckpt, tmp_path, args, needle):
    proc = _search(ckpt, "--out", str(tmp_path / "x"), *TINY, *args)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "magic-search: error:" in proc.stderr and needle in proc.stderr, proc.stderr[-2000:]
    if "--max-params" in args:  # both bounds named, with the achievable range
        assert "--min-flops" in proc.stderr and "Achievable: params" in proc.stderr
