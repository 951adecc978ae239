"""Gradient interference between child models on a shared operator (paper
section 3, appendix A.3/A.4; Figures 1, 2, 5, 6, 8).

A frozen super-net, one fixed batch, a shared operator o_g in layer j and C
child paths that are identical everywhere except in layers j+1..j+m: each
child's gradient on o_g's weights is flattened and the C x C cosine-similarity
matrix compared. This module holds the pure parts (path construction, cosine
matrix, averaging over repeats) and a small torch-only gradient helper; the
command line lives in ``fairseq_magic/cli/interference.py``.

**Layer numbering is 1-based, as in the paper** ("o_g in layer 1, the children
differ in layer 2"): layer 1 is the first operator layer after the embeddings,
so path index ``j - 1`` holds o_g. Every ``layer`` argument and every layer
number this module returns or writes uses that convention.

**Children differ in every varied layer.** In each of the m varied layers the
C children take C *distinct* operators, so every pair of children differs in
exactly m operators (the quantity on the x axis of Figure 2c). In layer j+1 the
C operators are listed in the space's candidate order (for m = 1 and C = all
candidates: the rows of Figure 2a); in layers j+2..j+m they are assigned in a
random order. Hence C <= the smallest number of operators a varied layer offers.
"""

import math
import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .samplers import random_arch
from .space import Arch, MagicConfigError, SearchSpace, parse_op

LAYER_NUMBERING = (
    "1-based as in the paper: layer 1 is the first operator layer after the "
    "embeddings; o_g sits in layer j, the children differ in layers j+1..j+m")


@dataclass(frozen=True)
class InterferenceCase:
    """One experiment: o_g = ``op`` in ``layer`` (1-based), C children that
    differ in layers layer+1..layer+m."""

    layer: int
    m: int
    op: str
    paths: Tuple[Arch, ...]
    repeat: int = 0

    @property
    def varied_layers(self) -> List[int]:
        return list(range(self.layer + 1, self.layer + self.m + 1))

    @property
    def labels(self) -> List[str]:
        """Per child, its operators in the varied layers ('ffn' for m = 1,
        'ffn,conv3' for m = 2)."""
        return [",".join(p[k - 1] for k in self.varied_layers) for p in self.paths]

    def to_dict(self) -> dict:
        return {"repeat": self.repeat, "layer": self.layer, "m": self.m, "op": self.op,
                "varied_layers": self.varied_layers, "labels": self.labels,
                "paths": [str(p) for p in self.paths]}


def check_op(space: SearchSpace, op: str) -> None:
    """``op`` must be one of the super-net's candidates."""
    if op not in space.ops:
        try:
            parse_op(op, space.hidden)
        except MagicConfigError as e:  # a malformed name: say which flag it came from
            raise MagicConfigError(f"--op {op!r}: {e}") from None
        raise MagicConfigError(
            f"unknown operator {op!r} for o_g (--op): expected one of "
            f"{list(space.candidates)}")


def children_limit(space: SearchSpace, layer: int, m: int) -> Tuple[int, int]:
    """(largest C, the 1-based layer that limits it) for children varying in
    layers layer+1..layer+m."""
    counts = [(len(space.choices[k - 1]), k) for k in range(layer + 1, layer + m + 1)]
    return min(counts)


