"""Frozen frame encoders behind one interface, built from a spec string.

``openclip:<model>[:<tag or file>]`` and ``timm:<model>[:<file or "pretrained">]``. Every
encoder maps uint8 frames to tokens ``[B, P+N, D]``: P prefix tokens (CLS, plus registers for
DINOv2 ``*_reg4``) then N patch tokens, all after the model's final norm, from ``layer``.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from stepcli import StepcliError
from stepcli.extract.budget import TokenBudget
from stepcli.extract.preprocess import Preprocess

log = logging.getLogger(__name__)

RANDOM_INIT = "random-init"
# a random-init backbone must give the same tokens in every run, or a resumed cache would mix two models
RANDOM_INIT_SEED = 0


class FrameEncoder(torch.nn.Module):
    """A frozen image model returning per-frame tokens ``[B, P+N, D]``."""

    def __init__(self, spec: str, weights: str, preprocess: Preprocess, num_prefix: int, grid: tuple[int, int],
                 dim: int, layers: tuple[int, ...], depth: int, budget: TokenBudget | None = None):  # fmt: skip
        super().__init__()
        self.spec = spec
        self.weights = weights
        self.preprocess = preprocess
        self.num_prefix = num_prefix
        self.grid = tuple(grid)
        self.dim = dim
        self.layers = tuple(layers)  # as the user named them (negative: from the last block)
        self.blocks = [_block_index(layer, depth) for layer in self.layers]
        if len(set(self.blocks)) != len(self.blocks):
            raise StepcliError(f"--layers {','.join(map(str, self.layers))} names a block twice")
        self.budget = budget or TokenBudget()

    @property
    def num_patches(self) -> int:
        """Patch tokens per cached frame, after the token budget."""
        return self.budget.num_patches(self.grid)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, P+N, D]`` of the first of `layers`, the full patch grid (no budget)."""
        return self.forward_layers(pixels)[0]

    def forward_layers(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Tokens ``[B, P+N, D]`` of every one of `layers`, in their order, from one forward pass."""
        wanted = sorted(set(self.blocks))
        out = self._intermediates(pixels, wanted)  # the models return blocks in ascending order
        return [out[wanted.index(b)] for b in self.blocks]

    @property
    def image_size(self) -> int:
        return self.preprocess.size

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
        else:
            layers = self.forward_layers(frames)
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
        }


class OpenClipEncoder(FrameEncoder):
    def __init__(self, spec: str, model_name: str, pretrained: str | None, weights: str, image_size: int,
                 layers: tuple[int, ...], budget: TokenBudget | None):  # fmt: skip
        import open_clip

        model = open_clip.create_model(model_name, pretrained=pretrained, force_image_size=image_size)
        cfg = open_clip.get_model_preprocess_cfg(model)
        visual = model.visual.eval().requires_grad_(False)
        super().__init__(
            spec, weights, Preprocess(image_size, tuple(cfg["mean"]), tuple(cfg["std"])), num_prefix=1,
            grid=visual.grid_size, dim=visual.transformer.width, layers=layers,
            depth=len(visual.transformer.resblocks), budget=budget,
        )  # fmt: skip
        self.visual = visual

    @torch.no_grad()
    def _intermediates(self, pixels: torch.Tensor, blocks: list[int]) -> list[torch.Tensor]:
        out = self.visual.forward_intermediates(
            pixels, indices=blocks, stop_early=True, normalize_intermediates=True,
            intermediates_only=True, output_fmt="NLC", output_extra_tokens=True,
        )  # fmt: skip
        return [torch.cat([p, x], dim=1) for p, x in zip(out["image_intermediates_prefix"], out["image_intermediates"],
                                                         strict=True)]  # fmt: skip


class TimmEncoder(FrameEncoder):
    def __init__(
        self,
        spec: str,
        model_name: str,
        weights_file: str | None,
        use_hub: bool,
        weights: str,
        image_size: int,
        layers: tuple[int, ...],
        budget: TokenBudget | None,
    ):
        import timm

        kwargs = {"pretrained": bool(weights_file) or use_hub, "img_size": image_size}
        if weights_file:
            kwargs["pretrained_cfg_overlay"] = {"file": weights_file}
        with _random_init_seed():
            try:
                model = timm.create_model(model_name, **kwargs)
            except RuntimeError as err:
                raise StepcliError(f"cannot load {weights_file or model_name}: {str(err).splitlines()[0]}") from None
        model = model.eval().requires_grad_(False)
        cfg = timm.data.resolve_data_config({}, model=model)
        super().__init__(
            spec, weights, Preprocess(image_size, tuple(cfg["mean"]), tuple(cfg["std"])),
            num_prefix=model.num_prefix_tokens, grid=model.patch_embed.grid_size, dim=model.embed_dim,
            layers=layers, depth=len(model.blocks), budget=budget,
        )  # fmt: skip
        self.model = model

    @torch.no_grad()
    def _intermediates(self, pixels: torch.Tensor, blocks: list[int]) -> list[torch.Tensor]:
        out = self.model.forward_intermediates(
            pixels, indices=blocks, return_prefix_tokens=True, norm=True,
            stop_early=True, output_fmt="NLC", intermediates_only=True,
        )  # fmt: skip
        return [torch.cat([prefix, patches], dim=1) for patches, prefix in out]


def load_backbone(
    spec: str, image_size: int = 224, layer: int | tuple[int, ...] = -1, budget: TokenBudget | None = None
) -> FrameEncoder:
    """Build the frozen encoder named by ``spec`` for `layer` (one block, or several read in one pass)
    and the token `budget`; see the module docstring for the forms."""
    family, _, rest = spec.partition(":")
    model_name, _, weights = rest.partition(":")
    if family not in ("openclip", "timm") or not model_name:
        raise StepcliError(f"backbone {spec!r} is not openclip:<model>[:<tag or file>] or timm:<model>[:<file>]")
    layers = (layer,) if isinstance(layer, int) else tuple(layer)
    if not layers:
        raise StepcliError("--layers names no block; give e.g. -1 or -1,-4")
    load = _load_openclip if family == "openclip" else _load_timm
    return load(spec, model_name, weights, image_size, layers, budget)


def _load_openclip(
    spec: str, model_name: str, weights: str, image_size: int, layer: tuple[int, ...], budget: TokenBudget | None
) -> FrameEncoder:
    import open_clip

    if model_name not in open_clip.list_models():
        raise StepcliError(f"open_clip has no model {model_name!r}; see open_clip.list_models()")
    if not weights:
        _warn_random_init(spec)
        with _random_init_seed():
            return OpenClipEncoder(spec, model_name, None, RANDOM_INIT, image_size, layer, budget)
    if _looks_like_path(weights):
        path = _existing_file(weights)
        return OpenClipEncoder(spec, model_name, path, file_identity(weights), image_size, layer, budget)
    cfg = open_clip.get_pretrained_cfg(model_name, weights)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise StepcliError(f"open_clip has no pretrained tag {weights!r} for {model_name} (known: {tags})")
    local = _cached_hub_file(cfg.get("hf_hub", ""))
    if local is None:
        _require_network(urlparse(cfg["url"]).hostname if cfg.get("url") else "huggingface.co", spec, model_name)
    return OpenClipEncoder(spec, model_name, local or weights, weights, image_size, layer, budget)


def _load_timm(
    spec: str, model_name: str, weights: str, image_size: int, layer: tuple[int, ...], budget: TokenBudget | None
) -> FrameEncoder:
    import timm

    if not timm.is_model(model_name):
        raise StepcliError(f"timm has no model {model_name!r}; see timm.list_models('*dinov2*')")
    if not weights:
        _warn_random_init(spec)
        return TimmEncoder(spec, model_name, None, False, RANDOM_INIT, image_size, layer, budget)
    if weights == "pretrained":
        _require_network("huggingface.co", spec, model_name)
        return TimmEncoder(spec, model_name, None, True, f"timm-hub:{model_name}", image_size, layer, budget)
    path = _existing_file(weights)
    return TimmEncoder(spec, model_name, path, False, file_identity(weights), image_size, layer, budget)


def file_identity(path: str) -> str:
    """``sha256:<hex>`` of a weights file: the cache records which file, not just its name."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _block_index(layer: int, depth: int) -> int:
    index = depth + layer if layer < 0 else layer
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= index < depth:
        raise StepcliError(f"--layer {layer} is outside the model's {depth} blocks (use -{depth}..{depth - 1})")
    return index


def _looks_like_path(weights: str) -> bool:
    return "/" in weights or "\\" in weights or Path(weights).suffix in (".pt", ".pth", ".bin", ".safetensors")


def _existing_file(path: str) -> str:
    if not Path(path).is_file():
        raise StepcliError(f"weights file {path} not found")
    return str(Path(path).resolve())


def _cached_hub_file(hf_hub: str) -> str | None:
    """A file open_clip downloaded before, so a known tag works offline once fetched."""
    if not hf_hub:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo_id = hf_hub.rstrip("/")
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo_id, name)
        if isinstance(found, str):
            return found
    return None


def _require_network(host: str, spec: str, model_name: str) -> None:
    """Fail in seconds, not after the hub's retries, when the weights cannot be fetched."""
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        family = spec.split(":")[0]
        raise StepcliError(
            f"cannot download the weights of {spec!r} ({host} unreachable); download them on a machine "
            f"with network and pass the file: {family}:{model_name}:/path/to/weights.safetensors"
        ) from None


def _warn_random_init(spec: str) -> None:
    log.warning(
        "WARNING: %s has no weights: using RANDOM-INIT weights (fine for tests and the demo, "
        "meaningless for research); pass a pretrained tag or a weights file",
        spec,
    )


class _OpenClipRandomInitNotice(logging.Filter):
    """open_clip announces random init on the root logger; our own warning already said it, louder."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextmanager
def _random_init_seed():
    notice = _OpenClipRandomInitNotice()
    root = logging.getLogger()
    root.addFilter(notice)  # only while the model is built: the root logger is left as it was
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            yield
    finally:
        root.removeFilter(notice)
