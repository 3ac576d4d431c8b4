"""lookalike's domain core: decoding, signals, the Milvus store, search.

Nothing here imports from ``ingest`` or ``ui``; those are thin adapters over this package.
"""

__version__ = "0.1.0"
