"""Search space, spec parsing, cost model and SPOS sampler (no fairseq)."""

import collections
import random

import pytest

from fairseq_magic.core.cost import child_cost, op_params
from fairseq_magic.core.samplers import SPOSSampler, build_sampler
from fairseq_magic.core.space import (Arch, MagicConfigError, SearchSpace,
                                      expand_op_set, parse_arch_spec, parse_op)


def test_operator_grammar():
    assert parse_op("mha12", 768).qkv_dim == 768
    assert parse_op("mha8d384", 768).qkv_dim == 384
    assert parse_op("ffn", 768).inner == 3072
    assert parse_op("ffn832", 768).inner == 832
    assert parse_op("conv5", 768).kernel == 5
    for bad, needle in [("gru", "unknown operator 'gru'"), ("conv4", "odd"),
                        ("mha5d384", "multiple of the head count 5"), ("", "unknown")]:
        with pytest.raises(MagicConfigError, match=needle):
            parse_op(bad, 768)


def test_paper_space_size_and_spec_round_trip():
    space = SearchSpace.from_config("paper", 26, 768)
    assert space.candidates == ("mha12", "ffn", "conv3", "conv5")
    assert space.size() == 4 ** 26 and 4.4e15 < space.size() < 4.6e15  # "about 4.5e15"
    arch = space.parse(",".join(["mha12", "ffn"] * 13))
    assert isinstance(arch, Arch) and Arch(str(arch).split(",")) == arch
    assert space.parse(str(arch)) == arch


def test_bad_specs_name_value_and_expectation():
    space = SearchSpace.from_config("mha2,ffn,conv3", 3, 128)
    with pytest.raises(MagicConfigError, match=r"has 2 layers: expected 3"):
        space.parse("ffn,ffn")
    with pytest.raises(MagicConfigError, match=r"unknown operator 'conv7'.*\['mha2', 'ffn', 'conv3'\]"):
        space.parse("ffn,conv7,ffn")
    with pytest.raises(MagicConfigError, match="non-empty"):
        expand_op_set("", 128)
    with pytest.raises(MagicConfigError, match="repeat"):
        expand_op_set("ffn,ffn", 128)
    with pytest.raises(MagicConfigError, match="one operator name per layer"):
        parse_arch_spec("ffn,,ffn")
    shrunk = SearchSpace(space.candidates, 3, 128, choices=[["ffn"], ["mha2", "ffn"], ["conv3"]])
    with pytest.raises(MagicConfigError, match="removed from the search space"):
        shrunk.parse("mha2,ffn,conv3")
    assert shrunk.size() == 2


def test_table6_operator_sizes_match_the_appendix():
    # Appendix A, Table 6 (hidden 768): parameters in millions, LayerNorm excluded.
    expected = {"mha6d384": 1.18, "mha8d384": 1.18, "ffn768": 1.18, "ffn832": 1.28,
                "conv3": 1.18, "conv5": 1.19}
    assert expand_op_set("table6", 768) == tuple(expected)
    for name, millions in expected.items():
        assert round(op_params(parse_op(name, 768), include_norm=False) / 1e6, 2) == millions


@pytest.mark.parametrize("vocab,params_m,gflops", [(30522, 110, 29), (50265, 125, 33)])
def test_bert_and_roberta_base_costs_match_table2(vocab, params_m, gflops):
    # Table 2: BERT-base 110M / 2.9e10 FLOPs, RoBERTa-base 125M / 3.3e10, at 128
    # tokens. A BERT layer is mha12 + ffn; positions: 512 + fairseq's offset 2.
    cost = child_cost(["mha12", "ffn"] * 12, 768, vocab, 514, seq_len=128)
    assert abs(cost["params"] / 1e6 - params_m) / params_m < 0.01
    assert abs(cost["flops"] / 1e9 - gflops) / gflops < 0.03
    factorized = child_cost(["mha12", "ffn"] * 12, 768, vocab, 514, embed_dim=512)
    assert factorized["params"] < cost["params"] - vocab * 200


def test_spos_is_a_pure_function_of_seed_and_update():
    space = SearchSpace.from_config("paper", 8, 64)
    a, b = SPOSSampler(space, seed=7), SPOSSampler(space, seed=7)
    paths = [a.path_for_update(u) for u in range(50)]
    assert paths == [b.path_for_update(u) for u in reversed(range(50))][::-1]
    # The documented rule, computed here: one fresh random.Random per update,
    # seeded with the string "magic-spos:<seed>:<update>", one choice per layer.
    for u in (0, 3, 49):
        rng = random.Random(f"magic-spos:7:{u}")
        assert paths[u] == tuple(rng.choice(space.candidates) for _ in range(8)), u
    # A sampler that never drew another update agrees (no hidden sequence state).
    assert SPOSSampler(space, seed=7).path_for_update(3) == paths[3]
    assert len(set(paths)) == 50  # 4^8 choices: repeats would be a bug
    assert SPOSSampler(space, seed=8).path_for_update(0) != paths[0] or \
        SPOSSampler(space, seed=8).path_for_update(1) != paths[1]


def test_spos_is_uniform_per_layer():
    space = SearchSpace.from_config("paper", 6, 64)
    s = SPOSSampler(space, seed=0)
    counts = collections.Counter()
    n = 4000
    for u in range(n):
        for layer, op in enumerate(s.path_for_update(u)):
            counts[layer, op] += 1
    for layer in range(6):
        for op in space.candidates:
            # binomial(4000, 1/4): sd ~ 27; 5 sd bounds
            assert abs(counts[layer, op] - n / 4) < 140, (layer, op, counts[layer, op])


def test_sampler_state_round_trip_and_errors():
    space = SearchSpace.from_config("paper", 4, 64)
    s = build_sampler("spos", space, 1)
    s.path_for_update(5)
    state = s.state_dict()
    t = build_sampler("spos", space, 99)
    t.load_state_dict(state)
    assert t.state_dict() == state and t.seed == 1
    assert t.path_for_update(6) == SPOSSampler(space, seed=1).path_for_update(6)
    assert t.path_for_update(6) != SPOSSampler(space, seed=99).path_for_update(6)
    with pytest.raises(MagicConfigError, match="'nope'.*expected one of"):
        build_sampler("nope", space, 0)
