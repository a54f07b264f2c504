"""`[[mcp_servers]]` in the agent profile: what loads, and the clear errors for what does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_settings
from voice_agent.exceptions import ConfigError
from voice_agent.profile import AgentProfile

HEAD = 'instructions = "Help."\ngreeting = "Hi."\n'


def _load(tmp_path: Path, body: str) -> AgentProfile:
    path = tmp_path / "agent.toml"
    path.write_text(HEAD + body)
    return AgentProfile.from_file(path, settings=make_settings())


def test_stdio_and_http_servers_load_with_their_tools_allowed(tmp_path: Path) -> None:
    """A stdio and an https server, their `<server>.<tool>` names in the allowlist."""
    profile = _load(
        tmp_path,
        '[tools]\nallowed = ["get_incident_status", "orders.lookup_order", "crm.find.v2"]\n'
        '[[mcp_servers]]\nname = "orders"\ncommand = ["python", "orders_mcp.py"]\n'
        'destructive = ["refund_order"]\ntimeout_s = 3.5\n'
        '[[mcp_servers]]\nname = "crm"\nurl = "https://crm.internal/mcp"\n'
        'headers_env = { Authorization = "CRM_MCP_TOKEN" }\n',
    )
    orders, crm = profile.mcp_servers
    assert (orders.transport, orders.command, orders.destructive, orders.timeout_s) == (
        "stdio",
        ("python", "orders_mcp.py"),
        ("refund_order",),
        3.5,
    )
    assert (crm.transport, crm.headers_env) == ("http", {"Authorization": "CRM_MCP_TOKEN"})
    assert profile.directory == tmp_path.resolve()  # where stdio servers start


@pytest.mark.parametrize(
    ("server", "field", "says"),
    [
        ('name = "orders"\ncomand = ["x"]', "mcp_servers.0.comand", "Extra inputs"),
        (
            'name = "orders"\ncommand = ["x"]\nurl = "https://o.example/mcp"',
            "mcp_servers.0",
            "exactly one of `command`",
        ),
        ('name = "orders"', "mcp_servers.0", "exactly one of `command`"),
        ('name = "orders"\nurl = "ftp://o.example/mcp"', "mcp_servers.0.url", "http(s)://"),
        (
            'name = "orders"\ncommand = ["x"]\nheaders_env = { Authorization = "T" }',
            "mcp_servers.0",
            "`headers_env` applies to `url` servers only",
        ),
        (
            'name = "orders"\nurl = "http://o.example/mcp"\nheaders_env = { Authorization = "T" }',
            "mcp_servers.0",
            "clear text",
        ),
        (
            'name = "orders"\nurl = "https://o.ex/mcp"\nheaders_env = { Authorization = "1x" }',
            "mcp_servers.0.headers_env",
            "not an environment variable name",
        ),
        ('name = "or.ders"\ncommand = ["x"]', "mcp_servers.0.name", "should match pattern"),
    ],
)
def test_a_bad_server_entry_is_a_config_error_naming_the_field(
    tmp_path: Path, server: str, field: str, says: str
) -> None:
    """Unknown keys, both or neither of command and url, a bad URL, misplaced or clear-text
    headers, a bad variable name, a dotted server name: each names its field."""
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, f"[[mcp_servers]]\n{server}\n")
    assert f"{field}: " in str(raised.value)
    assert says in str(raised.value)


def test_an_allowed_tool_of_an_undeclared_server_is_a_config_error(tmp_path: Path) -> None:
    """`crm.find` in the allowlist without a `crm` server: say so at load, not at call time."""
    with pytest.raises(ConfigError, match=r"tools\.allowed: 'crm\.find' names MCP server 'crm'"):
        _load(
            tmp_path,
            '[tools]\nallowed = ["crm.find"]\n[[mcp_servers]]\nname = "orders"\ncommand = ["x"]\n',
        )


def test_two_servers_with_one_name_is_a_config_error(tmp_path: Path) -> None:
    """Names prefix tool names, so they must be unique."""
    entry = '[[mcp_servers]]\nname = "orders"\ncommand = ["x"]\n'
    with pytest.raises(ConfigError, match="two servers are named 'orders'"):
        _load(tmp_path, entry + entry)
