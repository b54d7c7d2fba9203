"""The /storage status routes (ceph.md §5) and their thin handlers."""

from __future__ import annotations

from typing import Any

from pvc_core.routes import Route


def storage(ctx: Any, params: dict) -> dict:
    return {"message": "Manage the storage of the PVC cluster."}


def status(ctx: Any, params: dict) -> dict:
    return ctx.service("ceph").text("status")


def utilization(ctx: Any, params: dict) -> dict:
    return ctx.service("ceph").text("utilization")


def routes() -> list[Route]:
    tags = ("storage",)
    return [
        Route("GET", "/storage", storage, summary="Storage root", tags=tags),
        Route("GET", "/storage/ceph/status", status, summary="Ceph cluster status (text of `ceph status`)",
              aliases=("/storage/ceph",), tags=tags),
        Route("GET", "/storage/ceph/utilization", utilization, summary="Ceph utilisation (text of `rados df`)",
              aliases=("/storage/ceph/df",), tags=tags),
    ]
