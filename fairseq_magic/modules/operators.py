"""Candidate operators of the BERT search space (torch only).

Every operator is a BERT post-LN sub-layer: ``LayerNorm(x + Dropout(op(x)))``
(``nbconv<K>``, NAS-BERT's convolution, is two of them in sequence).
The LayerNorm belongs to the candidate (as it belongs to the sub-layer in BERT),
so a shared candidate carries everything it needs wherever it sits in a path.

Tensors are batch-first: ``x`` is (batch, time, hidden); ``pad_mask`` is
(batch, time) with True at padding positions, or None.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.space import OpSpec, parse_op


class MultiHeadAttention(nn.Module):
    """BERT self-attention: H heads sharing a QKV width D (head dim D/H)."""

    def __init__(self, spec: OpSpec, attention_dropout: float):
        super().__init__()
        self.heads = spec.heads
        self.qkv_dim = spec.qkv_dim
        # One fused projection: a single matmul instead of three.
        self.in_proj = nn.Linear(spec.hidden, 3 * spec.qkv_dim)
        self.out_proj = nn.Linear(spec.qkv_dim, spec.hidden)
        self.attention_dropout = attention_dropout

    def forward(self, x, pad_mask):
        b, t, _ = x.shape
        q, k, v = (
            self.in_proj(x)
            .view(b, t, 3, self.heads, self.qkv_dim // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        # SDPA's boolean mask marks positions that MAY be attended to.
        mask = None if pad_mask is None else ~pad_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask,
            dropout_p=self.attention_dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, self.qkv_dim))


class FeedForward(nn.Module):
    """BERT FFN: Linear(hidden, inner) -> GELU -> Linear(inner, hidden)."""

    def __init__(self, spec: OpSpec, activation_dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(spec.hidden, spec.inner)
        self.fc2 = nn.Linear(spec.inner, spec.hidden)
        self.activation_dropout = nn.Dropout(activation_dropout)

    def forward(self, x, pad_mask):
        return self.fc2(self.activation_dropout(F.gelu(self.fc1(x))))


class SeparableConv(nn.Module):
    """Separable convolution (appendix A.1; Chollet, 2017), our exact design:

        Linear(h, h) -> mask padding -> depthwise Conv1d(kernel K, groups h,
        'same' padding) -> GELU -> Linear(h, h)

    The paper's Figure 7 drawing is not in our copy. This design reproduces the
    appendix's Table 6 sizes exactly (CONV3 1.18M, CONV5 1.19M parameters at
    hidden 768, LayerNorm excluded): 2 pointwise h x h maps plus K x h depthwise
    weights, so the kernel size barely changes the parameter count. Padding
    positions are zeroed before the depthwise conv so pads never leak into
    real tokens, whatever the batch's padding. NAS-BERT's published design,
    which the appendix cites for its CONV operators, is ``NasBertConv`` below.
    """

    def __init__(self, spec: OpSpec, activation_dropout: float):
        super().__init__()
        h = spec.hidden
        self.kernel = spec.kernel
        self.in_proj = nn.Linear(h, h)
        self.depthwise = nn.Conv1d(h, h, spec.kernel, padding=spec.kernel // 2, groups=h)
        self.out_proj = nn.Linear(h, h)
        self.activation_dropout = nn.Dropout(activation_dropout)

    def forward(self, x, pad_mask):
        x = self.in_proj(x)
        if pad_mask is not None:
            x = x.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        x = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        return self.out_proj(self.activation_dropout(F.gelu(x)))


class DepthwisePointwise(nn.Module):
    """One half of NAS-BERT's convolution: mask padding -> depthwise Conv1d(K)
    -> pointwise h x h -> GELU.

    NAS-BERT's own code is not public; the design is that of Microsoft's port of
    its pre-trained model to ML.NET (dotnet/machinelearning,
    src/Microsoft.ML.TorchSharp/NasBert/Modules/ConvSeparable.cs and
    Layers/EncConvLayer.cs). Its initialisation is kept too: both weights
    N(0, sqrt(4 (1 - p) / (K h))) (the convolutional seq2seq rule, p the
    dropout), pointwise bias 0. The pointwise weight is a bare Parameter used
    with F.linear -- the same map as a kernel-1 Conv1d at matmul speed -- so
    RoBERTa's BERT init, which rewrites every nn.Linear, leaves that rule alone.
    """

    def __init__(self, hidden: int, kernel: int, dropout: float):
        super().__init__()
        std = math.sqrt(4 * (1.0 - dropout) / (kernel * hidden))
        self.depthwise = nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden)
        nn.init.normal_(self.depthwise.weight, mean=0.0, std=std)
        self.pointwise_weight = nn.Parameter(torch.empty(hidden, hidden).normal_(0.0, std))
        self.pointwise_bias = nn.Parameter(torch.zeros(hidden))

    def forward(self, x, pad_mask):
        # Pads are zeroed at EVERY half: the first half's LayerNorm makes them
        # non-zero again, and the depthwise kernel would carry them into the
        # real tokens next to them.
        if pad_mask is not None:
            x = x.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        x = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        return F.gelu(F.linear(x, self.pointwise_weight, self.pointwise_bias))


class SubLayer(nn.Module):
    """Residual + post-LayerNorm wrapper: what one layer of the chain runs."""

    def __init__(self, op: nn.Module, hidden: int, dropout: float):
        super().__init__()
        self.op = op
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(hidden)

    def forward(self, x, pad_mask):
        return self.layer_norm(x + self.dropout(self.op(x, pad_mask)))


class NasBertConv(nn.Module):
    """NAS-BERT's convolution operator (``nbconv<K>``): two post-LN sub-layers,

        x1 = LayerNorm(x  + Dropout(GELU(pointwise(depthwise_K(mask(x))))))
        y  = LayerNorm(x1 + Dropout(GELU(pointwise(depthwise_K(mask(x1))))))

    each with its own weights. One search-space layer, two residual blocks:
    the chain's layer count is unchanged. The branch dropout is the model's
    ``dropout`` (ML.NET's port names its single rate there activation dropout;
    every other sub-layer here uses ``dropout`` at that place).
    """

    def __init__(self, hidden: int, kernel: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(
            SubLayer(DepthwisePointwise(hidden, kernel, dropout), hidden, dropout)
            for _ in range(2))

    def forward(self, x, pad_mask):
        for block in self.blocks:
            x = block(x, pad_mask)
        return x


def build_operator(name: str, hidden: int, dropout: float = 0.1,
                   attention_dropout: float = 0.1,
                   activation_dropout: float = 0.0) -> nn.Module:
    """The module one layer runs for operator ``name``: ``module(x, pad_mask)``."""
    spec = parse_op(name, hidden)
    if spec.kind == "nbconv":
        # Holds its own two residual blocks; no extra wrapper.
        return NasBertConv(hidden, spec.kernel, dropout)
    if spec.kind == "mha":
        op = MultiHeadAttention(spec, attention_dropout)
    elif spec.kind == "ffn":
        op = FeedForward(spec, activation_dropout)
    elif spec.kind == "conv":
        op = SeparableConv(spec, activation_dropout)
    else:
        raise ValueError(f"no module for operator kind {spec.kind!r}")
    return SubLayer(op, hidden, dropout)
