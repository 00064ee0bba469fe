"""The `knn` baseline: weighted k-nearest-neighbour voting on frame-averaged CLS features, as in
DINOv2's k-NN evaluation, with no training at all.

Each clip is its CLS token averaged over the T frames (order-blind by construction), L2-normalised.
A test clip's k most cosine-similar train clips vote for their class with weight
exp(similarity / temperature); k and the temperature are chosen on the validation split (ties:
the smaller k, then the lower temperature). The train features are the probe's memory bank, saved
with the run like any weights, so a knn run is loaded, evaluated and shuffle-tested like the others.

The queries meet the bank in chunks (`chunk_size`), in `fit` and in evaluation alike: the same
chunks give the same bits, so `fit` keeps the chosen (k, temperature)'s validation logits and the
final validation metrics of a run are read from them instead of a second search (`fitted_logits`).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

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
# bytes of query-to-bank similarities held at once: at SSv2 size (169k train clips) all 24,777 val
# queries at once would take 16.7 GB, recomputed for every (k, temperature)
SIMILARITY_BYTES = 256 << 20
# bytes of tokens (counted at 4 bytes a value) in one evaluation batch: a chunk of queries is read
# as one batch, and a small bank's chunk of full-token clips would not fit in memory
BATCH_TOKEN_BYTES = 256 << 20


@dataclass(frozen=True)
class _FittedVal:
    """The validation logits `fit` computed, and what they hold for: this cache object, these rows,
    this bank tensor (weak: a bank moved to another device or reloaded is another), this k and temperature."""

    cache: weakref.ref
    rows: np.ndarray
    bank: weakref.ref
    k: int
    temperature: float
    logits: np.ndarray


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
        self._fitted_val: _FittedVal | None = None

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
                          int(self.k), float(self.temperature), self.chunk(), search_depth(len(self.bank)))  # fmt: skip

    def chunk(self) -> int:
        """Queries per similarity matmul, as in `fit`."""
        return chunk_size(len(self.bank), self.layout)

    def eval_batch_size(self, batch_size: int) -> int:
        """The smallest multiple of the chunk that holds `batch_size` clips: one matmul per chunk,
        the chunks `fit` used (the per-call cost of `queries @ bank.T` falls with the queries per call)."""
        if len(self.bank) == 0:
            return batch_size
        chunk = self.chunk()
        return chunk * math.ceil(batch_size / chunk)

    def fitted_logits(self, cache: FeatureCache, rows: np.ndarray) -> np.ndarray | None:
        """The validation logits of the last `fit`, when asked for exactly its cache and rows with
        the bank, k and temperature it chose: what a second search would find, bit for bit."""
        fitted = self._fitted_val
        if (
            fitted is None or fitted.cache() is not cache or fitted.bank() is not self.bank
            or (int(self.k), float(self.temperature)) != (fitted.k, fitted.temperature)
            or not np.array_equal(fitted.rows, rows)
        ):  # fmt: skip
            return None
        return fitted.logits

    def fit(self, cache: FeatureCache, train: np.ndarray, val: np.ndarray, *, workers: int, seed: int) -> dict:
        """Store the train features as the memory bank, choose k and the temperature on `val`.

        The validation clips go through the bank in chunks; each chunk's similarities are computed
        once and its `max(K_GRID)` nearest neighbours serve every (k, temperature) of the grid, and
        then the chosen one's logits (kept for `fitted_logits`).
        """
        self._fitted_val = None
        bank = F.normalize(torch.from_numpy(cls_features(cache, train, workers=workers)).float(), dim=-1)
        queries = F.normalize(torch.from_numpy(cls_features(cache, val, workers=workers)).float(), dim=-1)
        labels = torch.from_numpy(cache.labels[train])
        truth = torch.from_numpy(cache.labels[val])
        ks = sorted({min(k, len(bank)) for k in K_GRID})
        correct = dict.fromkeys(((k, t) for k in ks for t in TEMPERATURE_GRID), 0)
        found = []  # each chunk's neighbours, [b, max k] twice: 2.4 kB a validation clip
        for rows, similarity, index in nearest(queries, bank, ks[-1], chunk_size(len(bank), self.layout)):
            found.append((similarity, index))
            for k in ks:
                for temperature in TEMPERATURE_GRID:
                    votes = vote_logits(similarity[:, :k], labels[index[:, :k]], self.num_classes, temperature)
                    correct[k, temperature] += int((votes.argmax(dim=1) == truth[rows]).sum())
        sweep, best = [], None
        for (k, temperature), right in correct.items():
            # as the mean of a float32 tensor of hits, which is what the sweep has always recorded
            accuracy = round(float(torch.tensor(right, dtype=torch.float32) / len(val)), 6)
            sweep.append({"k": k, "temperature": temperature, "val_top1": accuracy})
            if best is None or accuracy > best[0]:
                best = (accuracy, k, temperature)
        _, k, temperature = best
        self.bank, self.bank_labels = bank, labels
        self.k, self.temperature = torch.tensor(k), torch.tensor(temperature)
        chosen = int(self.k), float(self.temperature)  # as `forward` reads them
        logits = [vote_logits(s[:, : chosen[0]], labels[i[:, : chosen[0]]], self.num_classes, chosen[1])
                  for s, i in found]  # fmt: skip
        logits = torch.cat(logits).numpy() if logits else np.zeros((0, self.num_classes), dtype=np.float32)
        self._fitted_val = _FittedVal(weakref.ref(cache), np.array(val, dtype=np.int64), weakref.ref(self.bank),
                                      *chosen, logits)  # fmt: skip
        self.eval()
        return {"k": k, "temperature": temperature, "sweep": sweep}


def query_chunk(bank_size: int) -> int:
    """Queries per chunk: their similarities to the whole bank take at most SIMILARITY_BYTES."""
    return max(1, SIMILARITY_BYTES // (4 * max(1, bank_size)))


def chunk_size(bank_size: int, layout: TokenLayout) -> int:
    """Queries per chunk in `fit` and in evaluation: `query_chunk`, and at most BATCH_TOKEN_BYTES of
    their tokens, since an evaluation batch is read as a whole."""
    return max(1, min(query_chunk(bank_size), BATCH_TOKEN_BYTES // (4 * math.prod(layout.clip_shape))))


def search_depth(bank_size: int) -> int:
    """How many neighbours `fit` finds per query and `forward` too, before keeping the first k: the
    same search, so that ties at the k-th neighbour fall as they fell when k was chosen."""
    return min(max(K_GRID), bank_size)


def nearest(queries: Tensor, bank: Tensor, k: int, chunk: int | None = None) -> Iterator[tuple[slice, Tensor, Tensor]]:
    """`(rows, similarity [b, k], index [b, k])` per chunk of `queries [B, D]`: the `k` most similar
    rows of `bank [N, D]`, most similar first; `chunk` queries at a time (default: `query_chunk`)."""
    chunk = query_chunk(len(bank)) if chunk is None else chunk
    for start in range(0, len(queries), chunk):
        rows = slice(start, start + chunk)
        # a copy: each chunk's matmul reads memory aligned alike, wherever it lies in `queries`
        similarity, index = (queries[rows].clone() @ bank.T).topk(min(k, len(bank)), dim=1)
        yield rows, similarity, index


def vote_logits(similarity: Tensor, voters: Tensor, num_classes: int, temperature: float) -> Tensor:
    """`[b, C]` log vote shares of neighbours with `similarity [b, k]` (most similar first) and labels `voters [b, k]`."""
    weights = torch.exp((similarity - similarity[:, :1]) / temperature)  # shifted: the same shares, no overflow
    votes = torch.zeros(len(similarity), num_classes, dtype=weights.dtype, device=weights.device)
    votes.scatter_add_(1, voters, weights)
    return torch.log(votes / votes.sum(dim=1, keepdim=True) + 1e-12)


def knn_logits(
    queries: Tensor,
    bank: Tensor,
    labels: Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    chunk: int | None = None,
    depth: int | None = None,
) -> Tensor:
    """`[B, C]` log vote shares of normalised `queries [B, D]` among their `k` nearest rows of `bank [N, D]`,
    found among the `depth` nearest (default: k)."""
    parts = [
        vote_logits(similarity[:, :k], labels[index[:, :k]], num_classes, temperature)
        for _, similarity, index in nearest(queries, bank, max(k, depth or k), chunk)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, num_classes, device=queries.device)
