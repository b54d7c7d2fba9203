"""The metadata API (provisioner.md §5) on its own loopback listener, callers told apart by source address."""

from __future__ import annotations

import http.client
import socket

import pytest
from test_node import eventually, seed_node
from test_vm import uuid_for, vm_xml

from conftest import REQUEST_TIMEOUT, START_TIMEOUT
from pvc_core.zkserver import free_port

MAC_A, MAC_B, MAC_C = "52:54:00:aa:bb:01", "52:54:00:aa:bb:02", "52:54:00:aa:bb:03"
USERDATA_1 = "#cloud-config\nusers:\n  - name: a+b&c%41\n    ssh_authorized_keys: [\"ssh-ed25519 AAAA x@y\"]\n"
USERDATA_2 = "Content-Type: multipart/mixed; boundary=\"==B==\"\nMIME-Version: 1.0\n\n--==B==--\n"


def xml_with_mac(name: str, uuid: str, mac: str) -> str:
    xml = vm_xml(name, uuid, bridge="vmbr1001")
    start = xml.index("<mac address='") + len("<mac address='")
    return xml[:start] + mac + xml[xml.index("'", start):]


@pytest.fixture(scope="module")
def metad(daemon_factory, zk_server):
    from kazoo.client import KazooClient
    zk = KazooClient(hosts=zk_server.address)
    zk.start(timeout=START_TIMEOUT)
    for child in zk.get_children("/"):
        if child != "zookeeper":
            zk.delete("/" + child, recursive=True)
    port = free_port()
    daemon = daemon_factory({"ceph": {"collector": "False"},
                             "metadata": {"enabled": "True", "listen_address": "127.0.0.1", "listen_port": str(port)}})
    daemon.meta_port = port
    assert daemon.post("/initialize").status_code == 200
    seed_node(zk, "pvchv1")
    eventually(lambda: daemon.get("/node/pvchv1").status_code == 200)
    assert daemon.post("/network/1001", params=[
        ("description", "cust-a"), ("nettype", "managed"), ("domain", "cust-a.local"), ("ip4_network", "10.10.1.0/24"),
        ("ip4_gateway", "10.10.1.1"), ("dhcp4", "True"), ("dhcp4_start", "10.10.1.100"),
        ("dhcp4_end", "10.10.1.199")]).status_code == 200
    assert daemon.post("/network/1002", params={"description": "bridged", "nettype": "bridged"}).status_code == 200
    # what dnsmasq's lease hook writes on the primary (the addresses are loopback ones the test can bind)
    for vni, mac, address in (("1001", MAC_A, "127.0.0.5"), ("1001", MAC_C, "127.0.0.8"),
                              ("1001", "52:54:00:00:00:99", "127.0.0.9")):
        base = f"/networks/{vni}/dhcp4_leases/{mac}"
        zk.create(base, b"")
        for key, value in (("expiry", "0"), ("ipaddr", address), ("hostname", ""), ("clientid", "*")):
            zk.create(f"{base}/{key}", value.encode())
    # a static reservation is not a lease: its address is not identified (v0.6)
    for container in ("dhcp4_reservations", "dhcp_reservations"):
        base = f"/networks/1001/{container}/{MAC_B}"
        zk.create(base, b"static")
        zk.create(f"{base}/ipaddr", b"127.0.0.6")
        zk.create(f"{base}/hostname", b"")
    for name, uuid, mac in (("meta1", uuid_for(1), MAC_A), ("meta2", uuid_for(2), MAC_B),
                            ("meta3", uuid_for(3), MAC_C)):
        response = daemon.post("/vm", params={"node": "pvchv1"}, data={"xml": xml_with_mac(name, uuid, mac)})
        assert response.status_code == 200, response.text
    calls = [("/provisioner/template/system/s", {"vcpus": "1", "vram": "512", "serial": "yes", "vnc": "no"}),
             ("/provisioner/template/network/n", {}), ("/provisioner/template/storage/t", {}),
             ("/provisioner/userdata/u1", {"data": USERDATA_1}), ("/provisioner/userdata/u2", {"data": USERDATA_2})]
    for path, data in calls:
        assert daemon.post(path, data=data).status_code == 200, path
    for profile, userdata in (("p1", "u1"), ("p2", "u2")):
        assert daemon.post(f"/provisioner/profile/{profile}", params={
            "system_template": "s", "network_template": "n", "storage_template": "t", "userdata": userdata,
            "script": "empty"}).status_code == 200
    assert daemon.post("/vm/meta1/meta", params={"profile": "p1"}).status_code == 200
    yield daemon
    daemon.stop()
    zk.stop()
    zk.close()


