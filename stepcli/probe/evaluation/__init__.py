"""Scoring probes: inference over views, metrics, cross-cache evaluation, predict on new videos."""
