"""scripts/plot_training.py: curves parsed from real fairseq-train logs (both
log formats), the unigram baseline against fairseq's own masked_lm samples,
the PNG and the command line."""

import importlib.util
import json
import math
import os

import pytest

from conftest import REPO, build_in_process, train_args, train_in_process

spec = importlib.util.spec_from_file_location(
    "plot_training", os.path.join(REPO, "scripts", "plot_training.py"))
pt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pt)

UPDATES = 8
MAGIC_AT = ["--magic-method", "magic_at", "--magic-anchor-interval", "2",
            "--magic-anchor-valid-batches", "1", "--magic-align-warmup-epochs", "0",
            "--validate-interval-updates", "4"]


def run(data_bin, tmp_path, fmt):
    """A short MAGIC-AT run (anchor every 2 updates, validation every 4),
    its log in ``fmt``; returns (log text, path log records)."""
    args = train_args(data_bin, tmp_path / fmt, *MAGIC_AT, "--magic-path-log",
                      tmp_path / fmt / "paths.jsonl", updates=UPDATES)
    args = [a for a in args if a != "--disable-validation"]
    args[args.index("--log-format") + 1] = fmt
    res = train_in_process(args)
    with open(tmp_path / fmt / "paths.jsonl") as f:
        paths = [json.loads(ln) for ln in f]
    return res.stdout, paths


