"""ELECTRA-style models: a searched discriminator and a small fixed generator.

``--arch magic_electra_supernet`` is the MLM super-net of ``magic_supernet.py``
with ELECTRA's replaced-token-detection (RTD) set-up (Clark et al., 2020), as
the paper's "E-" models (E-SPOS, E-MAGIC-AT) are trained:

* the **discriminator** is the super-net itself (``self.encoder``: the same
  ``sentence_encoder``, search space and super-net API -- ``set_active_path``,
  ``get_active_path``, ``search_space``, ``child_state_dict``, ``child_cost``,
  every layer's hidden states -- so the samplers, the anchor, shrinking,
  search, export and the task's DDP/fp16 refusals work unchanged), with a
  per-token binary head (``encoder.rtd_head``: dense, GELU, one logit) where the
  MLM model has its LM head;
* the **generator** (``self.generator``) is a small masked-LM encoder that is
  not searched and trains every update: by default 1/3 of the discriminator's
  hidden size (ELECTRA-base's ratio), hidden / 64 attention heads (at least
  one), FFN 4 x hidden, the same depth, as a chain of ``mha<H>d<hidden>`` /
  ``ffn`` post-LN sub-layers (the discriminator's depth counts sub-layers too:
  26 = 13 attention + 13 FFN sub-layers by default);
* the **embeddings are shared** as in ELECTRA: one token table, one position
  table and one embedding LayerNorm, the discriminator's; each tower projects
  the shared embedding to its own width when the sizes differ (factorised
  embeddings, ``--magic-embed-dim``, included), and the generator's output
  layer is tied to the shared token table.

``--arch magic_electra_child --magic-arch SPEC`` is one fixed discriminator
(re-training a found child with RTD) with the same generator.

The generator exists only where it is trained: under ``--task magic``. Under
any other task (``sentence_prediction``, the ``masked_lm`` task magic-export
writes for a discriminator) the model is the discriminator alone, so an
exported discriminator fine-tunes like any exported child, and a checkpoint
holding a generator loads into it with the generator dropped.

The objective (``--criterion magic_electra``) is in
``fairseq_magic/criterions/magic_electra.py``; the masking and the sampling
it shares with the validation scorer (``rtd_loss_sums``) are here.
"""

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models import FairseqEncoder, register_model, register_model_architecture
from fairseq.modules.transformer_sentence_encoder import init_bert_params
from omegaconf import DictConfig

from ..core.space import MagicConfigError
from ..modules.encoder import MagicLMHead, MagicSentenceEncoder, make_positions
from ..modules.operators import build_operator
from .magic_supernet import (MagicChildConfig, MagicChildModel, MagicSupernetConfig,
                             MagicSupernetModel, _preset, magic_supernet_base,
                             magic_supernet_tiny)

logger = logging.getLogger(__name__)

# ELECTRA's masking (google-research/electra, pretrain_helpers.mask): of the
# masked positions 85% show <mask>, 15% keep their token, none a random token.
MASK_TOKEN_FRACTION = 0.85
# The fraction of tokens masked when scoring children (``rtd_loss_sums``); the
# criterion's --electra-mask-prob defaults to the same.
SCORE_MASK_PROB = 0.15


@dataclass
class _ElectraGeneratorFields:
    electra_generator_embed_dim: int = field(
        default=0, metadata={"help": "hidden size of the ELECTRA generator; 0 = 1/3 of "
                             "--encoder-embed-dim (ELECTRA-base's ratio: 768 -> 256)"})
    electra_generator_heads: int = field(
        default=0, metadata={"help": "attention heads of the generator; 0 = its hidden "
                             "size / 64, at least 1 (ELECTRA's rule); must divide its "
                             "hidden size"})
    electra_generator_layers: int = field(
        default=0, metadata={"help": "sub-layers of the generator (alternating attention "
                             "and FFN, FFN inner 4 x hidden); 0 = the discriminator's "
                             "--encoder-layers"})


@dataclass
class MagicElectraSupernetConfig(MagicSupernetConfig, _ElectraGeneratorFields):
    pass


@dataclass
class MagicElectraChildConfig(MagicChildConfig, _ElectraGeneratorFields):
    pass


