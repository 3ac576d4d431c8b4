"""End-to-end ingest throughput: files on disk to rows queryable in Milvus, via Redis and a worker.

Milvus Lite and Redis are started once on free ports (LOOKALIKE_HOME in a temporary directory);
each configuration then gets its own ``cli.stack.stack.Stack``, which finds them running and starts
only its Celery worker (``--concurrency`` as configured). The real producer runs in this process
(``Producer(...).start(IngestRequest(...))``), into a fresh collection per run; the clock runs
from the producer's start until the ledger says the job finished and ``store.count()`` equals the
number of distinct contents. CLIP runs use the real ViT-B/32 architecture with random weights,
in bf16 and in fp32 (``LOOKALIKE_CLIP_PRECISION`` of the worker); CLIP-only throughput
(``ClipEmbedder.embed_images`` on already decoded images) is measured in the same run for each
precision, as ``bench.clip_speed`` does.

Beside them, on the same files (a folder of symlinks to them) and in the same run: imagededup's
``PHash().encode_images(image_dir=...)`` at its defaults (a multiprocessing pool of cpu_count()
workers), skipped with the reason when imagededup does not import, and imagededup's
``CNN().encode_images`` (MobileNetV3-small, random weights). The CNN needs torchvision, which pip
cannot install beside the project's pinned torch, so it runs only with ``--imagededup-python PY``:
an interpreter with torch, torchvision and imagededup, which runs ``bench/_imagededup_cnn.py``.

    python -m bench.ingest_speed --images ../shared/data/ukbench1000 \
        --imagededup-python /path/to/venv/bin/python
    python -m bench.ingest_speed --limit 20 --no-clip --no-write      # smoke run

Such an interpreter, outside the project (nothing in it depends on one):

    python3 -m venv V && V/bin/pip install torch torchvision
    V/bin/pip install --no-deps imagededup && V/bin/pip install PyWavelets scipy scikit-learn \
        tqdm matplotlib
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench import _report
from cli.stack.milvus_lite import EmbeddedMilvus
from cli.stack.net import free_port
from cli.stack.redis_server import RedisServer
from cli.stack.stack import Stack
from ingest.celery_app import create_app
from services.ledger import JobLedger
from services.producer import IngestRequest, Producer
from services.schema import SchemaContract
from services.settings import CLIP_INGEST_BATCH, HASH_ONLY_INGEST_BATCH, Settings

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "ukbench1000"
HASH_TARGET = 500.0  # images/s, hash-only, 640x480 JPEGs, 2 cores
CLIP_TARGET = 60.0  # images/s, CLIP end to end
CLIP_SHARE_TARGET = 0.8  # CLIP end to end / CLIP-only
PRECISIONS = ("bf16", "fp32")
IMAGEDEDUP_WARMUP = 32  # files encoded once, untimed, before imagededup's timed passes
CNN_SCRIPT = Path(__file__).resolve().parent / "_imagededup_cnn.py"
CLIP_DIM = 512
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass(frozen=True)
class Config:
    label: str
    clip: bool
    concurrency: int
    batch_size: int
    precision: str = "auto"


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu: dict[str, float]  # CPU seconds per process group during the run

    def rate(self, files: int) -> float:
        return files / self.seconds


def image_files(folder: Path | None, limit: int | None, scratch: Path) -> tuple[list[Path], str]:
    """The files to ingest and a description; generated 640x480 JPEGs if ``folder`` is absent."""
    if folder is not None and folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        files = files[:limit] if limit else files
        return files, f"{len(files)} files from {folder}"
    count = limit or 200
    generated = scratch / "generated"
    generated.mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((640, 480), Image.Resampling.BICUBIC)
        image.save(generated / f"gen{index:05d}.jpg", quality=90)
    missing = f" ({folder} is absent)" if folder is not None else ""
    return sorted(generated.iterdir()), f"{count} generated 640x480 JPEGs{missing}"


def ingest_roots(
    folder: Path | None, limit: int | None, scratch: Path
) -> tuple[list[Path], str, tuple[str, ...]]:
    """:func:`image_files`, and the roots a job names: the folder when all of it is ingested,
    else each file."""
    files, source = image_files(folder, limit, scratch)
    whole = limit is None and folder is not None and folder.is_dir()
    return files, source, (str(folder),) if whole else tuple(str(p) for p in files)


def distinct_contents(files: Sequence[Path]) -> int:
    return len({hashlib.sha256(path.read_bytes()).hexdigest() for path in files})


def _proc_stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, user + system CPU seconds) of every process, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    return stats


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` and its living descendants."""
    if pid is None:
        return 0.0
    stats = _proc_stats()
    tree, total, frontier = {pid}, 0.0, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, (ppid, _) in stats.items() if ppid == parent and p not in tree]
        tree.update(children)
        frontier += children
    for member in tree:
        total += stats.get(member, (0, 0.0))[1]
    return total


