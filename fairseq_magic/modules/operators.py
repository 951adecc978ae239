"""Candidate operators of the BERT search space (torch only).

Every operator is a BERT post-LN sub-layer: ``LayerNorm(x + Dropout(op(x)))``.
The LayerNorm belongs to the candidate (as it belongs to the sub-layer in BERT),
so a shared candidate carries everything it needs wherever it sits in a path.

Tensors are batch-first: ``x`` is (batch, time, hidden); ``pad_mask`` is
(batch, time) with True at padding positions, or None.
"""

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
    real tokens, whatever the batch's padding.
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


class SubLayer(nn.Module):
    """Residual + post-LayerNorm wrapper: what one layer of the chain runs."""

    def __init__(self, op: nn.Module, hidden: int, dropout: float):
        super().__init__()
        self.op = op
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(hidden)

    def forward(self, x, pad_mask):
        return self.layer_norm(x + self.dropout(self.op(x, pad_mask)))


def build_operator(name: str, hidden: int, dropout: float = 0.1,
                   attention_dropout: float = 0.1,
                   activation_dropout: float = 0.0) -> SubLayer:
    spec = parse_op(name, hidden)
    if spec.kind == "mha":
        op = MultiHeadAttention(spec, attention_dropout)
    elif spec.kind == "ffn":
        op = FeedForward(spec, activation_dropout)
    else:
        op = SeparableConv(spec, activation_dropout)
    return SubLayer(op, hidden, dropout)
