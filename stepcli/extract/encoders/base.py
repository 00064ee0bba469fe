"""The one interface every backbone family fills: uint8 frames in, tokens ``[B, P+N, D]`` out.

A family subclass builds its model and says how to read tokens ``[B, P+N, D]`` and the patch
grid of a set of blocks (`_read`); this base learns the layout (P, N, D, grid, depth) from one
forward pass of a blank frame when it is built (on the meta device that costs nothing), then
applies the token budget and the layer choice the same way for every family.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from stepcli.errors import StepcliError
from stepcli.extract.budget import TokenBudget
from stepcli.extract.preprocess import Preprocess

CLS = "cls"
REGISTER = "register"
# what stands in for a missing per-frame CLS: the model's own pooled embedding where it has one of
# the token width (SigLIP's attention pool, a ViT's average pool), else the mean of the patch tokens
ATTENTION_POOL = "attention-pool"
GLOBAL_AVERAGE = "global-average"
# bytes the largest activation of one CPU backbone call may take: glibc maps every block above its
# mmap threshold (32 MiB at most) afresh on each call, zeroed, and gives it back after, so a call
# whose activations stay below it reuses the same memory (see `stepcli.extract.allocator`)
CALL_ACTIVATION_BYTES = 32 * 1024 * 1024


class Family:
    """A family of backbones behind one spec prefix: ``<name>:<model>[:<weights>]``.

    `build` parses the model and weights parts and returns the encoder; `models` lists the model
    names the family can build, for `stepcli backbones`.
    """

    name = ""
    form = ""  # the spec's grammar, for help and errors
    example = ""  # one spec that works offline (random init)
    extra = ""  # the optional extra (`pip install 'stepcli[<extra>]'`) the family needs, if any

    @classmethod
    def models(cls, pattern: str = "*") -> list[str]:
        raise NotImplementedError

    @classmethod
    def build(cls, spec: str, model_name: str, weights: str, image_size: int, layers: tuple[int, ...],
              budget: TokenBudget | None, meta: bool) -> FrameEncoder:  # fmt: skip
        """The encoder; `meta`: on the meta device, no weights loaded (layout and size only, free)."""
        raise NotImplementedError


@dataclass(frozen=True)
class BlockShape:
    """What block `index` gives per frame: P prefix tokens (named) and a `grid` of D-wide patches;
    `note`: what the block is where its index alone does not say (a CNN's ``forward_features``)."""

    index: int
    prefix: tuple[str, ...]
    grid: tuple[int, int]
    dim: int
    note: str = ""

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]


