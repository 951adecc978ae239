"""The task and criterion in-process, updates run as fairseq's Trainer runs them
(no fairseq-train launch): the interference monitor's value, the alignment
targets (average and anchor, eval mode), validation's child, the training
set-ups the task refuses, and every named architecture."""

import math
import random

import pytest
import torch

from conftest import (build_in_process, fairseq_optimizer, masked_batch, reference_loss_bits,
                      train_update, training_cfg)
from fairseq_magic.core.samplers import random_arch
from fairseq_magic.core.space import MagicConfigError

PREFIX = "encoder.sentence_encoder.layers."
NO_DROPOUT = ["--dropout", "0", "--attention-dropout", "0"]
HEAVY_DROPOUT = ["--dropout", "0.5", "--attention-dropout", "0.5", "--activation-dropout", "0.5"]


def candidate_params(model, layer_ops):
    """Names of the parameters of the given (layer, op) candidates."""
    return [n for n, _ in model.named_parameters()
            if any(n.startswith(f"{PREFIX}{i}.candidates.{op}.") for i, op in layer_ops)]


# ------------------------------------------------------------ interference

def test_interference_cos_is_the_cosine_of_two_updates_shared_gradients(data_bin, monkeypatch):
    from fairseq.logging import metrics

    from fairseq_magic.evaluation import fixed_batches

    cfg = training_cfg(data_bin, "--magic-interference-interval", "2", *NO_DROPOUT)
    task, model, criterion = build_in_process(data_bin, cfg=cfg)
    opt = fairseq_optimizer(cfg, model)
    # Known paths: they share layer 0 (mha2d32) and layer 2 (conv3) only.
    paths = {1: "mha2d32,ffn,conv3,conv5", 2: "mha2d32,conv5,conv3,ffn"}
    monkeypatch.setattr(task.sampler, "path_for_update",
                        lambda u: task.search_space.parse(paths[u]))
    batches = dict(zip((1, 2), fixed_batches(task, "valid", 2, 8)))
    grads = {}
    with metrics.aggregate(new_root=True) as agg:
        for u in (1, 2):  # interval 2: update 1 is remembered, update 2 is compared
            opt.zero_grad()
            task.train_step(batches[u], model, criterion, opt, u)
            grads[u] = {n: p.grad.detach().double().flatten().clone()
                        for n, p in model.named_parameters() if p.grad is not None}
            task.optimizer_step(opt, model, u)
        logged = agg.get_smoothed_values()["interference_cos"]

    def cos(names):
        a = torch.cat([grads[1][n] for n in names])
        b = torch.cat([grads[2][n] for n in names])
        return float(a @ b / (a.norm() * b.norm()))

    shared = candidate_params(model, [(0, "mha2d32"), (2, "conv3")])
    assert shared and all(n in grads[1] and n in grads[2] for n in shared)
    expected = cos(shared)
    assert logged == pytest.approx(expected, abs=1e-4)  # logged rounded to 4 places
    # The value is specific: adding the shared embeddings / LM head, or dropping
    # one of the two shared layers, gives another cosine.
    everything = [n for n in grads[1] if n in grads[2]]
    for other in (everything, candidate_params(model, [(0, "mha2d32")]),
                  candidate_params(model, [(2, "conv3")])):
        assert abs(cos(other) - expected) > 5e-3  # here 0.43 vs 0.33, 0.42, 0.44


# ------------------------------------------------------ alignment targets

def test_average_target_is_the_mean_of_c_eval_mode_children(data_bin):
    task, model, criterion = build_in_process(
        data_bin, "--magic-align-target", "average", "--magic-align-avg-children", "3",
        "--magic-align-warmup-epochs", "0", *HEAVY_DROPOUT)
    sample = masked_batch(task)
    tokens = sample["net_input"]["src_tokens"]
    encoder = model.encoder.sentence_encoder
    model.train()
    task.current_update = 7
    targets = criterion.alignment_targets(model, sample)
    assert model.training
    # The C children: the criterion's local RNG for (seed, update), drawn here.
    rng = random.Random(f"magic-align-avg:{task.cfg.seed}:7")
    paths = [random_arch(task.search_space, rng) for _ in range(3)]
    assert len(set(paths)) == 3
    model.eval()
    with torch.no_grad():
        hiddens = [encoder(tokens, path=p, return_all_hiddens=True)[1] for p in paths]
    model.train()
    assert len(targets) == 4
    for n in range(4):
        mean = (hiddens[0][n] + hiddens[1][n] + hiddens[2][n]) / 3
        assert torch.allclose(targets[n], mean, atol=1e-6, rtol=0), n
        assert not torch.allclose(targets[n], hiddens[0][n], atol=1e-3)
    # another update, other children, another target
    task.current_update = 8
    assert not torch.allclose(criterion.alignment_targets(model, sample)[-1], targets[-1])
    # the criterion trains against it: alignment on, and a positive MSE
    model.set_active_path(paths[0])
    _, _, out = criterion(model, sample)
    assert out["align_on"] == 1 and float(out["align_loss"]) > 0


