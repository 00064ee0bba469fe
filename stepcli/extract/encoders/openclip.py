"""open_clip: ``openclip:<model>[:<tag or file>]``, the image tower of any `open_clip.list_models()` name.

open_clip builds an image tower of one of three kinds, each read its own way:

* its own VisionTransformer: CLS then patch tokens of each block after ``ln_post``;
* a timm trunk (`TimmModel`: SigLIP, SigLIP 2, EVA, PE, ConvNeXt, ``*-timm`` ViTs): read by
  `TimmTokens` on the trunk, after the trunk's final norm (the projection head is not used);
* ModifiedResNet (RN50, ...): each stage's map, its global average standing in for the CLS.

A weights file is a whole CLIP checkpoint (its ``visual.*`` tensors are used), the image tower
alone, or, for a timm trunk, the trunk alone; the projection and pooling heads the tokens never
pass through may be missing.
"""

from __future__ import annotations

import fnmatch
from contextlib import nullcontext
from urllib.parse import urlparse

import torch

from stepcli.errors import StepcliError
from stepcli.extract.budget import TokenBudget
from stepcli.extract.encoders.base import CLS, GLOBAL_AVERAGE, Family, FrameEncoder, map_tokens
from stepcli.extract.encoders.registry import register
from stepcli.extract.encoders.timm import TimmTokens, classifier_prefixes
from stepcli.extract.encoders.weights import (
    RANDOM_INIT,
    apply_filter,
    cached_hub_file,
    existing_file,
    file_identity,
    load_checked,
    looks_like_path,
    random_init_seed,
    read_state_dict,
    require_network,
    warn_random_init,
)
from stepcli.extract.preprocess import Preprocess

# the smallest native text tower open_clip builds, in place of one it would load through transformers
TEXT_STAND_IN = {"context_length": 2, "vocab_size": 2, "width": 8, "heads": 1, "layers": 1}


def hf_text_tower(model_name: str) -> bool:
    """Whether open_clip builds `model_name`'s text tower through `transformers`."""
    import open_clip  # deferred: open_clip takes seconds to import; only an openclip backbone needs it

    return "hf_model_name" in (open_clip.get_model_config(model_name) or {}).get("text_cfg", {})


class _ViTTokens:
    """open_clip's own VisionTransformer: one CLS token, then the patch grid, after ``ln_post``."""

    optional = ("proj", "attn_pool")  # the projection and CoCa's pooler: not on the tokens' path

    def __init__(self, visual: torch.nn.Module, spec: str):
        self.visual = visual
        self.grid = tuple(int(g) for g in visual.grid_size)
        # CoCa's ln_post follows its attention pool, at the output width: its tokens have no final norm
        self.normalize = getattr(visual.ln_post, "normalized_shape", (None,))[-1] == visual.transformer.width
        self.final_norm = "ln_post (LayerNorm)" if self.normalize else "none (ln_post follows the attention pool)"

    def depth(self, pixels: torch.Tensor) -> int:
        return len(self.visual.transformer.resblocks)

    def read(self, pixels: torch.Tensor, blocks: list[int]) -> list:
        out = self.visual.forward_intermediates(
            pixels, indices=blocks, stop_early=True, normalize_intermediates=self.normalize,
            intermediates_only=True, output_fmt="NLC", output_extra_tokens=True,
        )  # fmt: skip
        return [(torch.cat([p, x], dim=1), (CLS,), self.grid)
                for p, x in zip(out["image_intermediates_prefix"], out["image_intermediates"], strict=True)]  # fmt: skip


class _ResNetTokens:
    """ModifiedResNet: the stem and four stages, each map as patch tokens (its attention pool
    projects to another width, so the global average stands in for the CLS)."""

    final_norm = "none (stage outputs as the model gives them)"
    optional = ("attnpool.",)

    def __init__(self, visual: torch.nn.Module, spec: str):
        self.visual = visual

    def depth(self, pixels: torch.Tensor) -> int:
        return 5

    def read(self, pixels: torch.Tensor, blocks: list[int]) -> list:
        out = self.visual.forward_intermediates(pixels, indices=blocks, stop_early=True, intermediates_only=True)
        return [(map_tokens(x), (GLOBAL_AVERAGE,), tuple(x.shape[-2:])) for x in out["image_intermediates"]]


class _TrunkTokens(TimmTokens):
    """A `TimmModel` tower: its timm trunk, read as timm's own models are."""

    def __init__(self, visual: torch.nn.Module, spec: str):
        super().__init__(visual.trunk, spec, where="trunk.")
        self.optional = ("head.", *(f"trunk.{p}" for p in classifier_prefixes(visual.trunk)))


def _tower_readers() -> dict[type, type]:
    # deferred: open_clip takes seconds to import; only an openclip backbone needs it
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    return {VisionTransformer: _ViTTokens, TimmModel: _TrunkTokens, ModifiedResNet: _ResNetTokens}


