"""benchmarks/step_overhead.py runs end to end on a toy config and writes its
results (JSON merged, RESULTS.md sections replaced on rerun): the super-net vs
child part and the MAGIC parts (MAGIC-AT vs SPOS through the real task code,
anchor validation cost)."""

import importlib.util
import json
import math
import os
import statistics

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


def test_writes_json_and_replaces_md_section(bench, tmp_path, data_dir, monkeypatch):
    out_json = tmp_path / "res" / "step_overhead.json"
    out_json.parent.mkdir()
    out_json.write_text(json.dumps({"other_benchmark": 42}))
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nhand-written intro\n")

    # Targets no run can miss: every verdict PASS, --check exits 0.
    for name in ("TARGET", "MAGIC_AT_TARGET", "ANCHOR_FRACTION_TARGET"):
        monkeypatch.setattr(bench, name, 1e9)
    rc, out_json, out_md = run(bench, tmp_path, data_dir, "--check")
    assert rc == 0
    data = json.loads(out_json.read_text())
    ratio = data["supernet_over_child"]
    assert finite_positive(ratio)
    # Each ratio is the ratio of the timings recorded beside it.
    med, mins = data["median_update_ms"], data["min_update_ms"]
    assert ratio == pytest.approx(med["supernet"] / med["child"], rel=1e-9)
    assert data["supernet_over_child_min"] == pytest.approx(mins["supernet"] / mins["child"],
                                                            rel=1e-9)
    rounds = data["round_mean_ms"]  # rounded to 1e-3 ms in the JSON
    assert data["supernet_over_child_paired_rounds_median"] == pytest.approx(
        statistics.median(s / c for s, c in zip(rounds["supernet"], rounds["child"])),
        rel=1e-2)
    assert data["pass"] is True and data["target"] == 1e9
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
    assert a["eval_median_ms"] == pytest.approx(statistics.median(a["eval_ms"]), rel=1e-3)
    m, per = d["median_update_ms"], d["update_ms"]  # update_ms rounded to 1e-3 ms
    for name in ("magic_at", "spos", "magic_a"):
        assert len(per[name]) == 6
        assert m[name] == pytest.approx(statistics.median(per[name]), rel=1e-3, abs=1e-3)
    assert magic == pytest.approx(m["magic_at"] / m["spos"], rel=1e-9)
    assert d["magic_at_over_spos"]["paired_rounds_median"] == pytest.approx(
        statistics.median(a_ / s_ for a_, s_ in zip(d["round_mean_ms"]["magic_at"],
                                                    d["round_mean_ms"]["spos"])), rel=1e-2)
    assert d["magic_a_over_spos"]["paired_updates_median"] == pytest.approx(
        statistics.median(a_ / s_ for a_, s_ in zip(per["magic_a"], per["spos"])), rel=1e-2)
    assert d["magic_at_over_spos"]["pass"] is True and a["pass"] is True

    text = out_md.read_text()
    assert text.startswith("# Results\n\nhand-written intro\n")
    assert "## step_overhead: super-net vs child update time" in text
    assert "## step_overhead: MAGIC-AT vs SPOS" in text
    assert f"`{data['command']}`" in text
    # the tables show the run's numbers, each with its verdict
    assert f"| median (`supernet_over_child`) | {ratio:.3f} | <= 1000000000.0 (PASS) |" in text
    assert (f"| MAGIC-AT / SPOS, median (`magic_at_over_spos`) | {magic:.3f} | "
            "<= 1000000000.0 (PASS) |") in text
    assert f"| {fraction:.4f} | <= 1000000000.0 (PASS) |" in text
    assert "FAIL" not in text

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
    assert f"{data['supernet_over_child']:.3f} | <= 0.0 (FAIL) |" in out_md.read_text()

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
    assert f"| {data['anchor_validation_fraction']:.4f} | <= 0.0 (FAIL) |" in text