def check_case(space: SearchSpace, layer: int, m: int, children: Optional[int] = None,
               op: Optional[str] = None) -> int:
    """Validate (j, m, C, o_g) against ``space``; returns the number of children
    C (``children``, or by default as many as every varied layer allows)."""
    n = space.num_layers
    if m < 1:
        raise MagicConfigError(f"--m {m}: expected >= 1 (the number of layers the children differ in)")
    if children is not None and children < 2:
        raise MagicConfigError(
            f"--children {children}: expected >= 2 (a cosine matrix needs two children)")
    if not 1 <= layer <= n:
        raise MagicConfigError(
            f"--layer {layer}: expected 1..{n - 1} (layers are 1-based; the super-net has {n})")
    if layer + m > n:
        raise MagicConfigError(
            f"--layer {layer} with --m {m}: the children would differ in layers "
            f"{layer + 1}..{layer + m}, beyond the last layer {n} (layers are 1-based): "
            f"expected j + m <= {n}")
    if op is not None:
        check_op(space, op)
        if op not in space.choices[layer - 1]:
            raise MagicConfigError(
                f"o_g {op!r} (--op) is not allowed in layer {layer}: expected one of "
                f"{list(space.choices[layer - 1])}")
    limit, where = children_limit(space, layer, m)
    c = limit if children is None else children
    if limit < 2:
        raise MagicConfigError(
            f"layer {where} offers only {list(space.choices[where - 1])}: fewer than 2 "
            f"children can differ there (o_g in layer {layer}, --m {m}); expected a layer "
            "with at least 2 operators")
    if c > limit:
        raise MagicConfigError(
            f"--children {c}: layer {where} offers only {limit} operators "
            f"{list(space.choices[where - 1])} and every pair of children must differ in "
            f"each of layers {layer + 1}..{layer + m}: expected 2..{limit}")
    return c


def valid_layers(space: SearchSpace, m: int, children: Optional[int] = None,
                 op: Optional[str] = None) -> List[int]:
    """Every layer j (1-based) where o_g can sit for this m, C and o_g."""
    out = []
    for j in range(1, space.num_layers + 1):
        try:
            check_case(space, j, m, children, op)
        except MagicConfigError:
            continue
        out.append(j)
    return out


def build_case(space: SearchSpace, layer: int, m: int, rng: random.Random,
               children: Optional[int] = None, op: Optional[str] = None,
               base: Optional[Sequence[str]] = None, repeat: int = 0) -> InterferenceCase:
    """C paths that all hold o_g in ``layer`` and agree with ``base`` (a random
    path of the space if None) outside layers layer+1..layer+m, where every
    pair differs. Deterministic for the state of ``rng``."""
    c = check_case(space, layer, m, children, op)
    path = list(base) if base is not None else list(random_arch(space, rng))
    space.validate(path)
    if op is None:
        op = rng.choice(space.choices[layer - 1])
    path[layer - 1] = op
    order = {name: i for i, name in enumerate(space.candidates)}
    columns = []
    for k in range(layer + 1, layer + m + 1):
        picked = rng.sample(space.choices[k - 1], c)
        if k == layer + 1:
            picked.sort(key=order.__getitem__)
        columns.append(picked)
    paths = []
    for i in range(c):
        p = list(path)
        for k, col in zip(range(layer + 1, layer + m + 1), columns):
            p[k - 1] = col[i]
        paths.append(Arch(p))
    return InterferenceCase(layer, m, op, tuple(paths), repeat)


