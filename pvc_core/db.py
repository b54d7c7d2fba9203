"""The relational database: PostgreSQL when ``provisioner.database`` is set, SQLite otherwise.

Models bind to ``database_proxy`` so that plugin models can be declared at
import time and attached to whichever database the configuration chooses.
"""

from __future__ import annotations

import math
import os
import select
import sqlite3
import time
from typing import Any

import peewee
from playhouse.pool import PooledPostgresqlDatabase

database_proxy = peewee.DatabaseProxy()


class BaseModel(peewee.Model):
    """Base class for every persisted model of the core and the plugins."""

    class Meta:
        database = database_proxy


# Seconds to wait for PostgreSQL to accept a connection or to answer one statement
# (``provisioner.database.timeout``; set by make_database).
TIMEOUT = 5.0


def _wait_within_timeout(connection: Any) -> None:
    """psycopg2's wait callback: libpq's own waits are unbounded once connected.

    A server that is frozen (stopped, swapped out, a full disk) keeps its TCP
    connections open, and the kernel acknowledges what is sent, so a query
    waited for ever and so did its request. With this callback psycopg2 runs
    libpq non-blocking and every wait here ends at ``TIMEOUT``; raising makes
    psycopg2 close the connection, which the pool then discards.
    """
    import psycopg2.extensions
    deadline = time.monotonic() + TIMEOUT
    while True:
        state = connection.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise psycopg2.OperationalError(f"no answer from PostgreSQL within {TIMEOUT:g} s "
                                            "(pvc.provisioner.database.timeout)")
        if state == psycopg2.extensions.POLL_READ:
            select.select([connection.fileno()], [], [], remaining)
        elif state == psycopg2.extensions.POLL_WRITE:
            select.select([], [connection.fileno()], [], remaining)
        else:
            raise psycopg2.OperationalError(f"unexpected state from psycopg2's poll(): {state!r}")


def make_database(config: Any) -> peewee.Database:
    global TIMEOUT
    settings = config.get("provisioner.database")
    if settings:
        import psycopg2.extensions
        TIMEOUT = settings["timeout"]
        psycopg2.extensions.set_wait_callback(_wait_within_timeout)
        return PooledPostgresqlDatabase(
            settings["name"], user=settings["user"], password=settings["pass"],
            host=settings["host"], port=settings["port"], connect_timeout=max(1, math.ceil(TIMEOUT)),
            max_connections=32, stale_timeout=300, timeout=10)
    path = os.path.join(config["data_dir"], "pvc.db")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # BEGIN IMMEDIATE: a transaction takes the write lock at its start, waiting for another writer
    # (busy_timeout). A deferred one that read first failed at once with "database is locked" when
    # another connection had committed since its read (the audit writer commits after nearly every
    # mutating request, so the provisioner's read-then-insert transactions met this).
    return SharedSqliteDatabase(path, pragmas={"journal_mode": "wal", "busy_timeout": 10000,
                                               "foreign_keys": 1}, timeout=10,
                                lock_type="IMMEDIATE")


class SharedSqliteDatabase(peewee.SqliteDatabase):
    """SQLite that keeps its WAL files for the life of the process.

    The installed service shares the file between the API (user ``pvcapid``)
    and the worker (root). SQLite deletes ``-wal`` and ``-shm`` when the last
    connection closes and makes them again at the next open; made by root,
    they are root's until SQLite hands them to the database's owner a moment
    later, and an API connection opening them in between fails ("unable to
    open database file", a 503). One connection held open from the first use
    on keeps them: each process makes them at most once, at its start.
    """

    _keeper: sqlite3.Connection | None = None

    def _initialize_connection(self, connection: sqlite3.Connection) -> None:
        super()._initialize_connection(connection)
        if self._keeper is None:
            keeper = sqlite3.connect(self.database, timeout=10, check_same_thread=False)
            keeper.execute("SELECT count(*) FROM sqlite_master").fetchone()  # maps -shm: the files stay
            self._keeper = keeper


def describe(database: peewee.Database) -> str:
    if isinstance(database, peewee.PostgresqlDatabase):
        params = database.connect_params
        return f"PostgreSQL database {database.database!r} at {params.get('host')}:{params.get('port')}"
    return f"SQLite database {database.database}"
