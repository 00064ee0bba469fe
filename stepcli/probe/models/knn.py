"""The `knn` baseline: weighted k-nearest-neighbour voting on frame-averaged CLS features, as in
DINOv2's k-NN evaluation, with no training at all.

Each clip is its CLS token averaged over the T frames (order-blind by construction), L2-normalised.
A test clip's k most cosine-similar train clips vote for their class with weight
exp(similarity / temperature); k and the temperature are chosen on the validation split (ties:
the smaller k, then the lower temperature). The train features are the probe's memory bank, saved
with the run like any weights, so a knn run is loaded, evaluated and shuffle-tested like the others.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stepcli.cache.reader import FeatureCache
from stepcli.cache.records import TokenLayout
from stepcli.probe.models.base import Probe
from stepcli.probe.models.logreg import cls_features
from stepcli.probe.models.registry import register

K_GRID = (1, 5, 10, 20, 50, 100, 200)
TEMPERATURE_GRID = (0.01, 0.03, 0.07, 0.1, 0.2)  # DINOv2 uses 0.07


@register("knn", needs_patches=False, needs_cls=True, fitted=True, has_head=False)
class KnnProbe(Probe):
    """`tokens [B, T, P+N, D]` -> normalised frame-mean CLS -> votes of the k nearest train clips `[B, C]`.

    It has no trainable parameters (its parameter count is 0); the logits are the log of each
    class's share of the votes.
    """

    def __init__(self, layout: TokenLayout, num_classes: int) -> None:
        super().__init__(layout, num_classes)
        self.register_buffer("bank", torch.zeros(0, layout.dim))
        self.register_buffer("bank_labels", torch.zeros(0, dtype=torch.long))
        self.register_buffer("k", torch.tensor(1))
        self.register_buffer("temperature", torch.tensor(0.07))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """The memory bank is as large as the train split it was fitted on: take its size from the file."""
        for name in ("bank", "bank_labels"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward_features(self, tokens: Tensor) -> Tensor:
        """`[B, T, P+N, D]` -> L2-normalised frame-mean CLS `[B, D]`."""
        return F.normalize(tokens[:, :, 0].float().mean(dim=1), dim=-1)

    def forward(self, tokens: Tensor) -> Tensor:
        self.check_tokens(tokens)
        if len(self.bank) == 0:  # not fitted: no neighbours, no votes, every class alike
            return torch.zeros(len(tokens), self.num_classes, device=tokens.device)
        return knn_logits(self.forward_features(tokens), self.bank, self.bank_labels, self.num_classes,
                          int(self.k), float(self.temperature))  # fmt: skip

    def fit(self, cache: FeatureCache, train: np.ndarray, val: np.ndarray, *, workers: int, seed: int) -> dict:
        """Store the train features as the memory bank, choose k and the temperature on `val`."""
        bank = F.normalize(torch.from_numpy(cls_features(cache, train, workers=workers)).float(), dim=-1)
        queries = F.normalize(torch.from_numpy(cls_features(cache, val, workers=workers)).float(), dim=-1)
        labels = torch.from_numpy(cache.labels[train])
        truth = torch.from_numpy(cache.labels[val])
        sweep, best = [], None
        for k in sorted({min(k, len(bank)) for k in K_GRID}):
            for temperature in TEMPERATURE_GRID:
                preds = knn_logits(queries, bank, labels, self.num_classes, k, temperature).argmax(dim=1)
                accuracy = round(float((preds == truth).float().mean()), 6)
                sweep.append({"k": k, "temperature": temperature, "val_top1": accuracy})
                if best is None or accuracy > best[0]:
                    best = (accuracy, k, temperature)
        _, k, temperature = best
        self.bank, self.bank_labels = bank, labels
        self.k, self.temperature = torch.tensor(k), torch.tensor(temperature)
        self.eval()
        return {"k": k, "temperature": temperature, "sweep": sweep}


def knn_logits(queries: Tensor, bank: Tensor, labels: Tensor, num_classes: int, k: int, temperature: float) -> Tensor:
    """`[B, C]` log vote shares of normalised `queries [B, D]` among their `k` nearest rows of `bank [N, D]`."""
    similarity, index = (queries @ bank.T).topk(min(k, len(bank)), dim=1)
    weights = torch.exp((similarity - similarity[:, :1]) / temperature)  # shifted: the same shares, no overflow
    votes = torch.zeros(len(queries), num_classes, dtype=weights.dtype, device=weights.device)
    votes.scatter_add_(1, labels[index], weights)
    return torch.log(votes / votes.sum(dim=1, keepdim=True) + 1e-12)
