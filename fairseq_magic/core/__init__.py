"""fairseq-free core: search space and specs, samplers, cost model."""
from .cost import child_cost, op_flops, op_params  # noqa: F401
from .samplers import SAMPLERS, PathSampler, SPOSSampler, build_sampler, random_arch  # noqa: F401
from .space import (Arch, MagicConfigError, SearchSpace, expand_op_set,  # noqa: F401
                    parse_arch_spec, parse_op)