def ask(daemon, path: str, source: str = "127.0.0.5") -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", daemon.meta_port, timeout=REQUEST_TIMEOUT,
                                            source_address=(source, 0))
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(), response.getheader("Content-Type") or ""
    finally:
        connection.close()


def test_identity_and_userdata_of_the_calling_vm(metad):
    assert ask(metad, "/latest/meta-data/instance-id")[:2] == (200, uuid_for(1))
    assert ask(metad, "/latest/meta-data/name")[:2] == (200, "meta1")
    assert ask(metad, "/2009-04-04/meta-data/profile")[:2] == (200, "p1")
    status, body, content_type = ask(metad, "/latest/user-data")
    assert (status, body) == (200, USERDATA_1) and content_type.startswith("text/plain")
    assert ask(metad, "/latest/meta-data/")[:2] == (200, "instance-id\nname\nprofile")
    status, body, _ = ask(metad, "/")
    assert status == 209 and body.strip() == '{"message": "PVC Provisioner Metadata API version 1"}'


def test_profile_change_is_served_on_the_next_request(metad):
    assert metad.post("/vm/meta1/meta", params={"profile": "p2"}).status_code == 200
    try:
        assert ask(metad, "/latest/user-data")[:2] == (200, USERDATA_2)
        assert ask(metad, "/latest/meta-data/profile")[:2] == (200, "p2")
    finally:
        assert metad.post("/vm/meta1/meta", params={"profile": "p1"}).status_code == 200
    assert ask(metad, "/latest/user-data")[:2] == (200, USERDATA_1)


def test_unknown_callers_and_missing_profiles(metad):
    for source in ("127.0.0.7", "127.0.0.6", "127.0.0.9"):  # no lease; a reservation only; a lease of no VM
        for path in ("/latest/meta-data/instance-id", "/latest/meta-data/name", "/latest/meta-data/profile",
                     "/latest/user-data"):
            assert ask(metad, path, source)[:2] == (404, ""), (source, path)
    # meta3 has no profile; then a profile that does not exist
    assert ask(metad, "/latest/user-data", "127.0.0.8")[:2] == (200, "")
    assert ask(metad, "/latest/meta-data/name", "127.0.0.8")[:2] == (200, "meta3")
    assert metad.post("/vm/meta3/meta", params={"profile": "vanished"}).status_code == 200
    assert ask(metad, "/latest/user-data", "127.0.0.8")[:2] == (200, "")


def test_only_the_listed_paths_and_only_on_its_listener(metad):
    for path in ("/latest/meta-data/public-keys", "/latest/dynamic/instance-identity/document", "/latest",
                 "/latest/meta-data", "/api/v1/", "/api/v1/provisioner/profile"):
        assert ask(metad, path)[0] == 404, path
    assert metad.get("/latest/user-data").status_code == 404  # not on the main API, either prefix
    assert metad.http.get(f"{metad.base}/latest/user-data", timeout=REQUEST_TIMEOUT).status_code == 404
    assert ask(metad, "/latest/user-data")[0] == 200  # no API key needed (auth is off here, and not asked)


def test_listener_that_cannot_bind_yet_does_not_stop_the_daemon(daemon_factory):
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    daemon = daemon_factory({"ceph": {"collector": "False"}, "api": {"listener_retry": "0.2"},
                             "metadata": {"enabled": "True", "listen_address": "127.0.0.1", "listen_port": str(port)}})
    try:
        assert daemon.get("/").status_code == 200
        eventually(lambda: "listener metadata cannot bind 127.0.0.1:" in daemon.log())
        assert daemon.get("/").status_code == 200
        holder.close()
        daemon.meta_port = port
        eventually(lambda: ask(daemon, "/", "127.0.0.1")[0] == 209, ignoring=(OSError,), interval=0.1,
                   message="the metadata listener did not bind once its port was free")
    finally:
        holder.close()
        daemon.stop()
