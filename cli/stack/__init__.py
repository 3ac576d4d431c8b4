"""The local stack of one machine: Milvus Lite, Redis, the workers and the UI, supervised."""
