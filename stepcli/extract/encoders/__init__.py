"""Frozen frame encoders, one family per module, found by the prefix of a spec string.

``<family>:<model>[:<weights>]``: each family (registered with `@register` in its own module)
parses the rest of the spec, loads the weights and maps frames to tokens ``[B, P+N, D]``: P
prefix tokens (CLS, registers, or what stands in for a missing CLS) then N patch tokens.
Families: ``openclip`` (`openclip.py`), ``timm`` (`timm.py`).
"""

from __future__ import annotations

from stepcli import StepcliError
from stepcli.extract.budget import TokenBudget
from stepcli.extract.encoders import openclip as _openclip  # noqa: F401 - registers the family
from stepcli.extract.encoders import timm as _timm  # noqa: F401 - registers the family
from stepcli.extract.encoders.base import FAMILIES, BlockShape, Family, FrameEncoder, register
from stepcli.extract.encoders.weights import RANDOM_INIT, file_identity

__all__ = [
    "FAMILIES", "RANDOM_INIT", "BlockShape", "Family", "FrameEncoder", "file_identity", "load_backbone", "register",
    "spec_forms",
]  # fmt: skip


def spec_forms() -> str:
    """Every family's spec grammar, for help texts and errors."""
    return " or ".join(FAMILIES[name].form for name in sorted(FAMILIES))


def load_backbone(spec: str, image_size: int = 224, layer: int | tuple[int, ...] = -1,
                  budget: TokenBudget | None = None, *, meta: bool = False) -> FrameEncoder:  # fmt: skip
    """The frozen encoder named by ``spec`` for `layer` (one block, or several read in one pass)
    and the token `budget`. `meta`: built on the meta device without weights, for its layout only."""
    name, _, rest = spec.partition(":")
    model_name, _, weights = rest.partition(":")
    family = FAMILIES.get(name)
    if family is None or not model_name:
        raise StepcliError(f"backbone {spec!r} is not {spec_forms()}")
    layers = (layer,) if isinstance(layer, int) else tuple(layer)
    if not layers:
        raise StepcliError("--layers names no block; give e.g. -1 or -1,-4")
    encoder = family.build(spec, model_name, weights, image_size, layers, budget, meta)
    encoder.family = family.name
    return encoder
