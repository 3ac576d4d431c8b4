"""Synthetic inputs shared by the tests and the benchmarks: generated photos, a tiny offline CLIP.

Not part of the installed distribution (``pyproject.toml`` packages ``services``, ``ingest`` and
``ui`` only); importable from the repository root, as ``tests`` and ``bench`` are.
"""
