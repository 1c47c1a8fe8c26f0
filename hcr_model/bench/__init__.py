"""Benchmark building blocks: tampering generator, attack grid, metrics, peers and baselines."""
