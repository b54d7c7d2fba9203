"""The /node routes (nodes-vms.md §2) and their thin handlers."""

from __future__ import annotations

from typing import Any

from pvc_core.params import BOOLEAN, STRING, Param
from pvc_core.routes import ADMIN, CONFLICT, NO_MATCH, Route, collapse
from pvc_core.shapes import INT, MESSAGE, NUM, STR, array, named, obj, one_or_many
from pvc_core.taskroutes import announce, task_headers

from .service import NodeService

NODE = named("Node", obj({
    "name": STR, "daemon_state": STR, "coordinator_state": STR, "domain_state": STR, "cpu_count": INT,
    "kernel": STR, "os": STR, "arch": STR, "load": NUM, "domains_count": INT, "running_domains": array(STR),
    "vcpu": obj({"total": INT, "allocated": INT}),
    "memory": obj({"total": INT, "allocated": INT, "used": INT, "free": INT})}))


def state_of(field: str) -> dict:
    return obj({"name": STR, field: STR})


def service(ctx: Any) -> NodeService:
    return ctx.service("node")


def list_nodes(ctx: Any, params: dict) -> Any:
    return collapse(service(ctx).list(params["limit"]))


def get_node(ctx: Any, params: dict, node: str) -> dict:
    return service(ctx).get(node)


def state_getter(field: str) -> Any:
    def handler(ctx: Any, params: dict, node: str) -> dict:
        return service(ctx).state(node, field)
    handler.__name__ = f"get_{field}"
    return handler


def set_coordinator(ctx: Any, params: dict, node: str) -> dict:
    return {"message": service(ctx).set_coordinator(node, params["state"])}


def set_domain(ctx: Any, params: dict, node: str) -> dict:
    return {"message": service(ctx).set_domain_state(node, params["state"], params["wait"], announce(ctx))}


def routes() -> list[Route]:
    tags = ("node",)
    return [
        Route("GET", "/node", list_nodes, (Param("limit", STRING, help="regular expression on the name"),),
              summary="List nodes", tags=tags, returns=one_or_many(NODE),
              responses=NO_MATCH),
        Route("GET", "/node/<node>", get_node, summary="One node", tags=tags, returns=NODE),
        Route("GET", "/node/<node>/daemon-state", state_getter("daemon_state"),
              summary="A node's daemon state", tags=tags, returns=state_of("daemon_state")),
        Route("GET", "/node/<node>/coordinator-state", state_getter("coordinator_state"),
              summary="A node's coordinator state", tags=tags, returns=state_of("coordinator_state")),
        Route("POST", "/node/<node>/coordinator-state", set_coordinator,
              (Param("state", STRING, required=True, choices=("primary", "secondary"),
                     aliases=("coordinator-state",), help="A valid state must be specified"),),
              summary="Make a coordinator primary or secondary", tags=tags, returns=MESSAGE,
              responses=CONFLICT, scope=ADMIN),  # admin: which node runs the cluster's services
        Route("GET", "/node/<node>/domain-state", state_getter("domain_state"),
              summary="A node's domain state", tags=tags, returns=state_of("domain_state")),
        Route("POST", "/node/<node>/domain-state", set_domain,
              (Param("state", STRING, required=True, choices=("ready", "flush"), aliases=("domain-state",),
                     help="A valid state must be specified"),
               Param("wait", BOOLEAN, default=False, help="wait for the node daemon to finish "
                                                          "(bounded by pvc.node.wait_timeout)")),
              summary="Flush a node of its VMs or return it to service (a task: node.flush, node.ready)", tags=tags,
              returns=MESSAGE, headers=task_headers(409, 503),
              responses={409: "The node daemon did not finish within pvc.node.wait_timeout, or a concurrent "
                              "change"}),
    ]
