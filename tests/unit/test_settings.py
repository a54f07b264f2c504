"""Settings: validation at start-up, and `.env.example` in step with the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.helpers import make_settings
from voice_agent.cli import main
from voice_agent.settings import (
    AuthMode,
    LogFormat,
    OtelSampler,
    Settings,
    STTProviderKind,
    TTSProviderKind,
    env_name,
)

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def _example_entries() -> dict[str, str]:
    entries = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            entries[name.strip()] = value.strip()
    return entries


def test_env_example_lists_every_setting_with_its_default() -> None:
    """Each setting appears in .env.example once, with the default the code uses."""
    entries = _example_entries()
    names = {env_name(n): (n, f) for n, f in Settings.model_fields.items()}
    assert set(entries) == set(names)
    defaults = Settings(_env_file=None, **{n: f.default for n, f in Settings.model_fields.items()})
    for var, (field_name, _) in names.items():
        default = getattr(defaults, field_name)
        text = entries[var]
        if default is None or default == ():
            assert text == "", var
        elif isinstance(default, bool):
            assert text == str(default).lower(), var
        else:
            assert text == str(getattr(default, "value", default)), var


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
        {"otel_exporter_otlp_endpoint": "collector:4318"},
        {"otel_resource_attributes": "deployment.environment"},
        {"otel_traces_sampler": "sometimes"},
        {"otel_traces_sampler_arg": 1.5},
        {"local_stt_window_s": 3},
        {"local_stt_window_s": 31},
        {"local_stt_threads": 0},
        {"eou_min_confidence": 1.0},
        {"eou_min_confidence": -0.1},
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


REFUSED = object()  # the only valid value is the default: an invalid one must be refused

# A value unlike the default for every variable .env.example documents, and the field value it
# must become. Variables that only make sense together are set with their companions.
SAMPLES: dict[str, tuple[str, object]] = {
    "LIVEKIT_URL": ("wss://lk.example.com", "wss://lk.example.com"),
    "LIVEKIT_API_KEY": ("APIkey", "APIkey"),
    "LIVEKIT_API_SECRET": ("lk-secret", "lk-secret"),
    "LIVEKIT_SERVER_BIN": ("/opt/lk/server", Path("/opt/lk/server")),
    "OPENAI_API_KEY": ("sk-test", "sk-test"),
    "OPENAI_BASE_URL": ("http://127.0.0.1:9999/v1", "http://127.0.0.1:9999/v1"),
    "VOICE_AGENT_STT": ("local", STTProviderKind.LOCAL),
    "VOICE_AGENT_LLM": ("anthropic", REFUSED),  # openai, the default, is its only value
    "VOICE_AGENT_TTS": ("local", TTSProviderKind.LOCAL),
    "VOICE_AGENT_STT_LANGUAGE": ("de", "de"),
    "VOICE_AGENT_LOCAL_STT_WINDOW_S": ("15", 15),
    "VOICE_AGENT_LOCAL_STT_THREADS": ("2", 2),
    "VOICE_AGENT_STT_FALLBACK": ("local", STTProviderKind.LOCAL),
    "VOICE_AGENT_LLM_FALLBACK": ("openai", "openai"),
    "VOICE_AGENT_TTS_FALLBACK": ("local", TTSProviderKind.LOCAL),
    "VOICE_AGENT_FALLBACK_AFTER_S": ("1.5", 1.5),
    "VOICE_AGENT_STT_MODEL": ("whisper-1", "whisper-1"),
    "VOICE_AGENT_LLM_MODEL": ("gpt-x", "gpt-x"),
    "VOICE_AGENT_TTS_MODEL": ("tts-1", "tts-1"),
    "VOICE_AGENT_TTS_VOICE": ("verse", "verse"),
    "VOICE_AGENT_PROVIDER_TIMEOUT_S": ("7.5", 7.5),
    "VOICE_AGENT_INSTRUCTIONS": ("Be brief.", "Be brief."),
    "VOICE_AGENT_GREETING": ("Hi there.", "Hi there."),
    "VOICE_AGENT_EOU_SILENCE_MS": ("700", 700),
    "VOICE_AGENT_MIN_INTERRUPTION_MS": ("600", 600),
    "VOICE_AGENT_SPEECH_PAUSE_MS": ("250", 250),
    "VOICE_AGENT_TURN_DETECTOR": ("silence", "silence"),
    "VOICE_AGENT_EOU_INCOMPLETE_MS": ("1800", 1800),
    "VOICE_AGENT_EOU_COMPLETE_MS": ("150", 150),
    "VOICE_AGENT_STT_PUNCTUATES": ("false", False),
    "VOICE_AGENT_SMART_TURN_THRESHOLD": ("0.7", 0.7),
    "VOICE_AGENT_EOU_UNSURE_MS": ("900", 900),
    "VOICE_AGENT_EOU_LEVEL_PITCH_MS": ("800", 800),
    "VOICE_AGENT_EOU_MIN_CONFIDENCE": ("0.45", 0.45),
    "VOICE_AGENT_SMART_TURN_MODEL": ("/opt/models/st.onnx", Path("/opt/models/st.onnx")),
    "XDG_CACHE_HOME": ("/var/cache/u", Path("/var/cache/u")),
    "VOICE_AGENT_SPECULATION_MAX_PER_TURN": ("0", 0),
    "VOICE_AGENT_SPECULATION_MAX_WASTED": ("7", 7),
    "VOICE_AGENT_BACKCHANNEL_MAX_MS": ("0", 0),
    "VOICE_AGENT_MAX_CALL_S": ("90", 90.0),
    "VOICE_AGENT_USER_SILENCE_TIMEOUT_S": ("12", 12.0),
    "VOICE_AGENT_MAX_CONSECUTIVE_FAILURES": ("5", 5),
    "VOICE_AGENT_CONTEXT_TOKEN_BUDGET": ("2000", 2000),
    "VOICE_AGENT_MAX_JOBS": ("7", 7),
    "VOICE_AGENT_DRAIN_TIMEOUT_S": ("30", 30.0),
    "VOICE_AGENT_JOURNAL_RECOVERY_INTERVAL_S": ("15", 15.0),
    "VOICE_AGENT_WORKER_METRICS_PORT": ("9102", 9102),
    "VOICE_AGENT_TOOLS_PATH": ("my_tools", Path("my_tools")),
    "VOICE_AGENT_PROFILE": ("agent.toml", Path("agent.toml")),
    "VOICE_AGENT_TOOL_TIMEOUT_S": ("2.5", 2.5),
    "VOICE_AGENT_TOOL_BREAKER_FAILURES": ("4", 4),
    "VOICE_AGENT_TOOL_BREAKER_COOLDOWN_S": ("12", 12.0),
    "VOICE_AGENT_CONFIRM_TIMEOUT_S": ("9", 9.0),
    "REDIS_URL": ("redis://10.0.0.5:6379/2", "redis://10.0.0.5:6379/2"),
    "VOICE_AGENT_REDIS_RETRY_MAX_S": ("5", 5.0),
    "VOICE_AGENT_DATABASE_URL": ("postgresql://u@db/x", "postgresql://u@db/x"),
    "VOICE_AGENT_DATABASE_TIMEOUT_S": ("3", 3.0),
    "VOICE_AGENT_STAFF_TOKEN": ("staff-token", "staff-token"),
    "VOICE_AGENT_POSTCALL_MAX_TRIES": ("2", 2),
    "VOICE_AGENT_POSTCALL_CONCURRENCY": ("8", 8),
    "VOICE_AGENT_POSTCALL_RETRY_MAX_S": ("60", 60.0),
    "VOICE_AGENT_POSTCALL_ATTEMPT_TIMEOUT_S": ("45", 45.0),
    "VOICE_AGENT_POSTCALL_REVIEW_CONFIDENCE": ("0.9", 0.9),
    "VOICE_AGENT_POSTCALL_WEBHOOK_URL": (
        "https://hooks.example.com/x",
        "https://hooks.example.com/x",
    ),
    "VOICE_AGENT_POSTCALL_WEBHOOK_SECRET": ("hook-secret", "hook-secret"),
    "VOICE_AGENT_HOST": ("0.0.0.0", "0.0.0.0"),  # noqa: S104 - a value under test, not a bind
    "VOICE_AGENT_PORT": ("9090", 9090),
    "VOICE_AGENT_PUBLIC_RTC_URL": ("wss://rtc.example.com", "wss://rtc.example.com"),
    "VOICE_AGENT_AUTH_MODE": ("jwt", AuthMode.JWT),
    "VOICE_AGENT_AUTH_JWT_SECRET": ("j" * 32, "j" * 32),
    "VOICE_AGENT_AUTH_JWT_PUBLIC_KEY_FILE": ("/etc/app/jwt.pem", Path("/etc/app/jwt.pem")),
    "VOICE_AGENT_AUTH_JWT_AUDIENCE": ("voice", "voice"),
    "VOICE_AGENT_AUTH_JWT_ISSUER": ("https://app.example.com", "https://app.example.com"),
    "VOICE_AGENT_TOKEN_TTL_SECONDS": ("120", 120),
    "VOICE_AGENT_AGENT_NAME": ("helpdesk", "helpdesk"),
    "VOICE_AGENT_TOKEN_RATE_LIMIT": ("5/second", "5/second"),
    "VOICE_AGENT_MAX_BODY_BYTES": ("8192", 8192),
    "VOICE_AGENT_CORS_ORIGINS": ("https://a.example.com", ("https://a.example.com",)),
    "VOICE_AGENT_TRUST_FORWARDED_FOR": ("true", True),
    "VOICE_AGENT_LOG_LEVEL": ("debug", "debug"),
    "VOICE_AGENT_LOG_FORMAT": ("json", LogFormat.JSON),
    "VOICE_AGENT_DATA_DIR": ("/var/lib/voice", Path("/var/lib/voice")),
    "VOICE_AGENT_METRICS_TOKEN": ("metrics-token", "metrics-token"),
    "VOICE_AGENT_READINESS_TIMEOUT_S": ("1.5", 1.5),
    "VOICE_AGENT_RESTART_LIMIT": ("2", 2),
    "VOICE_AGENT_RESTART_WINDOW_S": ("30", 30.0),
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("http://collector:4318", "http://collector:4318"),
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": (
        "https://collector:4318/custom",
        "https://collector:4318/custom",
    ),
    "OTEL_EXPORTER_OTLP_PROTOCOL": ("grpc", REFUSED),  # http/protobuf is the only one spoken
    "OTEL_EXPORTER_OTLP_HEADERS": ("api-key=abc%20def", "api-key=abc%20def"),
    "OTEL_EXPORTER_OTLP_TIMEOUT": ("2500", 2500),
    "OTEL_EXPORTER_OTLP_COMPRESSION": ("gzip", "gzip"),
    "OTEL_EXPORTER_OTLP_CERTIFICATE": ("/etc/otel/ca.pem", Path("/etc/otel/ca.pem")),
    "OTEL_TRACES_EXPORTER": ("none", "none"),
    "OTEL_SERVICE_NAME": ("support-line", "support-line"),
    "OTEL_RESOURCE_ATTRIBUTES": ("deployment.environment=prod", "deployment.environment=prod"),
    "OTEL_TRACES_SAMPLER": ("traceidratio", OtelSampler.TRACEIDRATIO),
    "OTEL_TRACES_SAMPLER_ARG": ("0.25", 0.25),
    "OTEL_BSP_SCHEDULE_DELAY": ("200", 200),
    "OTEL_SDK_DISABLED": ("true", True),
}
COMPANIONS: dict[str, dict[str, str]] = {
    "VOICE_AGENT_AUTH_MODE": {
        "VOICE_AGENT_AUTH_JWT_SECRET": "j" * 32,
        "VOICE_AGENT_AUTH_JWT_AUDIENCE": "voice",
        "VOICE_AGENT_AUTH_JWT_ISSUER": "https://app.example.com",
    },
}


def test_every_documented_variable_has_a_sample() -> None:
    """The table below covers exactly the variables .env.example documents."""
    assert set(SAMPLES) == set(_example_entries())


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_documented_variable_is_read_from_the_environment(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setting the documented variable (alone, or with what it needs) changes its setting."""
    for other in _example_entries():
        monkeypatch.delenv(other, raising=False)
    raw, expected = SAMPLES[name]
    for key, value in {name: raw, **COMPANIONS.get(name, {})}.items():
        monkeypatch.setenv(key, value)
    field = next(f for f in Settings.model_fields if env_name(f) == name)
    if expected is REFUSED:
        with pytest.raises(ValidationError, match=f"{field}|{name}"):  # an alias names itself
            Settings(_env_file=None)
        return
    value = getattr(Settings(_env_file=None), field)
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    assert value == expected
    assert value != Settings.model_fields[field].default
