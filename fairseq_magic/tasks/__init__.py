from .magic_task import MagicTask  # noqa: F401
