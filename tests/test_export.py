"""magic-export: a child cut out of a super-net is a standalone fairseq model.

The shared tiny super-net (conftest's trained_supernet, 5 updates, read-only);
its child is exported, reloaded with
fairseq's own loaders, compared with the super-net on the same path, trained on
by fairseq-train (masked_lm and sentence_prediction) and loaded through the hub
helper.
"""

import json
import os
import sys

import pytest
import torch

from conftest import (USER_DIR, cli_in_process, fairseq_preprocess, make_text,
                      masked_batch, run_as_console_script, train_in_process)

SPEC = "mha2d32,ffn,conv3,conv5"  # every operator kind, one per layer
DIMS = ["--encoder-embed-dim", "32"]  # the child's layers come from --magic-arch


def finetune_args(data, save_dir, *extra):
    return [
        str(data), "--user-dir", USER_DIR, "--arch", "magic_child", "--magic-arch", SPEC,
        *DIMS, "--optimizer", "adam", "--lr", "1e-4", "--lr-scheduler", "fixed",
        "--batch-size", "8", "--save-dir", str(save_dir), "--cpu", "--num-workers", "0",
        "--seed", "1", "--log-format", "simple", "--log-interval", "1",
        "--no-epoch-checkpoints", "--disable-validation",
        "--reset-optimizer", "--reset-dataloader", "--reset-meters",
        "--reset-lr-scheduler", *extra,
    ]


@pytest.fixture(scope="module")
def supernet(trained_supernet, tmp_path_factory):
    """(a folder for this module's outputs, the shared read-only super-net)."""
    return tmp_path_factory.mktemp("export"), trained_supernet


@pytest.fixture(scope="module")
def exported(supernet):
    root, ckpt = supernet
    out = root / "child"
    rc, stdout, stderr = cli_in_process("fairseq_magic.cli.export", "magic-export",
                                        ckpt, "--arch", SPEC, "--out", out)
    assert rc == 0, stderr[-3000:]
    assert SPEC in stdout
    return out


@pytest.fixture(scope="module")
def loaded(exported):
    """The export loaded with fairseq's own loader (plugin imported first)."""
    from fairseq import checkpoint_utils

    from fairseq_magic.evaluation import import_plugin

    import_plugin()
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(exported / "model.pt")])
    return models[0].eval(), cfg, task


def test_export_files_and_parameter_count(supernet, exported, loaded, data_bin):
    from fairseq_magic.evaluation import load_supernet
    from fairseq_magic.models.magic_supernet import MagicChildModel

    sn, _, _, _ = load_supernet(supernet[1])
    child, cfg, task = loaded
    assert isinstance(child, MagicChildModel)
    assert cfg.model._name == "magic_child" and cfg.model.magic_arch == SPEC
    assert cfg.model.encoder_layers == 4 and cfg.task._name == "masked_lm"
    n_child = sum(p.numel() for p in child.parameters())
    n_super = sum(p.numel() for p in sn.parameters())
    assert n_child == sn.child_cost(SPEC)["params"] == 20737
    assert n_child < n_super == 72865
    record = json.loads((exported / "export.json").read_text())
    assert record["arch"] == SPEC and record["params"] == n_child
    assert record["flops"] == sn.child_cost(SPEC, 128)["flops"]
    assert record["source_checkpoint"] == os.path.abspath(supernet[1])
    assert record["search_space"] == sn.search_space.state_dict()
    # dict.txt without <mask>: identical to the data-bin's, same indices on load
    assert (exported / "dict.txt").read_text() == open(os.path.join(data_bin, "dict.txt")).read()
    assert task.source_dictionary.symbols == sn.encoder.dictionary.symbols
    state = torch.load(exported / "model.pt", weights_only=True)
    assert state["last_optimizer_state"] is None and "MagicTask" not in state["extra_state"]
    assert set(state["model"]) == set(sn.child_state_dict(SPEC))
    assert not [p for p in os.listdir(exported.parent) if ".tmp-" in p]


