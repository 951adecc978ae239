"""fairseq models: the weight-sharing super-net and a fixed child.

``--arch magic_supernet`` holds every candidate operator in every layer and runs
one path per forward (``set_active_path``). ``--arch magic_child --magic-arch
SPEC`` is the same code with one candidate per layer, so a child trained from
scratch and a child cut out of the super-net (``child_state_dict``) share
parameter names. Both subclass RoBERTa to inherit its classification heads,
hub-style loading and state-dict upgrades, as fairseq's linformer plugin does.
"""

import logging
from dataclasses import dataclass, field, fields
from typing import Dict, Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import FairseqEncoder, register_model, register_model_architecture
from fairseq.models.roberta.model import RobertaClassificationHead, RobertaModel
from fairseq.utils import get_available_activation_fns
from omegaconf import OmegaConf, open_dict

from ..core.cost import child_cost
from ..core.space import Arch, MagicConfigError, SearchSpace, parse_arch_spec
from ..evaluation import guard_checkpoint_reads
from ..modules.encoder import MagicLMHead, MagicSentenceEncoder

logger = logging.getLogger(__name__)
guard_checkpoint_reads()


@dataclass
class MagicSupernetConfig(FairseqDataclass):
    encoder_layers: int = field(
        default=26, metadata={"help": "number of layers N of the chain (paper: 26, "
                              "BERT-base's 24 sub-layers + 2, appendix C)"})
    encoder_embed_dim: int = field(
        default=768, metadata={"help": "hidden size of every operator"})
    magic_ops: str = field(
        default="paper", metadata={"help": "candidate operators of every layer: a "
                                   "comma list (grammar: mha<H>[d<D>], ffn[<I>], conv<K>, "
                                   "nbconv<K>) or an alias: 'paper' = mha12,ffn,conv3,conv5; "
                                   "'paper_nbconv' = mha12,ffn,nbconv3,nbconv5; "
                                   "'table6' = appendix A's analysis space"})
    magic_embed_dim: int = field(
        default=0, metadata={"help": "factorized embedding size (appendix C uses 512 "
                             "with hidden 768); 0 = no factorization"})
    dropout: float = field(default=0.1, metadata={"help": "dropout probability"})
    attention_dropout: float = field(
        default=0.1, metadata={"help": "dropout on attention weights"})
    activation_dropout: float = field(
        default=0.0, metadata={"help": "dropout after the FFN/conv activation"})
    pooler_dropout: float = field(
        default=0.0, metadata={"help": "dropout in classification heads"})
    pooler_activation_fn: ChoiceEnum(get_available_activation_fns()) = field(
        default="tanh", metadata={"help": "activation of classification heads"})
    max_positions: int = field(
        default=0, metadata={"help": "learned position table size; 0 = the task's "
                             "--tokens-per-sample"})


@dataclass
class MagicChildConfig(MagicSupernetConfig):
    # 0 by default: argparse/hydra fill a missing flag with the default, so a
    # non-zero value is one the user chose and must agree with --magic-arch.
    encoder_layers: int = field(
        default=0, metadata={"help": "number of layers; 0 = the length of --magic-arch "
                             "(any other value must equal it)"})
    magic_arch: str = field(
        default="", metadata={"help": "the child to build: one operator per layer, "
                              "e.g. 'mha12,ffn,conv3,ffn' (sets the number of layers)"})


def _cfg_get(cfg, name, default):
    value = getattr(cfg, name, None)
    return default if value is None else value


def _fill_defaults(cfg, dc_cls):
    """Fill fields that argparse left out (fairseq deletes dataclass defaults so
    named architectures can set their own) with the dataclass defaults."""
    for f in fields(dc_cls):
        if f.name.startswith("_"):
            continue
        if getattr(cfg, f.name, None) is None:
            setattr(cfg, f.name, f.default)