def plan_cases(space: SearchSpace, ms: Sequence[int], repeats: int, seed: int,
               layer: Optional[int] = None, op: Optional[str] = None,
               children: Optional[int] = None, by_layer: bool = False) -> List[InterferenceCase]:
    """Every case of a run, validated before any gradient is taken.

    Layers: ``layer`` if given; otherwise one drawn per repeat among the layers
    valid for every m (j + max(m) <= N); with ``by_layer`` every layer valid for
    at least one m, each m run where it fits. A repeat fixes j, o_g and the
    layers outside the varied ones once and then builds the children for every
    m, so the similarity-vs-m curve compares the same o_g in the same
    surroundings.
    """
    ms = list(ms)
    if not ms:
        raise MagicConfigError("--m: expected at least one value")
    if len(set(ms)) != len(ms):
        raise MagicConfigError(f"--m {' '.join(map(str, ms))}: values repeat")
    if repeats < 1:
        raise MagicConfigError(f"--repeats {repeats}: expected >= 1")
    for m in ms:
        if m < 1:
            raise MagicConfigError(f"--m {m}: expected >= 1 (the number of layers the children differ in)")
    if children is not None and children < 2:
        raise MagicConfigError(
            f"--children {children}: expected >= 2 (a cosine matrix needs two children)")
    if layer is not None and by_layer:
        raise MagicConfigError("--layer and --by-layer exclude each other: expected one of them")
    if op is not None:
        check_op(space, op)
    if layer is not None:
        for m in ms:
            check_case(space, layer, m, children, op)
        per_m = {m: [layer] for m in ms}
        layers: List[Optional[int]] = [layer]
    elif by_layer:
        per_m = {m: valid_layers(space, m, children, op) for m in ms}
        for m in ms:
            if not per_m[m]:
                raise _no_layer_error(space, [m], children, op)
        layers = sorted(set().union(*per_m.values()))
    else:
        common = sorted(set.intersection(*(set(valid_layers(space, m, children, op)) for m in ms)))
        if not common:
            raise _no_layer_error(space, ms, children, op)
        per_m = {m: common for m in ms}
        layers = [None]
    cases = []
    for fixed in layers:
        tag = "random" if fixed is None else fixed
        for r in range(repeats):
            rng = random.Random(f"magic-interference:{seed}:layer={tag}:repeat={r}")
            base = list(random_arch(space, rng))
            j = fixed if fixed is not None else rng.choice(per_m[ms[0]])
            og = op if op is not None else rng.choice(space.choices[j - 1])
            for m in ms:
                if j not in per_m[m]:  # --by-layer: a layer too high for this m
                    continue
                rng_m = random.Random(f"magic-interference:{seed}:layer={tag}:repeat={r}:m={m}")
                cases.append(build_case(space, j, m, rng_m, children, og, base, repeat=r))
    return cases


def _no_layer_error(space, ms, children, op) -> MagicConfigError:
    reasons = []
    for j in range(1, space.num_layers + 1):
        for m in ms:
            try:
                check_case(space, j, m, children, op)
            except MagicConfigError as e:
                reasons.append(f"j={j}: {e}")
                break
    more = f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else ""
    return MagicConfigError(
        f"no layer j can hold o_g with --m {' '.join(map(str, ms))}"
        + (f" and --op {op}" if op else "")
        + (f" and --children {children}" if children else "")
        + f" in {space}: " + "; ".join(reasons[:3]) + more)


# ---- numbers ----

def cosine_matrix(grads) -> List[List[float]]:
    """C x C cosine similarities of flattened gradients (float64)."""
    import torch

    g = torch.stack([torch.as_tensor(x, dtype=torch.float64).reshape(-1) for x in grads])
    norms = g.norm(dim=1)
    zero = [i for i, v in enumerate(norms.tolist()) if v == 0.0]
    if zero:
        raise ValueError(f"children {zero} have a zero gradient on o_g: cosine undefined")
    u = g / norms[:, None]
    return (u @ u.T).clamp(-1.0, 1.0).tolist()


def mean_off_diagonal(matrix: Sequence[Sequence[float]]) -> float:
    c = len(matrix)
    if c < 2:
        raise ValueError("a mean off-diagonal similarity needs at least 2 children")
    return sum(matrix[i][k] for i in range(c) for k in range(c) if i != k) / (c * (c - 1))


