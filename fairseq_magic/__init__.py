"""fairseq-magic: weight-sharing NAS for BERT-style pre-training (MAGIC).

Importing the package (``--user-dir fairseq_magic``) registers with fairseq:
  --arch magic_supernet[_base|_base_fact512|_compress|_tiny], magic_child[_tiny]
  --arch magic_electra_supernet[_base|_tiny], magic_electra_child[_tiny] (ELECTRA)
  --task magic
  --criterion magic_alignment, magic_electra
The fairseq-free core (search space, samplers, cost model) is ``fairseq_magic.core``;
it imports without fairseq installed.
"""

__version__ = "0.1.0"

try:
    import fairseq  # noqa: F401
except ImportError:  # core-only use (search-space maths, samplers) without fairseq
    fairseq = None

if fairseq is not None:
    from .serialization import register_safe_globals

    register_safe_globals()
    from . import criterions, models, tasks  # noqa: E402,F401  (registration side effects)
