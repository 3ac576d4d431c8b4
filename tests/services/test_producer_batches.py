"""How the producer cuts a job into tasks: a real Redis (the ledger); Celery's send is recorded,
not delivered, so that the messages can be counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from services.ledger import JobLedger
from services.producer import IngestRequest, Producer
from services.settings import Settings


class SentTasks:
    """Stands in for the Celery app: keeps each task's files instead of queueing it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def send_task(self, name: str, *, args: list[Any], queue: str) -> None:
        self.batches.append([item[0] for item in args[2]])


@pytest.mark.parametrize(
    ("clip_model", "batch_size", "expected"),
    [
        ("none", 0, [128, 128, 44]),
        ("openai/clip-vit-base-patch32", 0, [32] * 9 + [12]),
        ("none", 100, [100, 100, 100]),
    ],
)
def test_tasks_hold_the_effective_batch_and_every_file_once(
    tmp_path: Path,
    redis_url: str,
    milvus_uri: str,
    clip_model: str,
    batch_size: int,
    expected: list[int],
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for n in range(300):
        Image.new("RGB", (4, 4), (n % 256, 0, 0)).save(folder / f"{n:03d}.png")
    settings = Settings.from_env(
        {
            "LOOKALIKE_HOME": str(tmp_path / "home"),
            "LOOKALIKE_REDIS_URL": redis_url,
            "LOOKALIKE_CLIP_MODEL": clip_model,
            "LOOKALIKE_INGEST_BATCH_SIZE": str(batch_size),
        }
    )
    sent = SentTasks()
    producer = Producer(settings, JobLedger.from_url(redis_url), sent, milvus_uri)  # type: ignore[arg-type]
    producer.start(IngestRequest(roots=(str(folder),), collection="c_never_created"))

    assert [len(batch) for batch in sent.batches] == expected
    sent_files = [path for batch in sent.batches for path in batch]
    assert sorted(sent_files) == sorted(str(p) for p in folder.iterdir())
