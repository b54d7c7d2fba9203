"""Caches are where wrong answers hide: random writes, then three readers compared field by field.

Two daemons serve from their watched views (the one that wrote and another
one); a third reads ZooKeeper directly on every request (``vm.watch``,
``node.watch`` and ``network.watch`` off), and the test also reads the raw
keys itself. A seeded generator drives every mutating route of VMs, nodes, networks, leases and
ACLs through either watched daemon, mixed with writes a node daemon makes
straight into ZooKeeper. After every step:

* the daemon that made an API write answers exactly what ZooKeeper holds, on
  its very next read (read-your-writes, no waiting);
* the other watched daemon converges to the same answer, within a deadline
  derived from the configured ZooKeeper timeouts;
* each VM's and node's fields equal the raw keys.

The seed is printed with each failure; ``PVC_COHERENCE_SEEDS`` (comma-separated)
and ``PVC_COHERENCE_STEPS`` replay or lengthen a run.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import pytest
from test_node import seed_node
from test_vm import XML, vm_xml

from conftest import settle_timeout, wait_until

SEEDS = [int(seed) for seed in os.environ.get("PVC_COHERENCE_SEEDS", "11,23").split(",")]
STEPS = int(os.environ.get("PVC_COHERENCE_STEPS", "40"))
NODES = ("pvchv1", "pvchv2", "pvchv3")
WATCHED = {"zookeeper": {"session_timeout": "10", "request_timeout": "3"},
           "vm": {"delete_grace": "0.01", "wait_timeout": "3"}, "node": {"wait_timeout": "3"},
           "plugins": {"disabled": ["ceph"]}}
DIRECT = {**WATCHED, "vm": {**WATCHED["vm"], "watch": "False"}, "node": {"wait_timeout": "3", "watch": "False"},
          "network": {"watch": "False"}}
# A watch re-read is one ZooKeeper request; a loaded machine may queue many: the deadline
# comes from the configured timeouts, not from a guess of how fast this machine is.
CONVERGE = settle_timeout(WATCHED)


@pytest.fixture(scope="module")
def readers(daemon_factory):
    """Two watched daemons and one that reads ZooKeeper directly."""
    return daemon_factory(WATCHED), daemon_factory(WATCHED), daemon_factory(DIRECT)


def _as_list(response: Any, missing: str) -> list:
    if response.status_code == 404:
        assert response.json() == {"message": missing}, response.text
        return []
    assert response.status_code == 200, response.text
    body = response.json()
    return body if isinstance(body, list) else [body]


def observe(daemon: Any) -> dict:
    """Everything a client can read about VMs, nodes and networks, in a comparable form."""
    seen: dict[str, Any] = {}
    vms = _as_list(daemon.get("/vm"), "VM not found.")
    seen["vms"] = sorted(vms, key=lambda vm: vm["uuid"])
    for vm in vms:
        seen[f"vm {vm['name']}"] = daemon.get(f"/vm/{vm['uuid']}").json()
        seen[f"vm {vm['name']} meta"] = daemon.get(f"/vm/{vm['uuid']}/meta").json()
    for state in ("start", "stop"):
        seen[f"vms in {state}"] = sorted(vm["uuid"] for vm in _as_list(
            daemon.get("/vm", params={"state": state}), "VM not found."))
    for node in NODES:
        seen[f"vms on {node}"] = sorted(vm["uuid"] for vm in _as_list(
            daemon.get("/vm", params={"node": node}), "VM not found."))
    seen["nodes"] = sorted(_as_list(daemon.get("/node"), "Node not found."), key=lambda node: node["name"])
    status = daemon.get("/status").json()
    seen["status"] = status
    networks = _as_list(daemon.get("/network"), "Network not found.")
    seen["networks"] = sorted(networks, key=lambda net: net["vni"])
    for network in networks:
        vni = network["vni"]
        seen[f"net {vni}"] = daemon.get(f"/network/{vni}").json()
        for static in ("false", "true"):
            response = daemon.get(f"/network/{vni}/lease", params={"static": static})
            seen[f"net {vni} leases static={static}"] = (response.status_code, response.json())
        response = daemon.get(f"/network/{vni}/acl")
        seen[f"net {vni} acls"] = (response.status_code, response.json())
    return seen


def raw_fields(zk: Any) -> dict:
    """The VM and node fields as the keys hold them, read here without any daemon."""
    out: dict[str, Any] = {}
    for uuid in (zk.get_children("/domains") if zk.exists("/domains") else []):
        def key(name: str, uuid: str = uuid) -> str:
            return zk.get(f"/domains/{uuid}/{name}")[0].decode()
        limit = key("node_limit")
        out[f"vm {uuid}"] = {
            "state": key("state"), "node": key("node"), "last_node": key("lastnode"),
            "failed_reason": key("failedreason"), "node_limit": limit.split(",") if limit else None,
            "node_selector": key("node_selector"), "node_autostart": key("node_autostart") == "True",
            "profile": key("profile"), "xml_uuid": uuid,
        }
    for node in (zk.get_children("/nodes") if zk.exists("/nodes") else []):
        def nkey(name: str, node: str = node) -> str:
            return zk.get(f"/nodes/{node}/{name}")[0].decode()
        out[f"node {node}"] = {"daemon_state": nkey("daemonstate"), "coordinator_state": nkey("routerstate"),
                               "domain_state": nkey("domainstate"), "memory_free": int(nkey("memfree"))}
    return out


def fields_of(seen: dict) -> dict:
    """The same fields as a daemon answered them."""
    out: dict[str, Any] = {}
    for vm in seen["vms"]:
        out[f"vm {vm['uuid']}"] = {
            "state": vm["state"], "node": vm["node"], "last_node": vm["last_node"],
            "failed_reason": vm["failed_reason"], "node_limit": vm["node_limit"],
            "node_selector": vm["node_selector"], "node_autostart": vm["node_autostart"],
            "profile": vm["profile"], "xml_uuid": vm["uuid"],
        }
    for node in seen["nodes"]:
        out[f"node {node['name']}"] = {"daemon_state": node["daemon_state"],
                                       "coordinator_state": node["coordinator_state"],
                                       "domain_state": node["domain_state"], "memory_free": node["memory"]["free"]}
    return out


def differences(left: dict, right: dict) -> list[str]:
    out = []
    for key in sorted(set(left) | set(right)):
        if left.get(key) != right.get(key):
            out.append(f"{key}:\n    {left.get(key)!r}\n != {right.get(key)!r}")
    return out


class Generator:
    """Random but valid-looking operations; invalid ones are fine too (they must change nothing)."""

    def __init__(self, seed: int, zk: Any, writers: tuple):
        self.rng = random.Random(seed)
        self.zk = zk
        self.writers = writers
        self.count = 0

    def vms(self) -> list[tuple[str, str]]:
        if not self.zk.exists("/domains"):
            return []
        return sorted((uuid, self.zk.get(f"/domains/{uuid}")[0].decode()) for uuid in self.zk.get_children("/domains"))

    def vnis(self) -> list[str]:
        return sorted(self.zk.get_children("/networks")) if self.zk.exists("/networks") else []

    def step(self) -> tuple[str, Any, str]:
        """One operation: (kind, the writing daemon or None, a description)."""
        rng = self.rng
        writer = rng.choice(self.writers)
        vms = self.vms()
        vnis = self.vnis()
        choices = ["define"] * 3 + ["network"]
        if vms:
            choices += ["modify", "meta", "meta", "state", "node", "undefine", "outside_vm", "outside_vm"]
        if vnis:
            choices += ["lease", "unlease", "acl", "unacl", "outside_lease", "modify_network", "remove_network"]
        choices += ["coordinator", "domain", "outside_node", "outside_node"]
        kind = rng.choice(choices)
        uuid, name = rng.choice(vms) if vms else ("", "")
        target = uuid if rng.random() < 0.5 else name
        node = rng.choice(NODES)
        if kind == "define":
            self.count += 1
            new_name = f"vm{self.count}"
            xml = vm_xml(new_name, f"00000000-0000-4000-8000-{self.count:012d}")
            params = {"node": rng.choice([node, ""]), "selector": rng.choice(["mem", "vcpus", "vms", "load"]),
                      "autostart": rng.choice(["true", "false"])}
            if rng.random() < 0.5:
                params["limit"] = ",".join(rng.sample(NODES, 2))
            return kind, writer, f"POST /vm {new_name} {params} -> " + _r(
                writer.post("/vm", params=params, data={"xml": xml}))
        if kind == "modify":
            xml = vm_xml(name, uuid).replace("<vcpu>2</vcpu>", f"<vcpu>{rng.randint(1, 8)}</vcpu>")
            params = {"restart": rng.choice(["true", "false"])}
            return kind, writer, f"PUT /vm/{target} {params} -> " + _r(
                writer.put(f"/vm/{target}", params=params, data={"xml": xml}))
        if kind == "meta":
            params: dict[str, str] = {}
            if rng.random() < 0.5:
                params["limit"] = rng.choice(["", "pvchv1", "pvchv2,pvchv3"])
            if rng.random() < 0.5:
                params["selector"] = rng.choice(["mem", "vcpus", "vms", "load"])
            if rng.random() < 0.4:
                params["autostart"] = rng.choice(["true", "false"])
            elif rng.random() < 0.3:
                params["no-autostart"] = ""
            if rng.random() < 0.3:
                params["profile"] = rng.choice(["web", "db"])
            return kind, writer, f"POST /vm/{target}/meta {params} -> " + _r(
                writer.post(f"/vm/{target}/meta", params=params))
        if kind == "state":
            state = rng.choice(["start", "shutdown", "stop", "restart", "disable"])
            return kind, writer, f"POST /vm/{target}/state {state} -> " + _r(
                writer.post(f"/vm/{target}/state", params={"state": state}))
        if kind == "node":
            action = rng.choice(["migrate", "unmigrate", "move"])
            params = {"action": action, "force": rng.choice(["true", "false"])}
            if rng.random() < 0.5:
                params["node"] = node
            if rng.random() < 0.3:
                params["selector"] = rng.choice(["mem", "vcpus", "vms"])
            return kind, writer, f"POST /vm/{target}/node {params} -> " + _r(
                writer.post(f"/vm/{target}/node", params=params))
        if kind == "undefine":
            return kind, writer, f"DELETE /vm/{target} -> " + _r(writer.delete(f"/vm/{target}"))
        if kind == "outside_vm":
            # What a node daemon writes: a state it reached, its node, a failure reason.
            key, value = rng.choice([("state", rng.choice(["start", "stop", "fail", "migrate", "shutdown"])),
                                     ("node", node), ("failedreason", rng.choice(["", "libvirt: boom"])),
                                     ("lastnode", rng.choice(["", node]))])
            self.zk.set(f"/domains/{uuid}/{key}", value.encode())
            return kind, None, f"ZK /domains/{uuid}/{key} = {value!r}"
        if kind == "network":
            vni = str(rng.randint(100, 104))
            params = {"vni": vni, "description": f"net{vni}", "nettype": "managed", "domain": f"n{vni}.local",
                      "ip4_network": f"10.{vni}.0.0/24", "ip4_gateway": f"10.{vni}.0.1", "dhcp4": "true",
                      "dhcp4_start": f"10.{vni}.0.100", "dhcp4_end": f"10.{vni}.0.200"}
            return kind, writer, f"POST /network {vni} -> " + _r(writer.post("/network", params=params))
        vni = rng.choice(vnis) if vnis else "100"
        mac = f"52:54:00:00:00:{rng.randint(1, 4):02x}"
        if kind == "modify_network":
            params = rng.choice([{"description": f"renamed{rng.randint(1, 3)}"}, {"dhcp4": rng.choice(["yes", "no"])},
                                 {"domain": f"x{rng.randint(1, 9)}.local"}])
            return kind, writer, f"PUT /network/{vni} {params} -> " + _r(writer.put(f"/network/{vni}", params=params))
        if kind == "remove_network":
            return kind, writer, f"DELETE /network/{vni} -> " + _r(writer.delete(f"/network/{vni}"))
        if kind == "lease":
            params = {"macaddress": mac, "ipaddress": f"10.{vni}.0.{rng.randint(10, 20)}", "hostname": "h"}
            return kind, writer, f"POST /network/{vni}/lease {params} -> " + _r(
                writer.post(f"/network/{vni}/lease", params=params))
        if kind == "unlease":
            return kind, writer, f"DELETE /network/{vni}/lease/{mac} -> " + _r(
                writer.delete(f"/network/{vni}/lease/{mac}"))
        if kind == "acl":
            params = {"description": f"rule{rng.randint(1, 3)}", "rule": f"tcp dport {rng.randint(1, 999)} accept",
                      "direction": rng.choice(["in", "out"])}
            if rng.random() < 0.5:
                params["order"] = str(rng.randint(0, 2))
            return kind, writer, f"POST /network/{vni}/acl {params} -> " + _r(
                writer.post(f"/network/{vni}/acl", params=params))
        if kind == "unacl":
            rule = f"rule{rng.randint(1, 3)}"
            return kind, writer, f"DELETE /network/{vni}/acl/{rule} -> " + _r(
                writer.delete(f"/network/{vni}/acl/{rule}"))
        if kind == "outside_lease":
            # dnsmasq's lease script on the node daemon records a dynamic lease.
            base = f"/networks/{vni}/dhcp4_leases/{mac}"
            if self.zk.exists(base):
                self.zk.delete(base, recursive=True)
                return kind, None, f"ZK delete {base}"
            transaction = self.zk.transaction()
            transaction.create(base, b"")
            for key, value in (("expiry", "1581300000"), ("ipaddr", f"10.{vni}.0.150"), ("hostname", "dyn"),
                               ("clientid", "*")):
                transaction.create(f"{base}/{key}", value.encode())
            transaction.commit()
            return kind, None, f"ZK create {base}"
        if kind == "coordinator":
            state = rng.choice(["primary", "secondary"])
            return kind, writer, f"POST /node/{node}/coordinator-state {state} -> " + _r(
                writer.post(f"/node/{node}/coordinator-state", params={"state": state}))
        if kind == "domain":
            state = rng.choice(["flush", "ready"])
            return kind, writer, f"POST /node/{node}/domain-state {state} -> " + _r(
                writer.post(f"/node/{node}/domain-state", params={"state": state}))
        # outside_node: the node daemon's own reports
        key, value = rng.choice([("daemonstate", rng.choice(["run", "stop", "dead"])),
                                 ("domainstate", rng.choice(["ready", "flushed", "unflush"])),
                                 ("routerstate", rng.choice(["primary", "secondary", "takeover"])),
                                 ("memfree", str(rng.randint(1000, 60000)))])
        self.zk.set(f"/nodes/{node}/{key}", value.encode())
        return kind, None, f"ZK /nodes/{node}/{key} = {value!r}"


def _r(response: Any) -> str:
    assert response.status_code < 500, response.text
    return f"{response.status_code} {response.text.strip()[:120]}"


@pytest.mark.parametrize("seed", SEEDS)
def test_views_equal_zookeeper_after_every_step(readers, clean_zk, seed):
    first, second, direct = readers
    assert first.post("/initialize").status_code == 200
    for node in NODES:
        seed_node(clean_zk, node, router="primary" if node == "pvchv1" else "secondary")
    generator = Generator(seed, clean_zk, (first, second))
    history: list[str] = []
    for number in range(STEPS):
        kind, writer, what = generator.step()
        history.append(f"{number}: {what}")
        context = f"seed {seed}, after:\n  " + "\n  ".join(history[-8:])
        truth = observe(direct)
        raw = raw_fields(clean_zk)
        assert differences(fields_of(truth), raw) == [], "direct reader != raw keys, " + context
        if writer is not None:
            # The daemon that wrote answers its own write at once.
            assert differences(observe(writer), truth) == [], "writing daemon != ZooKeeper, " + context
        # Every other watched daemon converges: poll until equal, within the derived deadline.
        for reader in (first, second):
            if reader is writer:
                continue
            deadline = time.monotonic() + CONVERGE
            while diff := differences(observe(reader), truth):
                assert time.monotonic() < deadline, (
                    f"daemon on port {reader.port} did not converge in {CONVERGE:g} s, {context}\n" + "\n".join(diff))
                time.sleep(0.05)
                truth = observe(direct)
    # The sequence really exercised both kinds of writer, and API writes that succeeded.
    assert any(": ZK " in line for line in history) and any(" -> 200 " in line for line in history)


def test_edit_keeps_every_other_field(readers, clean_zk):
    """The regression of item 1: PUT /vm and POST meta blanked state, node, limit and selector."""
    first, second, direct = readers
    assert first.post("/initialize").status_code == 200
    for node in NODES:
        seed_node(clean_zk, node)
    # the nodes were written from outside: the daemon's node view sees them once their watches fire
    wait_until(lambda: isinstance(first.get("/node").json(), list) and len(first.get("/node").json()) == 3,
               CONVERGE)
    defined = first.post("/vm", params={"node": "pvchv2", "limit": "pvchv2,pvchv3", "selector": "vms",
                                        "autostart": "true"}, data={"xml": XML})
    assert defined.status_code == 200, defined.text
    before = first.get("/vm/test1").json()
    assert (before["state"], before["node"], before["node_limit"], before["node_selector"],
            before["node_autostart"]) == ("stop", "pvchv2", ["pvchv2", "pvchv3"], "vms", True)
    assert first.put("/vm/test1", data={"xml": XML.replace("<vcpu>2</vcpu>", "<vcpu>3</vcpu>")}).status_code == 200
    after = first.get("/vm/test1").json()
    assert after == {**before, "vcpu": 3, "xml": after["xml"]} and "<vcpu>3</vcpu>" in after["xml"]
    assert first.post("/vm/test1/meta", params={"profile": "web"}).status_code == 200
    meta = first.get("/vm/test1").json()
    assert meta == {**after, "profile": "web"}
    assert first.get("/status").json()["vms"] == {"total": 1, "stop": 1}
    assert meta == direct.get("/vm/test1").json()
