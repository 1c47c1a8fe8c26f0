"""Benchmark dataset: builder from Debian packages, pinned manifest, photo records and tile datasets."""
