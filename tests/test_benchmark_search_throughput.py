"""benchmarks/search_throughput.py runs end to end on a toy config: it trains a
tiny super-net, runs magic-search in-process, times the bare forwards, writes
``search_over_forward`` to the JSON (merged) and its RESULTS.md section (once;
a rerun replaces it)."""

import importlib.util
import json
import math
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "search_throughput.py")

TOY = [
    "--verses", "240", "--vocab", "200", "--tokens-per-sample", "32", "--updates", "2",
    "--train-batch-size", "4", "--layers", "2", "--hidden", "32",
    "--ops", "mha2d32,ffn,conv3,conv5", "--population", "4", "--parents", "2",
    "--mutation-num", "2", "--crossover-num", "2", "--generations", "1",
    "--max-batches", "2", "--batch-size", "4", "--repeats", "1", "--threads", "1",
]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("search_throughput_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_writes_json_and_replaces_md_section(bench, tmp_path, monkeypatch):
    out_json = tmp_path / "res" / "search_throughput.json"
    out_json.parent.mkdir()
    out_json.write_text(json.dumps({"other_benchmark": 42}))
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nhand-written intro\n")
    work = tmp_path / "work"
    common = ["--json-out", str(out_json), "--results-md", str(md)]

    # A target no run can miss: PASS, and --check exits 0.
    monkeypatch.setattr(bench, "TARGET", 1e9)
    assert bench.main(TOY + common + ["--work-dir", str(work), "--check"]) == 0
    res = json.loads(out_json.read_text())
    assert res["other_benchmark"] == 42
    r = res["search_over_forward"]
    assert isinstance(r, float) and math.isfinite(r) and r > 0
    assert res["target"] == 1e9 and res["pass"] is True
    d = res["search_throughput"]
    assert d["children_scored"] == len(d["children"]) >= 4
    assert all(math.isfinite(x) and x > 0 for x in d["forward_ms_per_child"])
    # The ratio is the recorded search time over the recorded forward time
    # (per child, so the child count cancels); one repeat: the median is it.
    assert d["search_over_forward_per_repeat"] == [r]
    assert r == pytest.approx(d["search_ms_per_child"][0] / d["forward_ms_per_child"][0],
                              rel=1e-9)
    assert d["search_ms_per_child_median"] == d["search_ms_per_child"][0]
    text = md.read_text()
    assert text.startswith("# Results\n\nhand-written intro\n")
    assert text.count(bench.MD_BEGIN) == 1 and text.count(bench.MD_END) == 1
    assert f"| {r:.3f} | <= 1000000000.0 (PASS) |" in text and "FAIL" not in text
    assert f"| magic-search loop | {d['search_ms_per_child_median']:.2f} |" in text
    assert f"({d['children_scored']} children scored;" in text

    # Rerun on the existing checkpoint (--checkpoint/--data) against a target
    # no run can meet: FAIL, --check exits 1, the section is replaced.
    ckpt = work / "checkpoints" / "checkpoint_last.pt"
    assert ckpt.is_file()
    monkeypatch.setattr(bench, "TARGET", 0.0)
    rc = bench.main(TOY + common + ["--checkpoint", str(ckpt),
                                    "--data", str(work / "data-bin"), "--check"])
    assert rc == 1
    res2 = json.loads(out_json.read_text())
    assert res2["pass"] is False and res2["target"] == 0.0 and res2["other_benchmark"] == 42
    assert res2["search_throughput"]["config"]["checkpoint"] == str(ckpt)
    # the same children: the search is deterministic on the same weights
    assert res2["search_throughput"]["children"] == d["children"]
    text2 = md.read_text()
    assert text2.count(bench.MD_BEGIN) == 1 and text2.count(bench.MD_END) == 1
    assert str(ckpt) in text2 and text2.startswith("# Results\n\nhand-written intro\n")
    r2 = res2["search_over_forward"]
    assert f"| {r2:.3f} | <= 0.0 (FAIL) |" in text2 and "PASS" not in text2
