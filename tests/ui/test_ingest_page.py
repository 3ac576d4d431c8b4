"""The Ingest page starts a job through the real queue and a real worker, and follows it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.ingest.conftest import ROOT, IngestEnv
from tests.ingest.images import photo_folder
from tests.ui.conftest import UiStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_ingest_a_folder_live_with_its_failures(ui_stack: UiStack, tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    photo_folder(folder, 12)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    env = dict(os.environ) | {"PYTHONPATH": str(ROOT), "LOOKALIKE_INGEST_BATCH_SIZE": "4"}
    redis = None  # the stack's Redis is the fixture's; IngestEnv only starts workers here
    workers = IngestEnv(env, redis, ui_stack.milvus_uri, ui_stack.collection, tmp_path)  # type: ignore[arg-type]
    worker = workers.start_worker()
    try:
        app = ui_stack.app("ingest")
        assert any("1** live worker" in m.value for m in app.markdown)
        app.text_input(key="ingest-folder").input(str(tmp_path / "missing")).run()
        next(b for b in app.button if b.label == "Start ingestion").click().run()
        assert "No such folder" in app.error[0].value

        app.text_input(key="ingest-folder").input(str(folder))
        app.text_input(key="ingest-tags").input("incoming")
        next(b for b in app.button if b.label == "Start ingestion").click().run()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            app.run()
            assert not app.exception
            if any("· finished ·" in m.value for m in app.markdown):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the job did not finish:\n" + workers.worker_logs())
        metrics = {m.label: m.value for m in app.metric}
        assert metrics["Found"] == "13" and metrics["Ingested"] == "12"
        assert metrics["Failed"] == "1"
        failures = app.dataframe[0].value
        assert list(failures["path"]) == [str(folder / "broken.jpg")]
        assert failures["reason"][0] == "truncated image data"
        assert any("images/s over" in c.value for c in app.caption)
        rows = ui_stack.store().count('array_contains(tags, "incoming")')
        assert rows == 12
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