def generator_dims(cfg):
    """(hidden, heads, sub-layers) of the generator ``cfg`` asks for; raises
    MagicConfigError naming the value when they cannot build one. Call after
    the discriminator's depth is known (a child's comes from --magic-arch)."""
    for name in ("electra_generator_embed_dim", "electra_generator_heads",
                 "electra_generator_layers"):
        value = getattr(cfg, name, 0) or 0
        if value < 0:
            raise MagicConfigError(f"--{name.replace('_', '-')} {value}: expected >= 0 "
                                   "(0 = the default)")
    hidden = cfg.electra_generator_embed_dim or cfg.encoder_embed_dim // 3
    if hidden < 1:
        raise MagicConfigError(
            f"the ELECTRA generator's hidden size is 1/3 of --encoder-embed-dim "
            f"{cfg.encoder_embed_dim} = {hidden}: expected >= 1 (set "
            "--electra-generator-embed-dim)")
    heads = cfg.electra_generator_heads or max(1, hidden // 64)
    if hidden % heads:
        how = ("--electra-generator-heads" if cfg.electra_generator_heads else
               "hidden / 64, the default of --electra-generator-heads")
        raise MagicConfigError(
            f"ELECTRA generator hidden size {hidden} (--electra-generator-embed-dim "
            f"{cfg.electra_generator_embed_dim}) does not divide into {heads} attention "
            f"heads ({how}): expected a hidden size that is a multiple of the head count")
    layers = cfg.electra_generator_layers or cfg.encoder_layers
    return hidden, heads, layers


def generator_ops(hidden: int, heads: int, layers: int):
    """The generator's fixed chain: attention and FFN sub-layers in turn."""
    attention = f"mha{heads}d{hidden}"
    return tuple(attention if i % 2 == 0 else "ffn" for i in range(layers))


class ElectraGenerator(nn.Module):
    """ELECTRA's generator: a small fixed masked-LM encoder on the shared embeddings.

    It holds no embedding table of its own: ``forward`` takes the
    discriminator's sentence encoder (``shared``) and reads its token table,
    position table and embedding LayerNorm, so there is one tensor of each.
    Its LM head (RoBERTa's shape) is tied to the shared token table.
    """

    def __init__(self, shared: MagicSentenceEncoder, hidden: int, heads: int, layers: int,
                 dropout: float = 0.1, attention_dropout: float = 0.1,
                 activation_dropout: float = 0.0):
        super().__init__()
        self.hidden, self.heads = hidden, heads
        self.ops = generator_ops(hidden, heads, layers)
        embed_dim = shared.embed_dim
        # ELECTRA's generator projects the shared embedding to its width
        # ("embeddings_project") whenever the two differ.
        self.embed_proj = nn.Linear(embed_dim, hidden, bias=False) if embed_dim != hidden \
            else None
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            build_operator(op, hidden, dropout=dropout, attention_dropout=attention_dropout,
                           activation_dropout=activation_dropout) for op in self.ops)
        self.lm_head = MagicLMHead(hidden, embed_dim, shared.embed_tokens.weight)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def forward(self, tokens, shared: MagicSentenceEncoder, masked_tokens=None):
        """Vocabulary logits at the ``masked_tokens`` positions (all when None)."""
        pad = shared.padding_idx
        pad_mask = tokens.eq(pad)
        # the discriminator's embedding step (MagicSentenceEncoder.forward), on
        # the same modules
        x = shared.embed_tokens(tokens) + shared.embed_positions(make_positions(tokens, pad))
        x = self.dropout(shared.layernorm_embedding(x))
        if self.embed_proj is not None:
            x = self.embed_proj(x)
        mask = None
        if bool(pad_mask.any()):
            x = x * (1 - pad_mask.unsqueeze(-1).type_as(x))
            mask = pad_mask
        for layer in self.layers:
            x = layer(x, mask)
        return self.lm_head(x, masked_tokens)


