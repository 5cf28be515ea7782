"""Group commit for host -> folder runs (``backup``, ``copy NAME: ./folder``).

The transfer workers only fetch (``--transfers`` downloads in flight); every fetched item
is handed to one committer, which writes whatever has gathered meanwhile as one group:
hashed (the bodies are fetched without their digest and hashed here, in one worker
thread, while the event loop goes on fetching), staged with their sidecars, one
filesystem flush, renamed, one more flush for the renames, then recorded and committed
to state (so an item still counts as done only once its bytes and its sidecar are on
disk and recorded). While a group is being written the workers keep fetching, so a slow
flush makes the next group larger instead of stalling the downloads; one writer thread
instead of one per worker also keeps the threads from fighting over the interpreter lock.

What waits for the committer is bounded by a byte budget (bodies held in memory, plus a
small charge per item, so many tiny items are bounded too): a worker whose item does not
fit waits until a group is written, so memory stays flat whatever the host's speed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

if TYPE_CHECKING:
    from imgsync.pipeline.copy import Candidate, CopyRun
    from imgsync.pipeline.transfer import Body

BUDGET_BYTES = 16 * 1024 * 1024  # fetched bytes waiting to be written
ITEM_CHARGE = 16 * 1024  # counted per waiting item besides its bytes in memory
GROUP_MAX = 512  # items written (and flushed) at once at most
# a group's downloads are hashed in a worker thread from this many bytes (~4 ms of
# SHA-256 + MD5); a smaller group is hashed at once, in the loop
HASH_IN_THREAD = 1024 * 1024


class ByteBudget:
    """A weighted semaphore: :meth:`take` waits while ``n`` more would pass the limit
    (one item is always let through, however large, so nothing waits forever)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._changed = anyio.Event()

    async def take(self, n: int) -> None:
        while self.held > 0 and self.held + n > self.limit:
            await self._changed.wait()
        self.held += n

    def give(self, n: int) -> None:
        self.held -= n
        self._changed.set()
        self._changed = anyio.Event()


class Committer:
    """Writes fetched host items into a folder destination in groups (see the module)."""

    def __init__(self, run: CopyRun) -> None:
        self.copy = run
        self.budget = ByteBudget(BUDGET_BYTES)
        self._send: MemoryObjectSendStream[Candidate]
        self._recv: MemoryObjectReceiveStream[Candidate]
        self._send, self._recv = anyio.create_memory_object_stream["Candidate"](
            max_buffer_size=GROUP_MAX * 4
        )

    @staticmethod
    def charge(c: Candidate) -> int:
        return ITEM_CHARGE + (c.body.in_memory if c.body is not None else 0)

    async def put(self, c: Candidate) -> None:
        """Hand a fetched item on (waits while the budget is spent)."""
        await self.budget.take(self.charge(c))
        c.handed = True
        try:  # no turn of the event loop per item while there is room (there nearly
            self._send.send_nowait(c)  # always is: the budget holds the workers back)
        except anyio.WouldBlock:
            await self._send.send(c)

    def close(self) -> None:
        """No more items: :meth:`run` writes what is left and returns."""
        self._send.close()

    async def run(self) -> None:
        async with self._recv:
            while True:
                try:
                    group = [await self._recv.receive()]
                except anyio.EndOfStream:
                    return
                while len(group) < GROUP_MAX:
                    try:
                        group.append(self._recv.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                charged = sum(self.charge(c) for c in group)
                try:
                    bodies = [c.body for c in group if c.body is not None and not c.body.hashed]
                    if sum(b.in_memory for b in bodies) >= HASH_IN_THREAD:
                        # hashing lets the interpreter lock go: the loop goes on meanwhile
                        await anyio.to_thread.run_sync(_hash_all, bodies)
                    else:  # less than a thread hop costs on a busy machine
                        _hash_all(bodies)
                    await self.copy.commit_group(group)
                finally:
                    self.budget.give(charged)


def _hash_all(bodies: list[Body]) -> None:
    for body in bodies:
        body.hash_now()
