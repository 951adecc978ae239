"""benchmarks/scale.py at the tiny preset: the output format (JSON keys under the
device/precision key, merged; its RESULTS.md section, replaced on a rerun) and
the facts its memory columns rest on, checked on the numbers it wrote: the
super-net's gradients, optimizer state and activations are its path's (equal
to the child's), its extra weights are exactly the off-path candidates, and the
child and RoBERTa of the same shape have the same parameters."""

import json
import math

import pytest

TINY = ["--presets", "tiny", "--batch-size", "2", "--seq-len", "32", "--vocab", "600",
        "--rounds", "1", "--warmup", "1", "--batches", "1", "--probe-updates", "2",
        "--data-seconds", "1", "--threads", "1"]
KEYS = ("child_over_roberta", "supernet_over_child", "supernet_memory_over_child",
        "anchor_over_bound")


@pytest.fixture(scope="module")
def bench():
    from benchmarks import scale

    return scale


@pytest.fixture(scope="module")
def run(bench, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scale")
    out_json = tmp / "scale.json"
    out_json.write_text(json.dumps({"cuda-fp32": {"kept": True}}))
    md = tmp / "RESULTS.md"
    md.write_text("# Results\n\nhand-written intro\n")
    # no data-bin: the script makes its own from the packaged text
    argv = TINY + ["--json-out", str(out_json), "--results-md", str(md),
                   "--data", str(tmp / "missing-data-bin")]
    assert bench.main(argv) == 0
    return bench, argv, out_json, md


def test_json_has_the_issue_keys_per_device_and_precision(run):
    _, _, out_json, _ = run
    res = json.loads(out_json.read_text())
    assert res["cuda-fp32"] == {"kept": True}  # other runs' keys are merged, not lost
    r = res["cpu-fp32"]
    for key in KEYS:
        assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, key
        assert isinstance(r["pass"][key], bool)
    assert r["device"] == "cpu" and r["precision"] == "fp32"
    assert r["headline_preset"] == "tiny" and r["command"].startswith("python benchmarks/scale.py")
    p = r["presets"]["tiny"]
    assert p["arch"] == "magic_supernet_tiny" and p["layers"] == 8 and p["hidden"] == 128
    assert p["path"] == ",".join(["mha2", "ffn"] * 4) and p["roberta_layers"] == 4
    # the headline values are the preset's, and each ratio is what its times say
    assert r["child_over_roberta"] == p["child_over_roberta"]["value"]
    ms = p["median_ms"]
    assert set(ms) == {"supernet", "child", "roberta", "anchor", "anchor_inference_mode"}
    assert p["supernet_over_child"]["value"] == pytest.approx(
        ms["supernet"] / ms["child"], rel=2e-3)
    assert p["anchor_over_bound"]["value"] == pytest.approx(
        ms["anchor"] / ms["supernet"] / p["anchor_flops_fraction_bound"], rel=5e-3)
    # one round: the per-round ratio is the ratio of the two calls
    r1 = p["supernet_over_child"]
    assert len(r1["per_round"]) == 1 and r1["per_round"][0] == pytest.approx(r1["value"], rel=2e-3)
    assert r1["min_over_min"] == pytest.approx(r1["value"], rel=2e-3)
    # an eval-mode forward of the body is about a third of an update's FLOPs
    assert 0.2 < p["anchor_flops_fraction_bound"] < 0.34
    # the child held the super-net's path weights: the same loss, the same gradients
    assert p["same_function"]["loss_abs_diff"] <= 1e-5
    assert p["same_function"]["grad_max_abs_diff"] <= 1e-5
    d = r["data_pipeline"]
    assert d["source"] in ("kjv", "synthetic") and d["words"] > 0 and d["words_per_s"] > 0
    assert r["data_over_update"] == pytest.approx(
        d["words_per_s"] / p["update_tokens_per_s"]["supernet"], rel=0.01)


def test_memory_columns_rest_on_the_path(run):
    _, _, out_json, _ = run
    p = json.loads(out_json.read_text())["cpu-fp32"]["presets"]["tiny"]
    m = p["memory"]
    sup, child, rob = m["supernet"], m["child"], m["roberta"]
    # the same architecture: the child and fairseq's RoBERTa hold equal parameters
    assert child["params"] == rob["params"] == p["params"]["child"] == p["params"]["roberta"]
    assert sup["params"] == p["params"]["supernet"] > 2 * child["params"]
    # off the path: no gradient, no optimizer state, no activation
    assert sup["params_trained"] == child["params"]
    assert sup["grad_bytes"] == child["grad_bytes"] == 4 * child["params"]
    assert sup["optimizer_state_bytes"] == child["optimizer_state_bytes"] > 0
    assert sup["activation_bytes"] == child["activation_bytes"] > 0
    assert sup["weight_bytes"] - child["weight_bytes"] == 4 * (sup["params"] - child["params"])
    mem = p["supernet_memory_over_child"]
    assert mem["measure"] == "rss_peak_bytes"
    assert mem["value"] == pytest.approx(sup["rss_peak_bytes"] / child["rss_peak_bytes"],
                                         abs=1e-4)
    assert mem["extra_weight_bytes"] == sup["weight_bytes"] - child["weight_bytes"]
    st = mem["steady_state_bytes"]
    # every candidate trained once: Adam's two moments (+ step) for all of them
    assert st["optimizer_state_bytes"] >= 2 * 4 * sup["params"]
    for r in (sup, child, rob):
        assert r["rss_peak_bytes"] > r["rss_before_build_bytes"] > 0
        assert r["cuda_max_allocated_bytes"] is None


def test_markdown_section_replaced_on_rerun(run):
    bench, argv, out_json, md = run
    text = md.read_text()
    assert text.startswith("# Results\n\nhand-written intro\n")
    assert text.count("<!-- scale:cpu-fp32:begin -->") == 1
    for needle in ("### tiny: `magic_supernet_tiny`", "| supernet |", "| roberta |",
                   "child update / RoBERTa update", "super-net / child peak memory",
                   "Data pipeline (masked_lm"):
        assert needle in text, needle
    assert bench.main(argv + ["--no-probes"]) == 0
    text = md.read_text()
    assert text.count("<!-- scale:cpu-fp32:begin -->") == 1
    assert text.count("<!-- scale:cpu-fp32:end -->") == 1
    assert "super-net / child peak memory" not in text  # no probes this time
    assert "supernet_memory_over_child" not in json.loads(out_json.read_text())["cpu-fp32"]


def test_bad_values_fail_naming_them(bench, capsys):
    for argv, needle in ((["--presets", "huge"], "--presets huge"),
                         (["--batch-size", "0"], "--batch-size 0"),
                         (["--presets", "tiny", "--headline", "base"], "--headline base")):
        with pytest.raises(SystemExit) as e:
            bench.parse_args(argv)
        assert e.value.code == 2
        assert needle in capsys.readouterr().err
