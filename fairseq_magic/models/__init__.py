from .magic_supernet import MagicChildModel, MagicSupernetModel  # noqa: F401
