"""Benchmarks for X-ray Lab (issue 5). Each module runs as `python -m bench.<name>` and prints JSON."""