class OpenClipEncoder(FrameEncoder):
    def __init__(self, spec: str, model_name: str, pretrained: str | None, weights: str, image_size: int,
                 layers: tuple[int, ...], budget: TokenBudget | None, path: str | None = None,
                 meta: bool = False):  # fmt: skip
        import open_clip  # deferred: open_clip takes seconds to import; only an openclip backbone needs it

        place = torch.device("meta") if meta else nullcontext()
        seeded = random_init_seed() if pretrained is None else nullcontext()
        # a text tower from `transformers` (mt5, nllb, roberta) would be fetched from the hub and is
        # never used: a one-block stand-in replaces it, built after the image tower (same init)
        text = {"text_cfg": TEXT_STAND_IN} if hf_text_tower(model_name) else {}
        try:
            with seeded, place:
                model = open_clip.create_model(model_name, pretrained=pretrained, force_image_size=image_size,
                                               device="meta" if meta else "cpu", **text)  # fmt: skip
        except (RuntimeError, ValueError, KeyError, ImportError, AssertionError) as err:
            # e.g. a corrupt download
            raise StepcliError(f"open_clip cannot build {model_name}: {str(err).splitlines()[0]}") from None
        visual = model.visual
        reader = _tower_readers().get(type(visual))
        if reader is None:
            raise StepcliError(
                f"{spec}: open_clip's {type(visual).__name__} image tower has no token reader in stepcli"
            )
        tokens = reader(visual, spec)
        if path and not meta:
            _load_tower(model, tokens, read_state_dict(path), spec, path)
        cfg = open_clip.get_model_preprocess_cfg(model)
        preprocess = Preprocess(image_size, tuple(cfg["mean"]), tuple(cfg["std"]))
        super().__init__(spec, weights, preprocess, layers, budget, tokens.final_norm)
        self.visual = visual.eval().requires_grad_(False)
        self.tokens = tokens
        self._survey(tokens.depth)

    @torch.no_grad()
    def _read(self, pixels: torch.Tensor, blocks: list[int]) -> list:
        return self.tokens.read(pixels, blocks)

    def block_note(self, index: int) -> str:
        return self.tokens.note(index) if isinstance(self.tokens, _TrunkTokens) else ""


def _load_tower(
    model: torch.nn.Module, tokens: _ViTTokens | _ResNetTokens | _TrunkTokens, state: dict, spec: str, path: str
) -> None:
    """A CLIP checkpoint, the image tower alone, or (timm trunk) the trunk alone into `model.visual`."""
    import open_clip  # deferred: open_clip takes seconds to import; only an openclip backbone needs it

    visual = model.visual
    if any(k.startswith("visual.") for k in state):
        state = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    ignored: tuple[str, ...] = ()
    if isinstance(tokens, _TrunkTokens):
        trunk_only = not any(k.startswith(("trunk.", "head.")) for k in state)
        trunk = dict(state) if trunk_only else {k[6:]: v for k, v in state.items() if k.startswith("trunk.")}
        trunk = apply_filter(trunk, visual.trunk)  # position embeddings resampled to the trunk's size
        head = {} if trunk_only else {k: v for k, v in state.items() if not k.startswith("trunk.")}
        state = {**{f"trunk.{k}": v for k, v in trunk.items()}, **head}
        ignored = tuple(f"trunk.{p}" for p in classifier_prefixes(visual.trunk)) if trunk_only else ()
    elif "positional_embedding" in state:  # resampled to the tower's grid, as open_clip's own loader does
        wrapped = {"visual.positional_embedding": state["positional_embedding"]}
        open_clip.model.resize_pos_embed(wrapped, model)
        state["positional_embedding"] = wrapped["visual.positional_embedding"]
    load_checked(visual, state, spec, path, optional=tokens.optional, ignored=ignored)


@register
class OpenClipFamily(Family):
    name = "openclip"
    form = "openclip:<model>[:<tag or file>]"
    example = "openclip:ViT-B-16-SigLIP2"

    @classmethod
    def models(cls, pattern: str = "*") -> list[str]:
        import open_clip  # deferred: open_clip takes seconds to import; only an openclip backbone needs it

        return [n for n in open_clip.list_models() if fnmatch.fnmatch(n.lower(), pattern.lower())]

    @classmethod
    def build(cls, spec: str, model_name: str, weights: str, image_size: int, layers: tuple[int, ...],
              budget: TokenBudget | None, meta: bool) -> FrameEncoder:  # fmt: skip
        import open_clip  # deferred: open_clip takes seconds to import; only an openclip backbone needs it

        if model_name not in open_clip.list_models():
            raise StepcliError(f"open_clip has no model {model_name!r}; list them with `stepcli backbones [PATTERN]`")
        if not weights:
            if not meta:
                warn_random_init(spec)
            return OpenClipEncoder(spec, model_name, None, RANDOM_INIT, image_size, layers, budget, meta=meta)
        if looks_like_path(weights):
            path = existing_file(weights)
            identity = f"file:{path}" if meta else file_identity(path)
            return OpenClipEncoder(spec, model_name, None, identity, image_size, layers, budget, path, meta)
        cfg = open_clip.get_pretrained_cfg(model_name, weights)
        if not cfg:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
            raise StepcliError(f"open_clip has no pretrained tag {weights!r} for {model_name} (known: {tags})")
        if meta:
            return OpenClipEncoder(spec, model_name, None, weights, image_size, layers, budget, meta=True)
        local = cached_hub_file(cfg.get("hf_hub", ""))
        if hf_text_tower(model_name):  # the checkpoint holds a text tower stepcli does not build: its image tower
            if local is None:
                raise StepcliError(
                    f"{spec}: {model_name}'s text tower comes through transformers; download its checkpoint and "
                    f"pass the file (its image tower is read): openclip:{model_name}:/path/to/open_clip_model.safetensors"
                )
            return OpenClipEncoder(spec, model_name, None, weights, image_size, layers, budget, local)
        if local is None:
            require_network(urlparse(cfg["url"]).hostname if cfg.get("url") else "huggingface.co", spec)
        return OpenClipEncoder(spec, model_name, local or weights, weights, image_size, layers, budget)
