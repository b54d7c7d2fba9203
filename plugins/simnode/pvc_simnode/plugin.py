"""Hook implementations of the simnode plugin: simulated node daemons inside the API daemon.

Off by default: a daemon loads it only when ``pvc.plugins.include`` (or
``enabled``) names it, so installing every plugin never puts simulated
nodes on a real cluster. It runs in the API process only, never in the
Huey consumer (which builds the same runtime).
"""

from __future__ import annotations

import os
from typing import Any

from pvc_core import hookimpl
from pvc_core.config import Field, Section, coordinator_hosts
from pvc_core.embedded import Part
from pvc_core.errors import BadRequest, NotFound, PluginError
from pvc_core.params import STRING, Param
from pvc_core.routes import ADMIN, Route
from pvc_core.schema import SELECTORS
from pvc_core.shapes import MESSAGE, STR, array, named, obj

from .cluster import Refused, SimCluster
from .node import Options

SIMULATED = named("SimulatedNode", obj({"name": STR, "mode": STR, "daemon": STR, "host": STR,
                                        "domains": array(STR), "frozen": array(STR)}))


class SimnodeService:
    """The running simulator, for the routes and for tests."""

    def __init__(self) -> None:
        self.cluster: SimCluster | None = None

    def require(self) -> SimCluster:
        if self.cluster is None:
            raise NotFound("The simulator is not running in this process")
        return self.cluster


def _positive(value: float) -> str | None:
    return None if value > 0 else "a number greater than 0"


@hookimpl
def pvc_plugin_info() -> dict:
    return {"requires": [], "optional": ["ceph"], "enabled_by_default": False,
            "description": "Simulated v0.6 node daemons (libvirt test driver) for trying the API, demos and tests"}


@hookimpl
def pvc_config_fields() -> Section:
    return Section({"simnode": Section({
        "nodes": Field("int", default=3, check=lambda n: None if 0 <= n <= 64 else "0 to 64",
                       help="how many simulated nodes"),
        "prefix": Field("str", default="pvchv", help="node names are <prefix>1 .. <prefix>N"),
        "coordinators": Field("int", default=3, help="how many of them (the first ones) are coordinators"),
        "cpus": Field("int", default=8, check=lambda n: None if n >= 1 else "1 or more", help="CPUs per node"),
        "memory": Field("int", default=16384, check=lambda n: None if n >= 1024 else "1024 or more",
                        help="memory per node, MiB"),
        "keepalive_interval": Field("float", default=5.0, check=_positive, help="seconds between keepalives"),
        "fence_intervals": Field("int", default=6, check=lambda n: None if n >= 2 else "2 or more",
                                 help="missed keepalives before a coordinator marks a node dead"),
        "migrate_timeout": Field("float", default=90.0, check=_positive,
                                 help="longest wait for an incoming migration (then the VM fails), s"),
        "console_log_lines": Field("int", default=1000, check=lambda n: None if n >= 1 else "1 or more",
                                   help="lines kept in a VM's consolelog"),
        "target_selector": Field("str", default="mem", check=lambda s: None if s in SELECTORS
                                 else "one of " + ", ".join(SELECTORS), help="selector for VMs that have none"),
        "ready_on_register": Field("bool", default=True, help="ask a newly registered node (which v0.6 "
                                   "registers flushed) to be readied, as an operator would"),
        "fsfreeze_limit": Field("float", default=30.0, check=_positive,
                                help="seconds a guest stays frozen (domain_fsfreeze) at most before its node "
                                     "thaws it by itself, s"),
        "directory": Field("str", default="", help="where the libvirt host definitions live "
                                                   "(default: <data_dir>/simnode)"),
    }, optional=True)})


@hookimpl
def pvc_services(runtime: Any) -> dict:
    return {"simnode": SimnodeService()}


