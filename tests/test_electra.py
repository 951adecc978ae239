"""ELECTRA-style super-net (issue 10): generator + searched discriminator,
``--criterion magic_electra`` (replaced token detection), anchor scoring,
2-rank training, exact resume, export and fine-tuning, bad values.

One tiny E-MAGIC-AT super-net (4 layers x hidden 32, generator hidden 10)
trains for 40 updates in-process (module fixture); the resume test re-runs it
in two halves, the export tests cut its discriminator out, the held-out test
compares it with its initial weights.
"""

import json
import math
import os
import textwrap

import pytest
import torch
import torch.nn.functional as F

from conftest import (USER_DIR, build_in_process, cli_in_process, fairseq_optimizer,
                      fairseq_preprocess, make_text, masked_batch, train_args,
                      train_in_process, train_update, training_cfg)
from fairseq_magic.core.space import MagicConfigError

ARCH = "magic_electra_supernet"
SPEC = "mha2d32,ffn,conv3,conv5"
LAYERS = "encoder.sentence_encoder.layers."
UPDATES = 40
# E-MAGIC-AT: MAGIC-T paths + anchor alignment on the discriminator. lr 5e-3:
# fast enough for 40 updates to move both losses on held-out data.
EAT = ["--criterion", "magic_electra", "--magic-method", "magic_at",
       "--magic-anchor-interval", "5", "--magic-anchor-valid-batches", "2",
       "--magic-align-warmup-epochs", "0", "--lr", "5e-3"]


def electra_args(data, save, *extra, updates=UPDATES):
    return train_args(data, save, *EAT, "--magic-path-log", os.path.join(save, "p.jsonl"),
                      *extra, updates=updates, arch=ARCH)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def candidate_of(name):
    """(layer, op) of a discriminator candidate's parameter, else None."""
    if not name.startswith(LAYERS):
        return None
    layer, kind, op = name[len(LAYERS):].split(".")[:3]
    return int(layer), op


@pytest.fixture(scope="module")
def electra_run(data_bin, tmp_path_factory):
    save = str(tmp_path_factory.mktemp("electra_at"))
    proc = train_in_process(electra_args(data_bin, save))
    return save, proc.stdout


@pytest.fixture(scope="module")
def built(data_bin):
    """(task, model, criterion, cfg) of an ELECTRA super-net, fresh weights."""
    cfg = training_cfg(data_bin, "--criterion", "magic_electra", arch=ARCH)
    task, model, criterion = build_in_process(data_bin, cfg=cfg)
    return task, model, criterion, cfg


# ------------------------------------------------------------ the model
def test_generator_sizes_and_one_shared_embedding(data_bin, built):
    task, model, _, _ = built
    gen, enc = model.generator, model.encoder.sentence_encoder
    # 1/3 of hidden 32 = 10, heads max(1, 10 // 64) = 1, FFN 40, same depth (4)
    assert model.generator_dims == (10, 1, 4)
    assert gen.ops == ("mha1d10", "ffn", "mha1d10", "ffn")
    assert gen.layers[1].op.fc1.weight.shape == (40, 10)
    # One token table, one position table, one embedding LayerNorm: the
    # generator holds none of its own; its output layer is the token table.
    assert gen.lm_head.weight is enc.embed_tokens.weight
    embeddings = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    assert embeddings == [enc.embed_tokens, enc.embed_positions]
    assert not any(isinstance(m, torch.nn.Embedding) for m in gen.modules())
    assert gen.embed_proj.weight.shape == (10, 32)  # shared 32 -> generator's 10
    # The generator reads the shared LayerNorm: changing it changes its logits.
    tokens = masked_batch(task)["net_input"]["src_tokens"]
    model.eval()
    with torch.no_grad():
        before = gen(tokens, enc)
        shift = torch.randn(enc.layernorm_embedding.bias.shape,
                            generator=torch.Generator().manual_seed(0))
        enc.layernorm_embedding.bias.add_(shift)
        after = gen(tokens, enc)
        enc.layernorm_embedding.bias.sub_(shift)
    model.train()
    assert (before - after).abs().max() > 1e-3
    # The parameters the generator adds, the shared table counted once.
    own = sum(p.numel() for n, p in gen.named_parameters() if n != "lm_head.weight")
    assert model.generator_params() == own == 3463
    # Factorised embeddings (--magic-embed-dim 16): one 16-wide table, each
    # tower projecting to its own width.
    _, fact, _ = build_in_process(data_bin, "--criterion", "magic_electra",
                                  "--magic-embed-dim", "16", arch=ARCH)
    fenc = fact.encoder.sentence_encoder
    assert fenc.embed_tokens.weight.shape[1] == 16
    assert fact.generator.lm_head.weight is fenc.embed_tokens.weight
    assert fenc.embed_proj.weight.shape == (32, 16)
    assert fact.generator.embed_proj.weight.shape == (10, 16)
    assert fact.generator.lm_head.out_proj.weight.shape == (16, 10)


