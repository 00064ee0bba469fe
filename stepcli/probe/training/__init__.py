"""Training a probe from the cache: optimisation, the loop, stacked heads, sweeps."""
