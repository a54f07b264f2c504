"""`GET /static/...`: the web client's files, revalidated on every load.

aiohttp's own static route answers a missing file with an empty 404 written by `FileResponse`
itself, past the error middleware; this route looks the file up first, so a miss is the JSON
404 every other route gives. Names resolve inside the root only (no `..`, no symlink out).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler


def _file_in(root: Path, name: str) -> Path | None:
    """The regular file `name` names inside `root`, or None (outside it, missing, unusable)."""
    try:
        if Path(name).is_absolute():
            return None
        path = (root / name).resolve()
        path.relative_to(root)
        return path if path.is_file() else None
    except (OSError, ValueError):  # NUL bytes, names too long, outside the root
        return None


def static_files(root: Path) -> Handler:
    """A handler for `/static/{name}` serving files under `root`."""
    root = root.resolve()

    async def serve(request: web.Request) -> web.StreamResponse:
        path = await asyncio.to_thread(_file_in, root, request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return serve


def add_routes(app: web.Application, *, root: Path) -> None:
    """Serve `root` under `/static/`; unchanged files answer 304 to conditional requests."""
    app.router.add_get("/static/{name:.+}", static_files(root))
