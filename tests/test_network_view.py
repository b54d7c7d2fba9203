"""The network plugin's watched views against writes made straight into ZooKeeper.

Node daemons record DHCP leases themselves, and another API daemon may delete
a network and create one under the same VNI. A watched daemon (``network.watch``
on, the default) serves networks, leases and ACLs from memory; these tests hold
that it still answers what ZooKeeper holds:

* a lease recorded outside is in the very next lease answer (lease reads catch
  the views up with ZooKeeper first, one small read), its changes and its
  removal too, while a list of many leases costs a handful of ZooKeeper
  requests, not one per key;
* a network deleted and created again outside (its lease, reservation and ACL
  subtrees gone and back) is followed: old leases, reservations and rules are
  gone, the new ones are served, and a write through the daemon afterwards is
  read back at once.
"""

from __future__ import annotations

import re
import socket
from typing import Any

from conftest import wait_until

VNI = "1001"
NETWORK = {"description": "cust-a", "nettype": "managed", "domain": "cust-a.local", "ip4_network": "10.10.1.0/24",
           "ip4_gateway": "10.10.1.1", "dhcp4": "True", "dhcp4_start": "10.10.1.100", "dhcp4_end": "10.10.1.199"}
# What the other writer creates under the same VNI: every key the network plugin lays out.
RECREATED = {
    "/networks/1001": "cust-b", "/networks/1001/nettype": "managed", "/networks/1001/domain": "b.local",
    "/networks/1001/name_servers": "10.20.0.1", "/networks/1001/ip6_network": "None",
    "/networks/1001/ip6_gateway": "None", "/networks/1001/dhcp6_flag": "False",
    "/networks/1001/ip4_network": "10.20.0.0/24", "/networks/1001/ip4_gateway": "10.20.0.1",
    "/networks/1001/dhcp4_flag": "False", "/networks/1001/dhcp4_start": "None", "/networks/1001/dhcp4_end": "None",
    "/networks/1001/dhcp4_leases": "", "/networks/1001/dhcp4_reservations": "", "/networks/1001/dhcp_reservations": "",
    "/networks/1001/firewall_rules": "", "/networks/1001/firewall_rules/in": "",
    "/networks/1001/firewall_rules/out": "",
    "/networks/1001/firewall_rules/out/egress": "", "/networks/1001/firewall_rules/out/egress/order": "0",
    "/networks/1001/firewall_rules/out/egress/rule": "ip daddr 10.0.0.0/8 drop",
}
RECREATED_OBJECT = {
    "vni": 1001, "description": "cust-b", "type": "managed", "domain": "b.local", "name_servers": ["10.20.0.1"],
    "ip6": {"network": "None", "gateway": "None", "dhcp_flag": "False"},
    "ip4": {"network": "10.20.0.0/24", "gateway": "10.20.0.1", "dhcp_flag": "False", "dhcp_start": "None",
            "dhcp_end": "None"},
}


def received(zk_server: Any) -> int:
    """Requests the test ZooKeeper has received so far (its ``srvr`` counter)."""
    with socket.create_connection(("127.0.0.1", zk_server.port), timeout=5) as sock:
        sock.sendall(b"srvr")
        answer = b""
        while b"Node count:" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    match = re.search(rb"^Received: (\d+)", answer, re.MULTILINE)
    assert match, answer
    return int(match.group(1))


def record_lease(zk: Any, mac: str, ip: str, hostname: str = "dyn") -> None:
    """What v0.6's dnsmasq lease helper writes on the primary node: one lease, in one transaction."""
    base = f"/networks/{VNI}/dhcp4_leases/{mac}"
    transaction = zk.transaction()
    transaction.create(base, b"")
    for key, value in (("expiry", "1581300000"), ("ipaddr", ip), ("hostname", hostname), ("clientid", "*")):
        transaction.create(f"{base}/{key}", value.encode())
    assert not [result for result in transaction.commit() if isinstance(result, Exception)]


def lease(mac: str, ip: str, hostname: str = "dyn") -> dict:
    return {"hostname": hostname, "ip4_address": ip, "mac_address": mac, "timestamp": "1581300000"}


def leases(daemon: Any, **params: str) -> list:
    response = daemon.get(f"/network/{VNI}/lease", params=params)
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return response.json()


