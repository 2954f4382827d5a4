"""Cut off PostgreSQL connections that stop answering in the middle of a command.

``statement_timeout`` makes the server give up on a slow statement and
``connect_timeout`` bounds a new connection, but neither helps when the
server, a pooler or the network in between goes silent on a connection that
is already open: psycopg would wait for ever and gunicorn would kill the
worker. One daemon thread per process watches this process's connections.
A connection still busy with the same command past its deadline (the
statement timeout plus a margin) has its socket shut down: the waiting call
fails at once as a lost connection, SQLAlchemy discards that connection,
and the request gets the 503 envelope of an unreachable database.

After a cut the process refuses new statements for a few seconds, so that
one request cannot meet several stalls in a row (the pre-ping, then each
statement) and add them up past gunicorn's worker timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

log = logging.getLogger("partner_api")

# Past the statement timeout, the server itself should have answered.
MARGIN_SECONDS = 2.0
POLL_SECONDS = 0.25
# As long as the 503 tells clients to wait (errors.handle_database_unavailable).
REFUSE_SECONDS = 5.0


@dataclass
class _Watched:
    deadline: float
    commands: int = 0
    # (commands, first seen busy) while a command is in flight.
    busy: tuple[int, float] | None = None


class StallWatchdog:
    """Watches the psycopg connections of every engine given to :meth:`watch`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: weakref.WeakKeyDictionary[Any, _Watched] = (
            weakref.WeakKeyDictionary()
        )
        self._pid: int | None = None
        self._refuse_until = 0.0

    def watch(self, engine: Engine, statement_timeout_seconds: float) -> None:
        deadline = statement_timeout_seconds + MARGIN_SECONDS

        def on_connect(dbapi_connection: Any, record: Any) -> None:
            with self._lock:
                self._watched.setdefault(dbapi_connection, _Watched(deadline))
            self._start()

        def on_execute(connection: Any, *args: Any) -> None:
            if time.monotonic() < self._refuse_until:
                raise OperationalError(
                    None, None, ConnectionError("the database went silent")
                )

            watched = self._watched.get(connection.connection.dbapi_connection)
            if watched is not None:
                watched.commands += 1

        # The first connection of an engine runs SQLAlchemy's own set-up
        # queries in "first_connect", before any "connect" listener, and holds
        # a lock that every later connection waits for: watch it from there.
        event.listen(engine, "first_connect", on_connect, insert=True)
        event.listen(engine, "connect", on_connect)
        event.listen(engine, "before_cursor_execute", on_execute)

    def _start(self) -> None:
        # One thread per process: a forked worker starts its own.
        if self._pid == os.getpid():
            return

        self._pid = os.getpid()
        threading.Thread(
            target=self._run, name="db-stall-watchdog", daemon=True
        ).start()

    def _run(self) -> None:
        while True:
            time.sleep(POLL_SECONDS)
            try:
                self.check(time.monotonic())
            except Exception:  # the watchdog must outlive any surprise
                log.exception("database stall watchdog failed a round")

    def check(self, now: float) -> None:
        """Cut every connection busy with one command for longer than its deadline."""
        with self._lock:
            watched = list(self._watched.items())

        for dbapi_connection, state in watched:
            pgconn = dbapi_connection.pgconn
            if pgconn.transaction_status != TransactionStatus.ACTIVE:
                state.busy = None
                continue

            if state.busy is None or state.busy[0] != state.commands:
                state.busy = (state.commands, now)
                continue

            stalled_for = now - state.busy[1]
            if stalled_for > state.deadline:
                state.busy = None
                self._refuse_until = time.monotonic() + REFUSE_SECONDS
                self._cut(pgconn.socket, stalled_for)

    @staticmethod
    def _cut(fd: int, stalled_for: float) -> None:
        # The command has been silent for seconds; that it completes and its
        # descriptor is reused in the instant between the check and this call
        # is not a race worth a lock around every query.
        log.error(
            "database connection silent for %.1f s in one command; cutting it off",
            stalled_for,
        )
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)


watchdog = StallWatchdog()
