"""Parameter and FLOPs counts of every operator kind and of a whole child,
against hand counts written out here (hidden 8, T = 5 tokens) and against the
real torch modules (their parameters; torch's FLOP counter on their forward).

Convention (core/cost.py): FLOPs = 2 x multiply-accumulates (MACs) of matrix
products and convolutions; biases, LayerNorm, softmax and activations are free.
"""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fairseq_magic.core.cost import child_cost, op_flops, op_params
from fairseq_magic.core.space import parse_op
from fairseq_magic.modules.encoder import MagicLMHead, MagicSentenceEncoder
from fairseq_magic.modules.operators import build_operator

H, T = 8, 5

# name: (params with LayerNorm, params without, MACs for T tokens), by hand.
HAND = {
    # 2 heads sharing QKV width 8 (head dim 4).
    # params: in_proj 8x24 + 24 = 216, out_proj 8x8 + 8 = 72, LayerNorm 2x8 = 16
    # MACs: QKV 5x8x24 = 960, QK^T 2 heads x 5x5x4 = 200, AV 200, out 5x8x8 = 320
    "mha2d8": (216 + 72 + 16, 216 + 72, 960 + 200 + 200 + 320),
    # mha<H> = heads of dim 64 whatever the hidden size: QKV width 128.
    # params: in_proj 8x384 + 384 = 3456, out_proj 128x8 + 8 = 1032, LN 16
    # MACs: QKV 5x8x384 = 15360, QK^T 2 x 5x5x64 = 3200, AV 3200, out 5x128x8 = 5120
    "mha2": (3456 + 1032 + 16, 3456 + 1032, 15360 + 3200 + 3200 + 5120),
    # inner 4 x 8 = 32: fc1 8x32 + 32 = 288, fc2 32x8 + 8 = 264; MACs 2 x 5x8x32
    "ffn": (288 + 264 + 16, 288 + 264, 2560),
    # inner 12: fc1 8x12 + 12 = 108, fc2 12x8 + 8 = 104; MACs 2 x 5x8x12
    "ffn12": (108 + 104 + 16, 108 + 104, 960),
    # Linear 8x8 + 8 = 72, depthwise 3x8 + 8 = 32, Linear 72
    # MACs: 5x8x8 = 320, depthwise 5x8x3 = 120, 320
    "conv3": (72 + 32 + 72 + 16, 72 + 32 + 72, 320 + 120 + 320),
    "conv5": (72 + 48 + 72 + 16, 72 + 48 + 72, 320 + 200 + 320),
    # two sub-layers, each: depthwise 3x8 + 8 = 32, pointwise 8x8 + 8 = 72, LN 16
    # MACs per sub-layer: depthwise 5x8x3 = 120, pointwise 5x8x8 = 320
    "nbconv3": (2 * (32 + 72 + 16), 2 * (32 + 72), 2 * (120 + 320)),
    # depthwise 5x8 + 8 = 48; MACs 5x8x5 = 200
    "nbconv5": (2 * (48 + 72 + 16), 2 * (48 + 72), 2 * (200 + 320)),
}
# The attention products (QK^T and AV) of the mha rows, in MACs: torch's FLOP
# counter has no formula for SDPA's CPU kernel, so the measured side adds them.
ATTENTION_MACS = {"mha2d8": 400, "mha2": 6400}


@pytest.mark.parametrize("name", list(HAND))
def test_operator_params_and_flops_match_hand_count(name):
    params, params_no_norm, macs = HAND[name]
    op = parse_op(name, H)
    assert op_params(op) == params
    assert op_params(op, include_norm=False) == params_no_norm
    assert op_flops(op, T) == 2 * macs

    module = build_operator(name, H).eval()
    assert sum(p.numel() for p in module.parameters()) == params
    x = torch.randn(2, T, H)
    with FlopCounterMode(display=False) as counter:
        module(x, None)
    measured = counter.get_total_flops() / 2  # per sequence: the batch has 2
    assert measured + 2 * ATTENTION_MACS.get(name, 0) == 2 * macs


def test_flops_scale_with_tokens_as_the_operator_says():
    # Projections and convolutions grow linearly in T, attention products in T^2.
    # Doubling T doubles the linear part and quadruples the attention part:
    # 2 x (2 lin + 4 att) = 2 x flops(T) + 2 x 2 att.
    for name in HAND:
        op = parse_op(name, H)
        assert op_flops(op, 2 * T) == 2 * op_flops(op, T) + 4 * ATTENTION_MACS.get(name, 0), name


def _modules(arch, vocab, positions, embed_dim=None):
    enc = MagicSentenceEncoder(vocab_size=vocab, padding_idx=1, hidden=H,
                               layer_ops=[[o] for o in arch], max_positions=positions - 2,
                               embed_dim=embed_dim)
    head = MagicLMHead(H, enc.embed_dim, enc.embed_tokens.weight)
    return enc, head


@pytest.mark.parametrize("embed_dim", [None, 4])
def test_child_cost_embeddings_and_head_match_hand_count_and_modules(embed_dim):
    arch = ["mha2d8", "ffn", "conv3", "nbconv5"]
    vocab, positions = 10, 7  # 7 rows of the position table: 5 + fairseq's offset 2
    cost = child_cost(arch, H, vocab, positions, embed_dim=embed_dim, seq_len=T)
    body_params = sum(HAND[o][0] for o in arch)
    body_macs = sum(HAND[o][2] for o in arch)
    if embed_dim is None:
        # tokens 10x8 + positions 7x8 + embedding LayerNorm 16
        embed_params = 80 + 56 + 16
        # dense 8x8 + 8, LayerNorm 16, output bias 10 (output weight tied)
        head_params = 72 + 16 + 10
        embed_macs = 0
        head_macs = 5 * 8 * 8 + 5 * 8 * 10  # dense, vocabulary projection
    else:
        # tokens 10x4 + positions 7x4 + LayerNorm 8 + projection 4x8 (no bias)
        embed_params = 40 + 28 + 8 + 32
        # dense 72, LayerNorm 16, back to 4: 8x4 (no bias), output bias 10
        head_params = 72 + 16 + 32 + 10
        embed_macs = 5 * 4 * 8
        head_macs = 5 * 8 * 8 + 5 * 8 * 4 + 5 * 4 * 10
    assert cost["embed_params"] == embed_params
    assert cost["head_params"] == head_params
    assert cost["body_params"] == body_params
    assert cost["params"] == embed_params + body_params + head_params
    assert cost["body_flops"] == 2 * body_macs
    assert cost["flops"] == 2 * (embed_macs + body_macs + head_macs)

    enc, head = _modules(arch, vocab, positions, embed_dim)
    assert enc.embed_positions.num_embeddings == positions
    # The tied output weight IS the token embedding: count each tensor once.
    unique = {id(p): p for p in list(enc.parameters()) + list(head.parameters())}
    assert sum(p.numel() for p in unique.values()) == cost["params"]
    enc.eval()
    tokens = torch.randint(4, vocab, (1, T))
    with FlopCounterMode(display=False) as counter:
        x, _ = enc(tokens, path=arch)
        head(x)  # every position through the LM head, as the convention says
    assert counter.get_total_flops() + 2 * ATTENTION_MACS["mha2d8"] == cost["flops"]
