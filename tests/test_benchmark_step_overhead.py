"""benchmarks/step_overhead.py runs end to end on a toy config and writes its
results (JSON merged, RESULTS.md sections replaced on rerun): the super-net vs
child part and the MAGIC parts (MAGIC-AT vs SPOS through the real task code,
anchor validation cost)."""

import importlib.util
import json
import math
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "step_overhead.py")

TOY = [
    "--layers", "2", "--hidden", "32", "--ops", "mha2d32,ffn,conv3,conv5",
    "--path", "conv3,mha2d32", "--vocab", "64", "--batch-size", "4", "--seq-len", "16",
    "--rounds", "2", "--updates-per-round", "3", "--warmup", "1", "--batches", "2",
    "--threads", "1",
    # MAGIC parts: a small data-bin, a small anchor subset, 2 timed evaluations
    "--verses", "240", "--align-every", "2", "--anchor-valid-batches", "2",
    "--anchor-valid-batch-size", "4", "--anchor-evals", "2",
]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("step_overhead_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    # One data-bin for every run of this module (preprocessing is the slow bit).
    return str(tmp_path_factory.mktemp("step_overhead_data"))


def run(bench, tmp_path, data_dir, *extra):
    out_json, out_md = tmp_path / "res" / "step_overhead.json", tmp_path / "RESULTS.md"
    args = TOY + ["--json-out", str(out_json), "--results-md", str(out_md),
                  "--data-dir", data_dir, *extra]
    return bench.main(args), out_json, out_md


def finite_positive(x):
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_writes_json_and_replaces_md_section(bench, tmp_path, data_dir):
    out_json = tmp_path / "res" / "step_overhead.json"
    out_json.parent.mkdir()
    out_json.write_text(json.dumps({"other_benchmark": 42}))
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nhand-written intro\n")

    rc, out_json, out_md = run(bench, tmp_path, data_dir)
    assert rc == 0
    data = json.loads(out_json.read_text())
    ratio = data["supernet_over_child"]
    assert finite_positive(ratio)
    assert data["other_benchmark"] == 42  # merged, not overwritten
    assert data["parts"] == ["child", "magic_at", "anchor"]
    assert data["equivalence_check"]["loss_abs_diff"] <= 1e-5
    assert data["off_path_params_untouched"] is True
    assert data["config"]["path"] == "conv3,mha2d32"
    assert len(data["round_mean_ms"]["supernet"]) == len(data["round_mean_ms"]["child"]) == 2
    assert data["timed_updates_per_model"] == 6
    assert data["command"].startswith("python benchmarks/step_overhead.py --layers 2")

    # MAGIC parts
    magic = data["magic_at_over_spos"]
    fraction = data["anchor_validation_fraction"]
    assert finite_positive(magic) and finite_positive(fraction)
    d = data["magic_overhead"]
    assert d["command"] == data["command"]
    assert d["magic_at_over_spos"]["median"] == magic
    assert d["magic_at_over_spos"]["target"] == bench.MAGIC_AT_TARGET
    assert d["alignment_on"] == {"magic_at": [1], "spos": [0], "magic_a": [1]}
    assert finite_positive(d["magic_a_over_spos"]["paired_updates_median"])
    assert set(d["anchor_forward_median_ms"]) == {"magic_at", "magic_a"}  # SPOS has none
    assert all(finite_positive(v) for v in d["anchor_forward_median_ms"].values())
    assert d["same_initial_weights"] is True
    assert d["timed_updates_per_method"] == 6
    assert d["data"]["dictionary_size"] == 64
    for name in ("magic_at", "spos", "magic_a"):
        assert finite_positive(d["median_update_ms"][name])
        assert len(d["round_mean_ms"][name]) == 2
    a = d["anchor_validation"]
    assert a["fraction"] == fraction
    assert a["interval"] == bench.DEFAULT_ANCHOR_INTERVAL == 100  # the task's default
    assert (a["valid_batches"], a["valid_batch_size"], a["valid_sentences"]) == (2, 4, 8)
    assert len(a["eval_ms"]) == 2 and all(c >= 1 for c in a["score_calls_per_eval"])
    for key in ("eval_median_ms", "score_call_median_ms", "batch_build_ms"):
        assert finite_positive(a[key])
    assert fraction == pytest.approx(
        a["eval_median_ms"] / (a["interval"] * d["median_update_ms"]["magic_at"]))

    text = out_md.read_text()
    assert text.startswith("# Results\n\nhand-written intro\n")
    assert "## step_overhead: super-net vs child update time" in text
    assert "## step_overhead: MAGIC-AT vs SPOS" in text
    assert f"`{data['command']}`" in text
    assert f"{ratio:.3f}" in text  # the tables show the run's numbers
    assert f"{magic:.3f}" in text and f"{fraction:.4f}" in text

    rc, _, _ = run(bench, tmp_path, data_dir, "--seed", "2")
    assert rc == 0
    data2 = json.loads(out_json.read_text())
    text2 = out_md.read_text()
    assert text2.count("## step_overhead:") == 2
    for begin, end in ((bench.MD_BEGIN, bench.MD_END),
                       (bench.MAGIC_MD_BEGIN, bench.MAGIC_MD_END)):
        assert text2.count(begin) == 1 and text2.count(end) == 1
    assert "--seed 2" in text2 and "hand-written intro" in text2
    assert data2["config"]["seed"] == 2 and data2["other_benchmark"] == 42
    assert data2["magic_overhead"]["config"]["seed"] == 2
    assert data2["magic_overhead"]["data"]["reused"] is True  # same --data-dir, same text


def test_parts_and_check_flag(bench, tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(bench, "TARGET", 0.0)  # any real ratio is over this
    rc, out_json, out_md = run(bench, tmp_path, data_dir, "--check", "--parts", "child")
    assert rc == 1
    data = json.loads(out_json.read_text())
    assert data["pass"] is False and data["parts"] == ["child"]
    assert "magic_overhead" not in data and "magic_at_over_spos" not in data
    assert bench.MAGIC_MD_BEGIN not in out_md.read_text()

    # Only the anchor part: MAGIC-AT updates without SPOS; the child's results stay.
    monkeypatch.setattr(bench, "TARGET", 10.0)
    monkeypatch.setattr(bench, "ANCHOR_FRACTION_TARGET", 0.0)
    rc, _, _ = run(bench, tmp_path, data_dir, "--check", "--parts", "anchor")
    assert rc == 1
    data = json.loads(out_json.read_text())
    assert data["parts"] == ["anchor"]
    assert finite_positive(data["anchor_validation_fraction"])
    assert data["magic_overhead"]["anchor_validation"]["pass"] is False
    assert "magic_at_over_spos" not in data["magic_overhead"]
    assert "spos" not in data["magic_overhead"]["median_update_ms"]
    assert finite_positive(data["supernet_over_child"])  # kept from the first run
    text = out_md.read_text()
    assert text.count(bench.MD_BEGIN) == 1 and text.count(bench.MAGIC_MD_BEGIN) == 1
