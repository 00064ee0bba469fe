"""Hugging Face ``transformers``: ``hf:<repo or local dir>``, the image encoder `AutoModel` loads.

A checkpoint directory (``save_pretrained``'s ``config.json`` and weights, and the image
processor's ``preprocessor_config.json``) or a hub repository already in the local cache: stepcli
never downloads at run time. A multimodal checkpoint (CLIP, SigLIP) gives its ``vision_model``.
Each block's hidden state goes through the model's final norm, as the last one does (DINOv2's
``layernorm``, SigLIP's and CLIP's ``post_layernorm``); prefix tokens are the CLS and the
registers where the model has them, else its attention pool's embedding (SigLIP's ``head``)
stands in. Mean and std are the image processor's; the frame size is ``--image-size``, with the
position embeddings interpolated where the model takes another size.

An optional extra: ``pip install 'stepcli[hf]'``.
"""

from __future__ import annotations

import fnmatch
import inspect
import logging
from pathlib import Path

import torch

from stepcli.errors import StepcliError
from stepcli.extract.budget import TokenBudget
from stepcli.extract.encoders.base import ATTENTION_POOL, CLS, GLOBAL_AVERAGE, REGISTER, Family, FrameEncoder
from stepcli.extract.encoders.registry import register
from stepcli.extract.encoders.weights import WEIGHT_SUFFIXES, file_identity
from stepcli.extract.preprocess import Preprocess

log = logging.getLogger(__name__)
NORMS = ("layernorm", "post_layernorm")  # the final norm's name in transformers' vision models
EXTRA = "hf: backbones need the transformers extra: pip install 'stepcli[hf]'"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _transformers():
    try:
        import transformers  # deferred: an optional extra, and seconds to import; only an hf backbone needs it
    except ImportError:
        raise StepcliError(EXTRA) from None
    return transformers


def checkpoint_dir(name: str, spec: str) -> Path:
    """The local directory of `name`: itself, or its snapshot in the hub cache (never downloaded)."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise StepcliError(f"{spec}: {path} has no config.json (save the model with save_pretrained)")
        return path.resolve()
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise StepcliError(f"{spec}: no checkpoint directory {name}")
    from huggingface_hub import snapshot_download  # deferred: only a hub name looks in the hub cache

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache (or not a valid name): the same answer
        raise StepcliError(
            f"{spec}: {name} is not in the local Hugging Face cache; fetch it once with "
            f"`huggingface-cli download {name}` (stepcli never downloads while extracting)"
        ) from None


def dir_identity(path: Path) -> str:
    """``sha256:<hex>`` of each weights file in the checkpoint directory, joined: which weights."""
    files = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        raise StepcliError(f"{path} holds no weights file ({', '.join(WEIGHT_SUFFIXES)})")
    return ",".join(f"{p.name}={file_identity(str(p))}" for p in files)


class HfEncoder(FrameEncoder):
    def __init__(self, spec: str, path: Path, weights: str, image_size: int, layers: tuple[int, ...],
                 budget: TokenBudget | None, meta: bool = False):  # fmt: skip
        transformers = _transformers()
        try:
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
            if meta:
                with torch.device("meta"):
                    model = transformers.AutoModel.from_config(config)
            else:
                model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            raise StepcliError(f"transformers cannot load {spec}: {str(err).splitlines()[0]}") from None
        vision = getattr(model, "vision_model", model)  # CLIP, SigLIP: the image tower of the pair
        if not hasattr(vision, "embeddings") or not hasattr(vision.config, "patch_size"):
            raise StepcliError(f"{spec}: {type(vision).__name__} is not a vision transformer with a patch grid")
        norm_name = next((n for n in NORMS if isinstance(getattr(vision, n, None), torch.nn.Module)), None)
        norm = getattr(vision, norm_name) if norm_name else None
        final_norm = f"{norm_name} ({type(norm).__name__}), on every block" if norm is not None else "none"
        mean, std = _normalisation(transformers, path)
        super().__init__(spec, weights, Preprocess(image_size, mean, std), layers, budget, final_norm)
        self.vision = vision.eval().requires_grad_(False)
        self.versions = {"transformers": transformers.__version__}
        self.norm = norm or torch.nn.Identity()
        self.patch = int(vision.config.patch_size)
        registers = int(getattr(vision.config, "num_register_tokens", 0) or 0)
        has_cls = any(hasattr(vision.embeddings, n) for n in ("cls_token", "class_embedding"))
        self.names = ((CLS,) if has_cls else ()) + (REGISTER,) * registers
        self.pool = getattr(vision, "head", None) if not self.names else None
        self.interpolate = "interpolate_pos_encoding" in inspect.signature(vision.forward).parameters
        self._survey(lambda _pixels: int(vision.config.num_hidden_layers))

    @torch.no_grad()
    def _read(self, pixels: torch.Tensor, blocks: list[int]) -> list:
        kwargs = {"interpolate_pos_encoding": True} if self.interpolate else {}
        states = self.vision(pixel_values=pixels, output_hidden_states=True, **kwargs).hidden_states
        rows, cols = pixels.shape[-2] // self.patch, pixels.shape[-1] // self.patch
        out = []
        for block in blocks:
            tokens = self.norm(states[block + 1])  # states[0]: the embeddings, before the first block
            if tokens.shape[1] != len(self.names) + rows * cols:
                raise StepcliError(f"{self.spec} gives {tokens.shape[1]} tokens, not a patch grid stepcli can read")
            if self.names:
                out.append((tokens, self.names, (rows, cols)))
            else:
                pooled = self.pool(tokens) if self.pool is not None else tokens.mean(dim=1)
                stand_in = ATTENTION_POOL if self.pool is not None else GLOBAL_AVERAGE
                out.append((torch.cat([pooled[:, None].to(tokens.dtype), tokens], dim=1), (stand_in,), (rows, cols)))
        return out


def _normalisation(transformers, path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The image processor's mean and std; ImageNet's, said in a warning, where it has none."""
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(path, local_files_only=True)
        return tuple(processor.image_mean), tuple(processor.image_std)
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        log.warning("WARNING: %s has no image processor (preprocessor_config.json): ImageNet's mean and std", path)
        return IMAGENET


@register
class HfFamily(Family):
    name = "hf"
    form = "hf:<repo or local dir>"
    example = "hf:facebook/dinov2-small (once in the local Hugging Face cache)"
    extra = "hf"

    @classmethod
    def models(cls, pattern: str = "*") -> list[str]:
        """The model repositories in the local Hugging Face cache (the ones `hf:` can load offline)."""
        try:
            from huggingface_hub import scan_cache_dir  # deferred: only listing looks in the hub cache

            repos = [r.repo_id for r in scan_cache_dir().repos if r.repo_type == "model"]
        except Exception:  # noqa: BLE001 - no cache directory yet: nothing cached
            repos = []
        return sorted(r for r in repos if fnmatch.fnmatch(r.lower(), pattern.lower()))

    @classmethod
    def build(cls, spec: str, model_name: str, weights: str, image_size: int, layers: tuple[int, ...],
              budget: TokenBudget | None, meta: bool) -> FrameEncoder:  # fmt: skip
        _transformers()
        name = f"{model_name}:{weights}" if weights else model_name  # a path may hold a colon
        path = checkpoint_dir(name, spec)
        identity = f"dir:{path}" if meta else dir_identity(path)
        return HfEncoder(spec, path, identity, image_size, layers, budget, meta)