class MagicEncoder(FairseqEncoder):
    """RoBERTa-compatible encoder: ``forward`` returns (logits or features, extra)."""

    def __init__(self, cfg, dictionary, layer_ops, max_positions: int):
        super().__init__(dictionary)
        hidden = cfg.encoder_embed_dim
        embed_dim = cfg.magic_embed_dim or hidden
        self.sentence_encoder = MagicSentenceEncoder(
            vocab_size=len(dictionary), padding_idx=dictionary.pad(), hidden=hidden,
            layer_ops=layer_ops, max_positions=max_positions, embed_dim=embed_dim,
            dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
            activation_dropout=cfg.activation_dropout)
        self.lm_head = MagicLMHead(hidden, embed_dim,
                                   self.sentence_encoder.embed_tokens.weight)

    def forward(self, src_tokens, features_only=False, return_all_hiddens=False,
                masked_tokens=None, **unused):
        x, hiddens = self.sentence_encoder(src_tokens, return_all_hiddens=return_all_hiddens)
        if not features_only:
            x = self.lm_head(x, masked_tokens)
        return x, {"inner_states": hiddens}

    def max_positions(self):
        return self.sentence_encoder.max_positions


@register_model("magic_supernet", dataclass=MagicSupernetConfig)
class MagicSupernetModel(RobertaModel):
    """Weight-sharing super-net: N layers x every candidate operator."""

    config_class = MagicSupernetConfig

    def __init__(self, cfg, encoder, space: SearchSpace):
        super().__init__(cfg, encoder)  # BERT init, classification head dict
        self.cfg = cfg
        self.search_space = space

    @classmethod
    def add_args(cls, parser):
        # RobertaModel.add_args would add RoBERTa's argparse flags; use ours.
        gen_parser_from_dataclass(parser, cls.config_class(), delete_default=True)

    @classmethod
    def _resolve_cfg(cls, cfg, task):
        if OmegaConf.is_config(cfg):
            with open_dict(cfg):
                _fill_defaults(cfg, cls.config_class)
        else:
            _fill_defaults(cfg, cls.config_class)
        # masked_lm-style tasks size inputs with --tokens-per-sample; others
        # (sentence_prediction) only know --max-positions.
        tokens = getattr(getattr(task, "cfg", None), "tokens_per_sample", None)
        max_positions = cfg.max_positions or tokens or 512
        if tokens and tokens > max_positions:
            raise MagicConfigError(
                f"--tokens-per-sample {tokens} exceeds --max-positions {max_positions}")
        if cfg.magic_embed_dim < 0:
            raise MagicConfigError(f"--magic-embed-dim {cfg.magic_embed_dim}: expected >= 0")
        return max_positions

    @classmethod
    def build_space(cls, cfg) -> SearchSpace:
        return SearchSpace.from_config(cfg.magic_ops, cfg.encoder_layers, cfg.encoder_embed_dim)

    @classmethod
    def build_model(cls, cfg, task):
        max_positions = cls._resolve_cfg(cfg, task)
        space = cls.build_space(cfg)
        encoder = MagicEncoder(cfg, task.source_dictionary, space.choices, max_positions)
        model = cls(cfg, encoder, space)
        logger.info(f"{cls.__name__}: {space}")
        return model

    # ---- super-net API (OFA style: set / get the active child) ----
    @property
    def sentence_encoder(self) -> MagicSentenceEncoder:
        return self.encoder.sentence_encoder

    def set_active_path(self, spec) -> Arch:
        arch = self.search_space.parse(spec)
        self.sentence_encoder.active_path = arch
        return arch

    def get_active_path(self) -> Optional[Arch]:
        return self.sentence_encoder.active_path

    def child_state_dict(self, spec) -> Dict[str, "torch.Tensor"]:
        """The weights a ``magic_child`` of ``spec`` holds: every shared tensor
        plus, in each layer, only the chosen candidate's."""
        arch = self.search_space.parse(spec)
        prefix = "encoder.sentence_encoder.layers."
        out = {}
        for k, v in self.state_dict().items():
            if k.startswith(prefix):
                layer, _, op = k[len(prefix):].split(".", 3)[:3]
                if arch[int(layer)] != op:
                    continue
            out[k] = v
        return out

    def child_cost(self, spec, seq_len: int = 128) -> Dict[str, int]:
        arch = self.search_space.parse(spec)
        enc = self.sentence_encoder
        return child_cost(arch, enc.hidden, enc.embed_tokens.num_embeddings,
                          enc.embed_positions.num_embeddings, enc.embed_dim, seq_len)

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        # fairseq's trainer turns any failure here into "Cannot load model
        # parameters ...; please ensure that the architectures match" (our
        # error stays in the traceback above it) and hub loading would show a
        # raw missing-keys dump: say which value differs instead.
        try:
            check_checkpoint_layout(self, state_dict)
        except MagicConfigError as e:
            logger.error(f"cannot load the checkpoint: {e}")
            raise
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg,
                                       args=args)

    def register_classification_head(self, name, num_classes=None, inner_dim=None, **kwargs):
        if name in self.classification_heads:
            logger.warning(f"re-registering classification head {name!r}")
        hidden = self.cfg.encoder_embed_dim
        self.classification_heads[name] = RobertaClassificationHead(
            input_dim=hidden, inner_dim=inner_dim or hidden, num_classes=num_classes,
            activation_fn=self.cfg.pooler_activation_fn,
            pooler_dropout=self.cfg.pooler_dropout)


