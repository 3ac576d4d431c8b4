"""Ingest throughput from an S3 server vs from local disk: the same files, side by side, in one run.

The S3 server is moto's (``testkit.s3server.S3Server``, on 127.0.0.1, in its own process); the
files are uploaded to it first, untimed. Each run then goes through the core, not the queue:
``Sources.listing`` lists the root (a folder, or ``s3://bench/photos/``), and
``services.ingestion.ingest_paths`` (hash-only: no CLIP) reads, decodes, hashes and stores each
batch of ``--batch-size`` into a fresh collection of a Milvus Lite server, in this one process.
The clock runs from the listing to the last batch stored; the rows are counted after each run.
Rounds alternate local and S3 (``--repeat``); the best round of each is reported. What the
figure is about is the cost of reading over the S3 protocol (one GetObject per image, on a
loopback server) against reading files from the page cache; a remote endpoint adds its latency.

    python -m bench.s3_ingest --images ../shared/data/ukbench1000
    python -m bench.s3_ingest --generate 8 --repeat 1 --no-write      # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from bench import _report
from cli.stack.milvus_lite import EmbeddedMilvus
from cli.stack.net import free_port
from services import sources as sources_module
from services.ingestion import MatchPolicy, ProcessLocks, ingest_paths
from services.schema import SchemaContract
from services.settings import HASH_ONLY_INGEST_BATCH, setting_default
from services.sources import Sources
from services.store import MilvusStore
from testkit.imagegen import make_photo_like
from testkit.s3server import S3Server

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "bench"
PREFIX = "photos/"
_SUFFIXES = {".jpg", ".jpeg", ".png"}


def image_files(
    folder: Path | None, limit: int | None, generate: int, scratch: Path
) -> tuple[list[Path], str]:
    """The files to ingest, and what they are; ``generate`` photo-like JPEGs without a folder."""
    if folder is not None:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _SUFFIXES)
        files = files[:limit] if limit else files
        return files, f"{len(files)} files from `{folder.name}`"
    out = scratch / "generated"
    out.mkdir()
    for index in range(generate):
        make_photo_like(index, (640, 480)).save(out / f"gen{index:05d}.jpg", quality=90)
    return sorted(out.iterdir()), f"{generate} generated 640x480 photo-like JPEGs"


def upload(server: S3Server, files: Sequence[Path]) -> str:
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    for path in files:
        client.put_object(Bucket=BUCKET, Key=PREFIX + path.name, Body=path.read_bytes())
    return f"s3://{BUCKET}/{PREFIX}"


def ingest_once(uri: str, root: str, batch_size: int) -> tuple[float, int]:
    """Seconds to list ``root`` and ingest it into a fresh collection, and the rows stored."""
    store = MilvusStore.connect(
        uri, f"s3bench_{uuid.uuid4().hex[:10]}", SchemaContract.current(None, None)
    )
    try:
        sources = Sources()
        policy = MatchPolicy(setting_default("dedup_max_hamming"), 1.0)
        locks = ProcessLocks()
        start = time.perf_counter()
        refs = [e.ref for s in sources.listing([root], recursive=True) for e in s.entries()]
        for at in range(0, len(refs), batch_size):
            outcome = ingest_paths(
                store,
                None,
                refs[at : at + batch_size],
                locks=locks,
                policy=policy,
                max_pixels=setting_default("max_image_pixels"),
                sources=sources,
            )
            if outcome.failures:
                raise RuntimeError(f"{root}: {outcome.failures[0]}")
        seconds = time.perf_counter() - start
        return seconds, store.count()
    finally:
        store.drop()
        store.close()


def run(files: Sequence[Path], what: str, repeat: int, batch_size: int, scratch: Path) -> str:
    contents = len({hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    milvus = EmbeddedMilvus(scratch / "milvus", free_port())
    server = S3Server(scratch / "moto.log")
    milvus.start()
    server.start()
    saved = dict(os.environ)
    try:
        os.environ.update(server.env())  # this process's S3 client, made anew for the server
        sources_module._s3_client.cache_clear()
        roots = {"local disk": str(files[0].parent), "S3 (moto, 127.0.0.1)": upload(server, files)}
        best: dict[str, float] = {}
        for _ in range(repeat):
            for label, root in roots.items():
                seconds, rows = ingest_once(milvus.uri, root, batch_size)
                if rows != contents:
                    raise RuntimeError(f"{label}: {rows} rows stored, {contents} expected")
                best[label] = min(best.get(label, seconds), seconds)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        sources_module._s3_client.cache_clear()
        server.stop()
        milvus.stop()
    local = best["local disk"]
    table = _report.markdown_table(
        ["source", "files", "seconds", "images/s", "MB/s", "vs local"],
        [
            [
                label,
                len(files),
                f"{seconds:.2f}",
                f"{len(files) / seconds:.1f}",
                f"{megabytes / seconds:.1f}",
                f"{local / seconds:.2f}x",
            ]
            for label, seconds in best.items()
        ],
    )
    return (
        f"{what} ({megabytes:.1f} MB), hash-only, batches of {batch_size}, best of {repeat} "
        f"round(s):\n\n{table}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.s3_ingest", description=__doc__)
    parser.add_argument("--images", type=Path, default=None, help="folder of images")
    parser.add_argument("--limit", type=int, default=None, help="at most this many files")
    parser.add_argument("--generate", type=int, default=200, help="without --images: N JPEGs")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is reported")
    parser.add_argument("--batch-size", type=int, default=HASH_ONLY_INGEST_BATCH)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs alone")
    args = parser.parse_args(argv)
    if args.images is not None and not args.images.is_dir():
        print(f"no folder {args.images}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="s3-bench-") as tmp:
        scratch = Path(tmp)
        files, what = image_files(args.images, args.limit, args.generate, scratch)
        if not files:
            print("no images to ingest", file=sys.stderr)
            return 2
        body = run(files, what, args.repeat, args.batch_size, scratch)
    print(body)
    if not args.no_write:
        _report.write_section(
            "s3_ingest",
            "Ingest from S3 vs from local disk",
            body,
            packages=["boto3", "moto", "pymilvus", "pillow"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
