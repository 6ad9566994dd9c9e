"""The inference worker's settings of operator defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from inference import InferenceSettings


def test_the_system_prompt_file_is_read_at_start(tmp_path: Path) -> None:
    path = tmp_path / "persona.txt"
    path.write_text("  Be kind.\n", encoding="utf-8")
    assert InferenceSettings(system_prompt_file=path).system_prompt == "Be kind."
    with pytest.raises(ValidationError, match="not both"):
        InferenceSettings(system_prompt="x", system_prompt_file=path)
    with pytest.raises(ValidationError, match="cannot be read"):
        InferenceSettings(system_prompt_file=tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="is empty"):
        InferenceSettings(system_prompt_file=tmp_path / "empty.txt")


def test_unset_defaults_leave_the_provider_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LIVECHAT_DEFAULT_MAX_TOKENS", "LIVECHAT_DEFAULT_TEMPERATURE", "GROQ_MODEL"):
        monkeypatch.setenv(name, "")  # docker-compose passes `${VAR:-}`
    settings = InferenceSettings()
    assert (settings.default_max_tokens, settings.default_temperature) == (None, None)
    assert settings.groq_model is None
    with pytest.raises(ValidationError):
        InferenceSettings(default_temperature=3)