def test_masking_follows_electra_and_is_seeded(built):
    from fairseq_magic.models.magic_electra import rng_for, rtd_mask

    task, _, _, _ = built
    d = task.source_dictionary
    mask_idx, pad = d.index("<mask>"), d.pad()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(d.nspecial, mask_idx, (400, 60), generator=g)
    tokens[:, 0], tokens[:, -1] = d.bos(), d.eos()
    tokens[::2, 50:] = pad                       # half the rows padded to 50 tokens
    tokens[1::4, 10] = d.unk()
    state = torch.random.get_rng_state()
    masked, inp = rtd_mask(tokens, d, 0.15, rng_for("cpu", "t", 1))
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG untouched
    nonpad = tokens.ne(pad)
    want = torch.round(nonpad.sum(1).double() * 0.15).long()
    assert torch.equal(masked.sum(1), want)       # 9 of 60, 8 of 50 per sequence
    special = (tokens < d.nspecial) | tokens.eq(mask_idx)
    assert not (masked & special).any()           # never <s>, </s>, <pad>, <unk>
    assert torch.equal(inp[~masked], tokens[~masked])
    shown = inp[masked].eq(mask_idx).float().mean().item()
    kept = inp[masked].eq(tokens[masked]).float().mean().item()
    print(f"masked {int(masked.sum())} tokens: {shown:.3f} <mask>, {kept:.3f} kept")
    assert abs(shown - 0.85) < 0.015
    assert int((inp[masked].eq(mask_idx) | inp[masked].eq(tokens[masked])).sum()) == \
        int(masked.sum())  # no random tokens
    # the same seed gives the same masking, another seed another
    again, _ = rtd_mask(tokens, d, 0.15, rng_for("cpu", "t", 1))
    other, _ = rtd_mask(tokens, d, 0.15, rng_for("cpu", "t", 2))
    assert torch.equal(again, masked) and not torch.equal(other, masked)


def test_criterion_masking_is_fixed_per_seed_update_and_micro_batch(built):
    task, model, criterion, _ = built
    sample = masked_batch(task)
    model.train()
    model.set_active_path(SPEC)

    def masked_input(update):
        task.current_update = update
        with torch.no_grad():
            return criterion.rtd_outputs(model, sample).masked_input

    criterion._micro = (None, 0)
    a = masked_input(5)
    b = masked_input(5)  # the update's second micro-batch: another draw
    criterion._micro = (None, 0)
    assert torch.equal(masked_input(5), a) and not torch.equal(a, b)
    assert not torch.equal(masked_input(6), a)
    model.eval()  # validation: seeded by the batch's example ids
    with torch.no_grad():
        v1 = criterion.rtd_outputs(model, sample).corrupted
        torch.manual_seed(123)
        v2 = criterion.rtd_outputs(model, sample).corrupted
    model.train()
    assert torch.equal(v1, v2)
    task.current_update = 0


def test_labels_are_replacements_and_samples_get_no_gradient(built):
    task, model, criterion, _ = built
    sample = masked_batch(task, n=8)
    model.train()
    model.set_active_path(SPEC)
    model.zero_grad(set_to_none=True)
    out = criterion.rtd_outputs(model, sample)
    # labels: exactly "replaced by a different token", on non-pad tokens only
    assert torch.equal(out.labels, out.corrupted.ne(out.tokens) & out.nonpad)
    assert not (out.labels & ~out.masked).any()
    assert torch.equal(out.corrupted[~out.masked], out.tokens[~out.masked])
    print(f"{int(out.masked.sum())} masked, {int(out.labels.sum())} replaced")
    # The discriminator's loss reaches neither the generator's logits (the
    # discrete samples carry no gradient) nor any generator-only weight.
    disc = F.binary_cross_entropy_with_logits(out.disc_logits[out.nonpad],
                                              out.labels[out.nonpad].float())
    assert torch.autograd.grad(disc, out.gen_logits, retain_graph=True,
                               allow_unused=True) == (None,)
    disc.backward(retain_graph=True)
    shared = {id(p) for p in model.encoder.parameters()}
    gen_only = [n for n, p in model.generator.named_parameters() if id(p) not in shared]
    assert gen_only and all(dict(model.generator.named_parameters())[n].grad is None
                            for n in gen_only)
    # ...and the generator's loss reaches no discriminator layer nor the RTD head.
    model.zero_grad(set_to_none=True)
    F.cross_entropy(out.gen_logits, out.tokens[out.masked]).backward()
    disc_only = [n for n, p in model.named_parameters()
                 if n.startswith((LAYERS, "encoder.rtd_head."))]
    assert all(dict(model.named_parameters())[n].grad is None for n in disc_only)
    assert all(p.grad is not None for n, p in model.generator.named_parameters())
    model.zero_grad(set_to_none=True)

    # A sample equal to the original counts as original: make the generator
    # propose one token everywhere; masked positions holding it get label 0.
    bias = model.generator.lm_head.bias
    target = int(out.tokens[out.masked].mode().values)
    with torch.no_grad():
        saved = bias.clone()
        bias[target] = 1e4
        forced = criterion.rtd_outputs(model, sample)
        bias.copy_(saved)
    same = forced.masked & forced.tokens.eq(target)
    print(f"{int(same.sum())} masked positions held the proposed token {target}")
    assert same.any() and not forced.labels[same].any()
    assert forced.labels[forced.masked & ~same].all()
    assert torch.equal(forced.corrupted[forced.masked],
                       torch.full_like(forced.corrupted[forced.masked], target))


