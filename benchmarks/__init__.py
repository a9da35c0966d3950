"""Throughput benchmarks of alignax against its PyTorch peers (see benchmarks/README.md)."""
