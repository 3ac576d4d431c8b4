"""Ingest: start a job for a folder, watch it live (progress, rate, ETA), read its failures, and
see the queue depth and the live workers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import streamlit as st

from services.errors import LookalikeError
from services.ledger import JobLedger, JobProgress
from services.producer import IngestRequest, Producer, new_job_id
from services.queue import QUEUE, celery_app, live_workers
from services.settings import Settings
from ui import runtime

JOB = "ingest-job"


@st.cache_resource(show_spinner=False)
def _producer_errors() -> dict[str, str]:
    """Job id -> why its producer thread stopped; one dict per server process (a page's
    module-level state would be made anew on every rerun)."""
    return {}


@st.cache_data(ttl=5, show_spinner=False)
def _workers() -> list[str]:
    return live_workers(runtime.settings(), timeout=0.5)


def _produce(
    request: IngestRequest, job_id: str, config: Settings, ledger: JobLedger, errors: dict[str, str]
) -> None:
    """The producer, in a thread of its own: it walks the folder while the page follows the job.
    Everything it needs is passed in (Streamlit's caches belong to the script's thread)."""
    try:
        producer = Producer(config, ledger, celery_app(config), config.effective_milvus_uri)
        producer.start(request, job_id)
    except LookalikeError as exc:
        errors[job_id] = str(exc)
    except Exception as exc:  # shown on the page; the thread must not die silently
        errors[job_id] = f"{type(exc).__name__}: {exc}"


def _start_form() -> None:
    config = runtime.settings()
    with st.form("ingest-start"):
        folder = st.text_input("Folder (or file) on the server", key="ingest-folder")
        left, middle, right = st.columns([2, 2, 1])
        source = left.text_input("Source label", key="ingest-source")
        tags = middle.text_input("Tags (comma-separated)", key="ingest-tags")
        recursive = right.checkbox("Subfolders", value=True, key="ingest-recursive")
        submitted = st.form_submit_button("Start ingestion")
    if not submitted:
        return
    root = Path(folder.strip()).expanduser()
    if not folder.strip() or not root.exists():
        st.error(f"No such folder or file on the server: {folder.strip() or '(empty)'}")
        return
    runtime.ledger().ping()
    request = IngestRequest(
        roots=(str(root.resolve()),),
        recursive=recursive,
        source=source.strip(),
        tags=tuple(t.strip() for t in tags.split(",") if t.strip()),
        collection=config.collection,
    )
    job_id = new_job_id()
    arguments = (request, job_id, config, runtime.ledger(), _producer_errors())
    threading.Thread(target=_produce, args=arguments, daemon=True).start()
    st.session_state[JOB] = job_id


def _rate_and_eta(progress: JobProgress) -> str:
    done = progress.ingested + progress.failed
    elapsed = max((progress.updated_at or time.time()) - progress.created_at, 1e-6)
    if done == 0 or progress.created_at == 0:
        return "waiting for the first batch"
    rate = done / elapsed
    if progress.finished:
        return f"{rate:.1f} images/s over {elapsed:.1f} s"
    remaining = max(progress.queued - done, 0)
    return f"{rate:.1f} images/s, about {remaining / rate:.0f} s left"


def _job(job_id: str) -> None:
    progress = runtime.ledger().progress(job_id)
    done = progress.ingested + progress.failed
    fraction = done / progress.queued if progress.queued else (1.0 if progress.finished else 0.0)
    state = (
        "finished"
        if progress.finished
        else ("walking the folder" if progress.producing else "running")
    )
    st.markdown(f"**Job {job_id}** · {state} · {', '.join(progress.roots)}")
    st.progress(min(fraction, 1.0), text=f"{done} of {progress.queued} queued")
    cols = st.columns(6)
    cols[0].metric("Found", progress.found)
    cols[1].metric("Ingested", progress.ingested)
    cols[2].metric("Skipped (stored)", progress.skipped)
    cols[3].metric("Failed", progress.failed)
    cols[4].metric("Near duplicates", progress.near_duplicates)
    cols[5].metric("Exact duplicates", progress.exact_duplicates)
    st.caption(_rate_and_eta(progress))
    errors = _producer_errors()
    if job_id in errors:
        st.error(f"The producer stopped: {errors[job_id]}")
    if progress.failures:
        st.markdown("**Failures**")
        st.dataframe(
            {
                "path": [f.path for f in progress.failures],
                "reason": [f.error for f in progress.failures],
            },
            width="stretch",
            hide_index=True,
        )


@st.fragment(run_every=1.0)
def _live() -> None:
    with runtime.shown_errors():
        ledger = runtime.ledger()
        depth = ledger.queue_depth(QUEUE)
        workers = _workers()
        st.markdown(
            f"Queue depth **{depth}** · **{len(workers)}** live worker(s)"
            + (f": {', '.join(workers)}" if workers else " (start one: `lookalike worker`)")
        )
        job_id = st.session_state.get(JOB)
        recent = ledger.recent_jobs()
        if job_id is None and recent:
            job_id = recent[0]
        if job_id is not None and (ledger.job_exists(job_id) or job_id in _producer_errors()):
            _job(job_id)
        elif job_id is not None:
            st.caption(f"Job {job_id} is starting…")
        if recent:
            jobs = [ledger.progress(j, with_failures=False) for j in recent]
            st.markdown("**Recent jobs**")
            st.dataframe(
                {
                    "job": [j.job_id for j in jobs],
                    "state": [j.state for j in jobs],
                    "queued": [j.queued for j in jobs],
                    "ingested": [j.ingested for j in jobs],
                    "failed": [j.failed for j in jobs],
                    "roots": [", ".join(j.roots) for j in jobs],
                },
                width="stretch",
                hide_index=True,
            )


def render() -> None:
    st.title("Ingest")
    with runtime.shown_errors():
        _start_form()
    _live()


render()
