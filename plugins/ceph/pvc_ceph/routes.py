"""The /storage status routes (ceph.md §5) and their thin handlers."""

from __future__ import annotations

from typing import Any

from pvc_core.params import INTEGER, STRING, Param
from pvc_core.routes import Route, collapse


def storage(ctx: Any, params: dict) -> dict:
    return {"message": "Manage the storage of the PVC cluster."}


def status(ctx: Any, params: dict) -> dict:
    return ctx.service("ceph").text("status")


def utilization(ctx: Any, params: dict) -> dict:
    return ctx.service("ceph").text("utilization")


def list_pools(ctx: Any, params: dict) -> Any:
    return collapse(ctx.service("ceph").pools.list(params["limit"]))


def get_pool(ctx: Any, params: dict, pool: str) -> dict:
    return ctx.service("ceph").pools.get(pool)


def add_pool(ctx: Any, params: dict, pool: str | None = None) -> dict:
    return {"message": ctx.service("ceph").pools.add(pool if pool is not None else params["pool"], params["pgs"],
                                                     params["replcfg"])}


def remove_pool(ctx: Any, params: dict, pool: str) -> dict:
    return {"message": ctx.service("ceph").pools.remove(pool)}


PGS = Param("pgs", INTEGER, required=True, help="placement groups, e.g. 256")
REPLCFG = Param("replcfg", STRING, required=True, help="copies=<N>,mincopies=<M>, e.g. copies=3,mincopies=2")
CONFIRM = Param("yes-i-really-mean-it", STRING, required=True, aliases=("yes_i_really_mean_it",),
                help="confirms a destructive operation (its value is ignored)")


def routes() -> list[Route]:
    tags = ("storage",)
    return [
        Route("GET", "/storage", storage, summary="Storage root", tags=tags),
        Route("GET", "/storage/ceph/status", status, summary="Ceph cluster status (text of `ceph status`)",
              aliases=("/storage/ceph",), tags=tags),
        Route("GET", "/storage/ceph/utilization", utilization, summary="Ceph utilisation (text of `rados df`)",
              aliases=("/storage/ceph/df",), tags=tags),
        Route("GET", "/storage/ceph/pool", list_pools, (Param("limit", STRING, help="regular expression"),),
              summary="List RBD pools", tags=tags),
        Route("POST", "/storage/ceph/pool", add_pool, (Param("pool", STRING, required=True, help="pool name"),
                                                       PGS, REPLCFG), summary="Create an RBD pool", tags=tags),
        Route("GET", "/storage/ceph/pool/<pool>", get_pool, summary="One RBD pool", tags=tags),
        Route("POST", "/storage/ceph/pool/<pool>", add_pool, (PGS, REPLCFG),
              summary="Create an RBD pool (name in the path)", tags=tags),
        Route("DELETE", "/storage/ceph/pool/<pool>", remove_pool, (CONFIRM,),
              summary="Remove an RBD pool and all its volumes", tags=tags),
    ]