@torch.no_grad()
def test_exported_child_matches_supernet_path(supernet, loaded):
    from fairseq_magic.evaluation import load_supernet

    sn, sn_task, _, _ = load_supernet(supernet[1])
    sn.set_active_path(SPEC)
    child = loaded[0]
    sample = masked_batch(sn_task, n=4)
    tokens = sample["net_input"]["src_tokens"]
    masked = sample["target"].ne(sn.encoder.dictionary.pad())
    assert masked.any()
    for kwargs in ({"masked_tokens": masked}, {"features_only": True}):
        a, _ = sn(tokens, **kwargs)
        b, _ = child(tokens, **kwargs)
        assert a.shape == b.shape
        diff = (a - b).abs().max().item()
        print(f"max |supernet - export| ({', '.join(kwargs)}): {diff:.3g}")
        assert diff <= 1e-6


def test_masked_lm_continues_pretraining(exported, data_bin, tmp_path):
    ckpt = exported / "model.pt"
    proc = train_in_process(finetune_args(
        data_bin, tmp_path / "mlm", "--task", "masked_lm", "--criterion", "masked_lm",
        "--tokens-per-sample", "32", "--max-update", "2", "--restore-file", ckpt))
    assert f"Loaded checkpoint {ckpt} (epoch 1 @ 0 updates)" in proc.stdout
    assert "num_updates 2" in proc.stdout
    start = torch.load(ckpt, weights_only=True)["model"]
    after = torch.load(tmp_path / "mlm" / "checkpoint_last.pt", weights_only=True)["model"]
    assert set(after) == set(start)
    # training moved the weights, starting from the export (lr 1e-4, 2 Adam steps)
    diffs = [(after[k] - start[k]).abs().max().item() for k in start]
    assert 0 < max(diffs) < 1e-3


def test_sentence_prediction_finetunes(exported, data_bin, tmp_path):
    import random

    text = tmp_path / "text"
    text.mkdir()
    rng = random.Random(0)
    for split, n, seed in (("train", 64, 5), ("valid", 16, 6)):
        make_text(text / f"{split}.raw", n, seed)
        lines = [ln for ln in (text / f"{split}.raw").read_text().splitlines() if ln]
        (text / f"{split}.input0").write_text("\n".join(lines) + "\n")
        labels = ["pos" if "king" in ln or rng.random() < 0.2 else "neg" for ln in lines]
        (text / f"{split}.label").write_text("\n".join(labels) + "\n")
    cls = tmp_path / "cls-bin"
    for field, extra in (("input0", ["--srcdict", os.path.join(data_bin, "dict.txt")]),
                         ("label", [])):
        fairseq_preprocess("--only-source", "--trainpref", text / f"train.{field}",
                           "--validpref", text / f"valid.{field}",
                           "--destdir", cls / field, "--workers", "1", *extra)
    proc = train_in_process(finetune_args(
        cls, tmp_path / "ft", "--task", "sentence_prediction",
        "--criterion", "sentence_prediction", "--num-classes", "2",
        "--classification-head-name", "sentence_classification_head",
        "--init-token", "0", "--max-positions", "32", "--max-update", "3",
        "--restore-file", exported / "model.pt"))
    assert "Loaded checkpoint" in proc.stdout and "num_updates 3" in proc.stdout
    state = torch.load(tmp_path / "ft" / "checkpoint_last.pt", weights_only=True)
    head = {k: v.shape for k, v in state["model"].items()
            if k.startswith("classification_heads.sentence_classification_head.")}
    assert head["classification_heads.sentence_classification_head.out_proj.weight"] == (2, 32)
    start = torch.load(exported / "model.pt", weights_only=True)["model"]
    assert set(state["model"]) - set(head) == set(start)


@torch.no_grad()
def test_from_pretrained_hub(exported, loaded):
    from fairseq.models.roberta.hub_interface import RobertaHubInterface

    from fairseq_magic.hub import from_pretrained

    hub = from_pretrained(str(exported)).eval()
    assert isinstance(hub, RobertaHubInterface)
    d = hub.task.source_dictionary
    tokens = d.encode_line("the king spake unto israel .", append_eos=True,
                           add_if_not_exist=False).long()
    tokens = torch.cat([tokens.new([d.bos()]), tokens])
    assert d.unk() not in tokens.tolist()
    feats = hub.extract_features(tokens)
    direct, _ = loaded[0](tokens.unsqueeze(0), features_only=True)
    assert feats.shape == (1, len(tokens), 32)
    assert torch.equal(feats, direct)
    assert len(hub.extract_features(tokens, return_all_hiddens=True)) == 4


