"""The shipped hydra configs: composed in-process (as fairseq-hydra-train does,
without starting it) and checked against the paper's settings; the two configs
of the paper's pipeline (search with shrinking, re-training with the factorized
embedding) also train a few updates at tiny scale through fairseq-hydra-train."""

import glob
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO, USER_DIR

CONFIG_DIR = os.path.join(REPO, "configs")
NAMES = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(CONFIG_DIR, "*.yaml")))
HYDRA = os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train")
# ${hydra:runtime.cwd} only resolves inside a hydra run: give the paths directly.
PATHS = ["task.data=/x", f"common.user_dir={USER_DIR}", "checkpoint.save_dir=/s"]


def compose(name, *overrides):
    """The config fairseq-hydra-train would run: the yaml validated against
    fairseq's schema, with the plugin's dataclass defaults merged in."""
    from fairseq.dataclass.initialize import add_defaults, hydra_init
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fairseq_magic.evaluation import import_plugin

    import_plugin()  # add_defaults finds the magic task/model only when registered
    GlobalHydra.instance().clear()
    hydra_init(name)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = hydra_compose(config_name=name, overrides=[*PATHS, *overrides])
    add_defaults(cfg)
    return cfg


def update_freq_at(name, world, *overrides):
    """update-freq the task sets for ``world`` processes (and the sentences it logs)."""
    from fairseq_magic.tasks.magic_task import configure_sentences_per_update

    cfg = compose(name, f"distributed_training.distributed_world_size={world}", *overrides)
    sentences = configure_sentences_per_update(cfg.task)
    return list(cfg.optimization.update_freq), sentences


def test_every_config_is_covered():
    assert {"spos_base", "magic_t_base", "magic_a_base", "magic_at_base",
            "magic_at_shrink_base", "retrain_child_base", "retrain_child_base_fact512",
            "spos_tiny", "magic_t_tiny", "magic_a_tiny", "magic_at_tiny",
            "retrain_child_tiny", "e_spos_base", "e_magic_at_base",
            "e_magic_at_tiny", "compress_kd_tiny", "magic_at_compress_60m"} <= set(NAMES)


@pytest.mark.parametrize("name", [n for n in NAMES if n.endswith("_base")])
def test_base_configs_have_the_papers_settings(name):
    """Section 5.1 / appendix C: Adam (0.9, 0.999), peak lr 5e-4, 10k warm-up then
    linear decay, dropout 0.1, weight decay 0.01, 128 tokens; super-nets 250k
    updates of 1024 sentences, 26 x {mha12, ffn, conv3, conv5} at 768;
    re-training 125k updates of 2048 sentences."""
    cfg = compose(name, *(["model.magic_arch=ffn"] if "retrain" in name else []))
    retrain = name.startswith("retrain")
    assert cfg.optimizer._name == "adam" and cfg.optimizer.adam_betas == "(0.9,0.999)"
    assert cfg.optimization.lr == [5e-4] and cfg.optimizer.weight_decay == 0.01
    assert cfg.lr_scheduler._name == "polynomial_decay" and cfg.lr_scheduler.end_learning_rate == 0
    assert cfg.lr_scheduler.warmup_updates == 10000
    assert cfg.model.dropout == 0.1 and cfg.model.attention_dropout == 0.1
    assert cfg.task.tokens_per_sample == 128 and cfg.model.encoder_embed_dim == 768
    # the recommended mixed precision keeps unused candidates' grads None
    assert cfg.common.memory_efficient_fp16 and not cfg.common.fp16
    updates = 125000 if retrain else 250000
    assert cfg.optimization.max_update == updates == cfg.lr_scheduler.total_num_update
    assert cfg.task._name == "magic"
    assert cfg.task.magic_sentences_per_update == (2048 if retrain else 1024)
    if not retrain:
        assert cfg.model.encoder_layers == 26 and cfg.model.magic_ops == "paper"
        assert cfg.distributed_training.find_unused_parameters
    method = cfg.task.magic_method
    # e_<method>_base: the same method trained ELECTRA-style (test below)
    assert name.removeprefix("e_").startswith(method) or (retrain and method == "spos")
    if method in ("magic_a", "magic_at"):
        assert cfg.criterion.magic_align_every == 4  # "in every four layers"
        assert cfg.criterion.magic_align_lambda == 0.5
        assert cfg.criterion.magic_align_warmup_epochs == 3
    if method in ("magic_t", "magic_at"):
        assert cfg.task.magic_t_k == 1


