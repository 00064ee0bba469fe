"""The `Probe` interface every probe implements, and the capabilities each probe declares.

A probe maps cached frame tokens `[B, T, P+N, D]` (P prefix tokens: CLS and registers, N patch
tokens) to logits `[B, C]`. Each probe pools the tokens to one clip embedding `[B, D]` in
`forward_features`; the shared head (LayerNorm + Linear) turns that into logits, so probes differ
only in how they pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from stepcli.cache.records import TokenLayout
from stepcli.errors import StepcliError
from stepcli.probe.models.stacked import stacked_layer_norm, stacked_linear

if TYPE_CHECKING:
    from stepcli.cache.reader import FeatureCache


@dataclass(frozen=True)
class Capabilities:
    """What a probe needs from the cache and what it does, declared once at registration.

    Commands read these instead of branching on a probe's name.
    """

    #: attends over patch tokens, so a `--tokens prefix` cache (N = 0) is refused
    needs_patches: bool = True
    #: reads the first prefix token (CLS or its stand-in) of every frame, so P = 0 is refused
    needs_cls: bool = False
    #: its logits change when the frames are permuted (the order-blind probes' do not), with its
    #: default options; an option may change that (`Probe.order_aware` answers for a built probe)
    order_aware: bool = False
    #: fitted in closed form by `fit` on every training clip at once (one process), not by gradient steps
    fitted: bool = False
    #: a LayerNorm + Linear head on the pooled features; False: a plain Linear (features already
    #: standardised) or no learned head at all (`fitted` probes that vote)
    head_norm: bool = True
    #: has a Linear head (`fc`); False for probes that score by other means (k-NN votes)
    has_head: bool = True

    @property
    def gradient_trained(self) -> bool:
        return not self.fitted


class Probe(nn.Module):
    """Base class: shape checks, the shared head, parameter counting and AdamW groups.

    Subclasses are registered with `@register(...)` (which sets `name` and `capabilities`), list
    their learned tokens in `no_weight_decay_names`, pass their options to `super().__init__` (so
    `config()` can rebuild them) and implement `forward_features(tokens [B, T, P+N, D]) -> [B, D]`.
    A `fitted` probe overrides `fit`; every probe is built, saved, loaded and counted alike.
    """

    name: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    no_weight_decay_names: tuple[str, ...] = ()
    #: the paper's ablation of this probe, `(probe, options)` per row: itself, each switch off in turn,
    #: and the probe it builds on; `compare --ablation NAME` runs them as one table
    ablations: ClassVar[tuple[tuple[str, dict[str, Any]], ...]] = ()
    #: the allowed values of each option that names one of several choices (checked before training)
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, layout: TokenLayout, num_classes: int, **options: Any) -> None:
        super().__init__()
        if not isinstance(layout, TokenLayout):
            raise TypeError(f"probe '{self.name}': layout must be a TokenLayout, got {type(layout).__name__}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise StepcliError(f"probe '{self.name}': num_classes must be a positive integer, got {num_classes!r}")
        self.check_layout(layout)
        self.layout, self.num_classes = layout, num_classes
        self._options = dict(options)
        if self.capabilities.has_head:
            self.norm = nn.LayerNorm(layout.dim) if self.capabilities.head_norm else nn.Identity()
            self.fc = nn.Linear(layout.dim, num_classes)

    @classmethod
    def check_layout(cls, layout: TokenLayout) -> None:
        """Refuse tokens this kind of probe cannot use, before anything is read or written."""
        if cls.capabilities.needs_cls and layout.num_prefix < 1:
            raise StepcliError(f"probe '{cls.name}' reads a CLS token per frame, but the cache holds none (P = 0)")
        if cls.capabilities.needs_patches and layout.num_patches == 0:
            raise StepcliError(
                f"probe '{cls.name}' attends over patch tokens, but the cache holds only prefix tokens "
                "(--tokens prefix); use linear or logreg, or extract with --tokens all"
            )

    @classmethod
    def reads_frame_cls(cls, options: dict[str, Any]) -> bool:
        """True when, with `options`, the probe classifies from each frame's own CLS token, for which
        a stand-in (a backbone's pooled embedding or patch mean) is no substitute."""
        return False

    def config(self) -> dict[str, Any]:
        """The probe's own options (JSON-serialisable): `build_probe(name, layout, C, **config())`."""
        return dict(self._options)

    @property
    def order_aware(self) -> bool:
        """Whether this probe, with its options, sees frame order: what the shuffle test expects of it.

        The class's declaration unless the probe overrides it (e.g. an option adds a temporal encoding).
        """
        return self.capabilities.order_aware

    def frame_attention(self, tokens: Tensor) -> Tensor | None:
        """`[B, T]`: how much of its attention the probe's single readout token gives each frame's
        tokens (summing to at most 1), or None for a probe without one such token."""
        return None

    def fit(self, cache: FeatureCache, train: np.ndarray, val: np.ndarray, *, workers: int, seed: int) -> dict:
        """Fit in closed form on cache rows `train`, selecting on `val`; returns what to log.

        Only probes registered with `fitted=True` implement it; the others train by gradient steps.
        """
        raise NotImplementedError(f"probe '{self.name}' is trained by gradient steps, not fitted")

    def eval_batch_size(self, batch_size: int) -> int:
        """Clips this probe wants per evaluation call when the caller reads `batch_size` (at least
        that many): the caller's batch, unless the probe's cost per clip falls with larger calls."""
        return batch_size

    def fitted_logits(self, cache: FeatureCache, rows: np.ndarray) -> np.ndarray | None:
        """Logits `[len(rows), C]` that `fit` already computed for exactly these cache `rows`, one view
        each in their original frame order, equal bit for bit to what evaluation would compute; None
        (the default): evaluation computes them."""
        return None

    def forward_features(self, tokens: Tensor) -> Tensor:
        """Pool `[B, T, P+N, D]` tokens to one clip embedding `[B, D]`."""
        raise NotImplementedError

    def stacked_features(self, params: dict[str, Tensor], tokens: Tensor) -> Tensor | None:
        """K heads of this probe at once: `forward_features` of the parameters `params` (each `[K, ...]`,
        named as in `named_parameters`) on tokens `[B, T, P+N, D]` shared by all heads or `[K, B, T,
        P+N, D]`, as `[K, B, D]`. None (the default): this probe, with these options, has no stacked
        form, and its heads are run one by one."""
        return None

    def stacked_logits(self, params: dict[str, Tensor], tokens: Tensor) -> Tensor | None:
        """Logits `[K, B, C]` of K heads through `stacked_features` and the shared head; None without one."""
        features = self.stacked_features(params, tokens.to(self.dtype))
        if features is None:
            return None
        if self.capabilities.head_norm:
            features = stacked_layer_norm(features, params["norm.weight"], params["norm.bias"])
        return stacked_linear(features, params["fc.weight"], params["fc.bias"])

    def check_tokens(self, tokens: Tensor) -> None:
        """A ValueError naming the expected shape when `tokens` are not `[B, T, P+N, D]` of this layout."""
        expected = self.layout.clip_shape
        if tokens.ndim != 4 or tuple(tokens.shape[1:]) != expected:
            raise ValueError(
                f"probe '{self.name}' expects tokens [B, T, P+N, D] = [B, {', '.join(map(str, expected))}],"
                f" got {list(tokens.shape)}"
            )

    def forward(self, tokens: Tensor) -> Tensor:
        """`tokens [B, T, P+N, D]` (any float dtype, e.g. float16 from the cache) -> logits `[B, C]`."""
        self.check_tokens(tokens)
        features = self.forward_features(tokens.to(self.dtype))
        return self.fc(self.norm(features))

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the probe computes in: its first parameter's (or buffer's), float32 if it has neither."""
        first = next(iter([*self.parameters(), *self.buffers()]), None)
        return torch.float32 if first is None else first.dtype

    def num_params(self) -> int:
        """Trainable parameter count, the number the paper compares probes by."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def no_weight_decay(self) -> set[str]:
        """Names of parameters that weight decay would only harm: biases, norms, learned tokens."""
        return {name for name, p in self.named_parameters() if p.ndim <= 1 or name in self.no_weight_decay_names}

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: `weight_decay` for weight matrices, 0 for `no_weight_decay()`."""
        skip = self.no_weight_decay()
        params = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in params if n not in skip], "weight_decay": weight_decay},
            {"params": [p for n, p in params if n in skip], "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    def optimizer(self, lr: float, weight_decay: float) -> torch.optim.AdamW:
        """AdamW over `param_groups`, fused: one kernel for all parameters instead of a loop per tensor
        (on CPU as on GPU), which matters when a probe step from the cache takes milliseconds."""
        return torch.optim.AdamW(self.param_groups(weight_decay), lr=lr, fused=True)
