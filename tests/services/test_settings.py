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
