"""Stage two: probes trained on cached frame tokens `[B, T, P+N, D]` -> logits `[B, C]`.

Layers, top to bottom (docs/architecture.md): `studies` (shuffle test, compare, cross-cache evaluation, repeats, pair
mining, reports) -> `training` (optimisation, the loop, stacked heads, sweeps) -> `evaluation`
(inference over views, metrics, predict) -> `runs` (run directories and
their compatibility with a cache) -> `models` (the probes, their registry and the probe-spec
grammar) -> `config` and `data` (what a run is asked to do; splits and batches from the cache).
"""
