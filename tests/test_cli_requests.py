"""The requests of the PVC v0.6 CLI, against a daemon with three simulated nodes.

Each helper below sends what the v0.6 command-line client sends, as read (not run, not
copied) in the public repository parallelvirtualcluster/pvc, v0.6 era (late 2019 / early
2020; the oldest requests-based versions the reference index holds):

* ``client-cli/pvc.py``: the click commands ``vm_define``, ``vm_start``, ``vm_migrate``,
  ``vm_unmigrate``, ``vm_move``, ``vm_list``, ``node_flush``, ``node_ready``, ``node_list``;
* ``client-cli/cli_lib/vm.py``: ``vm_define``, ``vm_state``, ``vm_node``, ``vm_list``,
  ``format_list``;
* ``client-cli/cli_lib/node.py``: ``node_domain_state``, ``node_list``, ``format_list``.

The CLI builds its requests with python-requests: an argument left at ``None`` is not
sent and a Python boolean goes out as ``True``/``False``. The helpers pass the same
dictionaries, so the query strings are the CLI's. After each command the test sends what
``pvc vm list`` / ``pvc node list`` send and checks the fields those tables print.

The CLI itself was not run. In the stored ``pvc.py`` the ``vm define`` command calls
``pvc_vm.define_vm`` (which ``cli_lib/vm.py`` does not have) with the opened file as its
config, so it fails before sending anything; the request sent here is the one its
library function ``vm_define`` builds.
"""

from __future__ import annotations

import re
from typing import Any

from test_vm import UUID, XML, uuid_for, vm_xml

from conftest import Daemon, wait_until

# A second VM, left stopped on pvchv3, so that GET /vm answers an array (see the first test).
OTHER_XML = vm_xml("other", uuid_for(1)).replace("52:54:00:ab:cd:ef", "52:54:00:ab:cd:01")


# -- the CLI's requests -----------------------------------------------------------------------

def vm_define(sim: Daemon, xml: str, target_node: str | None = None) -> Any:
    """``pvc vm define [-t NODE] FILE``: defaults selector ``mem``, no autostart, no limit."""
    return sim.post("/vm", params={"xml": xml, "node": target_node, "limit": None, "selector": "mem",
                                   "autostart": False})


def vm_start(sim: Daemon, vm: str) -> Any:
    """``pvc vm start VM``: no ``wait``."""
    return sim.post(f"/vm/{vm}/state", params={"state": "start"})


def vm_node(sim: Daemon, vm: str, action: str, target_node: str | None = None) -> Any:
    """``pvc vm migrate [-t NODE]`` / ``unmigrate`` / ``move [-t NODE]``; ``force`` only by ``migrate -f``."""
    return sim.post(f"/vm/{vm}/node", params={"node": target_node, "action": action, "force": False})


def node_domain_state(sim: Daemon, node: str, action: str, wait: bool) -> Any:
    """``pvc node flush|ready [--wait] NODE``."""
    return sim.post(f"/node/{node}/domain-state", params={"state": action, "wait": wait})


def vm_list(sim: Daemon) -> dict[str, dict]:
    """``pvc vm list``: the printed columns of each VM, by name. Its format_list iterates the
    answer and asks GET /network/<vni> for each network (an unknown one is coloured red)."""
    answer = sim.get("/vm")
    assert answer.status_code == 200, answer.text
    vms = answer.json()
    assert isinstance(vms, list), vms
    rows = {}
    for vm in vms:
        nets = [(re.findall(r"\d+", net["source"]) or [net["source"].replace("br", "")])[0]
                for net in vm["networks"]]
        for vni in nets:
            assert sim.get(f"/network/{vni}").status_code in (200, 404)
        rows[vm["name"]] = {"uuid": vm["uuid"], "state": vm["state"], "networks": ",".join(nets),
                            "memory": vm["memory"], "vcpu": vm["vcpu"], "node": vm["node"],
                            "migrated": vm["migrated"]}
    return rows


def node_list(sim: Daemon) -> dict[str, tuple]:
    """``pvc node list``: (daemon, domain state, VMs, vCPUs allocated, RAM allocated) by name; the
    other printed fields (coordinator state, cpu_count, load, RAM total/used/free) must be there."""
    answer = sim.get("/node")
    assert answer.status_code == 200, answer.text
    rows = {}
    for node in answer.json():
        assert {"coordinator_state", "cpu_count", "load"} <= node.keys()
        assert {"total", "used", "free"} <= node["memory"].keys()
        rows[node["name"]] = (node["daemon_state"], node["domain_state"], node["domains_count"],
                              node["vcpu"]["allocated"], node["memory"]["allocated"])
    return rows


