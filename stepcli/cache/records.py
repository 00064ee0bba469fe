"""Typed records of what a cache holds: the token layout, the extraction and the dataset.

They cross module boundaries (the probes are built from a `TokenLayout`, a run keeps the
`ExtractionRecord` of its cache) and land on disk in manifest.json and config.json, so each one
round-trips through a plain JSON dict in the layout today's files already use.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from stepcli.errors import StepcliError
from stepcli.pairs import Pair


def _from_dict(cls: type, data: Any, what: str) -> dict[str, Any]:
    """The constructor kwargs of dataclass `cls` found in `data`; a missing field is a one-line error."""
    if not isinstance(data, dict):
        raise StepcliError(f"{what} is not a JSON object: {data!r}")
    names = [f.name for f in fields(cls)]
    missing = [
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING and f.name not in data
    ]
    if missing:
        raise StepcliError(f"{what} lacks {', '.join(missing)}; it was not written by this stepcli")
    return {k: data[k] for k in names if k in data}


@dataclass(frozen=True)
class TokenLayout:
    """The shape of one clip's cached tokens, `[T, P+N, D]`: what every probe is built for.

    P prefix tokens (CLS, plus registers for DINOv2 `*_reg4`) come before the N patch tokens of
    each frame.
    """

    num_frames: int
    num_prefix: int
    num_patches: int
    dim: int

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            # a `--tokens prefix` cache has no patch tokens; a backbone without CLS has no prefix
            low = 0 if f.name in ("num_prefix", "num_patches") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise StepcliError(f"token layout: {f.name} must be an integer >= {low}, got {value!r}")
        if self.tokens_per_frame < 1:
            raise StepcliError("token layout: a frame needs at least one token (P + N >= 1)")

    @property
    def tokens_per_frame(self) -> int:
        return self.num_prefix + self.num_patches

    @property
    def clip_shape(self) -> tuple[int, int, int]:
        """`(T, P+N, D)`."""
        return (self.num_frames, self.tokens_per_frame, self.dim)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TokenLayout:
        return cls(**_from_dict(cls, data, "token layout"))


@dataclass(frozen=True)
class ViewsRecord:
    """The views cached per clip (schema v2): `clips` temporal clips x `crops` spatial crops for every
    split, then, for train clips only, `train_views` augmented views (`augment`, drawn with `seed`).

    View v < clips * crops is temporal clip v // crops, crop v % crops (crops: centre, or left /
    centre / right along the long side); train view clips * crops + j is an augmented crop of
    temporal clip j % clips. A version-1 cache is one view: clips = crops = 1, no train views.
    """

    clips: int = 1
    crops: int = 1
    train_views: int = 0
    augment: str = ""
    seed: int = 0

    @property
    def eval_views(self) -> int:
        """Views of a val or test clip (and the first views of a train clip)."""
        return self.clips * self.crops

    def views_of(self, split: str) -> int:
        return self.eval_views + (self.train_views if split == "train" else 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ViewsRecord:
        return cls(**_from_dict(cls, data, "views record"))


_LATER_FIELDS = ("prefix", "grid", "final_norm")  # added after caches were written without them


@dataclass(frozen=True)
class ExtractionRecord:
    """Everything that decides a cache's tokens; two caches are interchangeable when these agree.

    On disk, P/N/D sit in a nested `token_layout` object and T in `num_frames`, as in schema v1.
    Schema v2 adds `layers` (every cached block; `layer` is the first of them, the default a
    probe reads), `views`, `pool` (patch-grid pooling window, "1x1": none) and `tokens` ("all", or
    "prefix": CLS and registers only); a v1 record reads as one layer, one view, no pooling.
    """

    backbone: str
    weights: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str
    normalize: str
    layer: int
    num_frames: int
    sampler: str
    dtype: str
    num_prefix: int
    num_patches: int
    dim: int
    layers: tuple[int, ...] = ()
    views: ViewsRecord = field(default_factory=ViewsRecord)
    pool: str = "1x1"
    tokens: str = "all"
    # what each prefix token is ("cls", "register", or what stands in for a missing CLS, e.g.
    # "attention-pool", "global-average"), the patch grid before pooling, and the norm the tokens
    # come after; empty in a cache made before they were recorded
    prefix: tuple[str, ...] = ()
    grid: tuple[int, ...] = ()
    final_norm: str = ""

    def __post_init__(self) -> None:
        if not self.layers:  # a v1 record: its one layer
            object.__setattr__(self, "layers", (self.layer,))

    @property
    def frame_cls(self) -> bool:
        """Whether each frame's first token is the model's own CLS (older caches: every backbone had one)."""
        return self.num_prefix >= 1 and (not self.prefix or self.prefix[0] == "cls")

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(self.num_frames, self.num_prefix, self.num_patches, self.dim)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        data["layers"], data["views"] = list(self.layers), self.views.to_dict()
        data["prefix"], data["grid"] = list(self.prefix), list(self.grid)
        layout = {k: data.pop(k) for k in ("num_prefix", "num_patches", "dim")}
        head = {k: data.pop(k) for k in ("layer", "num_frames", "sampler", "dtype")}
        return {**data, "token_layout": layout, **head}

    @classmethod
    def from_dict(cls, data: Any) -> ExtractionRecord:
        if not isinstance(data, dict) or not isinstance(data.get("token_layout"), dict):
            raise StepcliError(f"extraction record lacks a token_layout object: {data!r}")
        flat = {**data, **data["token_layout"]}
        kwargs = _from_dict(cls, flat, "extraction record")
        kwargs["mean"], kwargs["std"] = tuple(kwargs["mean"]), tuple(kwargs["std"])
        for name in ("layers", "prefix", "grid"):
            kwargs[name] = tuple(kwargs.get(name, ()))
        if "views" in kwargs:
            kwargs["views"] = ViewsRecord.from_dict(kwargs["views"])
        return cls(**kwargs)

    def differences(self, other: ExtractionRecord) -> list[str]:
        """`key: mine -> other's` for every key (as written on disk) whose value differs; a key one
        of the two records leaves empty (written before it was recorded) is not compared."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{k}: {mine[k]!r} -> {theirs[k]!r}"
            for k in mine
            if mine[k] != theirs[k] and not (k in _LATER_FIELDS and not (mine[k] and theirs[k]))
        ]


@dataclass(frozen=True)
class DatasetRecord:
    """The labelled data behind a cache: class names, splits, nearly-symmetric pairs, its source."""

    name: str
    class_names: tuple[str, ...]
    pairs: tuple[Pair, ...] = ()
    splits: tuple[str, ...] = ()
    source: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "pairs": [list(p) for p in self.pairs],
            "splits": list(self.splits),
            "source": dict(self.source),
        }

    @classmethod
    def from_dict(cls, data: Any) -> DatasetRecord:
        kwargs = _from_dict(cls, data, "dataset record")
        return cls(
            name=kwargs["name"],
            class_names=tuple(kwargs["class_names"]),
            pairs=tuple(tuple(p) for p in kwargs.get("pairs", ())),
            splits=tuple(kwargs.get("splits", ())),
            source=dict(kwargs.get("source", {})),
        )