_LAYERS = "encoder.sentence_encoder.layers."
# What only an ELECTRA model (models/magic_electra.py) holds: its generator and
# the discriminator's replaced-token head.
_ELECTRA_KEYS = ("generator.", "encoder.rtd_head.")


def checkpoint_layout(state_dict):
    """(operators of each layer, hidden size, vocabulary rows) a magic model's
    state dict holds; layers == [] when it holds no magic encoder layers."""
    ops = {}
    hidden = None
    for k, v in state_dict.items():
        if not k.startswith(_LAYERS):
            continue
        parts = k[len(_LAYERS):].split(".")
        if len(parts) < 4 or parts[1] != "candidates" or not parts[0].isdigit():
            continue
        ops.setdefault(int(parts[0]), []).append(parts[2])
        if parts[3] == "layer_norm" and k.endswith(".weight"):
            hidden = int(v.shape[0])
    depth = max(ops) + 1 if ops else 0
    layers = [sorted(set(ops.get(i, []))) for i in range(depth)]
    emb = state_dict.get("encoder.sentence_encoder.embed_tokens.weight")
    return layers, hidden, (int(emb.shape[0]) if emb is not None else None)


def _ops_text(layers):
    if all(len(ops) == 1 for ops in layers):
        return f"the child {','.join(ops[0] for ops in layers)!r}"
    kinds = sorted({op for ops in layers for op in ops})
    if all(ops == kinds for ops in layers):
        return f"operators {','.join(kinds)} in every layer"
    return "operators " + "; ".join(f"layer {i}: {','.join(o)}" for i, o in enumerate(layers))


def check_checkpoint_layout(model, state_dict) -> None:
    """Raise MagicConfigError naming what differs when ``state_dict`` was not
    saved by a model of ``model``'s kind, depth, operators and hidden size."""
    want, want_hidden, want_vocab = checkpoint_layout(model.state_dict())
    have, have_hidden, have_vocab = checkpoint_layout(state_dict)
    electra = getattr(model, "is_electra", False)
    kind = "magic_electra_" if electra else "magic_"
    run = (f"--arch {kind}child --magic-arch " + repr(model.cfg.magic_arch)
           if isinstance(model, MagicChildModel) else
           f"--arch {kind}supernet with --magic-ops {model.cfg.magic_ops!r}")
    if not electra and any(k.startswith(_ELECTRA_KEYS) for k in state_dict):
        # an ELECTRA model's discriminator layers look like ours; its heads do not
        raise MagicConfigError(
            f"the checkpoint is an ELECTRA model (replaced token detection: keys under "
            f"{' / '.join(_ELECTRA_KEYS)}), this run is {run} (masked LM): expected a "
            "masked-LM checkpoint; restore an ELECTRA one with --arch "
            "magic_electra_supernet / magic_electra_child (--criterion magic_electra)")
    if not have:
        raise MagicConfigError(
            f"the checkpoint holds no magic encoder layers (keys under {_LAYERS!r}): "
            f"expected a checkpoint of {run}")
    child_ckpt = all(len(ops) == 1 for ops in have)
    if isinstance(model, MagicChildModel) and not child_ckpt:
        raise MagicConfigError(
            f"the checkpoint is a magic_supernet ({len(have)} layers, {_ops_text(have)}), "
            f"this run is {run}: cut the child out first with "
            "`magic-export CHECKPOINT --arch SPEC --out DIR` and restore DIR/model.pt")
    if not isinstance(model, MagicChildModel) and child_ckpt and not all(
            len(ops) == 1 for ops in want):
        raise MagicConfigError(
            f"the checkpoint holds {_ops_text(have)} (a {kind}child or magic-export "
            f"checkpoint), this run is {run}: restore it with "
            f"--arch {kind}child --magic-arch '{','.join(o[0] for o in have)}'")
    if len(have) != len(want):
        raise MagicConfigError(
            f"the checkpoint has {len(have)} layers, this run {len(want)} "
            f"(--encoder-layers {model.cfg.encoder_layers}): expected equal depths")
    if have_hidden != want_hidden:
        raise MagicConfigError(
            f"the checkpoint's hidden size is {have_hidden}, this run's "
            f"--encoder-embed-dim is {want_hidden}: expected equal")
    if have != want:
        raise MagicConfigError(
            f"the checkpoint holds {_ops_text(have)}, this run ({run}) {_ops_text(want)}: "
            "expected the same operators in every layer")
    if have_vocab != want_vocab:
        raise MagicConfigError(
            f"the checkpoint's vocabulary has {have_vocab} symbols, this run's "
            f"dictionary {want_vocab}: expected the data-bin (dict.txt) it was trained on")