class FrameEncoder(torch.nn.Module):
    """A frozen image model returning per-frame tokens ``[B, P+N, D]``.

    Subclasses build their model, call `_survey(depth_of)` at the end of `__init__` (the depth
    and the layout, learnt from a blank frame) and implement `_read(pixels, blocks)`: per block
    (ascending), tokens ``[B, P+N, D]`` (P prefix tokens first, then the patch grid row by row),
    the names of the prefix tokens and the grid.
    """

    family = ""  # set by the registry
    versions: dict[str, str] = {}  # packages beyond torch, open_clip and timm that make the tokens

    def __init__(self, spec: str, weights: str, preprocess: Preprocess, layers: tuple[int, ...],
                 budget: TokenBudget | None, final_norm: str):  # fmt: skip
        super().__init__()
        self.spec = spec
        self.weights = weights
        self.preprocess = preprocess
        self.layers = tuple(layers)  # as the user named them (negative: from the last block)
        self.budget = budget or TokenBudget()
        self.final_norm = final_norm

    def _survey(self, depth_of: Callable[[torch.Tensor], int]) -> None:
        """The depth (`depth_of` a blank frame) and the layout of the chosen blocks."""
        with self._frames_fit():
            depth = self.depth = depth_of(self._blank())
        self.blocks = [block_index(layer, depth) for layer in self.layers]
        if len(set(self.blocks)) != len(self.blocks):
            raise StepcliError(f"--layers {','.join(map(str, self.layers))} names a block twice")
        with _largest_output(self) as largest:
            shapes = self.block_shapes(sorted(set(self.blocks)))
        # frames per CPU backbone call: as many as keep the widest activation under the threshold
        self.frames_per_call = max(1, CALL_ACTIVATION_BYTES // max(1, 4 * largest[0]))
        first = shapes[0]
        for other in shapes[1:]:
            if (other.grid, other.dim, len(other.prefix)) != (first.grid, first.dim, len(first.prefix)):
                raise StepcliError(
                    f"--layers: blocks {first.index} and {other.index} of {self.spec} give tokens of different shapes "
                    f"({_shape_text(first)} vs {_shape_text(other)}); cache blocks of one stage together"
                )
        if first.num_patches < 1:
            raise StepcliError(f"{self.spec} gives no patch grid at {self.image_size} px; use a larger --image-size")
        self.prefix, self.grid, self.dim = first.prefix, first.grid, first.dim
        self.num_prefix = len(first.prefix)

    def _blank(self) -> torch.Tensor:
        """One blank frame on the model's device: what the layout is learnt from."""
        device = next(self.parameters()).device
        return torch.zeros(1, 3, self.image_size, self.image_size, device=device)

    @contextmanager
    def _frames_fit(self):
        """A model that cannot take frames of this size says so in one line, not a traceback."""
        try:
            with torch.no_grad():
                yield
        except StepcliError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever the model's own code raises on these frames
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise StepcliError(
                f"--image-size {self.image_size}: {self.spec} cannot encode {self.image_size} px frames ({reason}); "
                "give a size the model takes, e.g. its default 224"
            ) from None

    def block_shapes(self, blocks: list[int]) -> list[BlockShape]:
        """The token layout of each of `blocks` (ascending), from one forward pass of a blank frame."""
        with self._frames_fit():
            read = self._read(self._blank(), blocks)
        return [
            BlockShape(b, names, grid, x.shape[-1], self.block_note(b))
            for b, (x, names, grid) in zip(blocks, read, strict=True)
        ]

    def block_note(self, index: int) -> str:
        """What block `index` is where its index alone does not say; see `BlockShape.note`."""
        return ""

    @property
    def num_patches(self) -> int:
        """Patch tokens per cached frame, after the token budget."""
        return self.budget.num_patches(self.grid)

    @property
    def image_size(self) -> int:
        return self.preprocess.size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, P+N, D]`` of the first of `layers`, the full patch grid (no budget)."""
        return self.forward_layers(pixels)[0]

    def forward_layers(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Tokens ``[B, P+N, D]`` of every one of `layers`, in their order, from one forward pass."""
        wanted = sorted(set(self.blocks))
        out = self._read(pixels, wanted)  # the models return blocks in ascending order
        return [out[wanted.index(b)][0] for b in self.blocks]

    def _read(self, pixels: torch.Tensor, blocks: list[int]) -> list[tuple[torch.Tensor, tuple[str, ...], tuple]]:
        """Per block: tokens ``[B, P+N, D]``, the names of the P prefix tokens, the patch grid."""
        raise NotImplementedError

    @torch.no_grad()
    def encode_clips(self, pixels: list[torch.Tensor], device: torch.device) -> np.ndarray:
        """Clips of preprocessed frames `[B, T, 3, S, S]` -> tokens `[B, T, P+N, D]` float16 of the
        first layer, after the token budget: as cached."""
        return np.stack([views[0] for views in self.encode_views([p[None] for p in pixels], device)[0]])

    @torch.no_grad()
    def encode_views(self, pixels: list[torch.Tensor], device: torch.device) -> list[list[np.ndarray]]:
        """Views of clips `[K, T, 3, S, S]` (K may differ per clip) -> per layer, per clip, tokens
        `[K, T, P+N, D]` float16 after the token budget, as cached.

        fp32 on CPU (bf16 is slower there); bf16 (or fp16) autocast on a GPU.
        """
        sizes = [p.shape[0] * p.shape[1] for p in pixels]
        frames = torch.cat([p.flatten(0, 1) for p in pixels]).to(device, non_blocking=True)
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast("cuda", dtype=dtype):
                layers = self.forward_layers(frames)
        else:  # fp32 in calls of `frames_per_call` frames (a ViT's batch of clips is one call)
            calls = [self.forward_layers(part) for part in frames.split(self.frames_per_call)]
            layers = [torch.cat(parts) if len(parts) > 1 else parts[0] for parts in zip(*calls, strict=True)]
        out = []
        for tokens in layers:
            kept = self.budget.apply(tokens.float(), self.num_prefix, self.grid).cpu().numpy().astype(np.float16)
            parts = np.split(kept, np.cumsum(sizes)[:-1])
            out.append([part.reshape(*p.shape[:2], *kept.shape[1:]) for part, p in zip(parts, pixels, strict=True)])
        return out

    def provenance(self) -> dict:
        """The encoder's share of an `ExtractionRecord` (the pipeline adds T, views, sampler, dtype)."""
        return {
            "backbone": self.spec,
            "weights": self.weights,
            "image_size": self.image_size,
            "mean": tuple(self.preprocess.mean),
            "std": tuple(self.preprocess.std),
            "resize": "shorter-side bicubic antialias on uint8, centre crop",
            "normalize": "final-norm",
            "layer": self.layers[0],
            "layers": self.layers,
            "pool": self.budget.pool_name,
            "tokens": self.budget.tokens,
            "num_prefix": self.num_prefix,
            "num_patches": self.num_patches,
            "dim": self.dim,
            "prefix": self.prefix,
            "grid": self.grid,
            "final_norm": self.final_norm,
        }


@contextmanager
def _largest_output(model: torch.nn.Module):
    """Yields ``[n]``: after the block, the most elements a tensor took as any submodule's output
    during it (one blank frame runs: its shape alone, so the meta device measures it too)."""
    largest = [0]

    def record(_module, _inputs, output) -> None:
        tensors = output if isinstance(output, tuple | list) else (output,)
        for t in tensors:
            if isinstance(t, torch.Tensor):
                largest[0] = max(largest[0], t.numel())

    hooks = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        yield largest
    finally:
        for hook in hooks:
            hook.remove()


def block_index(layer: int, depth: int) -> int:
    """A user's block number (negative: from the last) as an index in ``0..depth-1``."""
    index = depth + layer if isinstance(layer, int) and layer < 0 else layer
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= index < depth:
        raise StepcliError(f"--layer {layer} is outside the model's {depth} blocks (use -{depth}..{depth - 1})")
    return index


def with_stand_in(patches: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
    """``[B, N, D]`` patches -> ``[B, 1+N, D]``: the model's `pooled` embedding ``[B, D]`` first, or,
    when it has none of width D, the mean of the patches; linear, logreg and knn read it as a CLS."""
    if pooled is None or pooled.ndim != 2 or pooled.shape[-1] != patches.shape[-1]:
        pooled = patches.mean(dim=1)
    return torch.cat([pooled[:, None].to(patches.dtype), patches], dim=1)


def map_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """A CNN stage's ``[B, C, H, W]`` map -> ``[B, 1+H*W, C]``: its global average, then each position."""
    patches = feature_map.flatten(2).transpose(1, 2)
    return with_stand_in(patches, None)


def _shape_text(shape: BlockShape) -> str:
    return f"{shape.dim}x{shape.grid[0]}x{shape.grid[1]}"
