"""Settings: validation at start-up, and `.env.example` in step with the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.helpers import make_settings
from voice_agent.cli import main
from voice_agent.settings import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def _example_entries() -> dict[str, str]:
    entries = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            entries[name.strip()] = value.strip()
    return entries


def _env_name(field: Any) -> str:
    return str(field.validation_alias.choices[0])


def test_env_example_lists_every_setting_with_its_default() -> None:
    """Each setting appears in .env.example once, with the default the code uses."""
    entries = _example_entries()
    names = {_env_name(f): (n, f) for n, f in Settings.model_fields.items()}
    assert set(entries) == set(names)
    defaults = Settings(_env_file=None, **{n: f.default for n, f in Settings.model_fields.items()})
    for env_name, (field_name, _) in names.items():
        default = getattr(defaults, field_name)
        text = entries[env_name]
        if default is None or default == ():
            assert text == "", env_name
        elif isinstance(default, bool):
            assert text == str(default).lower(), env_name
        else:
            assert text == str(getattr(default, "value", default)), env_name


@pytest.mark.parametrize(
    "overrides",
    [
        {"token_ttl_seconds": 59},
        {"token_ttl_seconds": 3601},
        {"token_rate_limit": "lots"},
        {"auth_mode": "magic"},
        {"auth_mode": "jwt"},
        {"auth_mode": "jwt", "auth_jwt_secret": "s" * 32},
        {"cors_origins": "*"},
        {"livekit_url": "127.0.0.1:7880"},
        {"agent_name": "bad name"},
    ],
)
def test_invalid_settings_are_refused(overrides: dict[str, Any]) -> None:
    """Out-of-range, malformed or incomplete settings fail validation at start-up."""
    with pytest.raises(ValidationError):
        make_settings(**overrides)


def test_cli_reports_invalid_configuration_by_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`voice-agent serve` with a bad setting exits 2 and names the setting."""
    monkeypatch.setenv("VOICE_AGENT_TOKEN_TTL_SECONDS", "5")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "VOICE_AGENT_TOKEN_TTL_SECONDS" in err


def test_serve_without_livekit_credentials_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without LIVEKIT_API_KEY/SECRET, serve stops at once and says what to set."""
    monkeypatch.delenv("LIVEKIT_API_KEY", raising=False)
    monkeypatch.delenv("LIVEKIT_API_SECRET", raising=False)
    monkeypatch.chdir(ENV_EXAMPLE.parent / "tests")  # no .env here
    assert main(["serve", "--port", "0"]) == 2
    assert "LIVEKIT_API_KEY" in capsys.readouterr().err


def test_env_example_used_as_env_file_loads_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copying .env.example to .env changes nothing: empty values mean "use the default"."""
    (tmp_path / ".env").write_text(ENV_EXAMPLE.read_text())
    monkeypatch.chdir(tmp_path)
    for name in _example_entries():
        monkeypatch.delenv(name, raising=False)
    loaded = Settings()
    defaults = Settings(_env_file=None)
    assert loaded == defaults
