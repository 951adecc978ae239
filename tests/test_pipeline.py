"""magic-pipeline: one config drives super-net -> search -> export -> re-train ->
GLUE; a rerun skips every finished stage, a changed value reruns its stage and
the ones after it, and bad config values fail before any work."""

import json
import os

import pytest
import torch

from conftest import REPO, cli_in_process, fairseq_preprocess, make_text

from fairseq_magic.cli import pipeline

MODULE = "fairseq_magic.cli.pipeline"


def sst2_rows(path, seed, n):
    make_text(path, n, seed)
    lines = [ln for ln in open(path).read().splitlines() if ln]
    return [f"{ln}\t{1 if 'king' in ln else 0}" for ln in lines]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """ROOT/spm.model beside ROOT/data-bin, as scripts/prepare_corpus.py lays
    them out, and ROOT/glue/SST-2 in the official layout."""
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("pipeline")
    make_text(root / "train.txt", 600, 0)
    make_text(root / "valid.txt", 60, 1)
    sentences = [ln.strip() for ln in open(root / "train.txt") if ln.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_prefix=str(root / "spm"), vocab_size=40,
        model_type="unigram", character_coverage=1.0, num_threads=1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(root / "spm.model"))
    for split in ("train", "valid"):
        with open(root / f"{split}.txt") as f, open(root / f"{split}.bpe", "w") as g:
            for line in f:
                g.write(" ".join(sp.encode(line.strip(), out_type=str)) + "\n")
    fairseq_preprocess("--only-source", "--trainpref", root / "train.bpe",
                       "--validpref", root / "valid.bpe", "--destdir", root / "data-bin",
                       "--workers", "1")
    sst = root / "glue" / "SST-2"
    sst.mkdir(parents=True)
    for split, seed, n in (("train", 21, 48), ("dev", 22, 16)):
        rows = sst2_rows(str(root / f"{split}-raw.txt"), seed, n)
        (sst / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return root


def config(corpus, out, **changes):
    cfg = {
        "out": str(out), "data": str(corpus / "data-bin"), "seed": 1, "device": "cpu",
        "tokens_per_sample": 32, "sample_break_mode": "none",
        "supernet": {"layers": 4, "hidden": 32, "ops": "mha2d32,ffn,conv3,conv5",
                     "method": "magic_at", "updates": 4, "warmup": 1, "batch_size": 8,
                     "anchor_interval": 2, "save_interval": 2},
        "search": {"strategy": "random", "samples": 6, "max_batches": 2, "batch_size": 8},
        "export": {"arch": "best"},
        "retrain": {"updates": 2, "warmup": 0, "batch_size": 8},
        "glue": {"tasks": ["SST-2"], "data": str(corpus / "glue"), "epochs": 1,
                 "batch_size": 16, "max_dev_examples": 12},
    }
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        (cfg[section] if section else cfg)[name] = value
    return cfg


def write(path, cfg, fmt="yaml"):
    import yaml

    path = str(path) + "." + fmt
    with open(path, "w") as f:
        if fmt == "json":
            json.dump(cfg, f)
        else:
            yaml.safe_dump(cfg, f)
    return path


def run(path, *flags):
    res = cli_in_process(MODULE, "magic-pipeline", path, *flags)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return res.stdout


def updates_of(ckpt):
    return torch.load(ckpt, map_location="cpu", weights_only=False)[
        "optimizer_history"][-1]["num_updates"]


def test_end_to_end_rerun_skips_and_a_change_reruns_from_its_stage(corpus, tmp_path):
    out = tmp_path / "out"
    path = write(tmp_path / "cfg", config(corpus, out))
    log = run(path)
    for st in pipeline.STAGES:
        marker = json.loads((out / f"{st}.stage.json").read_text())
        assert marker["status"] == "done" and marker["commands"], st
    # super-net: 4 updates, one path-log line each
    assert updates_of(out / "supernet" / "checkpoint_last.pt") == 4
    assert len((out / "supernet" / "paths.jsonl").read_text().splitlines()) == 4
    # the search's best child is the one exported, re-trained and fine-tuned
    search = json.loads((out / "search" / "search.json").read_text())
    best = min(search["evaluated"], key=lambda r: r["score"])["spec"]
    assert search["top_k"][0]["spec"] == best and search["num_evaluations"] == 6
    assert json.loads((out / "export" / "export.json").read_text())["arch"] == best
    assert (out / "export" / "spm.model").read_bytes() == (corpus / "spm.model").read_bytes()
    retrain_log = (out / "retrain.log").read_text()
    assert f"--magic-arch {best}" in retrain_log
    assert f"Loaded checkpoint {out / 'export' / 'model.pt'}" in retrain_log
    ckpt = out / "retrain" / "checkpoint_last.pt"
    assert updates_of(ckpt) == 2
    model = out / "retrain" / "model"
    assert (model / "model.pt").read_bytes() == ckpt.read_bytes()
    assert (model / "dict.txt").read_text() == (out / "export" / "dict.txt").read_text()
    result = json.loads((out / "glue" / "SST-2" / "result.json").read_text())
    assert result["arch"] == best and result["from"] == str(model / "model.pt")
    assert result["train_examples"] == 48 and result["dev_examples"] == [12]
    assert 0 <= result["scores"]["dev"]["accuracy"] <= 100
    assert "| this child | - | - | - |" in (out / "glue" / "results.md").read_text()
    assert "== stage 5/5 glue: done in" in log and "GLUE results:" in log

    # a rerun trains nothing: every stage is skipped, no file is touched
    outputs = {p: os.path.getmtime(p) for p in (
        out / "supernet" / "checkpoint_last.pt", out / "search" / "search.json",
        out / "export" / "model.pt", ckpt, out / "glue" / "SST-2" / "result.json")}
    logs = {st: (out / f"{st}.log").read_text() for st in pipeline.STAGES}
    log = run(path)
    for i, st in enumerate(pipeline.STAGES, 1):
        assert f"== stage {i}/5 {st}: done already" in log
    assert "$ " not in log  # no command ran
    assert {p: os.path.getmtime(p) for p in outputs} == outputs
    assert {st: (out / f"{st}.log").read_text() for st in pipeline.STAGES} == logs
    dry = run(path, "--dry-run")
    assert dry.count("would be skipped") == 5

    # one more re-training update: the first three stages stay, the last two rerun
    path = write(tmp_path / "cfg2", config(corpus, out, **{"retrain.updates": 3}), "json")
    dry = run(path, "--dry-run")
    assert dry.count("would be skipped") == 3 and dry.count("would run") == 2
    assert "--max-update 3" in dry
    log = run(path)
    for i, st in enumerate(pipeline.STAGES[:3], 1):
        assert f"== stage {i}/5 {st}: done already" in log
    assert "== stage 4/5 retrain: running" in log and "== stage 5/5 glue: running" in log
    assert updates_of(ckpt) == 3
    for p in list(outputs)[:3]:
        assert os.path.getmtime(p) == outputs[p], p
    assert os.path.getmtime(ckpt) > outputs[ckpt]
    assert os.path.getmtime(out / "glue" / "SST-2" / "result.json") > \
        outputs[out / "glue" / "SST-2" / "result.json"]
    # a search setting reruns the search and everything after it; an
    # interrupted stage (its marker says running) would resume
    path = write(tmp_path / "cfg3", config(corpus, out, **{"search.samples": 7}))
    dry = run(path, "--dry-run")
    assert dry.count("would be skipped") == 1 and dry.count("would run") == 4
    assert "--magic-arch SEARCH_BEST" in dry  # the child is found anew
    marker = out / "retrain.stage.json"
    m = json.loads(marker.read_text())
    marker.write_text(json.dumps(dict(m, status="running")))
    dry = run(write(tmp_path / "cfg2b", config(corpus, out, **{"retrain.updates": 3})),
              "--dry-run")
    assert "stage 4/5 retrain: interrupted: would resume" in dry
    assert "stage 5/5 glue: would run" in dry


def test_dry_run_prints_every_command_and_writes_nothing(corpus, tmp_path):
    out = tmp_path / "out"
    cfg = config(corpus, out, **{"search.max_params": "300k", "export.arch": "anchor"})
    dry = run(write(tmp_path / "cfg", cfg), "--dry-run")
    assert not out.exists()
    assert dry.count("would run") == 5
    lines = [ln.strip() for ln in dry.splitlines() if ln.startswith("  ") and "#" not in ln]
    progs = [ln.split()[0] for ln in lines]
    assert progs == ["fairseq-train", "magic-search", "magic-export", "fairseq-train",
                     "magic-glue"]
    assert "--magic-method magic_at" in lines[0] and "--max-update 4" in lines[0]
    assert "--max-params 300000" in lines[1] and "--samples 6" in lines[1]
    assert "--arch anchor" in lines[2]
    assert f"--spm {corpus / 'spm.model'}" in lines[2]  # found beside the data-bin
    assert "--finetune-from-model" in lines[3] and "--max-update 2" in lines[3]
    assert lines[4].startswith(f"magic-glue SST-2 {out / 'retrain' / 'model'} ")


@pytest.mark.parametrize("change, message", [
    ({"supernet.method": "magic_x"}, "supernet.method: 'magic_x', expected one of"),
    ({"supernet.updates": -3}, "supernet.updates: -3, expected >= 1"),
    ({"supernet.lr": 0}, "supernet.lr: 0.0, expected > 0"),
    ({"supernet.layers": "twelve"}, "supernet.layers: 'twelve' is not an integer"),
    ({"supernet.ops": "mha2d32,ffn,conv4"}, "supernet.ops: "),
    ({"supernet.t_k": 9}, "supernet.t_k: 9, expected <= supernet.layers (4)"),
    ({"supernet.lerning_rate": 1e-3}, "unknown key supernet.lerning_rate"),
    ({"serach": {}}, "unknown key 'serach'"),
    ({"search.max_params": "lots"}, "search.max_params: 'lots' is not a count"),
    ({"export.arch": "ffn,ffn,ffn"}, "export.arch: 'ffn,ffn,ffn' is not a child"),
    ({"glue.tasks": ["SST2"]}, "glue.tasks: unknown GLUE task 'SST2'"),
    ({"data": "/no/such/data-bin"}, "data: '/no/such/data-bin' does not exist"),
    ({"glue.tasks": ["RTE"]}, "glue.data: RTE: no file"),
    ({"spm": "/no/spm.model"}, "spm: '/no/spm.model' does not exist"),
])
def test_bad_values_fail_before_any_work(corpus, tmp_path, change, message):
    out = tmp_path / "out"
    cfg = config(corpus, out)
    for key, value in change.items():
        section, _, name = key.rpartition(".")
        (cfg[section] if section else cfg)[name] = value
    res = cli_in_process(MODULE, "magic-pipeline", write(tmp_path / "cfg", cfg))
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("magic-pipeline: error: "), res.stderr
    assert message in err[0], err[0]
    assert not out.exists() and res.stdout == ""


def test_shipped_config_is_valid_and_documented():
    path = os.path.join(REPO, "configs", "pipeline", "tiny.yaml")
    cfg = pipeline.load_config(path, paths=False)
    raw = pipeline.read_config_file(path)
    # every key of the schema appears in the shipped file (it documents them)
    for section, keys in pipeline.SCHEMA.items():
        given = raw if not section else raw[section]
        assert {k.name for k in keys} <= set(given), section
    assert cfg["search"]["max_params"] == 450000 and cfg["glue"]["tasks"] == ["SST-2"]
    text = pipeline.get_parser().format_help()
    for keys in pipeline.SCHEMA.values():
        for k in keys:
            assert f"{k.name} (" in text
