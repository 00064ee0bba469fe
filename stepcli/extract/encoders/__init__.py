"""Frozen frame encoders, one family per module, found by the prefix of a spec string.

``<family>:<model>[:<weights>]``: each family (registered with `@register` in its own module)
parses the rest of the spec, loads the weights and maps frames to tokens ``[B, P+N, D]``: P
prefix tokens (CLS, registers, or what stands in for a missing CLS) then N patch tokens.
Families: ``openclip`` (`openclip.py`), ``timm`` (`timm.py`), ``hf`` (`hf.py`, Hugging Face
``transformers``, an optional extra). Importing the package registers them.
"""

from stepcli.extract.encoders import hf, openclip, timm  # noqa: F401 - registers the families
from stepcli.extract.encoders.base import BlockShape, Family, FrameEncoder
from stepcli.extract.encoders.registry import FAMILIES, load_backbone, register, spec_forms
from stepcli.extract.encoders.weights import RANDOM_INIT, file_identity

__all__ = [
    "FAMILIES", "RANDOM_INIT", "BlockShape", "Family", "FrameEncoder", "file_identity", "load_backbone", "register",
    "spec_forms",
]  # fmt: skip
