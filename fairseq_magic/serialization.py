"""Allow-list for torch's weights-only checkpoint loading (torch >= 2.6 default).

fairseq checkpoints hold its config (argparse.Namespace or omegaconf objects) and,
on multi-rank resume, fairseq broadcasts the state with ``_TensorPlaceholder``
markers; torch 2.13 refuses all of these by default ("Unsupported global").
We allow exactly those types instead of turning weights-only loading off.
"""

import argparse
import collections
import typing

import torch


def register_safe_globals() -> None:
    import omegaconf
    from omegaconf import base, dictconfig, listconfig, nodes

    allowed = [
        argparse.Namespace, typing.Any, dict, list, int, float, str, bool, tuple, set,
        collections.defaultdict, collections.OrderedDict,
        dictconfig.DictConfig, listconfig.ListConfig, base.ContainerMetadata,
        base.Metadata, nodes.AnyNode, nodes.StringNode, nodes.IntegerNode,
        nodes.FloatNode, nodes.BooleanNode, nodes.EnumNode, omegaconf.ValueNode,
    ]
    try:
        from fairseq.distributed.utils import _TensorPlaceholder
        allowed.append(_TensorPlaceholder)
    except ImportError:  # older fairseq: no broadcast placeholders
        pass
    torch.serialization.add_safe_globals(allowed)
