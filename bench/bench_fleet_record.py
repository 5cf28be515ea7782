"""What sharing the job's record costs a fleet worker: the state writes of N uploads
(journal listed/uploaded, object, owner, location; each location sent to PostgreSQL at
once, as the leases need) with the record (journal, objects, owners, in batches) also
sent, against the same with only the locations sent, and against SQLite alone.

Also ``leases``: what leasing costs per upload in fleet mode: the uploads leased 16 at
a time (as the engine's groups are), each then marked as being sent (imgsync before
this version: one PostgreSQL transaction per upload; now the lease is the mark) and
released with its location; printed as shared-state transactions and seconds per
upload. For old vs new, run it again with ``PYTHONPATH=OLD_CHECKOUT`` (the old code is
imported; the script is the same).

Starts a throwaway PostgreSQL (tests/pgserver.py; needs PostgreSQL installed and the
postgres extra). Prints seconds and ratios (medians of 3 rounds, alternating)."""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from imgsync.models import RemoteItem
from imgsync.state import queries
from imgsync.state.store import StateStore

N = 2000
DST = "guizhan:https://dst.example#acct"
SRC = "gyazo:https://src.example#acct"


async def one_round(folder: Path, url: str | None, record: bool) -> float:
    async with StateStore(folder / "state.db", url) as store:
        if store.fleet is not None and not record:

            async def nothing(*_a: Any, **_k: Any) -> None:
                return None

            store.fleet.queue = nothing  # type: ignore[method-assign]
            store.fleet.journal = nothing  # type: ignore[method-assign]
        started = time.perf_counter()
        for start in range(0, N, 100):
            batch = [(f"s{i}", f"{i:064x}") for i in range(start, start + 100)]
            await queries.journal_many(store, "job", SRC, DST, "listed", batch)
            for sid, sha in batch:
                await queries.record_objects(store, [(sha, 1000, None, "image/png")])
                item = RemoteItem(remote_id=sid, name=f"{sid}.png", url=f"https://d/{sid}.png")
                await queries.record_locations(store, DST, [(sha, item)])
                await queries.record_owners(store, DST, SRC, [sha], wrote=True)
                await queries.journal(store, "job", SRC, sid, DST, "uploaded", sha256=sha)
                await store.flush()
        if store.fleet is not None:
            await store.fleet.push()
        return time.perf_counter() - started


async def lease_round(folder: Path, url: str) -> tuple[float, int]:
    """(seconds, shared-state transactions) for N uploads' leases, marks and releases."""
    from imgsync.state.fleet import Fleet

    count = 0
    real_tx = Fleet.tx

    async def counted(self: Fleet, work: Any) -> Any:
        nonlocal count
        count += 1
        return await real_tx(self, work)

    Fleet.tx = counted  # type: ignore[method-assign]
    try:
        async with StateStore(folder / "state.db", url) as store:
            mark = getattr(store, "sending", None)  # imgsync before the lease was the mark
            count = 0
            started = time.perf_counter()
            for start in range(0, N, 16):
                shas = [f"{i:064x}" for i in range(start, min(N, start + 16))]
                await store.lease(DST, shas)
                for i, sha in enumerate(shas, start):
                    if mark is not None:
                        await mark(DST, [sha])
                    item = RemoteItem(remote_id=f"r{i}", name=f"{i}.png", url=f"https://d/{i}")
                    await queries.record_locations(store, DST, [(sha, item)])
                    await store.commit_and_release(DST, [sha])
            return time.perf_counter() - started, count
    finally:
        Fleet.tx = real_tx  # type: ignore[method-assign]


def main() -> None:
    from pgserver import pg_server

    with pg_server() as server:
        times: dict[str, list[float]] = {"sqlite": [], "locations": [], "record": []}
        for _ in range(3):
            for name, spent in times.items():
                url = None if name == "sqlite" else server.new_database()
                with tempfile.TemporaryDirectory() as tmp:
                    spent.append(asyncio.run(one_round(Path(tmp), url, name == "record")))
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            print(f"{k:>10}: {v:.2f} s for {N} uploads' state writes ({N / v:.0f}/s)")
        print(f"record sent too / locations only: {med['record'] / med['locations']:.2f}x")
        print(f"fleet with record / SQLite alone: {med['record'] / med['sqlite']:.2f}x")
        spent, txs = [], 0
        for _ in range(3):
            with tempfile.TemporaryDirectory() as tmp:
                took, txs = asyncio.run(lease_round(Path(tmp), server.new_database()))
                spent.append(took)
        per = statistics.median(spent) / N
        print(
            f"    leases: {txs / N:.2f} shared-state transactions and {per * 1000:.2f} ms per "
            f"upload (lease 16 at a time, mark, record, release; imgsync from "
            f"{Path(StateStore.__module__ and __import__('imgsync').__file__).parent})"
        )


if __name__ == "__main__":
    main()
