"""TensorBoard logging of the plugin's metrics, a clean console-script start,
and an exported child used from Python on raw text (issue 11)."""

import glob
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import fairseq_preprocess, make_text, train_args, train_in_process

SPEC = "mha2d32,ffn,conv3,conv5"


def scalars(logdir):
    """{tag: [(step, value)]} of every event file under ``logdir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
    assert files, f"no event file in {logdir}"
    acc = EventAccumulator(logdir)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
            for tag in acc.Tags()["scalars"]}


def test_tensorboard_holds_magic_scalars(data_bin, tmp_path):
    logdir = tmp_path / "tb"
    # batch 64: an epoch is a few updates, so shrinking (after epochs 1 and 2)
    # and the anchor (every 2 updates) both happen in 3 short epochs
    train_in_process(train_args(
        data_bin, tmp_path / "ck", "--tensorboard-logdir", logdir, "--batch-size", "64",
        "--magic-method", "magic_a", "--magic-anchor-interval", "2",
        "--magic-align-warmup-epochs", "0",
        "--magic-anchor-valid-batches", "1", "--magic-interference-interval", "2",
        "--magic-shrink", "--magic-shrink-per-epoch", "3", "--magic-shrink-children", "4",
        "--max-epoch", "3", updates=10000))
    inner = scalars(str(logdir / "train_inner"))
    for tag in ("loss", "mlm_loss", "align_loss", "anchor_loss", "anchor_repl",
                "interference_cos", "log10_children"):
        assert tag in inner, (tag, sorted(inner))
    steps = [s for s, _ in inner["mlm_loss"]]
    assert steps == sorted(steps) and len(steps) >= 6
    assert all(0 < v < 20 for _, v in inner["mlm_loss"])
    assert all(-1 <= v <= 1 for _, v in inner["interference_cos"])
    # 4 layers x 4 operators = 4^4 children; 3 candidates go after epochs 1 and 2
    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt")["extra_state"]["MagicTask"]
    sizes = [h["size"] for h in state["shrink_history"]]
    assert len(sizes) == 2
    seen = [round(v, 3) for _, v in inner["log10_children"]]
    assert seen[0] == pytest.approx(4 * 0.602, abs=1e-3)  # log10(256)
    import math
    assert sorted(set(seen), reverse=True) == [round(4 * math.log10(4), 3)] + [
        round(math.log10(s), 3) for s in sizes]
    assert seen == sorted(seen, reverse=True)  # only steps down, at epoch starts
    # the end-of-epoch summaries too
    assert "mlm_loss" in scalars(str(logdir / "train"))


def test_console_script_starts_clean(tmp_path):
    """A fresh console-script process: fairseq's import-time 'Please install
    tensorboardX' is gone, and a non-checkpoint file gets one error line and
    nothing else on stderr."""
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("not a checkpoint\n")
    exe = os.path.join(os.path.dirname(sys.executable), "magic-export")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([exe, str(bogus), "--arch", SPEC, "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "tensorboardX" not in proc.stderr + proc.stdout
    # nothing else either (fairseq's "--user-dir ... has already been imported")
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"magic-export: error: checkpoint {str(bogus)!r} is not a "
                               "readable fairseq checkpoint")
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def spm_export(tmp_path_factory):
    """A tiny sentencepiece corpus laid out as scripts/prepare_corpus.py does
    (ROOT/spm.model beside ROOT/data-bin), a super-net trained on it, and the
    child magic-export cut from it."""
    import sentencepiece as spm

    from fairseq_magic.cli.export import export_child

    root = tmp_path_factory.mktemp("spmcorpus")
    make_text(root / "train.txt", 600, 0)
    make_text(root / "valid.txt", 60, 1)
    with open(root / "train.txt") as f:
        sentences = [line.strip() for line in f if line.strip()]
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
    train_in_process(train_args(str(root / "data-bin"), root / "ck", updates=5))
    out = root / "child"
    record = export_child(str(root / "ck" / "checkpoint_last.pt"), SPEC, str(out))
    return {"root": root, "out": out, "record": record, "sp": sp}


def test_export_carries_spm_and_hub_works_on_text(spm_export):
    from fairseq_magic.hub import from_pretrained

    root, out = spm_export["root"], spm_export["out"]
    assert (out / "spm.model").read_bytes() == (root / "spm.model").read_bytes()
    assert json.loads((out / "export.json").read_text())["spm"] == str(root / "spm.model")

    hub = from_pretrained(str(out))
    hub.eval()
    text = "the king spake unto israel ."
    tokens = hub.encode(text)
    d = hub.task.source_dictionary
    pieces = spm_export["sp"].encode(text, out_type=str)
    assert tokens.tolist() == [d.bos()] + [d.index(p) for p in pieces] + [d.eos()]
    assert d.unk() not in tokens.tolist()
    assert hub.decode(tokens) == text
    features = hub.extract_features(tokens)
    assert features.shape == (1, len(tokens), 32) and torch.isfinite(features).all()

    filled = hub.fill_mask("the king spake unto <mask> .", topk=3)
    assert len(filled) == 3
    probs = [p for _, p, _ in filled]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    for sentence, _, token in filled:
        assert "<mask>" not in sentence and sentence.startswith("the king spake unto")
        assert token.strip() and token.strip() in sentence


def test_export_spm_option(spm_export, tmp_path):
    from fairseq_magic.cli.export import export_child
    from fairseq_magic.core.space import MagicConfigError

    ckpt = str(spm_export["root"] / "ck" / "checkpoint_last.pt")
    missing = str(tmp_path / "nope.model")
    with pytest.raises(MagicConfigError, match=f"--spm {missing!r} does not exist"):
        export_child(ckpt, SPEC, str(tmp_path / "x"), spm=missing)
    assert not (tmp_path / "x").exists()
    other = tmp_path / "other.model"
    other.write_bytes((spm_export["root"] / "spm.model").read_bytes())
    record = export_child(ckpt, SPEC, str(tmp_path / "y"), spm=str(other))
    assert record["spm"] == str(other) and (tmp_path / "y" / "spm.model").is_file()
