"""Stage two: probes trained on cached frame tokens `[B, T, P+N, D]` -> logits `[B, C]`.

Four jobs, one subpackage each: `models` (the probes and their registry), `training` (config,
batches, optimisation, the loop, sweeps, run directories), `evaluation` (inference over views,
metrics, cross-cache evaluation, predict) and `studies` (shuffle test, compare, repeats, pair
mining, reports).
"""
