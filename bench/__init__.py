"""Benchmarks: each prints its figures with ratios against a peer measured in the same run."""
