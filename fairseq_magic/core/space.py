"""Search space, operator names and child architecture specs (fairseq-free).

One readable spec names a child everywhere (CLI flags, logs, checkpoints, JSON):
a comma-separated list with one operator name per layer, e.g. ``mha12,ffn,conv3``.

Operator grammar (``hidden`` is the model width):

``mha<H>``        multi-head attention, H heads of dim 64 (BERT): ``mha12``
``mha<H>d<D>``    attention with H heads sharing a QKV width of D: ``mha8d384``
``ffn``           BERT feed-forward, inner size 4 x hidden
``ffn<I>``        feed-forward with inner size I: ``ffn832``
``conv<K>``       separable convolution with odd kernel K: ``conv3``
``nbconv<K>``     NAS-BERT's convolution (two separable-conv sub-layers), odd K

Names are concrete (they carry every size that is not the hidden size), so a
spec read back from a log builds exactly the same child.
"""

import math
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple


class MagicConfigError(ValueError):
    """A bad user-supplied value; the message names it and what was expected."""


# Operator sets users can name instead of listing operators.
#  paper:  the MAGIC search space of section 5 / appendix C.
#  table6: the interference-analysis space of appendix A, Table 6; sizes follow
#          the hidden size so the same study runs on tiny models.
#  paper_nbconv: the paper space with NAS-BERT's convolution in place of ours
#          (the appendix's Figure 7 drawing is not in our copy; see operators.py).
OP_SET_ALIASES = ("paper", "table6", "paper_nbconv")


def expand_op_set(ops: str, hidden: int) -> Tuple[str, ...]:
    """Turn ``--magic-ops`` (a list or an alias) into a tuple of operator names."""
    text = (ops or "").strip()
    if text == "paper":
        names = ["mha12", "ffn", "conv3", "conv5"]
    elif text == "paper_nbconv":
        names = ["mha12", "ffn", "nbconv3", "nbconv5"]
    elif text == "table6":
        # Table 6 at hidden 768: MHA6/MHA8 with QKV hidden 384, FFN inner 768,
        # FFN' inner 832, CONV3, CONV5 -- all ~1.18M parameters.
        qkv = hidden // 2
        names = [f"mha6d{qkv}", f"mha8d{qkv}", f"ffn{hidden}",
                 f"ffn{int(round(hidden * 13 / 12))}", "conv3", "conv5"]
    else:
        names = [n.strip() for n in text.split(",")]
    if not text or any(not n for n in names):
        raise MagicConfigError(
            f"--magic-ops {ops!r}: expected a non-empty comma-separated operator list "
            f"such as 'mha12,ffn,conv3,conv5' (or an alias: {', '.join(OP_SET_ALIASES)})"
        )
    if len(set(names)) != len(names):
        raise MagicConfigError(f"--magic-ops {ops!r}: operator names repeat")
    for n in names:
        parse_op(n, hidden)
    return tuple(names)


@dataclass(frozen=True)
class OpSpec:
    """Concrete sizes of one candidate operator at a given hidden size."""

    name: str
    kind: str  # "mha" | "ffn" | "conv" | "nbconv"
    hidden: int
    heads: int = 0
    qkv_dim: int = 0
    inner: int = 0
    kernel: int = 0


_OP_RE = re.compile(r"^(?:mha(\d+)(?:d(\d+))?|ffn(\d+)?|(nb)?conv(\d+))$")
_GRAMMAR = "mha<H>, mha<H>d<D>, ffn, ffn<I>, conv<K>, nbconv<K> (K odd)"


def parse_op(name: str, hidden: int) -> OpSpec:
    m = _OP_RE.match(name)
    if not m:
        raise MagicConfigError(f"unknown operator {name!r}: expected one of {_GRAMMAR}")
    heads, qkv, inner, nasbert, kernel = m.groups()
    if name.startswith("mha"):
        heads = int(heads)
        qkv = int(qkv) if qkv else 64 * heads
        if heads < 1 or qkv < heads or qkv % heads:
            raise MagicConfigError(
                f"operator {name!r}: the QKV width {qkv} must be a positive multiple "
                f"of the head count {heads}"
            )
        return OpSpec(name, "mha", hidden, heads=heads, qkv_dim=qkv)
    if name.startswith("ffn"):
        inner = int(inner) if inner else 4 * hidden
        if inner < 1:
            raise MagicConfigError(f"operator {name!r}: inner size must be >= 1")
        return OpSpec(name, "ffn", hidden, inner=inner)
    kernel = int(kernel)
    if kernel < 1 or kernel % 2 == 0:
        raise MagicConfigError(
            f"operator {name!r}: convolution kernel must be odd and >= 1 "
            "(odd kernels keep the sequence length with symmetric padding)"
        )
    return OpSpec(name, "nbconv" if nasbert else "conv", hidden, kernel=kernel)