def _stats(values: Sequence[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def label_aligned_mean(records: Sequence[dict], labels: Sequence[str]) -> dict:
    """Average matrices by label pair: cell (a, b) is the mean of S[i][k] over
    every record whose children i, k carry labels a, b. Cells never seen are None."""
    index = {name: i for i, name in enumerate(labels)}
    n = len(labels)
    sums = [[0.0] * n for _ in range(n)]
    counts = [[0] * n for _ in range(n)]
    for rec in records:
        lab = rec["labels"]
        for i, a in enumerate(lab):
            for k, b in enumerate(lab):
                if a in index and b in index:
                    sums[index[a]][index[b]] += rec["matrix"][i][k]
                    counts[index[a]][index[b]] += 1
    matrix = [[sums[i][k] / counts[i][k] if counts[i][k] else None for k in range(n)]
              for i in range(n)]
    return {"labels": list(labels), "matrix": matrix, "counts": counts}


def summarize(records: Sequence[dict], candidates: Sequence[str], by_layer: bool) -> dict:
    """Averages over repeats. ``records`` are InterferenceCase dicts with
    ``matrix`` and ``mean_off_diagonal`` added."""
    ms = sorted({r["m"] for r in records})
    out: Dict[str, object] = {
        "by_m": {str(m): _stats([r["mean_off_diagonal"] for r in records if r["m"] == m])
                 for m in ms}}
    if by_layer:
        # the sweep runs each m only where it fits, so the plain by-m means mix
        # layers; this one compares every m on the same layers
        common = set.intersection(*({r["layer"] for r in records if r["m"] == m} for m in ms))
        out["by_m_common_layers"] = {
            str(m): _stats([r["mean_off_diagonal"] for r in records
                            if r["m"] == m and r["layer"] in common]) for m in ms}
        out["common_layers"] = sorted(common)
        out["by_layer"] = {
            str(m): {str(j): _stats([r["mean_off_diagonal"] for r in records
                                     if r["m"] == m and r["layer"] == j])
                     for j in sorted({r["layer"] for r in records if r["m"] == m})}
            for m in ms}
    ones = [r for r in records if r["m"] == 1]
    if ones:
        seen = {label for r in ones for label in r["labels"]}
        labels = [c for c in candidates if c in seen]
        out["heatmap"] = label_aligned_mean(ones, labels)
        if by_layer:
            out["heatmap_by_layer"] = {
                str(j): label_aligned_mean([r for r in ones if r["layer"] == j], labels)
                for j in sorted({r["layer"] for r in ones})}
    return out


# ---- gradients (torch only) ----

def path_gradients(model, params, paths: Sequence[Sequence[str]], batches: Sequence,
                   loss_fn: Callable, progress: Optional[Callable[[], None]] = None):
    """Per path, the flattened float64 gradient of the loss on ``params`` only.

    ``model`` exposes ``set_active_path``/``get_active_path``; ``loss_fn(model,
    batch)`` returns (summed loss, number of loss terms). The gradient is that
    of the loss averaged over all terms of all ``batches``: one fixed batch,
    accumulated in pieces to bound memory (exact: eval mode has no batch-
    dependent operation).

    Runs in eval mode: without dropout the children's gradients differ only by
    their paths (the paper does not say which mode it used). Only ``params``
    require grad during the call and gradients come from ``torch.autograd.grad``,
    never ``backward``: no parameter's ``.grad`` is created or changed, and
    layers before o_g build no graph. Mode, active path and every
    ``requires_grad`` flag are restored.
    """
    import torch

    params = list(params)
    all_params = list(model.parameters())
    ids = {id(p) for p in all_params}
    if not params or any(id(p) not in ids for p in params):
        raise ValueError("params must be a non-empty subset of model.parameters()")
    wanted = {id(p) for p in params}
    flags = [(p, p.requires_grad) for p in all_params]
    was_training = model.training
    previous = model.get_active_path()
    out = []
    try:
        model.eval()
        for p in all_params:
            p.requires_grad_(id(p) in wanted)
        with torch.enable_grad():
            for path in paths:
                model.set_active_path(path)
                acc = [torch.zeros(p.shape, dtype=torch.float64, device=p.device) for p in params]
                terms = 0
                for batch in batches:
                    loss, n = loss_fn(model, batch)
                    if not loss.requires_grad:
                        raise ValueError(
                            f"path {','.join(path)} does not use the given parameters")
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
                    for a, g in zip(acc, grads):
                        if g is not None:
                            a += g.to(torch.float64)
                    terms += int(n)
                scale = 1.0 / max(terms, 1)
                out.append(torch.cat([a.reshape(-1) for a in acc]).mul_(scale).cpu())
                if progress is not None:
                    progress()
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        if previous is not None:
            model.set_active_path(previous)
        model.train(was_training)
    return out
