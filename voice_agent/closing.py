"""`async with` for anything closed by `aclose()`: one base instead of the same two methods in
every class that holds a connection, a pool or a child process."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class AsyncClosing(ABC):
    """Entering returns the object itself; leaving, however the block ends, awaits `aclose()`."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release what the object holds; safe to call more than once."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