@register_model("magic_child", dataclass=MagicChildConfig)
class MagicChildModel(MagicSupernetModel):
    """One fixed child, trained as a static model with the super-net's operator code."""

    config_class = MagicChildConfig

    @classmethod
    def build_space(cls, cfg) -> SearchSpace:
        if not cfg.magic_arch:
            raise MagicConfigError(
                "--arch magic_child needs --magic-arch SPEC (one operator per layer, "
                "e.g. 'mha12,ffn,conv3,ffn')")
        arch = parse_arch_spec(cfg.magic_arch, cfg.encoder_embed_dim)
        if cfg.encoder_layers and cfg.encoder_layers != len(arch):
            raise MagicConfigError(
                f"--encoder-layers {cfg.encoder_layers} disagrees with --magic-arch "
                f"{cfg.magic_arch!r}, which has {len(arch)} layers: drop --encoder-layers "
                "(the spec sets the depth) or make them equal")
        if OmegaConf.is_config(cfg):
            with open_dict(cfg):
                cfg.encoder_layers = len(arch)
        else:
            cfg.encoder_layers = len(arch)
        return SearchSpace(sorted(set(arch)), len(arch), cfg.encoder_embed_dim,
                           choices=[[op] for op in arch])

    @classmethod
    def build_model(cls, cfg, task):
        model = super().build_model(cfg, task)
        model.set_active_path(cfg.magic_arch)
        return model


# ---- named architectures (presets) ----

def _preset(cfg, **values):
    for k, v in values.items():
        if getattr(cfg, k, None) is None:
            setattr(cfg, k, v)


@register_model_architecture("magic_supernet", "magic_supernet_base")
def magic_supernet_base(cfg):
    """The paper's space: 26 layers x {mha12, ffn, conv3, conv5}, hidden 768
    (4^26 ~ 4.5e15 children)."""
    _preset(cfg, encoder_layers=26, encoder_embed_dim=768, magic_ops="paper")


@register_model_architecture("magic_supernet", "magic_supernet_base_fact512")
def magic_supernet_base_fact512(cfg):
    """Base with appendix C's factorized embedding (512 -> 768), for 50K vocabularies."""
    _preset(cfg, magic_embed_dim=512)
    magic_supernet_base(cfg)


@register_model_architecture("magic_supernet", "magic_supernet_compress")
def magic_supernet_compress(cfg):
    """Section 5.4 compression space: hidden 512 (attention: 8 heads of 64)."""
    _preset(cfg, encoder_layers=26, encoder_embed_dim=512, magic_ops="mha8,ffn,conv3,conv5")


@register_model_architecture("magic_supernet", "magic_supernet_tiny")
def magic_supernet_tiny(cfg):
    """Demo/test scale: 8 layers, hidden 128, {mha2, ffn, conv3, conv5}."""
    _preset(cfg, encoder_layers=8, encoder_embed_dim=128, magic_ops="mha2,ffn,conv3,conv5")


@register_model_architecture("magic_child", "magic_child_tiny")
def magic_child_tiny(cfg):
    _preset(cfg, encoder_embed_dim=128)