def test_leases_recorded_outside_are_in_the_next_answer(daemon, clean_zk, zk_server):
    assert daemon.post("/initialize").status_code == 200
    assert daemon.post("/network", params={"vni": VNI, **NETWORK}).status_code == 200
    macs = [f"52:54:00:00:01:{index:02x}" for index in range(100)]
    for index, mac in enumerate(macs):
        record_lease(clean_zk, mac, f"10.10.1.{index + 100}")
    expected = [lease(mac, f"10.10.1.{index + 100}") for index, mac in enumerate(macs)]

    def from_the_view() -> bool:
        """The whole list answered with a few ZooKeeper requests (not 400 key reads): the view is warm."""
        before = received(zk_server)
        answer = leases(daemon)
        return answer == expected and received(zk_server) - before < 20

    wait_until(from_the_view, message="the lease list was not served from the view")

    for step in range(10):
        mac, address = f"52:54:00:00:02:{step:02x}", f"10.10.1.{step + 10}"
        record_lease(clean_zk, mac, address, hostname=f"new{step}")
        expected = sorted([*expected, lease(mac, address, f"new{step}")], key=lambda item: item["mac_address"])
        assert leases(daemon) == expected  # at once: no waiting for the watch
        assert daemon.get(f"/network/{VNI}/lease/{mac}").json() == [lease(mac, address, f"new{step}")]
        assert leases(daemon, limit=mac[-5:]) == [lease(mac, address, f"new{step}")]
        # a renewal rewrites a key of an existing lease; an expiry removes it
        clean_zk.set(f"/networks/{VNI}/dhcp4_leases/{mac}/ipaddr", f"10.10.1.{step + 30}".encode())
        assert daemon.get(f"/network/{VNI}/lease/{mac}").json()[0]["ip4_address"] == f"10.10.1.{step + 30}"
        clean_zk.delete(f"/networks/{VNI}/dhcp4_leases/{macs[step]}", recursive=True)
        expected = [item for item in expected if item["mac_address"] != macs[step]]
        expected = [lease(mac, f"10.10.1.{step + 30}", f"new{step}") if item["mac_address"] == mac else item
                    for item in expected]
        assert leases(daemon) == expected
        missing = daemon.get(f"/network/{VNI}/lease/{macs[step]}")
        assert (missing.status_code, missing.json()) == (404, {"message": "Lease not found."})

    before = received(zk_server)
    for _ in range(10):
        assert len(leases(daemon)) == 100
    # up to three small reads each to catch up, plus the other daemons' pings; direct reads cost over 4,000
    assert received(zk_server) - before < 100


def test_network_deleted_and_created_again_outside(daemon, clean_zk):
    assert daemon.post("/initialize").status_code == 200
    assert daemon.post("/network", params={"vni": VNI, **NETWORK}).status_code == 200
    assert daemon.post(f"/network/{VNI}/lease", params={"macaddress": "52:54:00:00:00:0a", "ipaddress": "10.10.1.10",
                                                        "hostname": "fixed"}).status_code == 200
    assert daemon.post(f"/network/{VNI}/acl", params={"description": "ssh", "rule": "tcp dport 22 accept"}
                       ).status_code == 200
    record_lease(clean_zk, "52:54:00:00:00:01", "10.10.1.150")
    # every view of the network is in use (and warm) before its subtrees go away
    wait_until(lambda: leases(daemon, static="true") == [{"hostname": "fixed", "ip4_address": "10.10.1.10",
                                                          "mac_address": "52:54:00:00:00:0a", "timestamp": "static"}]
               and leases(daemon) == [lease("52:54:00:00:00:01", "10.10.1.150")]
               and daemon.get(f"/network/{VNI}/acl").json()["description"] == "ssh")

    # another writer removes the network and creates one under the same VNI, back to back
    clean_zk.delete(f"/networks/{VNI}", recursive=True)
    transaction = clean_zk.transaction()
    for path, value in sorted(RECREATED.items()):
        transaction.create(path, value.encode())
    assert not [result for result in transaction.commit() if isinstance(result, Exception)]
    record_lease(clean_zk, "52:54:00:00:00:02", "10.20.0.50")

    assert leases(daemon) == [lease("52:54:00:00:00:02", "10.20.0.50")]  # leases: at once
    assert leases(daemon, static="true") == []
    assert daemon.get(f"/network/{VNI}/lease/52:54:00:00:00:0a").status_code == 404
    egress = {"direction": "out", "order": 0, "description": "egress", "rule": "ip daddr 10.0.0.0/8 drop"}
    # networks and ACLs: within a watch's latency
    wait_until(lambda: daemon.get(f"/network/{VNI}").json() == RECREATED_OBJECT
               and daemon.get("/network/cust-b").json() == RECREATED_OBJECT
               and daemon.get("/network").json() == RECREATED_OBJECT
               and daemon.get("/network/cust-a").status_code == 404
               and daemon.get(f"/network/{VNI}/acl").json() == egress
               and daemon.get(f"/network/{VNI}/acl/ssh").status_code == 404,
               message="the re-created network was not followed")

    # the re-created subtrees are followed from now on, and the daemon's own writes read back at once
    record_lease(clean_zk, "52:54:00:00:00:03", "10.20.0.51")
    assert [item["mac_address"] for item in leases(daemon)] == ["52:54:00:00:00:02", "52:54:00:00:00:03"]
    assert daemon.post(f"/network/{VNI}/acl", params={"description": "dns", "rule": "udp dport 53 accept",
                                                      "direction": "in"}).status_code == 200
    assert daemon.get(f"/network/{VNI}/acl").json() == [
        {"direction": "in", "order": 0, "description": "dns", "rule": "udp dport 53 accept"}, egress]
    assert daemon.post(f"/network/{VNI}/lease", params={"macaddress": "52:54:00:00:00:0b", "ipaddress": "10.20.0.9"}
                       ).status_code == 200
    assert leases(daemon, static="true") == [{"hostname": "None", "ip4_address": "10.20.0.9",
                                              "mac_address": "52:54:00:00:00:0b", "timestamp": "static"}]

    # and removed outside once more: gone from every answer
    clean_zk.delete(f"/networks/{VNI}", recursive=True)
    missing = daemon.get(f"/network/{VNI}/lease")
    assert (missing.status_code, missing.json()) == (404, {"message": f'ERROR: Could not find network "{VNI}" '
                                                                      "in the cluster!"})
    wait_until(lambda: daemon.get("/network").json() == {"message": "Network not found."}
               and daemon.get(f"/network/{VNI}/acl").status_code == 404)
