"""The `logreg` baseline: the classic CLIP linear-probe protocol on frame-averaged CLS features.

Features are the CLS token averaged over the T frames (order-blind by construction), standardised
with the train split's mean and std; scikit-learn's L-BFGS logistic regression is fitted for each
C in a log-spaced grid and the C with the best validation accuracy is kept (ties: the stronger
regularisation). The fitted model is a `Probe` (standardise + Linear) fitted by its `fit` hook
instead of the gradient loop, so a logreg run is built, saved, loaded and evaluated like every
other probe.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from stepcli.cache.reader import FeatureCache
from stepcli.cache.records import TokenLayout
from stepcli.errors import StepcliError
from stepcli.probe.data import fixed_batches, iterate_batches
from stepcli.probe.models.base import Probe
from stepcli.probe.models.registry import register

C_GRID = tuple(10.0**k for k in range(-3, 4))  # 1e-3 ... 1e3


@register("logreg", needs_patches=False, needs_cls=True, fitted=True, head_norm=False)
class LogRegProbe(Probe):
    """`tokens [B, T, P+N, D]` -> mean over frames of CLS -> standardise -> Linear -> logits `[B, C]`.

    Its head has no LayerNorm (the features are standardised with the train split's statistics,
    which are buffers, not parameters), so its parameter count is the fitted coefficients and
    intercepts alone.
    """

    def __init__(self, layout: TokenLayout, num_classes: int) -> None:
        super().__init__(layout, num_classes)
        self.register_buffer("mean", torch.zeros(layout.dim))
        self.register_buffer("scale", torch.ones(layout.dim))

    def forward_features(self, tokens: Tensor) -> Tensor:
        """`[B, T, P+N, D]` -> standardised frame-mean CLS `[B, D]`."""
        return (tokens[:, :, 0].mean(dim=1) - self.mean) / self.scale

    def fit(self, cache: FeatureCache, train: np.ndarray, val: np.ndarray, *, workers: int, seed: int) -> dict:
        """Fit for every C in `C_GRID` on `train`, keep the best on `val`; returns the sweep."""
        scaler, model, sweep = fit_logreg(cache, train, val, workers=workers, seed=seed)
        coef, intercept = _full_coefficients(model, self.num_classes)
        with torch.no_grad():
            self.mean.copy_(torch.from_numpy(scaler.mean_))
            self.scale.copy_(torch.from_numpy(scaler.scale_))
            self.fc.weight.copy_(torch.from_numpy(coef))
            self.fc.bias.copy_(torch.from_numpy(intercept))
        self.eval()
        return sweep


def cls_features(cache: FeatureCache, rows: np.ndarray, batch_size: int = 64, workers: int = 0) -> np.ndarray:
    """`[len(rows), D]` float64: each clip's CLS token averaged over its frames."""
    chunks = [
        tokens[:, :, 0].float().mean(dim=1).double().numpy()
        for tokens, _ in iterate_batches(cache, fixed_batches(rows, batch_size), workers)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, cache.clip_shape[2]))


def fit_logreg(cache: FeatureCache, train: np.ndarray, val: np.ndarray, *, workers: int = 0, seed: int = 0):
    """The fitted scaler, the best-on-val scikit-learn model and the sweep over `C_GRID`."""
    from sklearn.linear_model import (
        LogisticRegression,  # deferred: scikit-learn takes a second to import; only fitting logreg needs it
    )
    from sklearn.preprocessing import (
        StandardScaler,  # deferred: scikit-learn takes a second to import; only fitting logreg needs it
    )
    from threadpoolctl import threadpool_limits  # deferred: only fitting logreg needs it

    x_train, x_val = cls_features(cache, train, workers=workers), cls_features(cache, val, workers=workers)
    y_train, y_val = cache.labels[train], cache.labels[val]
    if len(np.unique(y_train)) < 2:
        raise StepcliError("logreg needs train clips of at least two classes")
    scaler = StandardScaler().fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    best, sweep = None, []
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        # one BLAS thread: for a few hundred clips, threads cost more than they save
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")  # ConvergenceWarning at weak regularisation is expected
            model.fit(x_train, y_train)
        accuracy = float((model.predict(x_val) == y_val).mean())
        sweep.append({"C": c, "val_top1": round(accuracy, 6)})
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
    _, c, model = best
    return scaler, model, {"C": c, "C_grid": list(C_GRID), "sweep": sweep}


def _full_coefficients(model, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """`[C, D]`, `[C]` over every class of the cache; classes absent from train never win."""
    coef = np.zeros((num_classes, model.coef_.shape[1]))
    intercept = np.full(num_classes, -1e4)
    classes = model.classes_
    if len(classes) == 2:  # scikit-learn keeps one row for binary problems: logit of class 1
        coef[classes[1]], intercept[classes[1]] = model.coef_[0], model.intercept_[0]
        coef[classes[0]], intercept[classes[0]] = 0.0, 0.0
    else:
        coef[classes], intercept[classes] = model.coef_, model.intercept_
    return coef, intercept