# values a config leaves to the user (???): the child to train, the KD teacher
REQUIRED = {"compress_kd_tiny": ["model.magic_arch=ffn", "criterion.kd_teacher=/t.pt"]}


@pytest.mark.parametrize("name", [n for n in NAMES if n.endswith("_tiny")])
def test_tiny_configs_compose_for_the_cpu(name):
    cfg = compose(name, *REQUIRED.get(name, ["model.magic_arch=ffn"] if "retrain" in name else []))
    assert cfg.common.cpu and cfg.dataset.num_workers == 0
    assert cfg.model.encoder_embed_dim == 128 and cfg.dataset.batch_size >= 16
    assert cfg.optimization.max_update == cfg.lr_scheduler.total_num_update
    assert 0 < cfg.lr_scheduler.warmup_updates < cfg.optimization.max_update
    assert cfg.optimizer.weight_decay == 0.01 and cfg.model.dropout == 0.1
    if cfg.task.get("magic_method") in ("magic_a", "magic_at"):
        # the demo trains less than an epoch: alignment must not wait 3 epochs
        assert cfg.criterion.magic_align_warmup_epochs == 0


@pytest.mark.parametrize("world,freq", [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_base_supernet_holds_1024_sentences_at_any_world_size(world, freq):
    assert update_freq_at("magic_at_base", world) == ([freq], 1024)


def test_retrain_holds_2048_sentences():
    assert update_freq_at("retrain_child_base", 4, "model.magic_arch=ffn") == ([4], 2048)
    assert update_freq_at("retrain_child_base", 16, "model.magic_arch=ffn") == ([1], 2048)


@pytest.mark.parametrize("world,overrides,needle", [
    (16, [], "cannot be held at world size 16 with --batch-size 128: 128 x 16 = 2048 "
             "sentences per step does not divide 1024 (try --batch-size 64)"),
    (3, [], "cannot be held at world size 3"),
    (1, ["optimization.update_freq=[2]"], "--update-freq 2 conflicts with "
                                          "--magic-sentences-per-update 1024, which needs 8"),
    (1, ["dataset.batch_size=null", "dataset.max_tokens=4096"], "needs --batch-size"),
])
def test_batch_that_cannot_be_held_fails_naming_the_world_size(world, overrides, needle):
    from fairseq_magic.core.space import MagicConfigError

    with pytest.raises(MagicConfigError) as e:
        update_freq_at("spos_base", world, *overrides)
    assert needle in str(e.value)


def test_without_target_the_effective_batch_is_only_logged():
    cfg = compose("magic_at_tiny", "optimization.update_freq=[3]",
                  "distributed_training.distributed_world_size=2")
    from fairseq_magic.tasks.magic_task import configure_sentences_per_update

    assert configure_sentences_per_update(cfg.task) == 16 * 3 * 2
    assert list(cfg.optimization.update_freq) == [3]


def test_shrink_config_is_the_papers_final_search():
    cfg = compose("magic_at_shrink_base")
    assert cfg.task.magic_shrink and cfg.task.magic_shrink_per_epoch == 5
    assert cfg.task.magic_method == "magic_at"
    base = compose("magic_at_base")
    for section in ("optimization", "optimizer", "lr_scheduler", "model", "criterion"):
        assert cfg[section] == base[section], section  # otherwise as magic_at_base


def test_compress_config_is_the_papers_compression_search():
    """Section 5.4 / appendix C: MAGIC-AT over the hidden-512 space (the
    magic_supernet_compress preset) with shrinking under a 60M budget, which a
    50K-vocabulary child can meet and which excludes the largest children."""
    from argparse import Namespace

    from fairseq_magic.core.cost import child_cost
    from fairseq_magic.models.magic_supernet import magic_supernet_compress

    cfg = compose("magic_at_compress_60m")
    preset = Namespace()
    magic_supernet_compress(preset)
    assert (cfg.model.encoder_layers, cfg.model.encoder_embed_dim, cfg.model.magic_ops) == \
        (preset.encoder_layers, preset.encoder_embed_dim, preset.magic_ops) == \
        (26, 512, "mha8,ffn,conv3,conv5")
    assert cfg.task.magic_shrink and cfg.task.magic_method == "magic_at"
    assert cfg.task.magic_max_params == 60_000_000 and not cfg.task.magic_max_flops
    base = compose("magic_at_shrink_base")
    for section in ("optimization", "optimizer", "lr_scheduler", "criterion"):
        assert cfg[section] == base[section], section  # otherwise as the paper's search
    assert cfg.task.magic_shrink_per_epoch == base.task.magic_shrink_per_epoch == 5

    def params(op):  # RoBERTa's 50,265-symbol BPE, 512 positions (+2)
        return child_cost([op] * 26, 512, 50265, 514)["params"]
    assert params("conv3") < 60e6 < params("ffn")


def _hydra_train(name, tmp_path, *overrides):
    proc = subprocess.run(
        [HYDRA, "--config-dir", CONFIG_DIR, "--config-name", name,
         f"checkpoint.save_dir={tmp_path / 'ck'}", f"hydra.run.dir={tmp_path / 'out'}",
         f"common.user_dir={USER_DIR}", "common.memory_efficient_fp16=false",
         "common.cpu=true", "dataset.num_workers=0", "task.tokens_per_sample=32",
         "model.encoder_embed_dim=32", "checkpoint.no_save_optimizer_state=true",
         *overrides],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_shrink_config_trains_at_tiny_scale(data_bin, tmp_path):
    out = _hydra_train("magic_at_shrink_base", tmp_path, f"task.data={data_bin}",
                       "model.encoder_layers=4", "model.magic_ops='mha2d32,ffn,conv3,conv5'",
                       "dataset.batch_size=4", "task.magic_sentences_per_update=8",
                       "optimization.max_update=3", "lr_scheduler.warmup_updates=1", "common.log_interval=1",
                       "task.magic_anchor_interval=2", "task.magic_anchor_valid_batches=1")
    assert "sentences per update: 8 = batch size 4 x update-freq 2 x world size 1" in out
    steps = re.findall(r"bsz=(\d+), num_updates=(\d+)", out)
    assert steps and all(b == "8" for b, _ in steps) and steps[-1][1] == "3"
    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=False)
    task = state["extra_state"]["MagicTask"]
    assert state["cfg"]["task"]["magic_shrink"] and task["sampler"]["path"] is not None


def test_fact512_retrain_config_trains_the_given_child(data_bin, tmp_path):
    spec = "mha2,ffn,conv3,ffn"
    _hydra_train("retrain_child_base_fact512", tmp_path, f"task.data={data_bin}",
                 f"model.magic_arch='{spec}'", "model.magic_embed_dim=16",
                 "dataset.batch_size=4", "task.magic_sentences_per_update=4",
                 "optimization.max_update=2", "lr_scheduler.warmup_updates=1")
    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=False)
    assert state["cfg"]["model"]["magic_arch"] == spec
    weights = state["model"]
    proj = [v for k, v in weights.items() if k.endswith("embed_proj.weight")]
    assert len(proj) == 1 and tuple(proj[0].shape) == (32, 16)  # 16 -> 32: factorized
    layer_ops = {k.split(".candidates.")[1].split(".")[0] for k in weights if ".layers.2." in k}
    assert layer_ops == {"conv3"}  # a static child: one candidate per layer


@pytest.mark.parametrize("name,mlm,dims", [
    ("e_spos_base", "spos_base", (256, 4, 26)),
    ("e_magic_at_base", "magic_at_base", (256, 4, 26)),
    ("e_magic_at_tiny", "magic_at_tiny", (42, 1, 8)),
])
def test_electra_configs_are_the_mlm_recipe_with_electras_objective(name, mlm, dims):
    """E- configs: the MLM config's recipe (same compute as BERT-base), the
    ELECTRA model and criterion: generator 1/3 (hidden / 64 heads, same depth),
    discriminator weight 50, 15% masking."""
    from fairseq_magic.models.magic_electra import generator_dims

    cfg, base = compose(name), compose(mlm)
    assert cfg.model._name == "magic_electra_supernet"
    assert cfg.criterion._name == "magic_electra"
    assert cfg.criterion.electra_disc_weight == 50 and cfg.criterion.electra_mask_prob == 0.15
    assert generator_dims(cfg.model) == dims
    for section in ("optimization", "optimizer", "lr_scheduler", "dataset", "task",
                    "distributed_training"):
        assert cfg[section] == base[section], section
    assert cfg.common == base.common
    for key in base.model:
        if key != "_name":
            assert cfg.model[key] == base.model[key], key
    for key in base.criterion:
        if key != "_name":
            assert cfg.criterion[key] == base.criterion[key], key