class ReplacedTokenHead(nn.Module):
    """ELECTRA's discriminator head: dense -> GELU -> one logit per token
    (1 = the token was replaced)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, 1)

    def forward(self, features):
        return self.out_proj(F.gelu(self.dense(features))).squeeze(-1)


class MagicElectraEncoder(FairseqEncoder):
    """The discriminator: the super-net's sentence encoder + the RTD head.
    ``forward`` returns (per-token logits B x T, or features), extra)."""

    def __init__(self, cfg, dictionary, layer_ops, max_positions: int):
        super().__init__(dictionary)
        hidden = cfg.encoder_embed_dim
        self.sentence_encoder = MagicSentenceEncoder(
            vocab_size=len(dictionary), padding_idx=dictionary.pad(), hidden=hidden,
            layer_ops=layer_ops, max_positions=max_positions,
            embed_dim=cfg.magic_embed_dim or hidden, dropout=cfg.dropout,
            attention_dropout=cfg.attention_dropout,
            activation_dropout=cfg.activation_dropout)
        self.rtd_head = ReplacedTokenHead(hidden)

    def forward(self, src_tokens, features_only=False, return_all_hiddens=False,
                masked_tokens=None, **unused):
        if masked_tokens is not None:
            # a masked-LM criterion (magic_alignment, masked_lm) asks for vocabulary
            # logits; the discriminator has none
            raise MagicConfigError(
                "an ELECTRA discriminator has no masked-LM head: train --arch "
                "magic_electra_* with --criterion magic_electra (replaced token "
                "detection), or use --arch magic_supernet / magic_child for masked LM")
        x, hiddens = self.sentence_encoder(src_tokens, return_all_hiddens=return_all_hiddens)
        if not features_only:
            x = self.rtd_head(x)
        return x, {"inner_states": hiddens}

    def max_positions(self):
        return self.sentence_encoder.max_positions


def _model_class(name):
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY

    return ARCH_MODEL_REGISTRY.get(name) or MODEL_REGISTRY.get(name)


def _root_name(cfg, section):
    """``_name`` of a section (criterion, model) of the full config ``cfg`` is a
    node of, or None (a config without its root: hub loading, benchmarks)."""
    if not isinstance(cfg, DictConfig):
        return None
    root = cfg._get_root()
    node = root.get(section) if root is not cfg else None
    return node.get("_name") if isinstance(node, DictConfig) else None


def is_electra_arch(name) -> bool:
    cls = _model_class(name) if name else None
    return cls is not None and issubclass(cls, MagicElectraSupernetModel)


def pretraining_task(task) -> bool:
    from ..tasks.magic_task import MagicTask

    return isinstance(task, MagicTask)


def _seed_of(*parts) -> int:
    text = ":".join(str(p) for p in parts)
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def rng_for(device, *parts) -> torch.Generator:
    """A torch generator on ``device`` seeded from ``parts`` alone: the masking
    and the Gumbel noise never touch (or depend on) the global RNG."""
    g = torch.Generator(device=device)
    g.manual_seed(_seed_of("magic-electra", *parts))
    return g


def sample_rng(sample, device) -> torch.Generator:
    """The generator for an evaluation batch: seeded from its example ids, so a
    batch gets the same masking and noise whichever child, process or run scores
    it, and wherever it sits in a list of batches."""
    ids = sample.get("id")
    key = (hashlib.sha256(ids.detach().cpu().numpy().tobytes()).hexdigest()
           if ids is not None else "no-ids")
    return rng_for(device, "eval", key)


def original_tokens(sample, padding_idx: int) -> torch.Tensor:
    """The uncorrupted input: --task magic's dataset masked it the BERT way
    (target = the original token where it masked, pad elsewhere); ELECTRA masks
    on its own, so undo the dataset's masking."""
    src, target = sample["net_input"]["src_tokens"], sample["target"]
    return torch.where(target.ne(padding_idx), target, src)


def rtd_mask(tokens, dictionary, mask_prob: float, g: torch.Generator):
    """ELECTRA's masking of ``tokens`` (B x T, originals): per sequence,
    round(mask_prob x its non-pad tokens) positions (at least one, at most its
    maskable ones), chosen uniformly without replacement among the maskable
    positions -- never a special symbol (<s>, <pad>, </s>, <unk>) nor <mask>; of
    those 85% become <mask> and 15% keep their token. Returns (masked B x T
    bool, the masked input)."""
    pad, mask_idx = dictionary.pad(), dictionary.index("<mask>")
    nonpad = tokens.ne(pad)
    maskable = nonpad & tokens.ge(dictionary.nspecial) & tokens.ne(mask_idx)
    n_nonpad = nonpad.sum(1)
    want = torch.round(n_nonpad.double() * mask_prob).long().clamp(min=1)
    want = torch.minimum(want, maskable.sum(1))
    scores = torch.rand(tokens.shape, generator=g, device=tokens.device)
    scores = scores.masked_fill(~maskable, 2.0)  # maskable positions sort first
    order = scores.argsort(dim=1)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(tokens.size(1), device=tokens.device).expand_as(order))
    masked = rank.lt(want.unsqueeze(1)) & maskable
    show_mask = torch.rand(tokens.shape, generator=g, device=tokens.device) \
        .lt(MASK_TOKEN_FRACTION)
    masked_input = tokens.masked_fill(masked & show_mask, mask_idx)
    return masked, masked_input