def test_loss_is_generator_plus_50_disc_and_logs(built):
    task, model, criterion, _ = built
    sample = masked_batch(task, n=8)
    model.train()
    model.set_active_path(SPEC)
    task.current_update, criterion._micro = 3, (None, 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same dropout in both passes
        loss, n, log = criterion(model, sample)
        criterion._micro = (None, 0)
        torch.manual_seed(0)
        out = criterion.rtd_outputs(model, sample)  # the same draw again
    gen = F.cross_entropy(out.gen_logits.double(), out.tokens[out.masked]).item()
    disc = F.binary_cross_entropy_with_logits(
        out.disc_logits[out.nonpad].double(), out.labels[out.nonpad].double()).item()
    assert n == int(out.nonpad.sum()) and log["masked"] == int(out.masked.sum())
    assert float(loss) / n == pytest.approx(gen + 50 * disc, rel=1e-5)
    # at BERT initialisation: log(vocab) nats per masked token, ln 2 per token
    vocab = len(task.source_dictionary)
    print(f"gen {gen:.4f} (ln V {math.log(vocab):.4f}), disc {disc:.4f} (ln 2 0.6931)")
    assert abs(gen - math.log(vocab)) < 0.1 and abs(disc - math.log(2)) < 0.05
    assert log["replaced"] == int(out.labels.sum()) and log["align_on"] == 0
    task.current_update = 0


def test_an_update_moves_the_active_path_and_generator_only(built, data_bin):
    _, _, _, cfg = built
    task, model, criterion = build_in_process(data_bin, cfg=cfg)
    opt = fairseq_optimizer(cfg, model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_update(task, model, criterion, opt, masked_batch(task, n=8), 0)
    path = model.get_active_path()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    off = {n for n in before if candidate_of(n) and path[candidate_of(n)[0]] != candidate_of(n)[1]}
    on = {n for n in before if candidate_of(n) and n not in off}
    gen = {"generator." + n for n, _ in model.generator.named_parameters()
           if n != "lm_head.weight"}
    assert off and not (moved & off)
    assert on <= moved and gen <= moved
    shared = {n for n in before if not candidate_of(n) and not n.startswith("generator.")}
    assert moved == on | gen | shared  # embeddings and the RTD head: shared, trained


def test_fp16_optimizer_is_refused_as_for_mlm(data_bin, tmp_path):
    from fairseq.optim.fp16_optimizer import FP16Optimizer, MemoryEfficientFP16Optimizer

    log = tmp_path / "p.jsonl"
    for flag, refused in (("--fp16", True), ("--memory-efficient-fp16", False)):
        cfg = training_cfg(data_bin, "--criterion", "magic_electra", flag,
                           "--fp16-no-flatten-grads", "--magic-path-log", str(log), arch=ARCH)
        task, model, criterion = build_in_process(data_bin, cfg=cfg)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = (FP16Optimizer if refused else MemoryEfficientFP16Optimizer).build_optimizer(
            cfg, params)
        if refused:
            with pytest.raises(MagicConfigError, match="--fp16/--bf16 use FP16Optimizer"):
                task.train_step(masked_batch(task), model, criterion, opt, 0)
            assert not log.exists() and all(p.grad is None for p in model.parameters())
        else:
            task.train_step(masked_batch(task), model, criterion, opt, 0)
            assert log.read_text().count("\n") == 1


# --------------------------------------------------------- training runs
def test_resume_equals_uninterrupted(electra_run, data_bin, tmp_path):
    full = electra_run[0]
    split = str(tmp_path / "split")
    train_in_process(electra_args(data_bin, split, updates=UPDATES // 2))
    train_in_process(electra_args(data_bin, split))
    a = torch.load(os.path.join(full, "checkpoint_last.pt"))
    b = torch.load(os.path.join(split, "checkpoint_last.pt"))
    diff = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])
    assert diff == 0.0 and set(a["model"]) == set(b["model"])
    assert any(k.startswith("generator.") for k in a["model"])
    log_a, log_b = read_jsonl(os.path.join(full, "p.jsonl")), read_jsonl(
        os.path.join(split, "p.jsonl"))
    assert log_a == log_b and [r["update"] for r in log_a] == list(range(1, UPDATES + 1))
    sa, sb = a["extra_state"]["MagicTask"], b["extra_state"]["MagicTask"]
    assert sa["anchor"] == sb["anchor"] and sa["sampler"] == sb["sampler"]
    # an anchor was chosen (by RTD validation) and MAGIC-T changed one layer at a time
    assert sa["anchor"]["arch"] and all(r["anchor"] for r in log_a[5:])
    for prev, cur in zip(log_a, log_a[1:]):
        assert sum(x != y for x, y in zip(prev["path"].split(","),
                                          cur["path"].split(","))) == 1


def test_logs_and_anchor_evaluations(electra_run):
    out = electra_run[1]
    assert "anchor evaluation at update 5:" in out
    assert "(discriminator RTD loss, bits per non-pad token)" in out
    line = [ln for ln in out.splitlines() if "| train | epoch 001" in ln][-1]
    for key in ("gen_loss", "disc_loss", "disc_acc", "replaced_frac", "align_loss",
                "anchor_loss", "gen_ppl"):
        assert f"| {key} " in line, key


def held_out_losses(task, model, criterion, batches, specs):
    """Mean (gen, disc) loss in bits over ``specs`` on ``batches``, eval mode
    (the validation masking: fixed per batch)."""
    model.eval()
    gen = disc = 0.0
    with torch.no_grad():
        for spec in specs:
            model.set_active_path(spec)
            logs = [criterion(model, b)[2] for b in batches]
            n = sum(log["sample_size"] for log in logs)
            gen += sum(float(log["gen_loss"]) for log in logs) / n / math.log(2)
            disc += sum(float(log["disc_loss"]) for log in logs) / n / math.log(2)
    model.train()
    return gen / len(specs), disc / len(specs)


def test_short_run_lowers_generator_and_discriminator_loss_on_held_out_data(
        electra_run, data_bin):
    from fairseq_magic.evaluation import fixed_batches, load_supernet

    save = electra_run[0]
    model, task, cfg, extra = load_supernet(os.path.join(save, "checkpoint_last.pt"))
    criterion = task.build_criterion(cfg.criterion)
    init_task, init_model, init_criterion = build_in_process(
        data_bin, cfg=training_cfg(data_bin, *EAT, arch=ARCH))
    batches = fixed_batches(task, "valid", 4, 16)
    specs = [extra["MagicTask"]["anchor"]["arch"], SPEC, "conv3,ffn,mha2d32,ffn"]
    g0, d0 = held_out_losses(init_task, init_model, init_criterion, batches, specs)
    g1, d1 = held_out_losses(task, model, criterion, batches, specs)
    print(f"held-out, {UPDATES} updates: generator {g0:.3f} -> {g1:.3f} bits per masked "
          f"token, discriminator {d0:.3f} -> {d1:.3f} bits per token")
    assert g1 < g0 - 0.2 and d1 < d0 - 0.2


def test_anchor_score_is_the_discriminators_rtd_loss_on_fixed_inputs(electra_run):
    from fairseq_magic.evaluation import fixed_batches, load_supernet, score_child
    from fairseq_magic.models.magic_electra import sample_rng

    model, task, _, _ = load_supernet(os.path.join(electra_run[0], "checkpoint_last.pt"))
    batches = fixed_batches(task, "valid", 3, 8)
    score = score_child(model, SPEC, batches)
    # the same score whatever ran before, in any batch order, via the task
    torch.manual_seed(7)
    model.train()
    assert score_child(model, SPEC, batches[::-1]) == pytest.approx(score, abs=1e-12)
    assert model.training  # restored
    model.eval()
    task._anchor_batches = batches
    assert task.score_arch(model, model.search_space.parse(SPEC)) == pytest.approx(score)
    other = score_child(model, "conv5,conv3,ffn,mha2d32", batches)
    # an independent float64 recomputation from the pieces
    pad, total, count = task.source_dictionary.pad(), 0.0, 0
    model.set_active_path(SPEC)
    with torch.no_grad():
        for b in batches:
            tokens, masked, inp, noise = model.rtd_inputs(
                b, 0.15, sample_rng(b, "cpu"))
            logits = model.generator(inp, model.sentence_encoder, masked).double() + noise
            logits[:, model.rtd_no_sample] = -math.inf
            corrupted = inp.clone()
            corrupted[masked] = logits.argmax(-1)
            x, _ = model.sentence_encoder(corrupted)
            p = torch.sigmoid(model.encoder.rtd_head(x).double())
            y = corrupted.ne(tokens).double()
            nll = -(y * p.log() + (1 - y) * (1 - p).log())
            total += nll[tokens.ne(pad)].sum().item()
            count += int(tokens.ne(pad).sum())
    print(f"RTD score {SPEC}: {score:.5f} bits (reference {total / count / math.log(2):.5f});"
          f" conv5,conv3,ffn,mha2d32: {other:.5f}")
    assert score == pytest.approx(total / count / math.log(2), rel=1e-5)
    assert other != pytest.approx(score, abs=1e-4)
    # magic-children scores ELECTRA children the same way
    rc, stdout, stderr = cli_in_process(
        "fairseq_magic.cli.children", "magic-children", os.path.join(electra_run[0],
                                                                     "checkpoint_last.pt"),
        "--arch", SPEC, "--num-random", "0", "--no-anchor", "--max-batches", "3",
        "--batch-size", "8")
    assert rc == 0, stderr[-2000:]
    assert f"{score:.3f}" in stdout
    assert "replaced-token-detection loss in bits per non-pad token" in stdout


def test_shrinking_and_search_rate_children_by_rtd_loss(data_bin, electra_run, tmp_path):
    from fairseq_magic.evaluation import fixed_batches, load_supernet, score_child

    # E-SPOS with progressive shrinking: 64 sentences per update, so epoch 1 ends
    # after a few updates and the space shrinks at the start of epoch 2
    save = tmp_path / "shrink"
    proc = train_in_process(train_args(
        data_bin, save, "--criterion", "magic_electra", "--magic-shrink",
        "--magic-shrink-per-epoch", "3", "--magic-shrink-children", "6",
        "--magic-anchor-valid-batches", "1", "--batch-size", "64", "--max-epoch", "2",
        updates=1000, arch=ARCH))
    assert "shrinking after epoch 1: removed" in proc.stdout
    state = torch.load(save / "checkpoint_last.pt")["extra_state"]["MagicTask"]
    (event,) = state["shrink_history"]
    ratings = [r for _, _, r in event["removed"]]
    print(f"removed {event['removed']}, {event['size']} children left")
    # ratings are mean RTD scores, bits per token (the MLM loss here is ~5 bits)
    assert len(ratings) == 3 and all(0.3 < r < 1.2 for r in ratings)
    assert event["size"] == math.prod(len(c) for c in state["search_space"]["choices"]) < 256
    # magic-search ranks children by the same score
    ckpt = os.path.join(electra_run[0], "checkpoint_last.pt")
    out = tmp_path / "search"
    rc, _, stderr = cli_in_process(
        "fairseq_magic.cli.search", "magic-search", ckpt, "--out", out, "--strategy",
        "random", "--samples", "4", "--max-batches", "2", "--batch-size", "8",
        "--top-k", "2", "--no-progress")
    assert rc == 0, stderr[-2000:]
    top = json.loads((out / "search.json").read_text())["top_k"]
    model, task, _, _ = load_supernet(ckpt)
    batches = fixed_batches(task, "valid", 2, 8)
    for row in top:
        assert row["score"] == pytest.approx(score_child(model, row["spec"], batches))
    assert top[0]["score"] <= top[1]["score"] < 1.2


# ------------------------------------------------------------ 2 ranks
PROBE_CHANGED = textwrap.dedent("""
    import json, os, sys
    import torch
    from fairseq.trainer import Trainer
    from fairseq_magic.cli import train_cpu_ddp
    from fairseq_magic.model_utils import unwrap_model

    out_dir = sys.argv.pop(1)
    original = Trainer.train_step

    def train_step(self, *args, **kwargs):
        bare = unwrap_model(self.model)
        named = list(bare.named_parameters())
        before = {n: p.detach().clone() for n, p in named}
        result = original(self, *args, **kwargs)
        rank = torch.distributed.get_rank()
        record = {"update": self.get_num_updates(), "path": ",".join(bare.get_active_path()),
                  "changed": [n for n, p in named if not torch.equal(p.detach(), before[n])]}
        with open(os.path.join(out_dir, f"probe.rank{rank}.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\\n")
        if self.get_num_updates() == int(os.environ["PROBE_LAST"]):
            torch.save({k: v.clone() for k, v in bare.state_dict().items()},
                       os.path.join(out_dir, f"final.rank{rank}.pt"))
        return result

    Trainer.train_step = train_step
    train_cpu_ddp.cli_main()
""")


def test_two_gloo_ranks_keep_paths_and_weights_identical(data_bin, tmp_path):
    from test_distributed import check_ok, torchrun

    save = tmp_path / "ddp"
    save.mkdir()
    script = save / "probe.py"
    script.write_text(PROBE_CHANGED)
    updates = 6
    os.environ["PROBE_LAST"] = str(updates)
    try:
        proc = torchrun(str(script), [save, *train_args(
            data_bin, save, *EAT, "--magic-anchor-interval", "3",
            "--magic-path-log", save / "paths.jsonl", updates=updates, arch=ARCH)])
    finally:
        del os.environ["PROBE_LAST"]
    check_ok(proc)
    logs = [read_jsonl(save / f"paths.rank{r}.jsonl") for r in (0, 1)]
    assert logs[0] == [dict(r, rank=0) for r in logs[1]]  # same paths and anchors
    assert [r["update"] for r in logs[0]] == list(range(1, updates + 1))
    assert logs[0][-1]["anchor"]  # chosen by all-reduced RTD scores, on both ranks
    sd = [torch.load(save / f"final.rank{r}.pt") for r in (0, 1)]
    assert sd[0].keys() == sd[1].keys()
    assert all(torch.equal(sd[0][k], sd[1][k]) for k in sd[0])
    ckpt = torch.load(save / "checkpoint_last.pt")["model"]
    assert all(torch.equal(ckpt[k], sd[0][k]) for k in ckpt)
    for rank in (0, 1):
        for rec in read_jsonl(save / f"probe.rank{rank}.jsonl"):
            if rec["update"] == 1:
                continue  # warm-up: lr 0 at the first step
            path, changed = rec["path"].split(","), set(rec["changed"])
            off = {n for n in sd[0] if candidate_of(n) and
                   path[candidate_of(n)[0]] != candidate_of(n)[1]}
            assert off and not (changed & off), rec["update"]
            assert any(n.startswith("generator.layers.") for n in changed)


# ------------------------------------------------------------ export
@pytest.fixture(scope="module")
def exported(electra_run, tmp_path_factory):
    from fairseq_magic.cli.export import main

    out = tmp_path_factory.mktemp("electra_export")
    ckpt = os.path.join(electra_run[0], "checkpoint_last.pt")
    assert main([ckpt, "--arch", SPEC, "--out", str(out / "disc")]) == 0
    assert main([ckpt, "--arch", SPEC, "--out", str(out / "full"), "--keep-generator"]) == 0
    return ckpt, out


def test_exported_discriminator_equals_the_supernet_path(exported):
    from fairseq import checkpoint_utils

    from fairseq_magic.evaluation import load_supernet
    from fairseq_magic.models.magic_electra import MagicElectraChildModel

    ckpt, out = exported
    sn, task, _, _ = load_supernet(ckpt)
    sn.set_active_path(SPEC)
    models, cfg, _ = checkpoint_utils.load_model_ensemble_and_task(
        [str(out / "disc" / "model.pt")])
    child = models[0].eval()
    assert isinstance(child, MagicElectraChildModel) and child.generator is None
    assert cfg.model._name == "magic_electra_child" and cfg.task._name == "masked_lm"
    state = torch.load(out / "disc" / "model.pt")["model"]
    assert not any(k.startswith("generator.") for k in state)
    record = json.loads((out / "disc" / "export.json").read_text())
    n_child = sum(p.numel() for p in child.parameters())
    assert record["params"] == n_child == sn.child_cost(SPEC)["params"]
    assert record["objective"] == "electra" and record["generator_params"] == 0
    tokens = masked_batch(task)["net_input"]["src_tokens"]
    with torch.no_grad():
        for kwargs in ({}, {"features_only": True}):
            a, b = sn(tokens, **kwargs)[0], child(tokens, **kwargs)[0]
            assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-6
        ha = sn.sentence_encoder(tokens, return_all_hiddens=True)[1]
        hb = child.sentence_encoder(tokens, return_all_hiddens=True)[1]
    assert len(ha) == len(hb) == 4
    assert max((x - y).abs().max().item() for x, y in zip(ha, hb)) <= 1e-6
    # fairseq's hub interface loads it like any export (the discriminator's features)
    from fairseq_magic.hub import from_pretrained

    hub = from_pretrained(str(out / "disc")).eval()
    with torch.no_grad():
        assert torch.equal(hub.extract_features(tokens[0]), child(tokens[:1],
                                                                  features_only=True)[0])
    # --keep-generator: the generator too, under a magic task config
    full = torch.load(out / "full" / "model.pt")
    assert full["cfg"]["task"]["_name"] == "magic"
    gen = {k: v for k, v in full["model"].items() if k.startswith("generator.")}
    assert gen and all(torch.equal(v, sn.state_dict()[k]) for k, v in gen.items())
    assert json.loads((out / "full" / "export.json").read_text())["generator_params"] == \
        sn.generator_params()


def test_exported_discriminator_finetunes_and_the_full_export_pretrains(
        exported, data_bin, tmp_path):
    import random

    _, out = exported
    text = tmp_path / "text"
    text.mkdir()
    rng = random.Random(0)
    for split, n, seed in (("train", 48, 5), ("valid", 16, 6)):
        make_text(text / f"{split}.raw", n, seed)
        lines = [ln for ln in (text / f"{split}.raw").read_text().splitlines() if ln]
        (text / f"{split}.input0").write_text("\n".join(lines) + "\n")
        (text / f"{split}.label").write_text("\n".join(
            "pos" if "king" in ln or rng.random() < 0.2 else "neg" for ln in lines) + "\n")
    cls = tmp_path / "cls-bin"
    for name, extra in (("input0", ["--srcdict", os.path.join(data_bin, "dict.txt")]),
                        ("label", [])):
        fairseq_preprocess("--only-source", "--trainpref", text / f"train.{name}",
                           "--validpref", text / f"valid.{name}", "--destdir", cls / name,
                           "--workers", "1", *extra)
    common = ["--user-dir", USER_DIR, "--arch", "magic_electra_child", "--magic-arch", SPEC,
              "--encoder-embed-dim", "32", "--optimizer", "adam", "--lr", "1e-4",
              "--lr-scheduler", "fixed", "--batch-size", "8", "--cpu", "--num-workers", "0",
              "--seed", "1", "--log-format", "simple", "--log-interval", "1",
              "--no-epoch-checkpoints", "--disable-validation", "--reset-optimizer",
              "--reset-dataloader", "--reset-meters", "--reset-lr-scheduler"]
    ft = tmp_path / "ft"
    proc = train_in_process([
        str(cls), *common, "--task", "sentence_prediction", "--criterion",
        "sentence_prediction", "--num-classes", "2", "--init-token", "0",
        "--max-positions", "32", "--max-update", "3", "--save-dir", str(ft),
        "--restore-file", str(out / "disc" / "model.pt")])
    assert "Loaded checkpoint" in proc.stdout and "num_updates 3" in proc.stdout
    start = torch.load(out / "disc" / "model.pt")["model"]
    after = torch.load(ft / "checkpoint_last.pt")["model"]
    head = {k for k in after if k.startswith("classification_heads.")}
    assert head and set(after) - head == set(start)
    assert max((after[k] - start[k]).abs().max().item() for k in start) > 0
    # the --keep-generator export continues RTD pre-training (--task magic)
    pt = tmp_path / "pt"
    proc = train_in_process([
        data_bin, *common, "--task", "magic", "--criterion", "magic_electra",
        "--tokens-per-sample", "32", "--max-update", "2", "--save-dir", str(pt),
        "--restore-file", str(out / "full" / "model.pt")])
    assert "num_updates 2" in proc.stdout and "disc_loss" in proc.stdout
    # ...the discriminator-only export cannot: it has no generator
    proc = train_in_process([
        data_bin, *common, "--task", "magic", "--criterion", "magic_electra",
        "--tokens-per-sample", "32", "--max-update", "2", "--save-dir", str(tmp_path / "x"),
        "--restore-file", str(out / "disc" / "model.pt")], check=False)
    assert proc.returncode != 0 and "re-export with --keep-generator" in proc.stderr


# ------------------------------------------------------------ bad values
@pytest.mark.parametrize("extra,arch,needle", [
    (["--electra-disc-weight", "0"], ARCH,
     "--electra-disc-weight 0.0: expected a finite value > 0"),
    (["--electra-disc-weight", "-50"], ARCH, "--electra-disc-weight -50.0"),
    (["--electra-mask-prob", "1.5"], ARCH, "--electra-mask-prob 1.5: expected 0 < p < 1"),
    (["--electra-generator-embed-dim", "200"], ARCH,
     "ELECTRA generator hidden size 200 (--electra-generator-embed-dim 200) does not "
     "divide into 3 attention heads"),
    (["--electra-generator-embed-dim", "12", "--electra-generator-heads", "5"], ARCH,
     "does not divide into 5 attention heads (--electra-generator-heads)"),
    (["--electra-generator-layers", "-1"], ARCH, "--electra-generator-layers -1: expected >= 0"),
    (["--criterion", "magic_alignment"], ARCH,
     "--criterion magic_alignment with --arch magic_electra_supernet: an ELECTRA model "
     "pre-trains with --criterion magic_electra"),
    ([], "magic_supernet", "--criterion magic_electra with --arch magic_supernet: "
                           "expected an ELECTRA model"),
])
def test_bad_values_fail_before_training(data_bin, extra, arch, needle):
    with pytest.raises(MagicConfigError) as err:
        build_in_process(data_bin, "--criterion", "magic_electra", *extra, arch=arch)
    assert needle in str(err.value)


def test_checkpoints_of_the_other_objective_are_refused(electra_run, trained_supernet,
                                                        data_bin, tmp_path):
    reset = ["--reset-optimizer", "--reset-dataloader", "--reset-meters",
             "--reset-lr-scheduler"]
    ckpt = os.path.join(electra_run[0], "checkpoint_last.pt")
    # an ELECTRA checkpoint given to a masked-LM run
    proc = train_in_process(train_args(data_bin, tmp_path / "a", "--restore-file", ckpt,
                                       *reset, updates=1), check=False)
    assert proc.returncode != 0
    assert "MagicConfigError: the checkpoint is an ELECTRA model (replaced token " \
           "detection: keys under generator. / encoder.rtd_head.), this run is --arch " \
           "magic_supernet with --magic-ops 'mha2d32,ffn,conv3,conv5' (masked LM)" \
        in proc.stderr
    # a masked-LM checkpoint given to an ELECTRA run
    proc = train_in_process(train_args(data_bin, tmp_path / "b", "--criterion",
                                       "magic_electra", "--restore-file", trained_supernet,
                                       *reset, updates=1, arch=ARCH), check=False)
    assert proc.returncode != 0
    assert "MagicConfigError: the checkpoint is a masked-LM model (it has an LM head, " \
           "encoder.lm_head.*: --arch magic_supernet / magic_child), this run is --arch " \
           "magic_electra_supernet (ELECTRA)" in proc.stderr
    for d in ("a", "b"):
        assert not (tmp_path / d / "checkpoint_last.pt").exists()
    # magic-export: --keep-generator on a masked-LM super-net
    rc, _, stderr = cli_in_process("fairseq_magic.cli.export", "magic-export",
                                   trained_supernet, "--arch", SPEC, "--out",
                                   tmp_path / "e", "--keep-generator")
    assert rc == 2 and "--keep-generator: checkpoint" in stderr and \
        "has no generator" in stderr
    assert not (tmp_path / "e").exists()


# ------------------------------------------------------------ benchmark
def test_overhead_benchmark_runs_at_toy_size(data_bin, tmp_path, monkeypatch):
    """benchmarks/electra_overhead.py end to end on a toy model (the real
    measurement is the lead's: see the script's docstring)."""
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location(
        "electra_overhead_bench", os.path.join(REPO, "benchmarks", "electra_overhead.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for name in ("TARGET", "MAGIC_AT_TARGET"):  # targets no toy run can miss
        monkeypatch.setattr(bench, name, 1e9)
    out_json, md = tmp_path / "e.json", tmp_path / "RESULTS.md"
    out_json.write_text(json.dumps({"other": 1}))
    md.write_text("# Results\n\nintro\n")
    argv = ["--layers", "2", "--hidden", "32", "--ops", "mha2d32,ffn,conv3,conv5",
            "--path", "conv3,mha2d32", "--batch-size", "4", "--seq-len", "16",
            "--rounds", "2", "--updates-per-round", "2", "--warmup", "1", "--batches", "2",
            "--threads", "1", "--data", data_bin, "--json-out", str(out_json),
            "--results-md", str(md), "--check"]
    assert bench.main(argv) == 0
    data = json.loads(out_json.read_text())
    c, m = data["electra_child"], data["electra_magic"]
    assert data["other"] == 1
    assert data["supernet_over_child"] == pytest.approx(
        c["median_update_ms"]["supernet"] / c["median_update_ms"]["child"], rel=1e-9)
    assert data["magic_at_over_spos"] == pytest.approx(
        m["median_update_ms"]["magic_at"] / m["median_update_ms"]["spos"], rel=1e-9)
    assert c["equivalence_check"]["loss_abs_diff"] <= 1e-4 and c["off_path_params_untouched"]
    assert c["config"]["generator"] == [10, 1, 2]
    text = md.read_text()
    assert text.startswith("# Results\n\nintro\n") and text.count(bench.MD_BEGIN) == 1
    assert "`supernet_over_child`" in text and "`magic_at_over_spos`" in text
    # a rerun of one part replaces the section, keeping the other part's numbers
    assert bench.main(argv[:-1] + ["--parts", "child"]) == 0
    again = json.loads(out_json.read_text())
    assert again["electra_magic"] == m and again["electra_child"]["date"] >= c["date"]
    text = md.read_text()
    assert text.count(bench.MD_BEGIN) == 1 and "`magic_at_over_spos`" in text
