from .magic_task import MagicTask  # noqa: F401
from .squad_task import MagicSquadTask  # noqa: F401
