"""Example MCP server: the help desk's directory accounts, offline on tools/data/accounts.json.

The example support profile (deploy/profiles/support.toml) starts it over stdio; the agent may
use `accounts.get_account_status` and `accounts.unlock_account`, never `delete_account`. Run it
alone with `python tools/mcp/accounts_mcp.py` (stdio) or `--http PORT` (streamable HTTP on
127.0.0.1). See docs/tool-author-guide.md, "Tools from an MCP server".
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations
from pydantic import Field

ACCOUNTS = Path(__file__).resolve().parents[1] / "data" / "accounts.json"
IDEMPOTENCY_META = "voice-agent/idempotency_key"  # sent by the voice agent with every call

Username = Annotated[str, Field(pattern=r"^[a-z][a-z0-9.]{1,31}$", description="e.g. ada.lovelace")]

server = MCPServer("accounts", instructions="Directory accounts of Example Corp employees.")
_accounts: dict[str, dict[str, Any]] = json.loads(ACCOUNTS.read_text(encoding="utf-8"))
# What each idempotency key already did. Kept in memory for the example; a real server stores the
# key with the change it made, in the same transaction, so a repeat after a restart is caught too.
_done: dict[str, dict[str, Any]] = {}


@server.tool(annotations=ToolAnnotations(title="Account status", read_only_hint=True))
def get_account_status(username: Username) -> dict[str, Any]:
    """Whether an employee's account is locked, when its password expires, and whether
    multi-factor sign-in is set up. Use it before suggesting an unlock or a password reset."""
    account = _accounts.get(username)
    if account is None:
        return {"found": False, "username": username}
    return {"found": True, "username": username, **account}


@server.tool(annotations=ToolAnnotations(title="Unlock account", destructive_hint=False))
def unlock_account(username: Username, ctx: Context) -> dict[str, Any]:
    """Unlock an employee's account after too many failed sign-ins."""
    key = (ctx.request_context.meta or {}).get(IDEMPOTENCY_META)
    if key in _done:
        return _done[key]  # the same request again: report what it did, do nothing new
    account = _accounts.get(username)
    if account is None:
        raise ValueError(f"There is no account named {username}.")  # isError: the model hears it
    was_locked = account["locked"]
    account["locked"] = False
    result = {"username": username, "unlocked": was_locked, "at": int(time.time())}
    if key is not None:
        _done[key] = result
    return result


@server.tool()
def delete_account(username: Username) -> dict[str, Any]:
    """Delete an employee's account for good. (Unannotated, so destructive; the support profile
    does not allow it at all.)"""
    _accounts.pop(username, None)
    return {"username": username, "deleted": True}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP")
    port = parser.parse_args().http
    if port is None:
        server.run()
    else:
        server.run("streamable-http", host="127.0.0.1", port=port)
