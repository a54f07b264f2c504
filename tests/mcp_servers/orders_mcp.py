"""An MCP server for the tests: an order system with read-only tools (one taking a secret), a
destructive one, an additive one and one no profile allows.

    python orders_mcp.py --journal FILE              # stdio
    python orders_mcp.py --journal FILE --http PORT  # streamable HTTP on 127.0.0.1:PORT/mcp

Every start and every call is appended to the journal (JSON lines), so a test can see what
reached the server, with which `_meta`, in which process. Refunds are deduplicated on the
idempotency key in `_meta`, across restarts (the journal is the refund store). Order ORD-0000
never answers: a lookup hangs, a refund records itself and then hangs (a test kills the server
there). Over HTTP, with ORDERS_MCP_EXPECTED_TOKEN set, a request without
`Authorization: Bearer <that token>` gets 401.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations
from pydantic import Field, SecretStr

IDEMPOTENCY_META = "voice-agent/idempotency_key"
HANG_ORDER = "ORD-0000"

OrderId = Annotated[str, Field(pattern=r"^ORD-\d{4}$", description="The order number, ORD-1234")]

app = MCPServer("orders")
journal_path = Path(os.devnull)


def record(event: str, **fields: Any) -> None:
    """Append one event to the journal."""
    with journal_path.open("a", encoding="utf-8") as journal:
        journal.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n")


def _meta(ctx: Context) -> dict[str, Any]:
    return dict(ctx.request_context.meta or {})


def _refunds() -> dict[str, dict[str, Any]]:
    """Refunds already made, by idempotency key (read back from the journal)."""
    done: dict[str, dict[str, Any]] = {}
    if journal_path.is_file():
        for line in journal_path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            if entry["event"] == "refunded" and entry.get("key"):
                done.setdefault(entry["key"], entry)
    return done


@app.tool(annotations=ToolAnnotations(title="Look up an order", read_only_hint=True))
async def lookup_order(order_id: OrderId, ctx: Context) -> dict[str, Any]:
    """Look up where an order is and what it cost."""
    record("call", tool="lookup_order", order_id=order_id, meta=_meta(ctx))
    if order_id == HANG_ORDER:
        await anyio.sleep_forever()
    return {"order_id": order_id, "state": "shipped", "total": 42.5}


@app.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True))
async def refund_order(
    order_id: OrderId,
    amount: Annotated[float, Field(gt=0, le=500, description="Euros to refund")],
    ctx: Context,
) -> dict[str, Any]:
    """Refund part or all of an order to the customer's card."""
    key = _meta(ctx).get(IDEMPOTENCY_META)
    record("call", tool="refund_order", order_id=order_id, meta=_meta(ctx))
    if key is not None and (earlier := _refunds().get(key)) is not None:
        record("refund_repeat", key=key, refund_id=earlier["refund_id"])
        return {"refund_id": earlier["refund_id"], "amount": earlier["amount"], "repeat": True}
    refund_id = f"RF-{uuid.uuid4().hex[:8]}"
    record("refunded", key=key, refund_id=refund_id, order_id=order_id, amount=amount)
    if order_id == HANG_ORDER:
        await anyio.sleep_forever()  # done, but the answer never leaves
    return {"refund_id": refund_id, "amount": amount, "repeat": False}


@app.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
async def add_order_note(order_id: OrderId, note: str, ctx: Context) -> dict[str, Any]:
    """Add a note to an order (additive: notes are never changed or removed)."""
    record("call", tool="add_order_note", order_id=order_id, meta=_meta(ctx))
    if note == "fail":
        raise ValueError("the note store is read-only today")
    return {"order_id": order_id, "noted": True}


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
async def verify_customer(order_id: OrderId, pin: SecretStr, ctx: Context) -> dict[str, Any]:
    """Check the customer's order PIN before sharing details."""
    record("call", tool="verify_customer", order_id=order_id, pin=pin.get_secret_value())
    return {"order_id": order_id, "verified": pin.get_secret_value() == "4321"}


@app.tool()
async def purge_orders(ctx: Context) -> dict[str, Any]:
    """Delete every order (no profile should allow this)."""
    record("call", tool="purge_orders", meta=_meta(ctx))
    return {"purged": True}


def _with_token(asgi: Any, token: str) -> Any:
    """The app, answering 401 to HTTP requests without the expected bearer token."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            record("unauthorized")
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await asgi(scope, receive, send)

    return guarded


def main() -> None:
    global journal_path
    parser = argparse.ArgumentParser()
    parser.add_argument("--journal", type=Path, required=True)
    parser.add_argument("--http", type=int, help="serve streamable HTTP on this port")
    args = parser.parse_args()
    journal_path = args.journal
    record("started", transport="http" if args.http else "stdio")
    if args.http is None:
        app.run()
        return
    import uvicorn

    asgi: Any = app.streamable_http_app()
    if token := os.environ.get("ORDERS_MCP_EXPECTED_TOKEN"):
        asgi = _with_token(asgi, token)
    uvicorn.run(asgi, host="127.0.0.1", port=args.http, log_level="warning")


if __name__ == "__main__":
    main()