@pytest.fixture(scope="module")
def logs(data_bin, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plotlogs")
    return {fmt: run(data_bin, tmp, fmt) for fmt in ("simple", "json")}, tmp


def test_parses_both_formats_alike_and_matches_the_path_log(logs):
    runs, _ = logs
    simple = pt.parse_log(runs["simple"][0].splitlines())
    js = pt.parse_log(runs["json"][0].splitlines())
    # one train_inner row per update (--log-interval 1), validation at 4 and 8
    assert [r["update"] for r in simple["train_inner"]] == list(range(1, UPDATES + 1))
    assert [r["update"] for r in simple["valid"]][:2] == [4, 8]
    for kind in ("train_inner", "valid"):
        assert [r["update"] for r in js[kind]] == [r["update"] for r in simple[kind]]
        for a, b in zip(simple[kind], js[kind]):
            # the same seeded run: equal up to the simple format's 3 decimals
            assert a["mlm_loss"] == pytest.approx(b["mlm_loss"], abs=1e-3), kind
            assert 0 < a["mlm_loss"] < 20
    # alignment starts with the first anchor (chosen at update 2)
    assert "align_loss" not in simple["train_inner"][0]
    assert all("align_loss" in r for r in simple["train_inner"][3:])
    # anchor evaluations: the anchor each one leaves is the anchor the path log
    # records for the next update (its "update" is 1-based, the evaluation's 0-based)
    ev = simple["anchor"]
    assert [e["update"] for e in ev] == [2, 4, 6] and ev[0]["first"]
    assert ev == js["anchor"]
    paths = {r["update"]: r["anchor"] for r in runs["simple"][1]}
    for e in ev:
        assert paths[e["update"] + 1] == e["anchor"]
        assert e["score"] == pytest.approx(
            min(v for _, _, v in e["candidates"] + ([["", 0, e["score"]]])), abs=1e-4)
    assert ev[-1]["replacements"] == sum(e["replaced"] for e in ev)
    changes = sum(paths[u] != paths[u - 1] for u in paths if u - 1 in paths
                  and paths[u - 1] is not None)
    assert changes == ev[-1]["replacements"]


def test_resumed_log_keeps_the_last_value(logs):
    runs, _ = logs
    lines = runs["simple"][0].splitlines()
    first = pt.parse_log(lines)["train_inner"]
    # a resumed run re-logs updates 5.. after its checkpoint: the later line wins
    redo = [ln.replace(f"mlm_loss={r['mlm_loss']:g}", "mlm_loss=1.5")
            for ln in lines for r in first[4:] if f"num_updates={r['update']}," in ln]
    assert len(redo) == UPDATES - 4
    again = pt.parse_log(lines + redo)["train_inner"]
    assert [r["update"] for r in again] == list(range(1, UPDATES + 1))
    assert [r["mlm_loss"] for r in again] == [r["mlm_loss"] for r in first[:4]] + [1.5] * 4


def test_unigram_baseline_is_the_masked_token_entropy(data_bin):
    """The baseline's counts are exactly the tokens of the samples fairseq's
    masked_lm builds (blocks + <s>, over-long ones dropped), and the masked
    positions fairseq draws follow that distribution."""
    import numpy as np

    tps = 10
    base = pt.unigram_baseline(data_bin, tps, "complete")
    task, _, _ = build_in_process(data_bin, "--tokens-per-sample", str(tps),
                                  "--sample-break-mode", "complete")
    blocks = task._load_dataset_split("train", 1, False)
    d = task.source_dictionary
    counts = np.zeros(len(d))
    kept = 0
    for i in range(len(blocks)):
        item = blocks[i].numpy()
        if len(item) <= tps:
            counts += np.bincount(item, minlength=len(d))
            kept += 1
    assert (base["train_samples"], base["train_tokens"]) == (kept, counts.sum())
    assert kept < len(blocks)  # some blocks are too long for 10 tokens: dropped
    p = counts[counts > 0] / counts.sum()
    assert base["train_bits"] == pytest.approx(-(p * np.log2(p)).sum(), abs=1e-9)
    # <s> and </s> are in it: the dict.txt counts alone give another number
    dict_counts = [int(ln.split()[1]) for ln in open(os.path.join(data_bin, "dict.txt"))]
    q = np.array(dict_counts) / sum(dict_counts)
    assert abs(base["train_bits"] + (q * np.log2(q)).sum()) > 0.05
    # the positions fairseq masks (three epochs of masks) are draws from that
    # distribution: their mean surprisal under it estimates the baseline without
    # bias, within a few standard errors
    task.load_dataset("train", combine=False, epoch=1)
    ds = task.dataset("train")
    surprisal = []
    logp = np.log2(np.maximum(counts, 1) / counts.sum())
    for epoch in (1, 2, 3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            if len(item["net_input.src_tokens"]) <= tps:
                t = item["target"].numpy()
                surprisal += list(-logp[t[t != d.pad()]])
    surprisal = np.array(surprisal)
    se = surprisal.std() / math.sqrt(len(surprisal))
    assert len(surprisal) > 1000 and 0 < se < 0.1
    assert abs(surprisal.mean() - base["train_bits"]) < 4 * se
    assert 0 < base["valid_bits"] < math.log2(len(d)) and base["valid_tokens"] > 0


def test_command_line_png_json_and_errors(logs, data_bin, tmp_path, capsys):
    runs, tmp = logs
    log = tmp_path / "train.log"
    log.write_text(runs["simple"][0])
    png, out = tmp_path / "curves.png", tmp_path / "curves.json"
    assert pt.main([str(log), "--out", str(png), "--json-out", str(out), "--data", data_bin,
                    "--tokens-per-sample", "32", "--sample-break-mode", "none"]) == 0
    printed = capsys.readouterr().out
    with open(png, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) == (800, 900)
    res = json.loads(out.read_text())
    s = res["summary"]
    base = pt.unigram_baseline(data_bin, 32, "none")["train_bits"]
    assert s["unigram"]["train_bits"] == pytest.approx(base)
    assert s["valid"]["below_unigram"] == pytest.approx(base - s["valid"]["mlm_loss"])
    assert s["train"]["update"] == UPDATES and s["anchor"]["evaluations"] == 3
    assert f"unigram baseline: {base:.3f} bits" in printed
    assert f"last validation loss (update {s['valid']['update']}): " \
           f"{s['valid']['mlm_loss']:.3f}" in printed
    # the baseline alone
    assert pt.main(["--data", data_bin, "--tokens-per-sample", "32",
                    "--sample-break-mode", "none"]) == 0
    assert capsys.readouterr().out.startswith(f"unigram baseline: {base:.3f}")
    # errors: one line naming the input, exit 2, nothing written
    empty = tmp_path / "empty.log"
    empty.write_text("nothing here\n")
    for argv, want in (([str(empty), "--out", str(tmp_path / "x.png")], "no train_inner"),
                       ([str(tmp_path / "nope.log"), "--out", str(tmp_path / "x.png")],
                        "nope.log' does not exist"),
                       (["--data", str(tmp_path)], "has no dict.txt"),
                       ([str(log)], "give --out")):
        assert pt.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("plot_training.py: error: ") and want in err, err
    assert not (tmp_path / "x.png").exists()
    assert math.isfinite(base)
