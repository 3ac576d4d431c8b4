"""Settings, read once at the edge (CLI, worker start, UI start) and passed down.

Every setting is an environment variable with the prefix ``LOOKALIKE_``. Unknown ``LOOKALIKE_*``
variables and contradictory combinations fail at start, naming the variable. ``LOOKALIKE_TEST_*``
variables belong to the test suite and are ignored here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.errors import ConfigError

# Objects larger than this are refused without being read (LOOKALIKE_MAX_SOURCE_BYTES).
DEFAULT_MAX_SOURCE_BYTES = 512 * 1024 * 1024

ENV_PREFIX = "LOOKALIKE_"
_TEST_PREFIX = "LOOKALIKE_TEST_"
HASH_ONLY = "none"
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
HASH_ONLY_INGEST_BATCH = 128  # files per task by default, hash-only
CLIP_INGEST_BATCH = 32  # files per task by default, with CLIP
# The embedded Milvus Lite server keeps its data in this file under LOOKALIKE_HOME.
EMBEDDED_DB_FILE = "milvus.db"


class Settings(BaseSettings):
    """All of lookalike's configuration. Build it with :meth:`from_env`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    home: Path = Field(
        default=Path(".lookalike"), description="Where the embedded stack keeps its data."
    )
    milvus_uri: str | None = Field(
        default=None, description="Milvus to use, e.g. http://milvus:19530. Unset: embedded server."
    )
    milvus_token: SecretStr | None = Field(
        default=None, description="Milvus credentials, 'user:password' or an API key."
    )
    milvus_port: int = Field(
        default=19530, ge=1, le=65535, description="Port of the embedded Milvus Lite server."
    )
    collection: str = Field(
        default="images", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$", description="Collection."
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Celery broker/ledger.")
    clip_model: str = Field(
        default=DEFAULT_CLIP_MODEL,
        description="Hugging Face model id, a local directory, or 'none' for hash-only.",
    )
    clip_precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto", description="auto: bf16 where the CPU/GPU supports it, else fp32."
    )
    clip_device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N.")
    clip_batch_size: int = Field(default=32, ge=1, le=4096)
    max_image_pixels: int = Field(
        default=100_000_000, ge=1, description="Images with more pixels are refused (bombs)."
    )
    max_source_bytes: int = Field(
        default=DEFAULT_MAX_SOURCE_BYTES,
        ge=1,
        description="Objects (s3://) larger than this many bytes are refused, not read.",
    )
    ingest_batch_size: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="Files per task; 0: 128 hash-only, 32 with CLIP (tasks of about a second).",
    )
    worker_concurrency: int = Field(
        default=0, ge=0, le=256, description="Worker processes; 0: one per CPU core."
    )
    visibility_timeout: int = Field(
        default=3600,
        ge=5,
        description="Seconds before Redis re-delivers a task whose worker vanished; "
        "must be longer than any task.",
    )
    max_crashes: int = Field(
        default=2, ge=1, le=10, description="Deliveries of a batch that may crash a worker."
    )
    stall_seconds: float = Field(
        default=20.0,
        gt=0,
        description="A job that has not moved for this long, with nothing queued or running, "
        "is reported stalled (its unaccounted files named, `--resume` to re-send them).",
    )
    watch_quiet_seconds: float = Field(
        default=2.0,
        gt=0,
        description="`lookalike watch` ingests a file once it has not changed for this long.",
    )
    dup_max_hamming: int = Field(
        default=8, ge=0, le=63, description="pHash radius of dedup on arrival."
    )
    arrival_patches: bool = Field(
        default=True,
        description="Dedup on arrival also matches patch codes (off-centre crops): each worker's "
        "index holds 16 codes a row (about 1 KB a row in memory).",
    )
    arrival_index: Literal["memory", "milvus"] = Field(
        default="memory",
        description="Where workers look for stored near-duplicates of arrivals: memory (an "
        "in-process index per worker, kept in step through Redis) or milvus (a range search "
        "per batch, which scans every row on Milvus Lite).",
    )
    search_patches: bool = Field(
        default=True,
        description="The UI's search also matches patch codes (off-centre crops): the UI server "
        "holds an index of them, loaded at its first search (about 1 KB a row in memory).",
    )
    dedup_max_hamming: int = Field(
        default=8, ge=0, le=63, description="pHash radius of `lookalike dedup` and the UI."
    )
    vector_cache: bool = Field(
        default=True,
        description="Keep a copy of the CLIP vectors under home/vectors (workers add each "
        "batch's new contents, bulk reads what they pull from Milvus), so that `lookalike "
        "dedup`, `lookalike clusters` and the Duplicates page read only hashes from Milvus.",
    )
    search_max_hamming: int = Field(
        default=10, ge=0, le=63, description="pHash radius of the Hamming stage of a search."
    )
    dup_min_cosine: float = Field(
        default=0.95, ge=-1.0, le=1.0, description="CLIP cosine of dedup on arrival."
    )
    ui_port: int = Field(default=8501, ge=1, le=65535, description="Port of the Streamlit UI.")
    ui_address: str = Field(
        default="127.0.0.1",
        description="Address the UI listens on; 0.0.0.0 only behind a password or a proxy.",
    )
    ui_password: SecretStr | None = Field(
        default=None, description="Asked by the UI before it shows anything; unset: no password."
    )

    @field_validator("milvus_uri")
    @classmethod
    def _check_uri(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://", "tcp://", "grpc://", "unix:")):
            raise ValueError("must be an http(s):// (or tcp://, unix:) address of a Milvus server")
        return value

    @field_validator("clip_device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value in {"auto", "cpu", "cuda", "mps"} or value.startswith("cuda:"):
            return value
        raise ValueError("must be auto, cpu, cuda, cuda:N or mps")

    @field_validator("redis_url")
    @classmethod
    def _check_redis(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("ui_password")
    @classmethod
    def _check_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is set but empty: give a password, or unset it for no password")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.milvus_token is not None and self.milvus_uri is None:
            raise ValueError(
                "LOOKALIKE_MILVUS_TOKEN is set but LOOKALIKE_MILVUS_URI is not: the embedded "
                "Milvus Lite server has no authentication; set LOOKALIKE_MILVUS_URI to a server"
            )
        return self

    @property
    def hash_only(self) -> bool:
        """True when no CLIP model is configured (``LOOKALIKE_CLIP_MODEL=none``)."""
        return self.clip_model.strip().lower() == HASH_ONLY

    @property
    def effective_ingest_batch_size(self) -> int:
        """Files per task. Hash-only, an image costs a few milliseconds and a task's fixed work
        (the queue, the ledger, the Milvus insert) is a large share of a small batch: 128 files
        ran 11-21% faster than 32 on two cores (docs/benchmarks.md). With CLIP an image costs
        tens of milliseconds and the batch size changes nothing measurable, so smaller tasks
        keep the workers evenly busy to the end of a job and progress fine-grained."""
        if self.ingest_batch_size:
            return self.ingest_batch_size
        return HASH_ONLY_INGEST_BATCH if self.hash_only else CLIP_INGEST_BATCH

    @property
    def milvus_secret(self) -> str | None:
        """The Milvus token in clear, for the client; None when unset."""
        return self.milvus_token.get_secret_value() if self.milvus_token else None

    @property
    def embedded_db_file(self) -> Path:
        """The data file of the embedded Milvus Lite server."""
        return self.home / EMBEDDED_DB_FILE

    @property
    def embedded_milvus(self) -> bool:
        """True when lookalike runs its own Milvus Lite server."""
        return self.milvus_uri is None

    @property
    def effective_milvus_uri(self) -> str:
        """The URI clients connect to: the configured one, or the embedded server's."""
        return self.milvus_uri or f"http://127.0.0.1:{self.milvus_port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read settings from ``environ`` (default: the process environment).

        Raises ConfigError naming the variable on unknown ``LOOKALIKE_*`` names or bad values.
        """
        env = dict(os.environ if environ is None else environ)
        known = {ENV_PREFIX + name.upper() for name in cls.model_fields}
        unknown = sorted(
            key
            for key in env
            if key.startswith(ENV_PREFIX) and not key.startswith(_TEST_PREFIX) and key not in known
        )
        if unknown:
            raise ConfigError(
                f"unknown setting {', '.join(unknown)}; known settings: {', '.join(sorted(known))}"
            )
        values: dict[str, object] = {
            key[len(ENV_PREFIX) :].lower(): value for key, value in env.items() if key in known
        }
        values.update(overrides)
        try:
            # Values are passed explicitly so that the environment is read exactly once, here.
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from exc


def setting_default(name: str) -> Any:
    """The default of setting ``name``: for the core's own defaults, kept in this one place."""
    return Settings.model_fields[name].default


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = [str(item) for item in error["loc"]]
        name = ENV_PREFIX + location[0].upper() if location else "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{name}: {message}")
    return "invalid settings: " + "; ".join(parts)
