"""The encoder families' registry: a spec's prefix names its family, which builds the encoder."""

from __future__ import annotations

from stepcli.errors import StepcliError
from stepcli.extract.budget import TokenBudget
from stepcli.extract.encoders.base import Family, FrameEncoder

FAMILIES: dict[str, type[Family]] = {}


def register(family: type[Family]) -> type[Family]:
    """Class decorator: `family` answers specs that start with ``family.name:``."""
    FAMILIES[family.name] = family
    return family


def spec_forms() -> str:
    """Every family's spec grammar, for help texts and errors: those every install has first."""
    return " or ".join(FAMILIES[name].form for name in sorted(FAMILIES, key=lambda n: (bool(FAMILIES[n].extra), n)))


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
