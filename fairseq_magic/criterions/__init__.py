from .magic_alignment import MagicAlignmentLoss  # noqa: F401
