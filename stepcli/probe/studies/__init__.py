"""Studies over trained probes: shuffle test, compare, repeats (seeds, layers), pair mining, reports and plots."""
