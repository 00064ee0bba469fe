"""Training a probe from the cache: config, splits and batches, optimisation, the loop, sweeps, run directories."""
