"""timm: ``timm:<model>[:<file>|pretrained]``, any model with ``forward_intermediates``.

Two ways tokens come out of a timm model, chosen by what the model is, not by its name:

* transformers with prefix tokens (ViT, DINOv2 with registers, DINOv3 and EVA02 with RoPE,
  SigLIP with none): the tokens of each block after the final norm, prefix tokens first. A
  model with no prefix token gets its own pooled embedding (SigLIP's attention pool) as the one.
* everything else (ResNet, ConvNeXt, EfficientNet, MobileNet, Swin): each stage's ``[C, H, W]``
  map becomes H*W patch tokens of width C, after the head's norm on the last stage where the model
  has one (ConvNeXt); their global average stands in for the CLS. One block follows the stages:
  the model's own final feature map (`forward_features`: what its classifier reads, a head conv
  and norm included where it has them, e.g. MobileNet's 1280-wide ``conv_head``/``bn2``), so layer
  -1 is that map and the stages stay selectable by index.

`TimmTokens` is shared with open_clip, whose SigLIP, EVA and ConvNeXt towers are timm trunks.
"""

from __future__ import annotations

import fnmatch
import inspect
from contextlib import nullcontext

import torch

from stepcli.errors import StepcliError
from stepcli.extract.budget import TokenBudget
from stepcli.extract.encoders.base import (
    ATTENTION_POOL,
    CLS,
    GLOBAL_AVERAGE,
    REGISTER,
    Family,
    FrameEncoder,
    map_tokens,
    with_stand_in,
)
from stepcli.extract.encoders.registry import register
from stepcli.extract.encoders.weights import (
    RANDOM_INIT,
    apply_filter,
    existing_file,
    file_identity,
    load_checked,
    random_init_seed,
    read_state_dict,
    require_network,
    warn_random_init,
)
from stepcli.extract.preprocess import Preprocess

# how a CNN cache says its layer -1 is the model's final features (caches made before held the last
# stage there, and said "none (stage outputs ...)" or "head.norm ..., last stage only"): a resume
# into such a cache is refused on this record's `final_norm`
FEATURES_NOTE = "last block: forward_features"
POOL_NAMES = {"map": ATTENTION_POOL, "avg": "average-pool", "avgmax": "avgmax-pool", "max": "max-pool"}