def test_anchor_targets_come_from_eval_mode_and_training_mode_is_restored(data_bin):
    task, model, criterion = build_in_process(
        data_bin, "--magic-method", "magic_a", "--magic-align-warmup-epochs", "0",
        *HEAVY_DROPOUT)
    sample = masked_batch(task)
    tokens = sample["net_input"]["src_tokens"]
    anchor, child = "conv5,ffn,mha2d32,conv3", "mha2d32,conv3,ffn,conv5"
    task.anchor.arch = task.search_space.parse(anchor)
    model.set_active_path(child)
    model.train()
    first = criterion.alignment_targets(model, sample)
    assert model.training and all(m.training for m in model.modules())
    second = criterion.alignment_targets(model, sample)
    assert all(torch.equal(a, b) for a, b in zip(first, second))  # no dropout noise
    model.eval()
    with torch.no_grad():
        by_hand = model.encoder.sentence_encoder(tokens, path=anchor.split(","),
                                                 return_all_hiddens=True)[1]
    model.train()
    assert all(torch.equal(a, b) for a, b in zip(first, by_hand))
    # The child's own forward keeps its dropout: two criterion calls differ in
    # the MLM loss, the alignment targets do not move, the mode stays training.
    _, _, out1 = criterion(model, sample)
    _, _, out2 = criterion(model, sample)
    assert out1["align_on"] == out2["align_on"] == 1
    assert float(out1["mlm_loss"]) != float(out2["mlm_loss"])
    assert model.training and str(model.get_active_path()) == child


# -------------------------------------------------------------- validation

def test_valid_step_validates_the_last_trained_child_or_a_fixed_random_one(data_bin):
    cfg = training_cfg(data_bin)
    task, model, criterion = build_in_process(data_bin, cfg=cfg)
    sample = masked_batch(task)
    space = task.search_space
    # Nothing trained yet: a random child from the local RNG "magic-valid:<seed>".
    fixed = random_arch(space, random.Random(f"magic-valid:{cfg.common.seed}"))
    other = space.parse("ffn,ffn,ffn,ffn" if str(fixed) != "ffn,ffn,ffn,ffn"
                        else "conv3,conv3,conv3,conv3")
    state = random.getstate()
    for _ in range(2):  # the same child every time, the global RNG untouched
        model.set_active_path(other)
        loss, n, _ = task.valid_step(sample, model, criterion)
        assert model.get_active_path() == fixed
    assert random.getstate() == state
    # ...and the loss is that child's, in eval mode (dropout 0.1 is on in training)
    assert float(loss) / n / math.log(2) == pytest.approx(
        reference_loss_bits(model, str(fixed), [sample]), abs=1e-5)
    # After an update: the child that update trained.
    opt = fairseq_optimizer(cfg, model)
    train_update(task, model, criterion, opt, sample, 0)
    trained = model.get_active_path()
    assert trained == task.sampler.path_for_update(0)
    model.set_active_path(other if trained != other else fixed)
    loss, n, _ = task.valid_step(sample, model, criterion)
    assert model.get_active_path() == trained
    assert float(loss) / n / math.log(2) == pytest.approx(
        reference_loss_bits(model, str(trained), [sample]), abs=1e-5)
    # --magic-valid-arch wins over both
    pinned = "conv5,conv5,mha2d32,ffn"
    cfg = training_cfg(data_bin, "--magic-valid-arch", pinned)
    task, model, criterion = build_in_process(data_bin, cfg=cfg)
    task.valid_step(sample, model, criterion)
    assert str(model.get_active_path()) == pinned
    train_update(task, model, criterion, fairseq_optimizer(cfg, model), sample, 0)
    assert str(model.get_active_path()) != pinned  # trained another child...
    task.valid_step(sample, model, criterion)
    assert str(model.get_active_path()) == pinned  # ...validated the pinned one


# ---------------------------------------- refused training set-ups (no launch)