def gumbel_noise(n: int, vocab: int, g: torch.Generator, device) -> torch.Tensor:
    """Gumbel(0, 1) noise for ``n`` samples over ``vocab`` symbols (float32):
    argmax(logits + noise) samples softmax(logits) (temperature 1)."""
    u = torch.rand((n, vocab), generator=g, device=device)
    return -torch.log(-torch.log(u + 1e-9) + 1e-9)


@register_model("magic_electra_supernet", dataclass=MagicElectraSupernetConfig)
class MagicElectraSupernetModel(MagicSupernetModel):
    """ELECTRA's generator + discriminator, the discriminator a super-net."""

    config_class = MagicElectraSupernetConfig
    is_electra = True

    def __init__(self, cfg, encoder, space, generator: Optional[ElectraGenerator] = None):
        super().__init__(cfg, encoder, space)  # BERT init of the discriminator
        if generator is not None:
            generator.apply(init_bert_params)
        self.generator = generator
        # Symbols a replacement is never drawn from: a sampled <pad> would turn a
        # token into padding (fairseq marks padding by the token: positions,
        # attention masks and the LayerNorms of an all-zero input follow -- a
        # 1e6 gradient norm, measured), and <s>, </s>, <unk>, <mask> are never
        # the original of a masked position (rtd_mask). The generator's loss
        # still covers the whole vocabulary.
        d = encoder.dictionary
        no_sample = torch.zeros(len(d), dtype=torch.bool)
        no_sample[:d.nspecial] = True
        if "<mask>" in d.indices:
            no_sample[d.index("<mask>")] = True
        self.register_buffer("rtd_no_sample", no_sample, persistent=False)

    @classmethod
    def build_model(cls, cfg, task):
        max_positions = cls._resolve_cfg(cfg, task)
        space = cls.build_space(cfg)  # a child's sets --encoder-layers from its spec
        dims = generator_dims(cfg)
        pretraining = pretraining_task(task)
        criterion = _root_name(cfg, "criterion")
        if pretraining and criterion is not None and criterion != "magic_electra":
            arch = getattr(cfg, "_name", None) or "magic_electra_*"
            raise MagicConfigError(
                f"--criterion {criterion} with --arch {arch}: "
                "an ELECTRA model pre-trains with --criterion magic_electra (replaced "
                "token detection); for masked LM use --arch magic_supernet / magic_child")
        encoder = MagicElectraEncoder(cfg, task.source_dictionary, space.choices,
                                      max_positions)
        generator = None
        if pretraining:
            generator = ElectraGenerator(
                encoder.sentence_encoder, *dims, dropout=cfg.dropout,
                attention_dropout=cfg.attention_dropout,
                activation_dropout=cfg.activation_dropout)
        model = cls(cfg, encoder, space, generator)
        model.generator_dims = dims
        if getattr(cfg, "magic_arch", None):
            model.set_active_path(cfg.magic_arch)
        logger.info(f"{cls.__name__}: discriminator {space}; generator " + (
            f"{dims[2]} sub-layers, hidden {dims[0]}, {dims[1]} heads, "
            f"{model.generator_params():,} own parameters" if generator is not None else
            "not built (only --task magic trains it)"))
        return model

    # ---- the RTD forward ----
    def forward(self, src_tokens, features_only=False, return_all_hiddens=False,
                classification_head_name=None, rtd_masked=None, rtd_noise=None, **kwargs):
        """Without ``rtd_masked``: RoBERTa's forward of the discriminator (RTD
        logits B x T, features, or a classification head).

        With ``rtd_masked`` (B x T bool) and ``rtd_noise`` (Gumbel noise, one
        row per masked position): ELECTRA's pre-training pass on the masked
        input ``src_tokens``. The generator predicts the masked positions; each
        is replaced by argmax(logits + noise), a sample at temperature 1 drawn
        without gradient (the discrete sample is no function of the generator's
        weights) among the ordinary symbols (``rtd_no_sample`` excluded); the
        discriminator reads the corrupted input. Returns
        (discriminator logits B x T, extra) with extra's ``gen_logits``
        (masked positions x vocabulary), ``corrupted`` and ``inner_states``
        (the discriminator's layer outputs when ``return_all_hiddens``). One
        forward for both towers, so DDP sees every used parameter in one pass.
        """
        if rtd_masked is None:
            return super().forward(src_tokens, features_only=features_only,
                                   return_all_hiddens=return_all_hiddens,
                                   classification_head_name=classification_head_name,
                                   **kwargs)
        if self.generator is None:
            raise MagicConfigError(
                "this ELECTRA model was built without its generator (outside --task "
                "magic): replaced token detection needs --task magic")
        gen_logits = self.generator(src_tokens, self.sentence_encoder,
                                    masked_tokens=rtd_masked)
        with torch.no_grad():
            scores = (gen_logits.detach().float() + rtd_noise).masked_fill(
                self.rtd_no_sample, float("-inf"))
            sampled = scores.argmax(-1)
            corrupted = src_tokens.masked_scatter(rtd_masked, sampled.to(src_tokens.dtype))
        logits, extra = self.encoder(corrupted, return_all_hiddens=return_all_hiddens)
        extra.update(gen_logits=gen_logits, corrupted=corrupted)
        return logits, extra

    def rtd_inputs(self, sample, mask_prob: float, g: torch.Generator):
        """(originals, masked B x T, masked input, Gumbel noise) of a batch."""
        pad = self.encoder.dictionary.pad()
        tokens = original_tokens(sample, pad)
        masked, masked_input = rtd_mask(tokens, self.encoder.dictionary, mask_prob, g)
        vocab = self.sentence_encoder.embed_tokens.num_embeddings
        noise = gumbel_noise(int(masked.sum()), vocab, g, tokens.device)
        return tokens, masked, masked_input, noise

    @torch.no_grad()
    def rtd_loss_sums(self, sample):
        """(summed discriminator BCE in nats, non-pad tokens) of the active path
        on one batch: how the anchor, shrinking, magic-children and magic-search
        score an ELECTRA child.

        Fixed masking and a fixed generator sample: 15% masking and Gumbel
        noise from a generator seeded by the batch's example ids
        (``sample_rng``), the generator's weights as they are; the caller holds
        the model in eval mode (no dropout), so every child scored with the same
        weights sees the same corrupted tokens and labels, in every call and
        process. Only the discriminator's loss counts: the generator is the same
        for every child."""
        tokens, masked, masked_input, noise = self.rtd_inputs(
            sample, SCORE_MASK_PROB, sample_rng(sample, sample["net_input"]["src_tokens"].device))
        logits, extra = self(masked_input, rtd_masked=masked, rtd_noise=noise)
        nonpad = tokens.ne(self.encoder.dictionary.pad())
        labels = extra["corrupted"].ne(tokens)
        loss = F.binary_cross_entropy_with_logits(
            logits[nonpad].float(), labels[nonpad].float(), reduction="sum")
        return float(loss), int(nonpad.sum())

    # ---- super-net API additions ----
    def generator_params(self) -> int:
        """Parameters the generator adds (the shared embeddings not counted)."""
        if self.generator is None:
            return 0
        shared = {id(p) for p in self.encoder.parameters()}
        return sum(p.numel() for p in self.generator.parameters() if id(p) not in shared)

    def child_state_dict(self, spec, keep_generator: bool = False) -> Dict[str, torch.Tensor]:
        """The discriminator child of ``spec`` (as a ``magic_electra_child``
        holds it); with ``keep_generator`` the generator's weights too."""
        out = super().child_state_dict(spec)
        if not keep_generator:
            out = {k: v for k, v in out.items() if not k.startswith("generator.")}
        return out

    def child_cost(self, spec, seq_len: int = 128) -> Dict[str, int]:
        """The discriminator child's cost: the MLM child's with the RTD head in
        place of the LM head (dense h x h + one logit per token)."""
        cost = dict(super().child_cost(spec, seq_len))
        enc = self.sentence_encoder
        h, e = enc.hidden, enc.embed_dim
        embed_flops = 2 * seq_len * e * h if e != h else 0
        lm_head_flops = cost["flops"] - cost["body_flops"] - embed_flops
        head_params = h * h + h + h + 1
        cost["params"] += head_params - cost["head_params"]
        cost["flops"] += 2 * seq_len * (h * h + h) - lm_head_flops
        cost["head_params"] = head_params
        return cost

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        try:
            state_dict = self._check_electra_checkpoint(state_dict)
        except MagicConfigError as e:
            logger.error(f"cannot load the checkpoint: {e}")
            raise
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg,
                                       args=args)

    def _check_electra_checkpoint(self, state_dict):
        keys = list(state_dict)
        child = isinstance(self, MagicChildModel)
        run = (f"--arch magic_electra_child --magic-arch {self.cfg.magic_arch!r}" if child
               else "--arch magic_electra_supernet")
        if not any(k.startswith("encoder.rtd_head.") for k in keys):
            what = ("a masked-LM model (it has an LM head, encoder.lm_head.*: --arch "
                    "magic_supernet / magic_child)"
                    if any(k.startswith("encoder.lm_head.") for k in keys)
                    else "no ELECTRA discriminator (no encoder.rtd_head.*)")
            raise MagicConfigError(
                f"the checkpoint is {what}, this run is {run} (ELECTRA): expected a "
                "checkpoint of --arch magic_electra_supernet / magic_electra_child, or "
                "train this model from scratch")
        has_generator = any(k.startswith("generator.") for k in keys)
        if self.generator is None:
            # fine-tuning: the discriminator alone; a kept generator is dropped
            return {k: v for k, v in state_dict.items() if not k.startswith("generator.")} \
                if has_generator else state_dict
        if not has_generator:
            raise MagicConfigError(
                f"the checkpoint holds an ELECTRA discriminator without its generator "
                f"(magic-export without --keep-generator), this run ({run}, --task "
                "magic) pre-trains both: re-export with --keep-generator, or fine-tune "
                "the discriminator under sentence_prediction")
        want = {k: tuple(v.shape) for k, v in self.generator.state_dict().items()}
        have = {k[len("generator."):]: tuple(v.shape) for k, v in state_dict.items()
                if k.startswith("generator.")}
        if want != have:
            def describe(shapes):
                depth = len({k.split(".")[1] for k in shapes if k.startswith("layers.")})
                hidden = shapes.get("lm_head.dense.weight", ("?",))[0]
                return f"{depth} sub-layers of hidden {hidden}"
            hidden, heads, layers = self.generator_dims
            raise MagicConfigError(
                f"the checkpoint's ELECTRA generator has {describe(have)}, this run's "
                f"{describe(want)} (--electra-generator-embed-dim / -heads / -layers "
                f"give {hidden} / {heads} / {layers}): expected the generator it was "
                "trained with")
        return state_dict


