"""A budget of decoded pixels shared by every request, so concurrent uploads cannot make the
service hold more decoded images at once than it was sized for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PixelBudget:
    """At most `total` pixels held by decodes at once; a request waits for room.

    An image larger than the whole budget (it may be up to PS_MAX_PIXELS) takes all of it:
    it is decoded alone rather than refused.
    """

    def __init__(self, total: int) -> None:
        if total <= 0:
            raise ValueError(f"the pixel budget must be positive, got {total}")
        self.total = total
        self.in_use = 0
        self.peak = 0  # highest in_use so far (tests, diagnostics)
        self._room = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        need = min(max(int(pixels), 1), self.total)
        async with self._room:
            await self._room.wait_for(lambda: self.in_use + need <= self.total)
            self.in_use += need
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            async with self._room:
                self.in_use -= need
                self._room.notify_all()
