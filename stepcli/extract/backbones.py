"""The encoder API under its old name: `stepcli.extract.encoders` is where the families live."""

from stepcli.extract.encoders import RANDOM_INIT, FrameEncoder, file_identity, load_backbone

__all__ = ["RANDOM_INIT", "FrameEncoder", "file_identity", "load_backbone"]
