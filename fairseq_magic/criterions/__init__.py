from .magic_alignment import MagicAlignmentLoss  # noqa: F401
from .squad_span import SquadSpanCriterion  # noqa: F401
from .magic_electra import MagicElectraLoss  # noqa: F401
from .magic_kd import MagicKDLoss, SentencePredictionKDCriterion, SquadSpanKDCriterion  # noqa: F401
