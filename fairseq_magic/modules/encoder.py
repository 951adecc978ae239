"""The chain-styled super-net encoder and its MLM head (torch only).

A super-net layer holds every candidate operator in a ``ModuleDict``; a forward
pass runs exactly one candidate per layer (the active path), so an update costs
what the same child costs as a static model, and the candidates off the path
take no part in the graph: they get no gradient (``.grad`` stays None), which
fairseq's optimizers read as "skip" -- no weight decay, no moment update.

A child model is the same class with one candidate per layer, so parameter
names match between super-net and child and exporting is a key filter.
"""

from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.space import Arch, MagicConfigError
from .operators import build_operator


class ChoiceLayer(nn.Module):
    def __init__(self, ops: Sequence[str], hidden: int, **dropouts):
        super().__init__()
        self.candidates = nn.ModuleDict(
            {name: build_operator(name, hidden, **dropouts) for name in ops})

    def forward(self, x, pad_mask, op: str):
        return self.candidates[op](x, pad_mask)


def make_positions(tokens, padding_idx: int):
    """fairseq's convention: positions start at padding_idx + 1; pads keep padding_idx."""
    mask = tokens.ne(padding_idx).int()
    return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + padding_idx


class MagicSentenceEncoder(nn.Module):
    """Embeddings + a chain of choice layers. Batch-first throughout."""

    def __init__(self, vocab_size: int, padding_idx: int, hidden: int,
                 layer_ops: Sequence[Sequence[str]], max_positions: int,
                 embed_dim: Optional[int] = None, dropout: float = 0.1,
                 attention_dropout: float = 0.1, activation_dropout: float = 0.0):
        super().__init__()
        self.padding_idx = padding_idx
        self.hidden = hidden
        self.embed_dim = embed_dim or hidden
        self.max_positions = max_positions
        e = self.embed_dim
        self.embed_tokens = nn.Embedding(vocab_size, e, padding_idx)
        self.embed_positions = nn.Embedding(max_positions + padding_idx + 1, e, padding_idx)
        self.layernorm_embedding = nn.LayerNorm(e)
        # ALBERT-style factorization (appendix C): a small embedding table of
        # size e, then one e x hidden projection.
        self.embed_proj = nn.Linear(e, hidden, bias=False) if e != hidden else None
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            ChoiceLayer(ops, hidden, dropout=dropout, attention_dropout=attention_dropout,
                        activation_dropout=activation_dropout)
            for ops in layer_ops)
        self.active_path: Optional[Arch] = None

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def forward(self, tokens, path: Optional[Sequence[str]] = None,
                return_all_hiddens: bool = False):
        """Returns (features B x T x C, list of every layer's output or None)."""
        path = path if path is not None else self.active_path
        if path is None:
            raise MagicConfigError(
                "the super-net has no active path: call set_active_path(spec) first")
        if len(path) != len(self.layers):
            raise MagicConfigError(
                f"path '{','.join(path)}' has {len(path)} layers: expected {len(self.layers)}")
        if tokens.size(1) > self.max_positions:
            raise MagicConfigError(
                f"input of {tokens.size(1)} tokens exceeds max_positions {self.max_positions}")
        pad_mask = tokens.eq(self.padding_idx)
        x = self.embed_tokens(tokens) + self.embed_positions(
            make_positions(tokens, self.padding_idx))
        x = self.dropout(self.layernorm_embedding(x))
        if self.embed_proj is not None:
            x = self.embed_proj(x)
        has_pads = bool(pad_mask.any())
        if has_pads:
            x = x * (1 - pad_mask.unsqueeze(-1).type_as(x))
        mask = pad_mask if has_pads else None
        hiddens: List[torch.Tensor] = []
        for layer, op in zip(self.layers, path):
            x = layer(x, mask, op)
            if return_all_hiddens:
                hiddens.append(x)
        return x, (hiddens if return_all_hiddens else None)


class MagicLMHead(nn.Module):
    """RoBERTa's MLM head; the output projection is tied to the token embedding."""

    def __init__(self, hidden: int, embed_dim: int, weight: nn.Parameter):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.layer_norm = nn.LayerNorm(hidden)
        self.out_proj = nn.Linear(hidden, embed_dim, bias=False) if embed_dim != hidden else None
        self.weight = weight
        self.bias = nn.Parameter(torch.zeros(weight.size(0)))

    def forward(self, features, masked_tokens=None):
        # Project only the masked positions while training: the vocabulary
        # projection is the single largest matmul of a small model.
        if masked_tokens is not None:
            features = features[masked_tokens, :]
        x = self.layer_norm(F.gelu(self.dense(features)))
        if self.out_proj is not None:
            x = self.out_proj(x)
        return F.linear(x, self.weight) + self.bias
