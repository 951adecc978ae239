"""The candidate operators as torch modules: NAS-BERT's convolution
(``nbconv<K>``) against a forward written out here, padding that never leaks
into real tokens, shapes, and the operator inside a real fairseq super-net."""

import math

import pytest
import torch
import torch.nn.functional as F

from fairseq_magic.core.space import MagicConfigError, expand_op_set, parse_op
from fairseq_magic.model_utils import mlm_loss
from fairseq_magic.modules.operators import NasBertConv, build_operator

from conftest import build_in_process, masked_batch


def test_nbconv_grammar_keeps_conv_meaning_and_has_an_alias():
    nb = parse_op("nbconv5", 768)
    assert (nb.kind, nb.kernel, nb.hidden) == ("nbconv", 5, 768)
    assert parse_op("conv5", 768).kind == "conv"  # old specs and checkpoints unchanged
    assert expand_op_set("paper_nbconv", 768) == ("mha12", "ffn", "nbconv3", "nbconv5")
    assert expand_op_set("mha2,nbconv7,conv3", 64) == ("mha2", "nbconv7", "conv3")
    with pytest.raises(MagicConfigError, match="'nbconv4'.*odd"):
        parse_op("nbconv4", 768)
    for bad in ("nbconv", "nbconv3x", "nb3"):
        with pytest.raises(MagicConfigError, match=rf"unknown operator '{bad}'.*nbconv<K>"):
            parse_op(bad, 768)
    with pytest.raises(MagicConfigError, match="paper_nbconv"):
        expand_op_set("mha2,,ffn", 64)  # the alias list in the message names it


def reference_nbconv(module, x, pad_mask):
    """NAS-BERT's convolution (ML.NET's EncConvLayer) spelled out, eval mode:
    per sub-layer, zero pads -> depthwise K -> pointwise -> GELU -> + input
    (unmasked) -> LayerNorm."""
    for block in module.blocks:
        op, ln = block.op, block.layer_norm
        y = x.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        k = op.depthwise.kernel_size[0]
        y = F.conv1d(y.transpose(1, 2), op.depthwise.weight, op.depthwise.bias,
                     padding=k // 2, groups=x.size(-1)).transpose(1, 2)
        y = F.gelu(y @ op.pointwise_weight.t() + op.pointwise_bias)
        x = F.layer_norm(x + y, (x.size(-1),), ln.weight, ln.bias, ln.eps)
    return x


@pytest.mark.parametrize("kernel", [3, 5])
def test_nbconv_is_two_separable_post_ln_sub_layers(kernel):
    torch.manual_seed(0)
    module = build_operator(f"nbconv{kernel}", 16, dropout=0.1).eval()
    assert isinstance(module, NasBertConv) and len(module.blocks) == 2
    assert module.blocks[0].op.pointwise_weight is not module.blocks[1].op.pointwise_weight
    with torch.no_grad():  # LayerNorm's affine starts at (1, 0): make it matter
        for p in module.parameters():
            if p.dim() == 1:
                p.normal_()
    x = torch.randn(3, 9, 16)
    pad_mask = torch.zeros(3, 9, dtype=torch.bool)
    pad_mask[1, 6:] = True
    pad_mask[2, 2:] = True
    out = module(x, pad_mask)
    torch.testing.assert_close(out, reference_nbconv(module, x, pad_mask))
    # One sub-layer alone is a different function: the second block is used.
    assert not torch.allclose(out, module.blocks[0](x, pad_mask))


def test_nbconv_initialisation_follows_nas_bert():
    torch.manual_seed(0)
    h, k, p = 256, 3, 0.1
    module = build_operator(f"nbconv{k}", h, dropout=p)
    expected = math.sqrt(4 * (1 - p) / (k * h))  # 0.1186
    for block in module.blocks:
        for w in (block.op.pointwise_weight, block.op.depthwise.weight):
            assert abs(float(w.std()) / expected - 1) < 0.1
            assert abs(float(w.mean())) < 0.2 * expected
        assert torch.count_nonzero(block.op.pointwise_bias) == 0


@pytest.mark.parametrize("name", ["conv3", "conv5", "nbconv3", "nbconv5", "mha2d16", "ffn"])
def test_padding_never_leaks_into_real_tokens(name):
    torch.manual_seed(1)
    module = build_operator(name, 16).eval()
    lengths = [7, 4, 1]
    t = max(lengths)
    real = [torch.randn(1, n, 16) for n in lengths]
    alone = [module(r, None) for r in real]  # each sequence with no padding at all

    batch = 50.0 * torch.randn(len(lengths), t, 16)  # large garbage in the pads
    pad_mask = torch.ones(len(lengths), t, dtype=torch.bool)
    for i, (r, n) in enumerate(zip(real, lengths)):
        batch[i, :n] = r[0]
        pad_mask[i, :n] = False
    out = module(batch, pad_mask)
    assert out.shape == batch.shape
    for i, n in enumerate(lengths):
        torch.testing.assert_close(out[i, :n], alone[i][0], atol=1e-5, rtol=1e-4)
    if "conv" in name:
        # Without the mask the same garbage reaches the real tokens next to it:
        # what the mask is there to stop.
        unmasked = module(batch, None)
        assert not torch.allclose(unmasked[1, :4], alone[1][0], atol=1e-3)


@pytest.mark.parametrize("name,t", [("nbconv3", 1), ("nbconv7", 2), ("nbconv5", 33)])
def test_nbconv_keeps_the_shape_for_any_length(name, t):
    module = build_operator(name, 8).train()
    x = torch.randn(2, t, 8, requires_grad=True)
    out = module(x, None)
    assert out.shape == (2, t, 8)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_nbconv_in_a_fairseq_supernet(data_bin):
    spec = "nbconv3,ffn,conv5,nbconv5"
    task, model, _ = build_in_process(
        data_bin, "--magic-ops", "mha2d32,ffn,conv5,nbconv3,nbconv5")
    # RoBERTa's BERT init rewrites every nn.Linear to N(0, 0.02); NAS-BERT's
    # rule (sqrt(4 x 0.9 / (3 x 32)) = 0.19 here) must survive it.
    layer0 = model.encoder.sentence_encoder.layers[0].candidates["nbconv3"]
    std = float(layer0.blocks[0].op.pointwise_weight.std())
    assert abs(std / math.sqrt(4 * 0.9 / (3 * 32)) - 1) < 0.15

    weights = {t.data_ptr(): t for t in model.child_state_dict(spec).values()}  # tied once
    assert sum(t.numel() for t in weights.values()) == model.child_cost(spec)["params"]

    model.set_active_path(spec)
    model.train()
    loss, n, _ = mlm_loss(model, masked_batch(task), task.source_dictionary.pad())
    (loss / n).backward()
    layers = model.encoder.sentence_encoder.layers
    on_path = list(layers[0].candidates["nbconv3"].parameters())
    on_path += list(layers[3].candidates["nbconv5"].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in on_path)
    off_path = list(layers[0].candidates["nbconv5"].parameters())
    off_path += list(layers[3].candidates["nbconv3"].parameters())
    assert all(p.grad is None for p in off_path)