# -- what the tables show ---------------------------------------------------------------------

IDLE = ("run", "ready", 0, 0, 0)
RUNS_TEST1 = ("run", "ready", 1, 2, 2048)  # test_vm.XML: 2 vCPUs, 2048 MiB


def placement(sim: Daemon, vm: str = "test1") -> tuple:
    """(State, Node, Migrated) of ``vm`` in ``pvc vm list``."""
    row = vm_list(sim)[vm]
    return row["state"], row["node"], row["migrated"]


def shows(sim: Daemon, vm: tuple, nodes: dict[str, tuple], message: str) -> None:
    wait_until(lambda: placement(sim) == vm and all(node_list(sim)[name] == row for name, row in nodes.items()),
               message=message)


def define_and_start(sim: Daemon) -> None:
    answer = vm_define(sim, XML, "pvchv1")
    assert answer.json() == {"message": f"Added new VM with Name 'test1' and UUID '{UUID}' to database."}
    assert vm_define(sim, OTHER_XML, "pvchv3").status_code == 200
    assert vm_start(sim, "test1").json() == {"message": "Starting VM 'test1'."}
    shows(sim, ("start", "pvchv1", "no"), {"pvchv1": RUNS_TEST1, "pvchv2": IDLE, "pvchv3": IDLE},
          "test1 running on pvchv1")


# -- the tests --------------------------------------------------------------------------------

def test_define_and_list(sim):
    assert vm_define(sim, XML, "pvchv1").status_code == 200
    # One VM: GET /vm answers the object itself (v0.6 collapse), which the CLI's format_list
    # would iterate as its keys; from two VMs on it is an array.
    assert sim.get("/vm").json()["name"] == "test1"
    assert vm_define(sim, OTHER_XML, "pvchv3").status_code == 200
    assert vm_list(sim) == {
        "test1": {"uuid": UUID, "state": "stop", "networks": "100", "memory": 2048, "vcpu": 2, "node": "pvchv1",
                  "migrated": "no"},
        "other": {"uuid": uuid_for(1), "state": "stop", "networks": "100", "memory": 2048, "vcpu": 2,
                  "node": "pvchv3", "migrated": "no"}}
    assert node_list(sim) == {"pvchv1": IDLE, "pvchv2": IDLE, "pvchv3": IDLE}


def test_start_migrate_unmigrate(sim):
    define_and_start(sim)

    assert vm_node(sim, "test1", "migrate", "pvchv2").json() == {"message": "Migrating VM 'test1' to node 'pvchv2'."}
    shows(sim, ("start", "pvchv2", "from pvchv1"), {"pvchv1": IDLE, "pvchv2": RUNS_TEST1},
          "test1 migrated to pvchv2")

    assert vm_node(sim, "test1", "unmigrate").json() == {"message": "Unmigrating VM 'test1' back to node 'pvchv1'."}
    shows(sim, ("start", "pvchv1", "no"), {"pvchv1": RUNS_TEST1, "pvchv2": IDLE}, "test1 back on pvchv1")

    answer = vm_node(sim, "test1", "migrate")  # no -t: the daemon picks the node
    target = re.fullmatch(r"Migrating VM 'test1' to node '(pvchv[23])'\.", answer.json()["message"])
    assert target, answer.text
    shows(sim, ("start", target[1], "from pvchv1"), {"pvchv1": IDLE, target[1]: RUNS_TEST1},
          f"test1 migrated to {target[1]}")

    assert vm_node(sim, "test1", "unmigrate").status_code == 200
    shows(sim, ("start", "pvchv1", "no"), {"pvchv1": RUNS_TEST1, target[1]: IDLE}, "test1 back on pvchv1")


def test_flush_and_ready_with_wait(sim):
    define_and_start(sim)

    answer = node_domain_state(sim, "pvchv1", "flush", wait=True)
    assert answer.json() == {"message": "Flushed hypervisor pvchv1 of running VMs."}

    def flushed() -> str | None:
        """The node test1 was flushed to, once both tables show the flush."""
        state, node, migrated = placement(sim)
        nodes = node_list(sim)
        done = nodes["pvchv1"] == ("run", "flushed", 0, 0, 0) and (state, migrated) == ("start", "from pvchv1")
        return node if done and nodes.get(node) == RUNS_TEST1 else None

    target = wait_until(flushed, message="pvchv1 flushed, test1 running elsewhere")

    answer = node_domain_state(sim, "pvchv1", "ready", wait=True)
    assert answer.json() == {"message": "Restored hypervisor pvchv1 to active service."}
    shows(sim, ("start", "pvchv1", "no"), {"pvchv1": RUNS_TEST1, target: IDLE}, "pvchv1 ready, test1 back on it")
