"""Parameter and FLOPs counting for children (fairseq-free).

Conventions, chosen to reproduce the paper's Table 2 (BERT-base: 110M params,
2.9e10 FLOPs; RoBERTa-base: 125M, 3.3e10):

* FLOPs = 2 x multiply-accumulates of the matrix products and convolutions, for
  ONE sequence of ``seq_len`` tokens (default 128, the paper's max length).
  Biases, LayerNorm, softmax and activations are not counted.
* The LM head projects every position (as a full forward of a profiler does),
  so ``flops`` includes it; ``body_flops`` is the searched layers alone.
* ``params`` counts every parameter of the child model (embeddings, layers, LM
  head with tied output embedding), exactly what ``magic_child`` holds. The
  search-space operators' own sizes (appendix Table 6) exclude their LayerNorm:
  use ``op_params(op, include_norm=False)`` to compare with that table.
"""

from typing import Dict, Optional, Sequence

from .space import OpSpec, parse_op


def op_params(op: OpSpec, include_norm: bool = True) -> int:
    h = op.hidden
    norm = 2 * h if include_norm else 0
    if op.kind == "mha":
        d = op.qkv_dim
        return 3 * d * h + 3 * d + d * h + h + norm
    if op.kind == "ffn":
        i = op.inner
        return h * i + i + i * h + h + norm
    if op.kind == "conv":
        # pointwise in, depthwise (kernel x channel + bias), pointwise out
        return 2 * (h * h + h) + op.kernel * h + h + norm
    if op.kind == "nbconv":
        # two sub-layers, each depthwise (kernel x channel + bias) + pointwise
        # (h x h + bias) with its own LayerNorm
        return 2 * (op.kernel * h + h + h * h + h) + 2 * norm
    raise ValueError(op.kind)


def op_flops(op: OpSpec, seq_len: int) -> int:
    h, n = op.hidden, seq_len
    if op.kind == "mha":
        d = op.qkv_dim
        macs = n * h * 3 * d + n * d * h + 2 * n * n * d  # projections, QK^T, AV
    elif op.kind == "ffn":
        macs = 2 * n * h * op.inner
    elif op.kind == "conv":
        macs = 2 * n * h * h + n * h * op.kernel
    elif op.kind == "nbconv":
        macs = 2 * (n * h * op.kernel + n * h * h)
    else:
        raise ValueError(op.kind)
    return 2 * macs


def child_cost(arch: Sequence[str], hidden: int, vocab_size: int,
               num_positions: int, embed_dim: Optional[int] = None,
               seq_len: int = 128) -> Dict[str, int]:
    """Params and FLOPs of a whole child model (embeddings + layers + LM head).

    ``num_positions`` is the number of rows of the learned position table;
    ``embed_dim`` is the factorized embedding size (None or == hidden: none).
    """
    h = hidden
    e = embed_dim or h
    factorized = e != h
    ops = [parse_op(o, h) for o in arch]
    body_params = sum(op_params(o) for o in ops)
    body_flops = sum(op_flops(o, seq_len) for o in ops)
    embed_params = vocab_size * e + num_positions * e + 2 * e + (e * h if factorized else 0)
    # dense + LayerNorm + (back to embed size) + output bias; output weight is tied
    head_params = h * h + h + 2 * h + (h * e if factorized else 0) + vocab_size
    embed_flops = 2 * seq_len * e * h if factorized else 0
    head_flops = 2 * seq_len * (h * h + (h * e if factorized else 0) + e * vocab_size)
    return {
        "params": embed_params + body_params + head_params,
        "flops": embed_flops + body_flops + head_flops,
        "body_params": body_params,
        "body_flops": body_flops,
        "embed_params": embed_params,
        "head_params": head_params,
        "seq_len": seq_len,
    }