def export_in_process(monkeypatch, capsys, *argv):
    """magic-export's cli_main in this process (fast): (exit code, stderr)."""
    from fairseq_magic.cli import export as cli

    monkeypatch.setattr(sys, "argv", ["magic-export", *map(str, argv)])
    with pytest.raises(SystemExit) as exc:
        cli.cli_main()
    return exc.value.code, capsys.readouterr().err


def test_export_errors(supernet, exported, tmp_path, monkeypatch, capsys):
    _, ckpt = supernet
    cases = [
        (["--arch", "mha2d32,ffn,conv3"], "mha2d32,ffn,conv3", "3 layers"),
        (["--arch", "mha2d32,ffn,conv3,conv7"], "conv7", "unknown operator"),
        (["--arch", "anchor"], "anchor", "no MAGIC-A anchor"),  # a SPOS run
        (["--arch", "mha2d32,ffn,conv3,conv5", "--data", tmp_path / "nodata"],
         "nodata", "no dict.txt"),
    ]
    for i, (argv, shown, why) in enumerate(cases):
        out = tmp_path / f"bad{i}"
        code, stderr = export_in_process(monkeypatch, capsys, ckpt, *argv, "--out", out)
        assert code == 2, stderr[-2000:]
        assert stderr.strip().splitlines()[-1].startswith("magic-export: error: ")
        assert shown in stderr and why in stderr, stderr
        assert not out.exists()
    # a magic_child checkpoint (the export itself) is not a super-net
    code, stderr = export_in_process(monkeypatch, capsys, exported / "model.pt",
                                     "--arch", SPEC, "--out", tmp_path / "c")
    assert code == 2 and "expected a magic_supernet checkpoint" in stderr
    assert not (tmp_path / "c").exists()
    # an existing output folder needs --force; nothing else is left behind
    before = (exported / "model.pt").stat().st_mtime_ns
    code, stderr = export_in_process(monkeypatch, capsys, ckpt, "--arch", SPEC,
                                     "--out", exported)
    assert code == 2 and "--force" in stderr
    assert (exported / "model.pt").stat().st_mtime_ns == before
    assert not list(tmp_path.iterdir())
    # the console script / python -m entry: same message, exit 2
    rc, _, stderr = run_as_console_script("fairseq_magic.cli.export", "magic-export",
                                          ckpt, "--arch", "mha2d32,ffn", "--out", tmp_path / "d")
    assert rc == 2 and "magic-export: error: --arch 'mha2d32,ffn'" in stderr
    assert not (tmp_path / "d").exists()


def test_export_force_replaces(supernet, tmp_path, monkeypatch, capsys):
    _, ckpt = supernet
    out = tmp_path / "child"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    from fairseq_magic.cli.export import main

    assert main([str(ckpt), "--arch", "conv5,conv3,ffn,mha2d32", "--out", str(out),
                 "--force"]) == 0
    assert sorted(os.listdir(out)) == ["dict.txt", "export.json", "model.pt"]
    assert json.loads((out / "export.json").read_text())["arch"] == "conv5,conv3,ffn,mha2d32"
    assert os.listdir(tmp_path) == ["child"]


def test_export_anchor(supernet, tmp_path):
    """--arch anchor exports the anchor a MAGIC-A run stored (here written into
    a copy of the SPOS checkpoint, where training would have put it)."""
    from fairseq_magic.cli.export import main

    state = torch.load(supernet[1], weights_only=True)
    anchor = "conv3,conv3,ffn,mha2d32"
    state["extra_state"]["MagicTask"]["anchor"]["arch"] = anchor
    ckpt = tmp_path / "magic_a.pt"
    torch.save(state, ckpt)
    assert main([str(ckpt), "--arch", "anchor", "--out", str(tmp_path / "a")]) == 0
    record = json.loads((tmp_path / "a" / "export.json").read_text())
    assert record["arch"] == anchor and record["anchor"] is True
    saved = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    assert saved["cfg"]["model"]["magic_arch"] == anchor