def _cluster(runtime: Any) -> SimCluster:
    config = runtime.config
    options = Options(cpus=config["simnode.cpus"], memory=config["simnode.memory"],
                      keepalive_interval=config["simnode.keepalive_interval"],
                      fence_intervals=config["simnode.fence_intervals"],
                      migrate_timeout=config["simnode.migrate_timeout"],
                      console_log_lines=config["simnode.console_log_lines"],
                      target_selector=config["simnode.target_selector"],
                      ready_on_register=config["simnode.ready_on_register"],
                      fsfreeze_limit=config["simnode.fsfreeze_limit"],
                      session_timeout=config.get("zookeeper.session_timeout", 10.0))
    names = [f"{config['simnode.prefix']}{index}" for index in range(1, config["simnode.nodes"] + 1)]
    directory = config["simnode.directory"] or os.path.join(config["data_dir"], "simnode")
    return SimCluster(coordinator_hosts(config["coordinators"]), names, config["simnode.coordinators"], options,
                      directory, storage=lambda: runtime.service("ceph", required=False), on_refused=runtime.fail)


@hookimpl
def pvc_start(runtime: Any) -> None:
    if runtime.role != "api":
        return
    service = runtime.service("simnode")
    cluster = _cluster(runtime)
    try:
        cluster.start(timeout=runtime.config.get("zookeeper.session_timeout", 10.0) * 3)
    except Refused as exc:
        raise PluginError(str(exc)) from None
    service.cluster = cluster


@hookimpl
def pvc_stop(runtime: Any) -> None:
    service = runtime.service("simnode")
    if service.cluster is not None:
        service.cluster.stop()
        service.cluster = None


# The hold on a node's outgoing migrations (SimNode.hold/step/release), and what each action answers.
HOLDS = {"hold": "Holding the outgoing migrations of simulated node '{0}'.",
         "step": "Letting one held migration of simulated node '{0}' go.",
         "release": "Released the outgoing migrations of simulated node '{0}'."}


def list_nodes(ctx: Any, params: dict) -> list:
    return ctx.service("simnode").require().describe()


def act(ctx: Any, params: dict, node: str) -> dict:
    simulated = ctx.service("simnode").require().node(node)
    if simulated is None:
        raise BadRequest(f"ERROR: No simulated node named '{node}'.")
    action = params["action"]
    if action in HOLDS:
        getattr(simulated, action)()
        return {"message": HOLDS[action].format(node)}
    if action == "start":
        simulated.start()
        return {"message": f"Started simulated node '{node}'."}
    simulated.stop(clean=action == "stop")
    return {"message": f"{'Stopped' if action == 'stop' else 'Killed'} simulated node '{node}'."}


@hookimpl
def pvc_routes(runtime: Any) -> list:
    tags = ("simnode",)
    return [
        Route("GET", "/simnode", list_nodes, summary="The simulated nodes of this daemon", tags=tags,
              returns=array(SIMULATED), responses={404: "The simulator is not running in this process"}),
        Route("POST", "/simnode/<node>", act,
              (Param("action", STRING, required=True, choices=("start", "stop", "kill", *HOLDS),
                     help="start the node daemon; stop it cleanly (its VMs keep running); kill it (host crash: "
                          "keepalives stop, its VMs are gone); hold its outgoing migrations (each waits, its VM "
                          "in state migrate), step (let one go) or release them (all go)"),),
              summary="Start, stop or kill a simulated node, or hold its outgoing migrations", tags=tags,
              returns=MESSAGE,
              responses={404: "The simulator is not running in this process"},
              scope=ADMIN),  # admin: it stops or crashes a (simulated) node of the cluster
    ]


EMBEDDED_SECTION = """    # Simulated node daemons (plugin simnode, which no daemon loads unless it is included here).
    plugins:
        include: [simnode]
    simnode:
        nodes: {nodes}
"""


@hookimpl
def pvc_embedded_options(parser: Any) -> None:
    parser.add_argument("--nodes", type=int, default=None, metavar="N",
                        help="simulated node daemons to run (default: pvc.simnode.nodes of the configuration, "
                             "3 in a new one; 0 for none)")


@hookimpl
def pvc_embedded(run: Any) -> Part:
    """Simulated nodes run inside the daemon (this plugin, included by the first configuration); ``--nodes``
    overrides their number for this run."""
    nodes = run.args.nodes
    return Part("simnode", config=EMBEDDED_SECTION.format(nodes=3 if nodes is None else nodes),
                overrides={} if nodes is None else {"simnode": {"nodes": str(nodes)}})
