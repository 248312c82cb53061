"""Benchmarks: ``make bench`` (``python -m bench``). Every figure is reported as a ratio to a
baseline measured in the same run on the same machine; medians of repeated runs."""
