"""Re-training configs for a found child (paper section 5.1)."""

import os
import re
import subprocess
import sys

import torch

from conftest import REPO

HYDRA = os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train")


def test_tiny_retrain_config_trains_the_given_child(data_bin, tmp_path):
    spec = "mha2,ffn,conv3,ffn"
    proc = subprocess.run(
        [HYDRA, "--config-dir", os.path.join(REPO, "configs"), "--config-name",
         "retrain_child_tiny", f"task.data={data_bin}", f"model.magic_arch='{spec}'",
         f"checkpoint.save_dir={tmp_path / 'ck'}", "optimization.max_update=3",
         "task.tokens_per_sample=32", f"hydra.run.dir={tmp_path / 'out'}",
         f"common.user_dir={REPO}/fairseq_magic"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt")
    assert state["cfg"]["model"]["magic_arch"] == spec
    layer_ops = {k.split(".candidates.")[1].split(".")[0] for k in state["model"]
                 if ".layers.2." in k}
    assert layer_ops == {"conv3"}  # a static child: one candidate per layer


def test_base_retrain_config_has_the_paper_settings():
    proc = subprocess.run(
        [HYDRA, "--config-dir", os.path.join(REPO, "configs"), "--config-name",
         "retrain_child_base", "task.data=/x", "model.magic_arch='ffn,ffn'", "--cfg", "job"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "max_update: 125000" in out and "_name: magic_child" in out
    assert re.search(r"batch_size: 128", out) and "total_num_update: 125000" in out