def milvus_pid(port: int) -> int | None:
    """The Milvus Lite server started by this process (the one serving ``port``)."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and f":{port}".encode() in (entry / "cmdline").read_bytes():
                return int(entry.name)
    return None


class Bench:
    """Milvus Lite and Redis for the whole run; one worker (a Stack) per configuration."""

    def __init__(self, home: Path, files: Sequence[Path], roots: tuple[str, ...]) -> None:
        self.home = home
        self.files = files
        self.roots = roots
        self.distinct = distinct_contents(files)
        self.base_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("LOOKALIKE_", "CELERY"))
        }
        self.redis_url = f"redis://127.0.0.1:{free_port()}/0"
        self.milvus_port = free_port()
        self.milvus = EmbeddedMilvus(home / "milvus", self.milvus_port)
        self.redis = RedisServer(self.redis_url, home / "redis", log_file=home / "redis.log")
        self.runs = 0

    def __enter__(self) -> Bench:
        self.milvus.start()
        self.redis.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.redis.stop()
        self.milvus.stop()

    def settings(self, config: Config, clip_dir: str | None) -> Settings:
        env = {
            "LOOKALIKE_HOME": str(self.home),
            "LOOKALIKE_REDIS_URL": self.redis_url,
            "LOOKALIKE_MILVUS_PORT": str(self.milvus_port),
            "LOOKALIKE_CLIP_MODEL": clip_dir if config.clip and clip_dir else "none",
            "LOOKALIKE_CLIP_PRECISION": config.precision,
            "LOOKALIKE_WORKER_CONCURRENCY": str(config.concurrency),
            "LOOKALIKE_INGEST_BATCH_SIZE": str(config.batch_size),
        }
        return Settings.from_env(env)

    @contextlib.contextmanager
    def worker(self, settings: Settings) -> Iterator[Stack]:
        stack = Stack(settings, env=self.base_env, worker_ready_timeout=300.0)
        with stack:
            yield stack

    def ingest(
        self,
        settings: Settings,
        stack: Stack,
        files: Sequence[Path] | None = None,
        *,
        collection: str | None = None,
        stored: int = 0,
    ) -> Run:
        """One timed job into a fresh collection (or ``collection``, holding ``stored`` rows
        none of the files' contents); returns its wall time and CPU shares."""
        self.runs += 1
        collection = collection or f"bench_{self.runs:03d}"
        clip = None if settings.hash_only else (settings.clip_model, CLIP_DIM)
        contract = SchemaContract.current(*(clip or (None, None)))
        from services.store import MilvusStore

        store = MilvusStore.connect(settings.effective_milvus_uri, collection, contract)
        roots = self.roots if files is None else tuple(str(p) for p in files)
        expected = stored + (self.distinct if files is None else distinct_contents(files))
        ledger = JobLedger.from_url(settings.redis_url)
        app = create_app(settings)
        producer = Producer(settings, ledger, app, settings.effective_milvus_uri)
        pids = {
            "worker": stack.worker.process.pid if stack.worker else None,
            "milvus": milvus_pid(self.milvus_port),
            "redis": self.redis.pid,
        }
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        own_before = time.process_time()
        start = time.perf_counter()
        job_id = producer.start(IngestRequest(roots=roots, collection=collection))
        while not ledger.progress(job_id, with_failures=False).finished:
            time.sleep(0.02)
        while store.count() < expected:
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        cpu["producer"] = time.process_time() - own_before
        progress = ledger.progress(job_id)
        if progress.failures:
            raise SystemExit(f"job {job_id} failed files: {progress.failures[:3]}")
        store.close()
        app.close()
        return Run(seconds, cpu)


def clip_only_rate(
    clip_dir: str, files: Sequence[Path], batch_size: int, repeat: int, precision: str
) -> float:
    """images/s of ClipEmbedder on images already decoded (what bench.clip_speed measures)."""
    from services.embed import ClipEmbedder, clear_model_cache

    images = []
    for path in files:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    embedder = ClipEmbedder.load(
        clip_dir,
        device="cpu",
        batch_size=batch_size,
        precision="bf16" if precision == "bf16" else "fp32",
    )
    embedder.embed_images(images[:batch_size])  # warm-up
    best = min(_timed(lambda: embedder.embed_images(images)) for _ in range(repeat))
    clear_model_cache()
    return len(images) / best


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def configurations(precisions: Sequence[str]) -> list[Config]:
    configs = [
        Config("hash-only", False, 2, HASH_ONLY_INGEST_BATCH),
        Config("hash-only", False, 1, HASH_ONLY_INGEST_BATCH),
        Config("hash-only", False, 2, 32),
        Config("hash-only", False, 2, 64),
    ]
    for precision in precisions:
        label = f"CLIP ViT-B/32 {precision}"
        batch = CLIP_INGEST_BATCH
        configs += [Config(label, True, n, batch, precision) for n in (1, 2)]
    return configs


def link_folder(folder: Path, files: Sequence[Path]) -> Path:
    """A folder of symlinks to ``files``, for tools that take a directory (no copies)."""
    folder.mkdir(parents=True)
    for index, path in enumerate(files):
        (folder / f"{index:05d}_{path.name}").symlink_to(path.resolve())
    return folder


@dataclass(frozen=True)
class Outside:
    """A timed run of another tool on the same files, or why it did not run."""

    seconds: float | None = None
    cpu_seconds: float = 0.0
    encoded: int = 0
    reason: str = ""
    details: dict[str, object] | None = None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def imagededup_phash(images: Path, warmup: Path, repeat: int) -> Outside:
    """imagededup's ``PHash().encode_images(image_dir=...)`` at its defaults, best of ``repeat``.

    Its default ``num_enc_workers=cpu_count()`` runs a multiprocessing pool, created and joined
    inside every call; CPU seconds count this process and the pool's (reaped) workers."""
    if importlib.util.find_spec("imagededup") is None:
        return Outside(
            reason="imagededup is not installed (optional: `pip install imagededup` would "
            "replace the pinned torch; `pip install --no-deps imagededup PyWavelets` suffices)"
        )
    try:
        from bench.dedup_scale import _import_imagededup_phash

        hasher = _import_imagededup_phash()
    except Exception as exc:  # a missing dependency of imagededup: say which
        return Outside(reason=f"imagededup does not import: {type(exc).__name__}: {exc}")
    hasher.encode_images(image_dir=warmup)
    best = Outside()
    for _ in range(repeat):
        cpu = time.process_time() + _children_cpu()
        start = time.perf_counter()
        encodings = hasher.encode_images(image_dir=images)
        seconds = time.perf_counter() - start
        cpu = time.process_time() + _children_cpu() - cpu
        if best.seconds is None or seconds < best.seconds:
            best = Outside(seconds, cpu, len(encodings))
    return best


def imagededup_cnn(python: str | None, images: Path, warmup: Path, repeat: int) -> Outside:
    """imagededup's CNN encoder in another interpreter (see bench/_imagededup_cnn.py)."""
    if python is None:
        return Outside(
            reason="needs torchvision, which pip cannot install beside the pinned torch; "
            "pass --imagededup-python PY (a venv with torch, torchvision and imagededup)"
        )
    out = images.parent / "cnn.json"
    argv = [python, str(CNN_SCRIPT), "--images", str(images), "--warmup", str(warmup)]
    argv += ["--repeat", str(repeat), "--out", str(out)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Outside(reason=f"{python} did not run: {exc}")
    if done.returncode != 0 or not out.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Outside(reason=f"{python} failed (exit {done.returncode}): {last}")
    result = json.loads(out.read_text())
    return Outside(result["seconds"], result["cpu_seconds"], result["encoded"], details=result)


def outside_row(label: str, workers: str, batch: object, run: Outside, files: int) -> list[object]:
    if run.seconds is None:
        return [label, "-", "-", "-", "not run", run.reason]
    if run.encoded != files:
        raise SystemExit(f"{label} encoded {run.encoded} of {files} files")
    share = f"{run.cpu_seconds / run.seconds:.2f} cores"
    if run.details:
        versions = run.details["versions"]
        assert isinstance(versions, dict)
        share += (
            f" ({run.details['threads']} torch threads, torch {versions['torch']} on "
            f"{run.details['device']}, another venv)"
        )
    else:
        share += " (this process and its pool)"
    return [label, workers, batch, f"{run.seconds:.2f}", f"{files / run.seconds:.0f}", share]


def cpu_share(run: Run) -> str:
    total = sum(run.cpu.values()) or 1.0
    shares = ", ".join(
        f"{name} {100 * value / total:.0f}%" for name, value in run.cpu.items() if value > 0
    )
    return f"{total / run.seconds:.2f} cores: {shares}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of images")
    parser.add_argument("--limit", type=int, default=None, help="ingest only the first N files")
    parser.add_argument("--repeat", type=int, default=1, help="timed jobs per configuration")
    parser.add_argument("--no-clip", action="store_true", help="hash-only configurations only")
    parser.add_argument(
        "--precisions", default=",".join(PRECISIONS), help="CLIP precisions, comma-separated"
    )
    parser.add_argument(
        "--imagededup-python",
        default=None,
        help="a Python with torch, torchvision and imagededup, for imagededup's CNN row",
    )
    parser.add_argument("--no-imagededup", action="store_true", help="skip imagededup's rows")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    parser.add_argument(
        "--growth",
        action="store_true",
        help="only the growth curve: hash-only ingest into a collection of each --growth-sizes "
        "rows, old arrival design (milvus) against new (memory), side by side",
    )
    parser.add_argument(
        "--growth-sizes",
        default="0,10000,100000,1000000",
        help="stored rows (synthetic) before each measured job, comma-separated, ascending",
    )
    args = parser.parse_args(argv)
    if args.growth:
        return growth(args.images, args.limit, [int(s) for s in args.growth_sizes.split(",")],
                      write=not args.no_write, repeat=args.repeat)  # fmt: skip

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ingest-speed-") as tmp:
        scratch = Path(tmp)
        files, source, roots = ingest_roots(args.images, args.limit, scratch)
        clip_dir = None
        if not args.no_clip:
            from bench.clip_speed import build_vit_b32

            clip_dir = str(build_vit_b32(scratch / "clip"))
        precisions = [p for p in args.precisions.split(",") if p] if clip_dir else []
        unknown = set(precisions) - set(PRECISIONS)
        if unknown:
            parser.error(f"unknown precision(s) {sorted(unknown)}; use bf16, fp32")
        rows: list[list[object]] = []
        rates: dict[Config, float] = {}
        with Bench(scratch / "home", files, roots) as bench:
            print(f"{source}; {bench.distinct} distinct contents", flush=True)
            for config in configurations(precisions):
                settings = bench.settings(config, clip_dir)
                with bench.worker(settings) as stack:
                    warm = files[: config.batch_size * config.concurrency]
                    bench.ingest(settings, stack, warm)  # imports, first-batch costs
                    runs = [bench.ingest(settings, stack) for _ in range(args.repeat)]
                best = min(runs, key=lambda r: r.seconds)
                rates[config] = best.rate(len(files))
                rows.append(
                    [config.label, config.concurrency, config.batch_size,
                     f"{best.seconds:.2f}", f"{rates[config]:.0f}", cpu_share(best)]
                )  # fmt: skip
                print(rows[-1], flush=True)
        clip_rates: dict[str, float] = {}
        gemm: dict[str, float] = {}
        if precisions:
            from bench.clip_speed import matmul_gflops

            gemm = {"bf16": matmul_gflops(True), "fp32": matmul_gflops(False)}
        for precision in precisions:
            clip_rates[precision] = rate = clip_only_rate(
                clip_dir or "", files, 32, max(1, args.repeat), precision
            )
            rows.append([f"CLIP-only {precision} (decoded images in memory)", "-", 32, "-",
                         f"{rate:.0f}", "this process, 2 torch threads"])  # fmt: skip
            print(rows[-1], flush=True)
        outside: dict[str, Outside] = {}
        if not args.no_imagededup:
            linked = link_folder(scratch / "imagededup" / "images", files)
            warmup = link_folder(scratch / "imagededup" / "warmup", files[:IMAGEDEDUP_WARMUP])
            repeat = max(1, args.repeat)
            outside["phash"] = imagededup_phash(linked, warmup, repeat)
            rows.append(outside_row(
                "imagededup PHash.encode_images (defaults)",
                f"{os.cpu_count()} (its pool: num_enc_workers=cpu_count())", "-",
                outside["phash"], len(files),
            ))  # fmt: skip
            print(rows[-1], flush=True)
            outside["cnn"] = imagededup_cnn(args.imagededup_python, linked, warmup, repeat)
            rows.append(outside_row(
                "imagededup CNN.encode_images (defaults, MobileNetV3-small)",
                "1 (num_enc_workers=0, its default)", 64, outside["cnn"], len(files),
            ))  # fmt: skip
            print(rows[-1], flush=True)

    load = (load_before, os.getloadavg()[0])
    body = _body(source, len(files), rows, rates, clip_rates, outside, args.repeat, load, gemm)
    print(body)
    if not args.no_write:
        _report.write_section(
            "ingest_speed",
            "End-to-end ingest throughput (files to queryable rows)",
            body,
            packages=["pillow", "pymilvus", "milvus-lite", "celery", "redis", "torch",
                      "imagededup"],
        )  # fmt: skip
    return 0


def growth(
    images: Path | None, limit: int | None, sizes: list[int], *, write: bool, repeat: int = 1
) -> int:
    """The growth curve (bench/_ingest_growth.py): its table and PNG into docs/benchmarks.md."""
    from bench import _ingest_growth

    if sizes != sorted(sizes):
        raise SystemExit(f"--growth-sizes must be ascending, got {sizes}")
    load_before = os.getloadavg()[0]
    concurrency, batch_size = 2, HASH_ONLY_INGEST_BATCH
    with tempfile.TemporaryDirectory(prefix="ingest-growth-") as tmp:
        scratch = Path(tmp)
        files, source, roots = ingest_roots(images, limit, scratch)
        with Bench(scratch / "home", files, roots) as bench:
            points, fills, settles, loads, stages = _ingest_growth.run(
                bench, files, sizes, batch_size, concurrency, repeat
            )
    load = (load_before, os.getloadavg()[0])
    body = _ingest_growth.body(
        points, stages, fills, settles, loads, source, load, concurrency, batch_size, repeat,
        png=write,
    )  # fmt: skip
    print(body)
    if write:
        _report.write_section(
            "ingest_growth",
            "Ingest throughput as the collection grows",
            body,
            packages=["pymilvus", "milvus-lite", "celery", "redis", "numba", "numpy"],
            module="ingest_speed",
        )
    return 0


def _body(
    source: str,
    files: int,
    rows: list[list[object]],
    rates: dict[Config, float],
    clip_rates: dict[str, float],
    outside: dict[str, Outside],
    repeat: int,
    load: tuple[float, float] = (0.0, 0.0),
    gemm: dict[str, float] | None = None,
) -> str:
    header = ["Configuration", "Worker processes", "Batch", "seconds", "images/s", "CPU share"]
    hash_best = max(v for c, v in rates.items() if not c.clip)
    hash_default = rates[Config("hash-only", False, 2, HASH_ONLY_INGEST_BATCH)]
    facts = [f"Hash-only at the default batch ({HASH_ONLY_INGEST_BATCH}), 2 worker processes: "
             f"{hash_default:.0f} images/s; target {HASH_TARGET:.0f}: "
             f"{_verdict(hash_default >= HASH_TARGET)}; best {hash_best:.0f}."]  # fmt: skip
    for precision, clip_rate in clip_rates.items():
        end_to_end = max(v for c, v in rates.items() if c.clip and c.precision == precision)
        share = end_to_end / clip_rate
        facts.append(
            f"CLIP {precision} end to end, best: {end_to_end:.0f} images/s; target "
            f"{CLIP_TARGET:.0f}: {_verdict(end_to_end >= CLIP_TARGET)}; CLIP-only {precision}: "
            f"{clip_rate:.0f} images/s; end to end / CLIP-only: {100 * share:.0f}%; target "
            f"{100 * CLIP_SHARE_TARGET:.0f}%: {_verdict(share >= CLIP_SHARE_TARGET)}."
        )
    if "phash" in outside:
        facts.append(_versus("Hash-only", hash_best, "imagededup PHash", outside["phash"], files))
    if "cnn" in outside and clip_rates:
        precision = next(iter(clip_rates))
        best = max(v for c, v in rates.items() if c.clip and c.precision == precision)
        label = f"CLIP {precision} end to end"
        facts.append(_versus(label, best, "imagededup CNN", outside["cnn"], files))
    setup = [
        f"{source}; images/s = {files} files / seconds, best of {repeat} job(s) after one "
        "warm-up job",
        f"native bf16: {_bf16_native()}",
        f"load average (1 min) {load[0]:.1f} before, {load[1]:.1f} after",
    ]
    if gemm:
        setup.append(
            "GEMM of ViT-B shape (1600x768 @ 768x3072) on this host: "
            f"{gemm['bf16']:.0f} GFLOP/s in bf16, {gemm['fp32']:.0f} in fp32"
        )
    if outside:
        setup.append(
            f"imagededup: best of {repeat} call(s) after one untimed call on "
            f"{IMAGEDEDUP_WARMUP} files"
        )
    cnn = outside.get("cnn")
    if cnn is not None and cnn.details:
        versions = cnn.details["versions"]
        assert isinstance(versions, dict)
        setup.append(
            f"the CNN row in another interpreter: torch {versions['torch']}, torchvision "
            f"{versions['torchvision']}, imagededup {versions['imagededup']}; model built in "
            f"{cnn.details['init_seconds']:.1f} s, not counted"
        )
    return (
        "; ".join(setup)
        + ".\n\n"
        + _report.markdown_table(header, rows)
        + "\n\n"
        + "\n".join(f"- {fact}" for fact in facts)
        + "\n"
    )


def _verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def _versus(label: str, ours: float, name: str, run: Outside, files: int) -> str:
    if run.seconds is None:
        return f"{name}: not run (see the table)."
    theirs = files / run.seconds
    return (
        f"{label}, best {ours:.0f} images/s into Milvus, against {name} {theirs:.0f} "
        f"images/s into memory: {ours / theirs:.2f}x."
    )


def _bf16_native() -> bool:
    from services.embed import bf16_supported

    return bf16_supported("cpu")


if __name__ == "__main__":
    raise SystemExit(main())
