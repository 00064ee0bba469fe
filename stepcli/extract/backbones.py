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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F

from stepcli import StepcliError

log = logging.getLogger(__name__)

RANDOM_INIT = "random-init"
# a random-init backbone must give the same tokens in every run, or a resumed cache would mix two models
RANDOM_INIT_SEED = 0


@dataclass
class Preprocess:
    """Resize the shorter side to ``size`` (bicubic, antialiased), centre-crop, normalise.

    The resize runs on the uint8 frames, as PIL's does in the CLIP and timm reference transforms
    (rounded and saturated to 0..255): torch's uint8 path is also much cheaper than the float one,
    which matters on a CPU, where preprocessing competes with the backbone for cores.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        """``[B, H, W, 3]`` uint8 -> ``[B, 3, size, size]`` float32."""
        x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.uint8)).permute(0, 3, 1, 2)  # channels-last
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        new_h, new_w = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
        top, left = (new_h - self.size) // 2, (new_w - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size]
        mean = torch.tensor(self.mean).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std).view(1, 3, 1, 1) * 255
        return x.contiguous().float().sub_(mean).div_(std)  # NCHW uint8 first: the cheapest copy


class FrameEncoder(torch.nn.Module):
    """A frozen image model returning per-frame tokens ``[B, P+N, D]``."""

    def __init__(self, spec: str, weights: str, preprocess: Preprocess, num_prefix: int, num_patches: int, dim: int):
        super().__init__()
        self.spec = spec
        self.weights = weights
        self.preprocess = preprocess
        self.num_prefix = num_prefix
        self.num_patches = num_patches
        self.dim = dim

    @property
    def image_size(self) -> int:
        return self.preprocess.size

    @torch.no_grad()
    def encode_clips(self, pixels: list[torch.Tensor], device: torch.device) -> np.ndarray:
        """Clips of preprocessed frames `[B, T, 3, S, S]` -> tokens `[B, T, P+N, D]` float16, as cached.

        fp32 on CPU (bf16 is slower there); bf16 (or fp16) autocast on a GPU.
        """
        clips = torch.stack(pixels).to(device, non_blocking=True)
        b, t = clips.shape[:2]
        frames = clips.flatten(0, 1)
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast("cuda", dtype=dtype):
                tokens = self(frames)
        else:
            tokens = self(frames)
        return tokens.float().reshape(b, t, *tokens.shape[1:]).cpu().numpy().astype(np.float16)

    def provenance(self) -> dict:
        """The encoder's share of an `ExtractionRecord` (the pipeline adds layer, T, sampler, dtype)."""
        return {
            "backbone": self.spec,
            "weights": self.weights,
            "image_size": self.image_size,
            "mean": tuple(self.preprocess.mean),
            "std": tuple(self.preprocess.std),
            "resize": "shorter-side bicubic antialias on uint8, centre crop",
            "normalize": "final-norm",
            "num_prefix": self.num_prefix,
            "num_patches": self.num_patches,
            "dim": self.dim,
        }


class OpenClipEncoder(FrameEncoder):
    def __init__(self, spec: str, model_name: str, pretrained: str | None, weights: str, image_size: int, layer: int):
        import open_clip

        model = open_clip.create_model(model_name, pretrained=pretrained, force_image_size=image_size)
        cfg = open_clip.get_model_preprocess_cfg(model)
        visual = model.visual.eval().requires_grad_(False)
        grid = visual.grid_size
        super().__init__(
            spec, weights, Preprocess(image_size, tuple(cfg["mean"]), tuple(cfg["std"])),
            num_prefix=1, num_patches=grid[0] * grid[1], dim=visual.transformer.width,
        )  # fmt: skip
        self.visual = visual
        self.layer = _block_index(layer, len(visual.transformer.resblocks))

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.visual.forward_intermediates(
            pixels, indices=[self.layer], stop_early=True, normalize_intermediates=True,
            intermediates_only=True, output_fmt="NLC", output_extra_tokens=True,
        )  # fmt: skip
        return torch.cat([out["image_intermediates_prefix"][0], out["image_intermediates"][0]], dim=1)


class TimmEncoder(FrameEncoder):
    def __init__(
        self,
        spec: str,
        model_name: str,
        weights_file: str | None,
        use_hub: bool,
        weights: str,
        image_size: int,
        layer: int,
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
        grid = model.patch_embed.grid_size
        super().__init__(
            spec, weights, Preprocess(image_size, tuple(cfg["mean"]), tuple(cfg["std"])),
            num_prefix=model.num_prefix_tokens, num_patches=grid[0] * grid[1], dim=model.embed_dim,
        )  # fmt: skip
        self.model = model
        self.layer = _block_index(layer, len(model.blocks))

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        ((patches, prefix),) = self.model.forward_intermediates(
            pixels, indices=[self.layer], return_prefix_tokens=True, norm=True,
            stop_early=True, output_fmt="NLC", intermediates_only=True,
        )  # fmt: skip
        return torch.cat([prefix, patches], dim=1)


def load_backbone(spec: str, image_size: int = 224, layer: int = -1) -> FrameEncoder:
    """Build the frozen encoder named by ``spec``; see the module docstring for the forms."""
    family, _, rest = spec.partition(":")
    model_name, _, weights = rest.partition(":")
    if family not in ("openclip", "timm") or not model_name:
        raise StepcliError(f"backbone {spec!r} is not openclip:<model>[:<tag or file>] or timm:<model>[:<file>]")
    if family == "openclip":
        return _load_openclip(spec, model_name, weights, image_size, layer)
    return _load_timm(spec, model_name, weights, image_size, layer)


def _load_openclip(spec: str, model_name: str, weights: str, image_size: int, layer: int) -> FrameEncoder:
    import open_clip

    if model_name not in open_clip.list_models():
        raise StepcliError(f"open_clip has no model {model_name!r}; see open_clip.list_models()")
    if not weights:
        _warn_random_init(spec)
        with _random_init_seed():
            return OpenClipEncoder(spec, model_name, None, RANDOM_INIT, image_size, layer)
    if _looks_like_path(weights):
        return OpenClipEncoder(spec, model_name, _existing_file(weights), file_identity(weights), image_size, layer)
    cfg = open_clip.get_pretrained_cfg(model_name, weights)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise StepcliError(f"open_clip has no pretrained tag {weights!r} for {model_name} (known: {tags})")
    local = _cached_hub_file(cfg.get("hf_hub", ""))
    if local is None:
        _require_network(urlparse(cfg["url"]).hostname if cfg.get("url") else "huggingface.co", spec, model_name)
    return OpenClipEncoder(spec, model_name, local or weights, weights, image_size, layer)


def _load_timm(spec: str, model_name: str, weights: str, image_size: int, layer: int) -> FrameEncoder:
    import timm

    if not timm.is_model(model_name):
        raise StepcliError(f"timm has no model {model_name!r}; see timm.list_models('*dinov2*')")
    if not weights:
        _warn_random_init(spec)
        return TimmEncoder(spec, model_name, None, False, RANDOM_INIT, image_size, layer)
    if weights == "pretrained":
        _require_network("huggingface.co", spec, model_name)
        return TimmEncoder(spec, model_name, None, True, f"timm-hub:{model_name}", image_size, layer)
    return TimmEncoder(spec, model_name, _existing_file(weights), False, file_identity(weights), image_size, layer)


def file_identity(path: str) -> str:
    """``sha256:<hex>`` of a weights file: the cache records which file, not just its name."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _block_index(layer: int, depth: int) -> int:
    index = depth + layer if layer < 0 else layer
    if not 0 <= index < depth:
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
