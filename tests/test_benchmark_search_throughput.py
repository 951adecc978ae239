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


def test_writes_json_and_replaces_md_section(bench, tmp_path):
    out_json = tmp_path / "res" / "search_throughput.json"
    out_json.parent.mkdir()
    out_json.write_text(json.dumps({"other_benchmark": 42}))
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nhand-written intro\n")
    work = tmp_path / "work"
    common = ["--json-out", str(out_json), "--results-md", str(md)]

    assert bench.main(TOY + common + ["--work-dir", str(work)]) == 0
    res = json.loads(out_json.read_text())
    assert res["other_benchmark"] == 42
    r = res["search_over_forward"]
    assert isinstance(r, float) and math.isfinite(r) and r > 0
    d = res["search_throughput"]
    assert d["children_scored"] == len(d["children"]) >= 4
    assert all(math.isfinite(x) and x > 0 for x in d["forward_ms_per_child"])
    text = md.read_text()
    assert text.startswith("# Results\n\nhand-written intro\n")
    assert text.count(bench.MD_BEGIN) == 1 and text.count(bench.MD_END) == 1
    assert "search_over_forward" in text and ("PASS" in text or "FAIL" in text)

    # Rerun on the existing checkpoint (--checkpoint/--data): the section is replaced.
    ckpt = work / "checkpoints" / "checkpoint_last.pt"
    assert ckpt.is_file()
    rc = bench.main(TOY + common + ["--checkpoint", str(ckpt),
                                    "--data", str(work / "data-bin"), "--check"])
    assert rc in (0, 1)
    res2 = json.loads(out_json.read_text())
    assert (rc == 0) == res2["pass"]
    assert res2["search_throughput"]["config"]["checkpoint"] == str(ckpt)
    text2 = md.read_text()
    assert text2.count(bench.MD_BEGIN) == 1 and text2.count(bench.MD_END) == 1
    assert str(ckpt) in text2 and text2.startswith("# Results\n\nhand-written intro\n")