class Arch(tuple):
    """A child architecture: one operator name per layer. ``str()`` is the spec."""

    def __new__(cls, ops: Iterable[str]):
        return super().__new__(cls, tuple(ops))

    def __str__(self):
        return ",".join(self)

    def __repr__(self):
        return f"Arch('{self}')"

    def diff(self, other: Sequence[str]) -> List[int]:
        """Layers where two archs of equal depth use different operators."""
        return [i for i, (a, b) in enumerate(zip(self, other)) if a != b]


def parse_arch_spec(spec, hidden: Optional[int] = None) -> Arch:
    """Parse ``'mha12,ffn,...'`` (or a list) into an Arch, checking operator names."""
    if isinstance(spec, str):
        text = spec.strip()
        ops = [o.strip() for o in text.split(",")] if text else []
    else:
        ops = [str(o).strip() for o in spec]
    if not ops or any(not o for o in ops):
        raise MagicConfigError(
            f"architecture spec {spec!r}: expected one operator name per layer, "
            "comma-separated, e.g. 'mha12,ffn,conv3'"
        )
    for o in ops:
        parse_op(o, hidden or 768)
    return Arch(ops)


class SearchSpace:
    """A chain of ``num_layers`` layers, each with its allowed operators.

    The per-layer choices can differ (progressive shrinking removes candidates
    layer by layer); ``candidates`` is the full operator set the super-net holds.
    """

    def __init__(self, candidates: Sequence[str], num_layers: int, hidden: int,
                 choices: Optional[Sequence[Sequence[str]]] = None):
        if num_layers < 1:
            raise MagicConfigError(f"number of layers {num_layers}: expected >= 1")
        self.hidden = int(hidden)
        self.candidates = tuple(candidates)
        if not self.candidates:
            raise MagicConfigError("empty operator list: expected at least one operator")
        self.ops = {n: parse_op(n, self.hidden) for n in self.candidates}
        self.num_layers = int(num_layers)
        if choices is None:
            choices = [self.candidates] * self.num_layers
        if len(choices) != self.num_layers:
            raise MagicConfigError(
                f"{len(choices)} per-layer choice lists for {self.num_layers} layers")
        self.choices = tuple(tuple(c) for c in choices)
        for i, c in enumerate(self.choices):
            bad = [o for o in c if o not in self.ops]
            if not c or bad:
                raise MagicConfigError(
                    f"layer {i}: choices {list(c)} must be a non-empty subset of "
                    f"{list(self.candidates)}")

    @classmethod
    def from_config(cls, ops: str, num_layers: int, hidden: int) -> "SearchSpace":
        return cls(expand_op_set(ops, hidden), num_layers, hidden)

    def size(self) -> int:
        return math.prod(len(c) for c in self.choices)

    def parse(self, spec) -> Arch:
        """Parse a spec and check it is a path of this space."""
        arch = spec if isinstance(spec, Arch) else parse_arch_spec(spec, self.hidden)
        self.validate(arch)
        return arch

    def validate(self, arch: Sequence[str]) -> None:
        if len(arch) != self.num_layers:
            raise MagicConfigError(
                f"architecture '{','.join(arch)}' has {len(arch)} layers: expected "
                f"{self.num_layers} (the super-net's depth)")
        for i, op in enumerate(arch):
            if op not in self.choices[i]:
                if op not in self.ops:
                    raise MagicConfigError(
                        f"unknown operator {op!r} at layer {i}: expected one of "
                        f"{list(self.candidates)}")
                raise MagicConfigError(
                    f"operator {op!r} at layer {i} was removed from the search space: "
                    f"expected one of {list(self.choices[i])}")

    def contains(self, arch: Sequence[str]) -> bool:
        try:
            self.validate(arch)
            return True
        except MagicConfigError:
            return False

    def state_dict(self) -> dict:
        return {"candidates": list(self.candidates), "num_layers": self.num_layers,
                "hidden": self.hidden, "choices": [list(c) for c in self.choices]}

    @classmethod
    def from_state_dict(cls, state: dict) -> "SearchSpace":
        return cls(state["candidates"], state["num_layers"], state["hidden"],
                   state["choices"])

    def __eq__(self, other):
        return isinstance(other, SearchSpace) and self.state_dict() == other.state_dict()

    def __repr__(self):
        return (f"SearchSpace({self.num_layers} layers x {list(self.candidates)}, "
                f"hidden={self.hidden}, {self.size():.3g} children)")
