from .magic_supernet import MagicChildModel, MagicSupernetModel  # noqa: F401
from .magic_electra import MagicElectraChildModel, MagicElectraSupernetModel  # noqa: F401