@register_model("magic_electra_child", dataclass=MagicElectraChildConfig)
class MagicElectraChildModel(MagicElectraSupernetModel, MagicChildModel):
    """One fixed discriminator (``--magic-arch SPEC``) + the generator: RTD
    re-training of a found child, or its fine-tuning (discriminator alone)."""

    config_class = MagicElectraChildConfig


# ---- named architectures (presets) ----

@register_model_architecture("magic_electra_supernet", "magic_electra_supernet_base")
def magic_electra_supernet_base(cfg):
    """The paper's space (26 x {mha12, ffn, conv3, conv5}, hidden 768) with
    ELECTRA-base's generator: hidden 256, 4 heads, FFN 1024, 26 sub-layers."""
    magic_supernet_base(cfg)


@register_model_architecture("magic_electra_supernet", "magic_electra_supernet_tiny")
def magic_electra_supernet_tiny(cfg):
    """Demo/test scale: 8 layers x {mha2, ffn, conv3, conv5}, hidden 128; the
    generator hidden 42 (1/3), one head, 8 sub-layers."""
    magic_supernet_tiny(cfg)


@register_model_architecture("magic_electra_child", "magic_electra_child_tiny")
def magic_electra_child_tiny(cfg):
    _preset(cfg, encoder_embed_dim=128)
