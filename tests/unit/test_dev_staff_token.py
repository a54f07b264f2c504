"""`voice-agent dev` gives staff a way into the reports: a generated token when none is set."""

from __future__ import annotations

from tests.helpers import make_settings
from voice_agent.devstack.supervisor import DevStack

JWT = {
    "auth_mode": "jwt",
    "auth_jwt_secret": "host-app-signing-secret-0123456789abcdef",
    "auth_jwt_audience": "voice-agent",
    "auth_jwt_issuer": "https://app.example.com",
}


def test_anonymous_dev_without_a_staff_token_generates_one() -> None:
    """Anonymous mode, no staff token: a fresh one goes to the token service and the banner."""
    stack = DevStack(make_settings())
    token = stack.generated_staff_token
    assert token is not None
    assert len(token) >= 32
    assert stack._staff_env() == {"VOICE_AGENT_STAFF_TOKEN": token}
    banner = stack.reports_banner("http://127.0.0.1:8080/")
    assert "http://127.0.0.1:8080/reports" in banner
    assert token in banner


def test_each_dev_run_gets_its_own_token() -> None:
    """Two runs never share a generated token."""
    assert DevStack(make_settings()).generated_staff_token != (
        DevStack(make_settings()).generated_staff_token
    )


def test_a_configured_staff_token_is_used_and_not_printed() -> None:
    """A staff token from the environment is neither replaced nor echoed in the banner."""
    stack = DevStack(make_settings(staff_token="my-own-staff-token-0123456789"))
    assert stack.generated_staff_token is None
    assert stack._staff_env() == {}
    assert "my-own-staff-token" not in stack.reports_banner("http://127.0.0.1:8080/")


def test_jwt_mode_generates_no_staff_token() -> None:
    """In jwt mode staff sign in with a host JWT; no shared token is made up."""
    stack = DevStack(make_settings(**JWT))
    assert stack.generated_staff_token is None
    assert "staff" in stack.reports_banner("http://127.0.0.1:8080/")
