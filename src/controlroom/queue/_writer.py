"""The single SQLite writer: one thread, one connection, group commit.

Producers hand the writer a function of the connection. Requests made during one pass
of an event loop are handed over together, at the end of that pass, so a burst of
requests costs one cross-thread wake-up, not one each. The writer drains every pending
request, runs them in ONE transaction (each inside its own savepoint, so one failing
request does not undo its neighbours), commits once and only then resolves the futures.
A caller awaiting its future therefore knows its write is committed.

Durability: the file is in WAL mode. With ``synchronous=FULL`` (the default here) the
commit fsyncs the WAL, so an acknowledged write survives a power cut; one fsync is shared
by the whole batch, which is what makes FULL affordable. ``synchronous=NORMAL`` survives
a process crash (the WAL is in the OS cache) but may lose the last batches on power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from controlroom.errors import QueueError

__all__ = ["SqliteWriter", "connect"]

T = TypeVar("T")
Synchronous = Literal["NORMAL", "FULL"]
_STOP = object()
_MAX_BATCH = 512
WAL_AUTOCHECKPOINT_PAGES = 4000


def connect(path: str, *, synchronous: Synchronous = "FULL") -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), WAL, busy timeout."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    # Checkpoint every 4,000 WAL pages (16 MiB) rather than SQLite's 1,000: the
    # checkpoint runs inside the commit that crosses the mark and stalls every write
    # queued behind it; a quarter as many stalls gave about 9 % more accepts a second
    # under saturation (benchmarks/ingest), and pages rewritten between two
    # checkpoints are copied once.
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    return conn


class _Request:
    """One write and where its outcome goes: an asyncio future on the submitter's loop.

    Outcomes are handed back per batch, with one ``call_soon_threadsafe`` per loop, not
    one per request: at thousands of writes a second the per-request cross-thread
    wake-ups cost more than the writes."""

    __slots__ = ("fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future


def _settle(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """Runs on the submitter's loop: resolve every future of one batch."""
    for future, ok, value in outcomes:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _deliver(items: list[tuple[_Request, bool, Any]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for request, ok, value in items:
        by_loop.setdefault(request.loop, []).append((request.future, ok, value))
    for loop, outcomes in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            loop.call_soon_threadsafe(_settle, outcomes)


class SqliteWriter:
    """Owns the only write connection of this process to one SQLite file."""

    def __init__(self, path: str, *, synchronous: Synchronous = "FULL") -> None:
        self._path = path
        self._synchronous: Synchronous = synchronous
        self._requests: queue.SimpleQueue[list[_Request] | object] = queue.SimpleQueue()
        # Requests of the current loop pass, by loop, not yet handed to the thread.
        self._staged: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
        self._handover = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._closed = False
        self.batches = 0
        self.requests = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="controlroom-sqlite-writer")
        self._thread.daemon = True
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise QueueError(f"cannot open {self._path}: {self._start_error}")

    def stop(self) -> None:
        """Process every request already handed over, then close the connection. A
        request staged but not yet handed over fails with ``QueueError``."""
        if self._thread is None or self._closed:
            return
        self._closed = True
        self._requests.put(_STOP)
        self._thread.join()
        with self._handover:
            left: list[_Request] = []
            while True:
                try:
                    item = self._requests.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, list):
                    left.extend(item)
        _deliver([(r, False, QueueError("the queue was closed")) for r in left])

    async def submit(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed or self._thread is None:
            raise QueueError("the queue is not open")
        loop = asyncio.get_running_loop()
        request = _Request(fn, loop, loop.create_future())
        staged = self._staged.get(loop)
        if staged is None:
            staged = self._staged[loop] = []
            loop.call_soon(self._hand_over, loop)
        staged.append(request)
        # If the caller is cancelled while it waits, the write still happens (the writer
        # runs every request it was handed); only the answer is dropped.
        try:
            result: T = await request.future
        except sqlite3.Error as exc:
            raise QueueError(f"the queue store at {self._path} failed: {exc}") from exc
        return result

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """Runs on ``loop`` at the end of its pass: give the thread what was staged."""
        staged = self._staged.pop(loop, None)
        if not staged:
            return
        with self._handover:
            if not self._closed or (self._thread is not None and self._thread.is_alive()):
                self._requests.put(staged)
                return
        _deliver([(r, False, QueueError("the queue is not open")) for r in staged])

    # -- the writer thread --------------------------------------------------------
    def _run(self) -> None:
        try:
            conn = connect(self._path, synchronous=self._synchronous)
        except BaseException as exc:  # reported to start()
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            stopping = False
            while not stopping:
                first = self._requests.get()
                batch: list[_Request] = []
                if first is _STOP:
                    stopping = True
                else:
                    assert isinstance(first, list)
                    batch.extend(first)
                while len(batch) < _MAX_BATCH:
                    try:
                        item = self._requests.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                        continue
                    assert isinstance(item, list)
                    batch.extend(item)
                if batch:
                    self._execute(conn, batch)
        finally:
            conn.close()

    def _execute(self, conn: sqlite3.Connection, batch: list[_Request]) -> None:
        """Run the batch in one transaction. Optimistically without savepoints; if a
        request fails, roll back and run the batch again with a savepoint around each
        request, so the failure is that request's alone."""
        live = batch
        results = self._transaction(conn, live, isolate=False)
        if results is None:
            results = self._transaction(conn, live, isolate=True)
        if results is None:
            return
        self.batches += 1
        self.requests += len(live)
        _deliver(results)

    def _transaction(
        self, conn: sqlite3.Connection, live: list[_Request], *, isolate: bool
    ) -> list[tuple[_Request, bool, Any]] | None:
        """The results of one transaction over ``live``; None when it was abandoned
        (a failure without isolation, or a failed BEGIN/COMMIT, which fails every
        request's future)."""
        results: list[tuple[_Request, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            _deliver([(r, False, QueueError(f"cannot begin a write: {exc}")) for r in live])
            return None
        for request in live:
            if not isolate:
                try:
                    results.append((request, True, request.fn(conn)))
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    return None
                continue
            try:
                conn.execute("SAVEPOINT request")
                value = request.fn(conn)
                conn.execute("RELEASE request")
                results.append((request, True, value))
            except BaseException as exc:
                try:
                    conn.execute("ROLLBACK TO request")
                    conn.execute("RELEASE request")
                except sqlite3.Error:
                    pass
                results.append((request, False, exc))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            _deliver([(r, False, QueueError(f"commit failed: {exc}")) for r in live])
            return None
        return results
