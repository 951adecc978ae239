"""Mismatched specs and checkpoints fail with one error naming the value and
what was expected, before any training (issue 11)."""

import os
import shutil

import pytest
import torch

from conftest import build_in_process, cli_in_process, train_args, train_in_process
from fairseq_magic.core.space import MagicConfigError

SPEC = "mha2d32,ffn,conv3,conv5"  # the trained_supernet's layout: 4 layers, hidden 32


@pytest.fixture(scope="module")
def exported_child(trained_supernet, tmp_path_factory):
    from fairseq_magic.cli.export import export_child

    out = tmp_path_factory.mktemp("mismatch") / "child"
    export_child(trained_supernet, SPEC, str(out))
    return str(out / "model.pt")


@pytest.fixture(scope="module")
def broken_files(trained_supernet, tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    data = open(trained_supernet, "rb").read()
    truncated = root / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    text = root / "notes.pt"
    text.write_text("this is not a checkpoint\n")
    tensor = root / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    return {"truncated": str(truncated), "text": str(text), "tensor": str(tensor)}


def test_child_encoder_layers_must_match_spec(data_bin):
    spec = "mha2d32,ffn,conv3"
    with pytest.raises(MagicConfigError) as e:
        build_in_process(data_bin, "--magic-arch", spec, arch="magic_child",
                         model=["--encoder-layers", "4", "--encoder-embed-dim", "32"])
    msg = str(e.value)
    assert "--encoder-layers 4" in msg and repr(spec) in msg and "3 layers" in msg
    # without the flag, or with the spec's own length, the spec sets the depth
    for model in (["--encoder-embed-dim", "32"],
                  ["--encoder-layers", "3", "--encoder-embed-dim", "32"]):
        _, child, _ = build_in_process(data_bin, "--magic-arch", spec, arch="magic_child",
                                       model=model)
        assert len(child.sentence_encoder.layers) == 3 and child.cfg.encoder_layers == 3


def test_restore_child_into_supernet_run(data_bin, exported_child, tmp_path):
    save = tmp_path / "ck"
    proc = train_in_process(train_args(data_bin, save, "--restore-file", exported_child,
                                       "--reset-optimizer", "--reset-dataloader",
                                       "--reset-meters", "--reset-lr-scheduler", updates=2),
                            check=False)
    assert proc.returncode != 0
    assert f"MagicConfigError: the checkpoint holds the child '{SPEC}' (a magic_child " \
        "or magic-export checkpoint)" in proc.stderr
    assert f"--arch magic_child --magic-arch '{SPEC}'" in proc.stderr
    assert "--magic-ops 'mha2d32,ffn,conv3,conv5'" in proc.stderr  # what this run is
    assert "begin training" not in proc.stdout
    assert not (save / "checkpoint_last.pt").exists()


def test_finetune_from_supernet_into_child_run(data_bin, trained_supernet, tmp_path):
    save = tmp_path / "ck"
    proc = train_in_process(train_args(data_bin, save, "--magic-arch", SPEC,
                                       "--finetune-from-model", trained_supernet,
                                       arch="magic_child", updates=2), check=False)
    assert proc.returncode != 0
    assert "MagicConfigError: the checkpoint is a magic_supernet (4 layers, operators " \
           "conv3,conv5,ffn,mha2d32 in every layer)" in proc.stderr
    assert f"--arch magic_child --magic-arch '{SPEC}'" in proc.stderr
    assert "magic-export CHECKPOINT --arch SPEC" in proc.stderr
    assert not (save / "checkpoint_last.pt").exists()


@pytest.mark.parametrize("model,expected", [
    (["--encoder-layers", "4", "--encoder-embed-dim", "32",
      "--magic-ops", "mha2d32,ffn,conv3"],
     "the checkpoint holds operators conv3,conv5,ffn,mha2d32 in every layer, this run "
     "(--arch magic_supernet with --magic-ops 'mha2d32,ffn,conv3') operators "
     "conv3,ffn,mha2d32 in every layer"),
    (["--encoder-layers", "3", "--encoder-embed-dim", "32",
      "--magic-ops", "mha2d32,ffn,conv3,conv5"],
     "the checkpoint has 4 layers, this run 3 (--encoder-layers 3)"),
    (["--encoder-layers", "4", "--encoder-embed-dim", "64",
      "--magic-ops", "mha2d32,ffn,conv3,conv5"],
     "the checkpoint's hidden size is 32, this run's --encoder-embed-dim is 64"),
], ids=["operators", "depth", "hidden"])
def test_supernet_checkpoint_of_another_space(data_bin, trained_supernet, model, expected):
    state = torch.load(trained_supernet)["model"]
    _, net, _ = build_in_process(data_bin, model=model)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(MagicConfigError) as e:
        net.load_state_dict(state, strict=True)
    assert expected in str(e.value)
    # nothing was copied before the error
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_same_space_still_loads(data_bin, trained_supernet):
    state = torch.load(trained_supernet)["model"]
    _, net, _ = build_in_process(data_bin)
    net.load_state_dict(state, strict=True)
    key = "encoder.sentence_encoder.layers.0.candidates.ffn.op.fc1.weight"
    assert torch.equal(net.state_dict()[key], state[key])


@pytest.mark.parametrize("kind", ["truncated", "text", "tensor"])
@pytest.mark.parametrize("prog,module,extra", [
    ("magic-search", "fairseq_magic.cli.search", ["--strategy", "random", "--samples", "2"]),
    ("magic-export", "fairseq_magic.cli.export", ["--arch", SPEC]),
    ("magic-children", "fairseq_magic.cli.children", ["--arch", SPEC]),
])
def test_cli_rejects_unreadable_checkpoint(broken_files, tmp_path, kind, prog, module, extra):
    path = broken_files[kind]
    out = tmp_path / "out"
    argv = [path, *extra] + (["--out", out] if prog != "magic-children" else [])
    code, stdout, stderr = cli_in_process(module, prog, *argv)
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{prog}: error: checkpoint {path!r} is not a readable "
                               "fairseq checkpoint")
    assert not out.exists()  # nothing half-written: not even an empty folder


def test_restore_file_unreadable(data_bin, broken_files, tmp_path):
    save = tmp_path / "ck"
    save.mkdir()
    path = str(save / "checkpoint_last.pt")
    shutil.copyfile(broken_files["truncated"], path)
    proc = train_in_process(train_args(data_bin, save, updates=2), check=False)
    assert proc.returncode != 0
    assert f"MagicConfigError: checkpoint {path!r} is not a readable fairseq checkpoint" \
        in proc.stderr
    assert "begin training" not in proc.stdout
    assert os.path.getsize(path) == os.path.getsize(broken_files["truncated"])