class TimmTokens:
    """Reads per-block tokens ``[B, P+N, D]`` from a timm model (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, spec: str, where: str = ""):
        from timm.layers import LayerNorm2d  # deferred: timm takes seconds to import; only a timm backbone needs it

        fi = getattr(model, "forward_intermediates", None)
        if fi is None:
            raise StepcliError(
                f"{spec}: {type(model).__name__} has no forward_intermediates, so no per-block patch grid "
                "stepcli can read; pick a model that has one (ViTs, ResNets, ConvNeXts, EfficientNets, ...)"
            )
        self.model = model
        self.params = set(inspect.signature(fi).parameters)
        self._depth: int | None = None
        self.is_transformer = "return_prefix_tokens" in self.params and hasattr(model, "num_prefix_tokens")
        head_norm = getattr(getattr(model, "head", None), "norm", None)  # ConvNeXt's, applied after its pool
        self.head_norm = head_norm if isinstance(head_norm, LayerNorm2d) and not self.is_transformer else None
        # a transformer pooled after the blocks has its final norm after the pool (EVA02 at 224):
        # that norm is applied to every token instead, so the tokens are normalised as the pool is
        norm, fc_norm = getattr(model, "norm", None), getattr(model, "fc_norm", None)
        self.token_norm = None
        if self.is_transformer and isinstance(norm, torch.nn.Identity) and isinstance(fc_norm, torch.nn.LayerNorm):
            self.token_norm = fc_norm
            self.final_norm = f"{where}fc_norm ({type(fc_norm).__name__}), on every token"
        elif self.is_transformer:
            self.final_norm = f"{where}norm ({type(norm).__name__})"
        elif self.head_norm is not None:
            self.final_norm = f"{FEATURES_NOTE}; {where}head.norm ({type(self.head_norm).__name__}) on the last stage"
        else:
            self.final_norm = f"{FEATURES_NOTE}; stages as the model gives them"

    def depth(self, pixels: torch.Tensor) -> int:
        """How many blocks `--layers` can name (a CNN: its stages, then its final features); a CNN's
        are counted once, on `pixels`."""
        if self._depth is None:
            blocks = getattr(self.model, "blocks", None)
            if self.is_transformer and isinstance(blocks, torch.nn.Sequential | torch.nn.ModuleList):
                self._depth = len(blocks)
            elif self.is_transformer:
                self._depth = len(self._call(pixels, None))
            else:
                self._depth = len(self._call(pixels, None)) + 1
        return self._depth

    def note(self, index: int) -> str:
        """What block `index` is, where the index alone does not say (a CNN's final features)."""
        return "forward_features" if not self.is_transformer and index == self._depth - 1 else ""

    def _call(self, pixels: torch.Tensor, blocks: list[int] | None, final: bool = False) -> list:
        """The model's own `forward_intermediates`, with the arguments it takes: a transformer's
        tokens after the final norm with its prefix tokens, a CNN's stage maps as they are (`final`:
        and its `forward_features` output, first)."""
        kwargs = {
            "indices": blocks,
            "intermediates_only": not final,
            "stop_early": blocks is not None and not final,
            "norm": self.is_transformer,
            "output_fmt": "NLC" if self.is_transformer else "NCHW",
            "return_prefix_tokens": self.is_transformer and bool(self.model.num_prefix_tokens),
        }
        return self.model.forward_intermediates(pixels, **{k: v for k, v in kwargs.items() if k in self.params})

    def read(self, pixels: torch.Tensor, blocks: list[int]) -> list[tuple[torch.Tensor, tuple[str, ...], tuple]]:
        if not self.is_transformer:
            return self._read_maps(pixels, blocks)
        out = self._call(pixels, blocks)
        first = out[0][0] if isinstance(out[0], tuple) else out[0]
        grid = self._grid(pixels, first.shape[1])
        norm = self.token_norm or (lambda x: x)
        if self.model.num_prefix_tokens:
            names = self._prefix_names()
            return [(norm(torch.cat([prefix, patches], dim=1)), names, grid) for patches, prefix in out]
        pool = POOL_NAMES.get(getattr(self.model, "global_pool", ""), GLOBAL_AVERAGE)
        return [(with_stand_in(norm(x), self._pooled(x)), (pool,), grid) for x in out]

    def _read_maps(self, pixels: torch.Tensor, blocks: list[int]) -> list:
        """A CNN's stage maps and, as its last block, its `forward_features` map, in one pass."""
        features = self.depth(pixels) - 1
        stages = [b for b in blocks if b < features]
        if features not in blocks:
            maps = list(self._call(pixels, stages))
        elif stages:
            final, maps = self._call(pixels, stages, final=True)
            maps = [*maps, final]
        else:
            maps = [self.model.forward_features(pixels)]
        if features in blocks and getattr(self.model, "output_fmt", "NCHW") == "NHWC":  # Swin's final map
            maps[-1] = maps[-1].permute(0, 3, 1, 2)
        last = features - 1 if self.head_norm is not None else -1
        return [self._map(x, block == last) for x, block in zip(maps, blocks, strict=True)]

    def _map(self, x: torch.Tensor, last: bool) -> tuple[torch.Tensor, tuple[str, ...], tuple]:
        if x.ndim != 4:
            raise StepcliError(f"{type(self.model).__name__} gives {x.ndim}-d intermediates, not [C, H, W] maps")
        if last and x.shape[1] == getattr(self.model, "num_features", -1):
            x = self.head_norm(x)
        return map_tokens(x), (GLOBAL_AVERAGE,), tuple(x.shape[-2:])

    def _pooled(self, tokens: torch.Tensor) -> torch.Tensor | None:
        if not hasattr(self.model, "forward_head") or getattr(self.model, "global_pool", "") not in POOL_NAMES:
            return None
        return self.model.forward_head(tokens, pre_logits=True)

    def _grid(self, pixels: torch.Tensor, num_patches: int) -> tuple[int, int]:
        """The patch grid of `num_patches` tokens: the patch embedding's, else a square one."""
        embed = getattr(self.model, "patch_embed", None)
        size = tuple(pixels.shape[-2:])
        if hasattr(embed, "dynamic_feat_size"):
            grid = tuple(int(g) for g in embed.dynamic_feat_size(size))
        elif hasattr(embed, "grid_size"):
            grid = tuple(int(g) for g in embed.grid_size)
        else:
            side = round(num_patches**0.5)
            grid = (side, side)
        if grid[0] * grid[1] != num_patches:
            raise StepcliError(
                f"{type(self.model).__name__} gives {num_patches} patch tokens, not a patch grid stepcli can read"
            )
        return grid

    def _prefix_names(self) -> tuple[str, ...]:
        total = self.model.num_prefix_tokens
        reg_token = getattr(self.model, "reg_token", None)
        registers = reg_token.shape[1] if reg_token is not None else getattr(self.model, "num_reg_tokens", 0)
        registers = min(int(registers or 0), total)
        first = (CLS,) if total > registers else ()
        return first + ("prefix",) * (total - registers - len(first)) + (REGISTER,) * registers


class TimmEncoder(FrameEncoder):
    def __init__(self, spec: str, model_name: str, path: str | None, use_hub: bool, weights: str, image_size: int,
                 layers: tuple[int, ...], budget: TokenBudget | None, meta: bool = False):  # fmt: skip
        import timm  # deferred: timm takes seconds to import; only a timm backbone needs it

        model, image_size = create_timm(model_name, image_size, use_hub, meta)
        if path and not meta:
            state = apply_filter(read_state_dict(path), model)
            load_checked(model, state, spec, path, ignored=classifier_prefixes(model))
        model = model.eval().requires_grad_(False)
        cfg = timm.data.resolve_data_config({}, model=model)
        tokens = TimmTokens(model, spec)
        preprocess = Preprocess(image_size, tuple(cfg["mean"]), tuple(cfg["std"]))
        super().__init__(spec, weights, preprocess, layers, budget, tokens.final_norm)
        self.model = model
        self.tokens = tokens
        self._survey(tokens.depth)

    @torch.no_grad()
    def _read(self, pixels: torch.Tensor, blocks: list[int]) -> list:
        return self.tokens.read(pixels, blocks)

    def block_note(self, index: int) -> str:
        return self.tokens.note(index)


def create_timm(model_name: str, image_size: int, use_hub: bool, meta: bool) -> tuple[torch.nn.Module, int]:
    """The model without its classifier, at `image_size` if it takes one (CNNs take any size)."""
    import timm  # deferred: timm takes seconds to import; only a timm backbone needs it

    kwargs = {"pretrained": use_hub and not meta, "num_classes": 0}
    place = torch.device("meta") if meta else nullcontext()
    for sized in (True, False):
        try:
            with random_init_seed(), place:
                return timm.create_model(
                    model_name, **kwargs, **({"img_size": image_size} if sized else {})
                ), image_size
        except TypeError as err:
            if not sized or "img_size" not in str(err):
                raise StepcliError(f"timm cannot build {model_name}: {str(err).splitlines()[0]}") from None
        except (RuntimeError, ValueError, AssertionError) as err:
            raise StepcliError(
                f"timm cannot build {model_name} at {image_size} px: {str(err).splitlines()[0]}"
            ) from None
    raise AssertionError("unreachable")


def classifier_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    """Key prefixes of the classifier head a checkpoint may carry (the encoder has none)."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names)


@register
class TimmFamily(Family):
    name = "timm"
    form = "timm:<model>[:<file>|pretrained]"
    example = "timm:vit_small_patch14_reg4_dinov2"

    @classmethod
    def models(cls, pattern: str = "*") -> list[str]:
        import timm  # deferred: timm takes seconds to import; only a timm backbone needs it

        return [n for n in timm.list_models() if fnmatch.fnmatch(n.lower(), pattern.lower())]

    @classmethod
    def build(cls, spec: str, model_name: str, weights: str, image_size: int, layers: tuple[int, ...],
              budget: TokenBudget | None, meta: bool) -> FrameEncoder:  # fmt: skip
        import timm  # deferred: timm takes seconds to import; only a timm backbone needs it

        if not timm.is_model(model_name):
            raise StepcliError(f"timm has no model {model_name!r}; list them with `stepcli backbones [PATTERN]`")
        if not weights:
            if not meta:
                warn_random_init(spec)
            return TimmEncoder(spec, model_name, None, False, RANDOM_INIT, image_size, layers, budget, meta)
        if weights == "pretrained":
            if not meta:
                require_network("huggingface.co", spec)
            return TimmEncoder(spec, model_name, None, True, f"timm-hub:{model_name}", image_size, layers, budget,
                               meta)  # fmt: skip
        path = existing_file(weights)
        identity = f"file:{path}" if meta else file_identity(path)
        return TimmEncoder(spec, model_name, path, False, identity, image_size, layers, budget, meta)