def test_fp16_optimizer_is_refused_before_the_first_update(data_bin, tmp_path):
    from fairseq.optim.fp16_optimizer import FP16Optimizer, MemoryEfficientFP16Optimizer

    log = tmp_path / "p.jsonl"
    # --fp16-no-flatten-grads: FP16Optimizer's flat buffers assume CUDA
    flags = ["--fp16", "--fp16-no-flatten-grads", "--magic-path-log", str(log)]
    cfg = training_cfg(data_bin, *flags)
    task, model, criterion = build_in_process(data_bin, cfg=cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    sample = masked_batch(task)
    # What fairseq's Trainer builds for --fp16: refused in the first train_step,
    # before the path is logged or anything runs.
    with pytest.raises(MagicConfigError, match=r"--fp16/--bf16 use FP16Optimizer.*"
                                               r"--memory-efficient-fp16 or --amp"):
        task.train_step(sample, model, criterion, FP16Optimizer.build_optimizer(cfg, params), 0)
    assert not log.exists() and all(p.grad is None for p in model.parameters())
    # ...what it builds for --memory-efficient-fp16 is accepted
    cfg = training_cfg(data_bin, "--memory-efficient-fp16", "--magic-path-log", str(log))
    task, model, criterion = build_in_process(data_bin, cfg=cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = MemoryEfficientFP16Optimizer.build_optimizer(cfg, params)
    task.train_step(sample, model, criterion, opt, 0)
    assert log.read_text().count("\n") == 1


@pytest.fixture
def gloo_world_of_one(tmp_path, monkeypatch):
    """A 1-rank gloo process group, and fairseq's CPU DDP shim (undone after)."""
    import torch.distributed as dist
    import fairseq.models.distributed_fairseq_model as dfm
    from fairseq.distributed import utils as dist_utils

    from fairseq_magic.cli.train_cpu_ddp import apply_cpu_ddp_shim

    monkeypatch.setattr(dfm, "DistributedDataParallel", dfm.DistributedDataParallel)
    apply_cpu_ddp_shim()
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0,
                            world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()
        # fairseq caches its global group on the function: drop the dead one
        if hasattr(dist_utils.get_global_group, "_global_group"):
            del dist_utils.get_global_group._global_group


@pytest.mark.parametrize("flags,needle", [
    (["--ddp-backend", "c10d"], "--ddp-backend c10d needs --find-unused-parameters"),
    (["--ddp-backend", "legacy_ddp"], "--ddp-backend legacy_ddp/no_c10d zero-fills"),
    (["--ddp-backend", "no_c10d"], "--ddp-backend legacy_ddp/no_c10d zero-fills"),
    (["--ddp-backend", "c10d", "--find-unused-parameters"], None),
])
def test_ddp_wrappers_that_touch_unused_candidates_are_refused(
        data_bin, tmp_path, gloo_world_of_one, flags, needle):
    from fairseq.models.distributed_fairseq_model import DistributedFairseqModel

    log = tmp_path / "p.jsonl"
    cfg = training_cfg(data_bin, *flags, "--magic-path-log", str(log))
    task, model, criterion = build_in_process(data_bin, cfg=cfg)
    # the wrapper fairseq's Trainer puts around the model for these flags
    wrapped = DistributedFairseqModel(cfg.distributed_training, model,
                                      process_group=gloo_world_of_one,
                                      device=torch.device("cpu"))
    opt = fairseq_optimizer(cfg, model)
    sample = masked_batch(task)
    if needle:
        with pytest.raises(MagicConfigError, match=needle):
            task.train_step(sample, wrapped, criterion, opt, 0)
        assert not log.exists() and all(p.grad is None for p in model.parameters())
    else:
        train_update(task, wrapped, criterion, opt, sample, 0)
        path = str(model.get_active_path()).split(",")
        for name, p in model.named_parameters():
            if ".candidates." in name:
                layer, op = name[len(PREFIX):].split(".")[0], name.split(".candidates.")[1]
                assert (p.grad is None) == (path[int(layer)] != op.split(".")[0]), name
        assert log.read_text().count("\n") == 1


# ------------------------------------------------------- named architectures

PAPER = ("mha12", "ffn", "conv3", "conv5")


@pytest.mark.parametrize("arch,extra,ops,embed", [
    ("magic_supernet_base", [], PAPER, 64),
    ("magic_supernet_base_fact512", [], PAPER, 512),
    ("magic_supernet_compress", [], ("mha8", "ffn", "conv3", "conv5"), 64),
    ("magic_supernet_tiny", ["--magic-embed-dim", "16"], ("mha2", "ffn", "conv3", "conv5"), 16),
])
def test_presets_build_and_train_one_update_at_small_width(data_bin, arch, extra, ops, embed):
    # The preset's own operators and embedding size, at 2 layers x hidden 64.
    cfg = training_cfg(data_bin, "--encoder-layers", "2", "--encoder-embed-dim", "64", *extra,
                       arch=arch, model=())
    task, model, criterion = build_in_process(data_bin, cfg=cfg)
    enc = model.encoder.sentence_encoder
    vocab = len(task.source_dictionary)
    assert task.search_space.candidates == ops and task.search_space.num_layers == 2
    assert enc.embed_tokens.weight.shape == (vocab, embed)
    assert (enc.embed_proj is not None) == (embed != 64)
    assert (model.encoder.lm_head.out_proj is not None) == (embed != 64)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = fairseq_optimizer(cfg, model)
    log = train_update(task, model, criterion, opt, masked_batch(task, n=8), 0)
    path = str(model.get_active_path())
    # At BERT initialisation every token is about equally likely: log2(vocab) bits.
    bits = float(log["loss"]) / log["sample_size"] / math.log(2)
    assert abs(bits - math.log2(vocab)) < 0.1, (bits, math.log2(vocab))
    # The trained parameters are exactly the child the cost model counts.
    trained = sum(p.numel() for p in model.parameters() if p.grad is not None)
    assert trained == model.child_cost(path)["params"]
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {n for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch,layers,hidden,ops,embed", [
    ("magic_supernet_base", 26, 768, "paper", None),
    ("magic_supernet_base_fact512", 26, 768, "paper", 512),
    ("magic_supernet_compress", 26, 512, "mha8,ffn,conv3,conv5", None),
    ("magic_supernet_tiny", 8, 128, "mha2,ffn,conv3,conv5", None),
])
def test_preset_values(arch, layers, hidden, ops, embed):
    from argparse import Namespace

    from fairseq.models import ARCH_CONFIG_REGISTRY

    import fairseq_magic  # noqa: F401  (registers the architectures)

    ns = Namespace()
    ARCH_CONFIG_REGISTRY[arch](ns)
    assert (ns.encoder_layers, ns.encoder_embed_dim, ns.magic_ops) == (layers, hidden, ops)
    assert getattr(ns, "magic_embed_dim", None) == embed
    # a flag given on the command line wins over the preset
    ns = Namespace(encoder_layers=2, magic_embed_dim=0)
    ARCH_CONFIG_REGISTRY[arch](ns)
    assert ns.encoder_layers == 2 and ns.magic_embed_dim == 0


# --------------------------------------------------- alignment block boundaries

@pytest.mark.parametrize("layers,every,expected", [
    (6, 4, [3, 5]),        # 1-based: layer 4, then the top layer 6
    (4, 3, [2, 3]),
    (4, 1, [0, 1, 2, 3]),
    (4, 8, [3]),           # a block longer than the model: the top layer only
])
def test_criterion_aligns_exactly_the_block_boundary_outputs(data_bin, layers, every, expected):
    from fairseq_magic.core.alignment import block_boundaries

    assert block_boundaries(layers, every) == expected
    task, model, criterion = build_in_process(
        data_bin, "--magic-method", "magic_a", "--magic-align-warmup-epochs", "0",
        "--magic-align-every", str(every), "--encoder-layers", str(layers), *NO_DROPOUT)
    assert criterion.boundaries == block_boundaries(layers, every)
    rng = random.Random(f"boundaries:{layers}:{every}")
    child = random_arch(task.search_space, rng)
    anchor = task.search_space.parse(",".join(
        ["ffn" if child[0] != "ffn" else "conv3"] + list(random_arch(task.search_space, rng))[1:]))
    task.anchor.arch = anchor
    model.set_active_path(child)
    model.train()
    sample = masked_batch(task)
    _, sample_size, out = criterion(model, sample)
    got = float(out["align_loss"]) / sample_size  # logged as MSE sum x masked tokens

    # By hand: both paths' layer outputs (no dropout: train = eval), squared
    # error averaged over the non-pad positions and the hidden dims, per layer.
    tokens = sample["net_input"]["src_tokens"]
    real = tokens.ne(task.source_dictionary.pad()).unsqueeze(-1).double()
    encoder = model.encoder.sentence_encoder
    with torch.no_grad():
        h_child = encoder(tokens, path=child, return_all_hiddens=True)[1]
        h_anchor = encoder(tokens, path=anchor, return_all_hiddens=True)[1]
    mse = [float((((c.double() - a.double()) * real) ** 2).sum() / (real.sum() * c.size(-1)))
           for c, a in zip(h_child, h_anchor)]
    assert len(mse) == layers and min(mse) > 0  # the paths differ from layer 0 on
    assert got == pytest.approx(sum(mse[n] for n in expected), rel=1e-5)
    for other in ({layers - 1}, set(range(layers))):  # top only / every layer
        if other != set(expected):
            assert abs(got - sum(mse[n] for n in other)) > 1e-3 * got
