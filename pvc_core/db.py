"""The relational database: PostgreSQL when ``provisioner.database`` is set, SQLite otherwise.

Models bind to ``database_proxy`` so that plugin models can be declared at
import time and attached to whichever database the configuration chooses.
"""

from __future__ import annotations

import os
from typing import Any

import peewee
from playhouse.pool import PooledPostgresqlDatabase

database_proxy = peewee.DatabaseProxy()


class BaseModel(peewee.Model):
    """Base class for every persisted model of the core and the plugins."""

    class Meta:
        database = database_proxy


# Seconds to wait for PostgreSQL to accept a connection.
CONNECT_TIMEOUT = 5


def make_database(config: Any) -> peewee.Database:
    settings = config.get("provisioner.database")
    if settings:
        return PooledPostgresqlDatabase(
            settings["name"], user=settings["user"], password=settings["pass"],
            host=settings["host"], port=settings["port"], connect_timeout=CONNECT_TIMEOUT,
            max_connections=32, stale_timeout=300, timeout=10)
    path = os.path.join(config["data_dir"], "pvc.db")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return peewee.SqliteDatabase(path, pragmas={"journal_mode": "wal", "busy_timeout": 10000,
                                                "foreign_keys": 1}, timeout=10)


def describe(database: peewee.Database) -> str:
    if isinstance(database, peewee.PostgresqlDatabase):
        params = database.connect_params
        return f"PostgreSQL database {database.database!r} at {params.get('host')}:{params.get('port')}"
    return f"SQLite database {database.database}"
