"""Settings are read once and refuse what is ambiguous, naming the variable."""

from __future__ import annotations

import pytest

from services.errors import ConfigError
from services.settings import Settings, setting_default


def test_defaults_and_overrides() -> None:
    settings = Settings.from_env({"LOOKALIKE_SEARCH_MAX_HAMMING": "6"})
    assert settings.search_max_hamming == 6
    assert settings.dedup_max_hamming == setting_default("dedup_max_hamming") == 8
    assert settings.ui_password is None


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_ui_password_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="LOOKALIKE_UI_PASSWORD"):
        Settings.from_env({"LOOKALIKE_UI_PASSWORD": value})


def test_unknown_variables_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="LOOKALIKE_SERCH_MAX_HAMMING"):
        Settings.from_env({"LOOKALIKE_SERCH_MAX_HAMMING": "6"})


@pytest.mark.parametrize(
    ("environ", "files_per_task"),
    [
        ({"LOOKALIKE_CLIP_MODEL": "none"}, 128),
        ({"LOOKALIKE_CLIP_MODEL": "openai/clip-vit-base-patch32"}, 32),
        ({"LOOKALIKE_CLIP_MODEL": "none", "LOOKALIKE_INGEST_BATCH_SIZE": "16"}, 16),
        ({"LOOKALIKE_CLIP_MODEL": "/models/clip", "LOOKALIKE_INGEST_BATCH_SIZE": "200"}, 200),
    ],
)
def test_files_per_task_follow_the_model_unless_set(
    environ: dict[str, str], files_per_task: int
) -> None:
    assert Settings.from_env(environ).effective_ingest_batch_size == files_per_task


def test_a_negative_batch_size_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="LOOKALIKE_INGEST_BATCH_SIZE"):
        Settings.from_env({"LOOKALIKE_INGEST_BATCH_SIZE": "-1"})
