"""The vm plugin against a real ZooKeeper and libvirt's real schema; nodes written by the test, or simulated."""

from __future__ import annotations

import concurrent.futures
import re
import threading
import time

import pytest
from kazoo.client import KazooClient
from test_cluster import tree
from test_node import eventually, seed_node

from conftest import ANSWER_SLACK, START_TIMEOUT, settle_timeout

UUID = "8f7c5a0e-3b1d-4c6e-9a2f-1d2e3f4a5b6c"
XML = ("<domain type='kvm'><name>test1</name><uuid>" + UUID + "</uuid><description>Test VM</description>"
       "<memory unit='MiB'>2048</memory><vcpu>2</vcpu><cpu mode='host-model'><topology sockets='1' cores='2' "
       "threads='1'/></cpu><os><type arch='x86_64' machine='pc-i440fx-2.7'>hvm</type></os><features><acpi/>"
       "<apic/><pae/></features><devices><emulator>/usr/bin/kvm</emulator><controller type='usb' index='0'/>"
       "<controller type='scsi' index='0' model='virtio-scsi'/><disk type='network' device='disk'>"
       "<source protocol='rbd' name='vms/test1_sda'><host name='pvchv1' port='6789'/></source>"
       "<target dev='sda' bus='scsi'/></disk><interface type='bridge'><mac address='52:54:00:ab:cd:ef'/>"
       "<source bridge='vmbr100'/><model type='virtio'/></interface><console type='pty'/></devices></domain>")

PRETTY = """<domain type="kvm">
  <name>test1</name>
  <uuid>8f7c5a0e-3b1d-4c6e-9a2f-1d2e3f4a5b6c</uuid>
  <description>Test VM</description>
  <memory unit="MiB">2048</memory>
  <vcpu>2</vcpu>
  <cpu mode="host-model">
    <topology sockets="1" cores="2" threads="1"/>
  </cpu>
  <os>
    <type arch="x86_64" machine="pc-i440fx-2.7">hvm</type>
  </os>
  <features>
    <acpi/>
    <apic/>
    <pae/>
  </features>
  <devices>
    <emulator>/usr/bin/kvm</emulator>
    <controller type="usb" index="0"/>
    <controller type="scsi" index="0" model="virtio-scsi"/>
    <disk type="network" device="disk">
      <source protocol="rbd" name="vms/test1_sda">
        <host name="pvchv1" port="6789"/>
      </source>
      <target dev="sda" bus="scsi"/>
    </disk>
    <interface type="bridge">
      <mac address="52:54:00:ab:cd:ef"/>
      <source bridge="vmbr100"/>
      <model type="virtio"/>
    </interface>
    <console type="pty"/>
  </devices>
</domain>
"""

OBJECT = {
    "name": "test1", "uuid": UUID, "state": "stop", "node": "pvchv1", "last_node": "", "migrated": "no",
    "failed_reason": "", "node_limit": ["pvchv1", "pvchv2"], "node_selector": "mem", "node_autostart": False,
    "tags": [], "snapshots": [], "description": "Test VM", "profile": "None", "memory": 2048, "vcpu": 2,
    "vcpu_topology": "1/2/1",
    "networks": [{"type": "bridge", "mac": "52:54:00:ab:cd:ef", "source": "vmbr100", "model": "virtio"}],
    "type": "hvm", "arch": "x86_64", "machine": "pc-i440fx-2.7", "console": "pty", "emulator": "/usr/bin/kvm",
    "features": ["acpi", "apic", "pae"],
    "disks": [{"type": "rbd", "name": "vms/test1_sda", "dev": "sda", "bus": "scsi"}],
    "controllers": [{"type": "usb", "model": "none"}, {"type": "scsi", "model": "virtio-scsi"}],
    "xml": XML,
}


def vm_xml(name: str, uuid: str, bridge: str = "vmbr100") -> str:
    return XML.replace("test1", name).replace(UUID, uuid).replace("vmbr100", bridge)


def uuid_for(index: int) -> str:
    return f"00000000-0000-4000-8000-{index:012d}"


@pytest.fixture(scope="module")
def vmd(daemon_factory):
    """Short undefine pauses, so the tests run quickly; no storage (tests/test_ceph.py has it).

    A wait=true request returns as soon as the node has acted; its bound is as long as any other
    wait here, so that a loaded machine does not turn a slow node into a 409.
    """
    wait = str(settle_timeout())
    return daemon_factory({"vm": {"delete_grace": "0.05", "wait_timeout": wait}, "node": {"wait_timeout": wait},
                           "plugins": {"disabled": ["ceph"]}})


@pytest.fixture
def cluster(vmd, clean_zk):
    assert vmd.post("/initialize").status_code == 200
    for name in ("pvchv1", "pvchv2", "pvchv3"):
        seed_node(clean_zk, name)
    eventually(lambda: isinstance(vmd.get("/node").json(), list) and len(vmd.get("/node").json()) == 3)
    return clean_zk


def define(daemon, xml: str = XML, **params):
    return daemon.post("/vm", params=params, data={"xml": xml})


def test_define_writes_every_key(vmd, cluster):
    response = define(vmd, node="pvchv1", limit="pvchv1,pvchv2", selector="mem", autostart="false")
    assert response.status_code == 200
    assert response.json() == {"message": f"Added new VM with Name 'test1' and UUID '{UUID}' to database."}
    base = f"/domains/{UUID}"
    assert tree(cluster, "/domains") == {
        base: b"test1", f"{base}/state": b"stop", f"{base}/node": b"pvchv1", f"{base}/lastnode": b"",
        f"{base}/node_limit": b"pvchv1,pvchv2", f"{base}/node_selector": b"mem", f"{base}/node_autostart": b"False",
        f"{base}/failedreason": b"", f"{base}/consolelog": b"", f"{base}/rbdlist": b"vms/test1_sda",
        f"{base}/profile": b"None", f"{base}/xml": PRETTY.encode(),
    }
    # visible to the very next read from this daemon
    assert vmd.get("/vm/test1").json() == OBJECT
    assert vmd.get(f"/vm/{UUID}").json() == OBJECT
    assert vmd.get("/vm").json() == OBJECT  # one VM: the object
    assert vmd.get("/status").json()["vms"] == {"total": 1, "stop": 1}


def test_define_with_declaration_and_alias_path(vmd, cluster):
    xml = "<?xml version='1.0' encoding='UTF-8'?>\n" + XML
    assert vmd.post("/vm/anything", params={"node": "pvchv2"}, data={"xml": xml}).status_code == 200
    assert cluster.get(f"/domains/{UUID}/node")[0] == b"pvchv2"
    assert cluster.get(f"/domains/{UUID}/node_selector")[0] == b"mem"  # documented default
    assert cluster.get(f"/domains/{UUID}/node_limit")[0] == b""


@pytest.mark.parametrize("xml, fragment", [
    ("<domain><name>x</name", "Error: XML is malformed or incorrect:"),
    (XML.replace("<vcpu>2</vcpu>", "<vcpu>2</vcpu><bogus/>"), "Element domain has extra content: bogus"),
    (XML.replace("<vcpu>2</vcpu>", "<vcpu>lots</vcpu>"), "XML document failed to validate against schema"),
    (XML.replace(f"<uuid>{UUID}</uuid>", ""), "the domain has no <uuid> element"),
    (XML.replace("<name>test1</name>", ""), "the domain has no <name> element"),
    ("<network><name>x</name></network>", "the root element is <network>"),
])
def test_define_invalid_xml(vmd, cluster, xml, fragment):
    before = tree(cluster, "/domains")
    response = define(vmd, xml)
    assert response.status_code == 400
    assert fragment in response.json()["message"], response.json()
    assert tree(cluster, "/domains") == before


@pytest.mark.parametrize("params, message", [
    ({"selector": "fastest"}, "Parameter 'selector': expected one of mem, vcpus, load, vms, got 'fastest'"),
    ({"autostart": "sometimes"}, "Parameter 'autostart': expected a boolean"),
])
def test_define_bad_arguments(vmd, cluster, params, message):
    response = define(vmd, **params)
    assert response.status_code == 400 and response.json()["message"].startswith(message)


def test_define_needs_xml(vmd, cluster):
    response = vmd.post("/vm")
    assert response.status_code == 400
    assert response.json()["message"].startswith("Parameter 'xml': required")


def test_define_duplicates(vmd, cluster):
    assert define(vmd).status_code == 200
    # the last: a name that is test1's UUID, which would make /vm/<that> reach test1
    named_as_uuid = XML.replace(UUID, uuid_for(1)).replace("<name>test1</name>", f"<name>{UUID}</name>")
    for xml in (XML, vm_xml("other", UUID), vm_xml("test1", uuid_for(1)), named_as_uuid):
        response = define(vmd, xml)
        assert response.status_code == 400
        assert "matches an existing VM on the cluster" in response.json()["message"]
    assert len(cluster.get_children("/domains")) == 1
    # nor can a rename give a VM another's UUID as its name; nothing changes
    assert define(vmd, vm_xml("other", uuid_for(1))).status_code == 200
    before = tree(cluster, "/domains")
    renamed = vmd.post("/vm/other/rename", params={"new_name": UUID})
    assert renamed.status_code == 400
    assert renamed.json() == {"message": f"'{UUID}' is the UUID of VM 'test1'; expected a name no VM has as its "
                                         "name or UUID"}
    assert tree(cluster, "/domains") == before and vmd.get(f"/vm/{UUID}").json()["name"] == "test1"


def test_one_name_defined_at_once_through_two_daemons_is_defined_once(vmd, cluster, daemon_factory):
    """Two daemons, 12 concurrent defines of one name (each with its own UUID): one succeeds, the
    others are told the name exists (400) or that a concurrent change won (409); the name check reads
    the view once it has caught up with ZooKeeper, not the whole tree."""
    other = daemon_factory({"plugins": {"disabled": ["ceph"]}})
    eventually(lambda: other.get("/node").status_code == 200)

    def one(index: int) -> int:
        daemon = (vmd, other)[index % 2]
        return define(daemon, vm_xml("samename", uuid_for(100 + index)), node="pvchv1").status_code

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(one, range(12)))
    assert codes.count(200) == 1 and set(codes) <= {200, 400, 409}, codes
    named = [child for child in cluster.get_children("/domains")
             if cluster.get(f"/domains/{child}")[0] == b"samename"]
    assert len(named) == 1
    for daemon in (vmd, other):
        eventually(lambda daemon=daemon: daemon.get("/vm/samename").status_code == 200)
        assert daemon.get("/vm/samename").json()["uuid"] == named[0]


def test_define_placement(vmd, cluster):
    cluster.set("/nodes/pvchv1/domainscount", b"5")
    cluster.set("/nodes/pvchv2/domainscount", b"1")
    cluster.set("/nodes/pvchv3/domainscount", b"3")
    cluster.set("/nodes/pvchv3/memfree", b"90000")
    eventually(lambda: vmd.get("/node/pvchv3").json()["memory"]["free"] == 90000)
    eventually(lambda: vmd.get("/node/pvchv2").json()["domains_count"] == 1)
    assert define(vmd, vm_xml("a", uuid_for(1)), selector="vms").status_code == 200
    assert cluster.get(f"/domains/{uuid_for(1)}/node")[0] == b"pvchv2"
    assert define(vmd, vm_xml("b", uuid_for(2))).status_code == 200  # mem: most memory left
    assert cluster.get(f"/domains/{uuid_for(2)}/node")[0] == b"pvchv3"
    limited = define(vmd, vm_xml("c", uuid_for(3)), limit="pvchv1", selector="vms")
    assert cluster.get(f"/domains/{uuid_for(3)}/node")[0] == b"pvchv1"
    assert "Node 'pvchv1' was chosen by selector 'vms'" in limited.json()["message"]
    fallback = define(vmd, vm_xml("d", uuid_for(4)), node="pvchv9", selector="vms")
    assert fallback.status_code == 200
    assert "node 'pvchv9' does not exist, so Node 'pvchv2' was chosen" in fallback.json()["message"]
    none = define(vmd, vm_xml("e", uuid_for(5)), limit="pvchv8")
    assert none.status_code == 400
    assert none.json() == {"message": "ERROR: Could not find a valid target node for VM 'e'."}


def test_list_filters(vmd, cluster):
    assert vmd.get("/vm").status_code == 404 and vmd.get("/vm").json() == {"message": "VM not found."}
    define(vmd, vm_xml("web1", uuid_for(1)), node="pvchv1")
    define(vmd, vm_xml("web2", uuid_for(2)), node="pvchv2")
    define(vmd, vm_xml("db1", uuid_for(3)), node="pvchv2")
    cluster.set(f"/domains/{uuid_for(2)}/state", b"start")
    eventually(lambda: vmd.get("/vm/web2/state").json()["state"] == "start")
    names = lambda response: sorted(vm["name"] for vm in (response.json() if isinstance(response.json(), list)  # noqa: E731
                                                           else [response.json()]))
    assert names(vmd.get("/vm")) == ["db1", "web1", "web2"]
    assert names(vmd.get("/vm", params={"limit": "web"})) == ["web1", "web2"]
    assert names(vmd.get("/vm", params={"limit": "^db"})) == ["db1"]
    assert names(vmd.get("/vm", params={"limit": "1$"})) == ["db1", "web1"]
    assert names(vmd.get("/vm", params={"node": "pvchv2"})) == ["db1", "web2"]
    assert names(vmd.get("/vm", params={"node": "pvchv2", "state": "start"})) == ["web2"]  # intersection
    assert vmd.get("/vm", params={"state": "stop", "limit": "zzz"}).status_code == 404
    bad_node = vmd.get("/vm", params={"node": "nope"})
    assert bad_node.status_code == 400 and bad_node.json() == {"message": 'Specified node "nope" is invalid.'}
    bad_state = vmd.get("/vm", params={"state": "running"})
    assert bad_state.status_code == 400 and bad_state.json()["message"].startswith("Parameter 'state'")
    bad_regex = vmd.get("/vm", params={"limit": "(("})
    assert bad_regex.status_code == 400 and bad_regex.json()["message"].startswith("Regex Error")
    assert vmd.get("/vm/web").status_code == 404  # single-object GET is exact


def test_a_pattern_that_backtracks_for_ever_is_stopped_and_holds_no_other_request(vmd, cluster):
    """A limit such as '^(L|L)+$' against a long name that fails at its end backtracks exponentially. Matched with
    Python's re it held the GIL: one request froze every request, the simulated nodes' keepalives and the daemon's
    shutdown.
    Now its matching stops after MATCH_BUDGET seconds (400 saying so), and other requests are answered
    meanwhile (the matching lets other threads run)."""
    import threading

    from pvc_core.matching import MATCH_BUDGET
    name = "L" * 60 + "x"
    define(vmd, vm_xml(name, uuid_for(4)), node="pvchv1")
    evil, answers = "^(L|L)+$", []
    slow = threading.Thread(target=lambda: answers.append(vmd.get("/vm", params={"limit": evil})))
    begun = time.monotonic()
    slow.start()
    others = [vmd.get("/").status_code for _ in range(5)]  # answered while the pattern is matched
    slow.join(timeout=MATCH_BUDGET + 2 * ANSWER_SLACK)
    assert not slow.is_alive() and others == [200] * 5
    (answer,) = answers
    assert time.monotonic() - begun < MATCH_BUDGET + ANSWER_SLACK
    assert answer.status_code == 400 and answer.json()["message"] == (
        f"Regex Error: the pattern '^(L|L)+$' took more than {MATCH_BUDGET:g} s to match; expected a simpler "
        "regular expression (a repeat of a repeat, such as '(a*)*', can take exponential time)"), answer.text
    # a pattern that ends is answered as before
    found = vmd.get("/vm", params={"limit": f"^{name}$"}).json()
    assert [vm["name"] for vm in (found if isinstance(found, list) else [found])] == [name]


@pytest.mark.parametrize("memory, mib", [
    ('<memory unit="bytes">536870912</memory>', 512), ('<memory unit="b">1073741824</memory>', 1024),
    ('<memory unit="KiB">2097152</memory>', 2048), ('<memory>2097152</memory>', 2048),
    ('<memory unit="k">1048576</memory>', 1024), ('<memory unit="KB">2097152</memory>', 2000),
    ('<memory unit="M">768</memory>', 768), ('<memory unit="MB">1000</memory>', 953),
    ('<memory unit="G">3</memory>', 3072), ('<memory unit="GB">2</memory>', 1907),
    ('<memory unit="TiB">1</memory>', 1048576),
])
def test_memory_in_mib_whatever_the_unit(vmd, cluster, memory, mib):
    """The VM's memory (MiB) for every libvirt unit, through the object and the list: v0.6 converted only KiB
    and GiB, so 536870912 'bytes' read as 536870912 MiB (found by a new user's trial)."""
    xml = re.sub(r"<memory unit=.MiB.>2048</memory>", memory, vm_xml("mem1", uuid_for(6)))
    assert memory in xml
    assert define(vmd, xml, node="pvchv1").status_code == 200
    found = eventually(lambda: (answer := vmd.get("/vm/mem1")).status_code == 200 and answer.json())
    assert found["memory"] == mib and memory.replace('"', "'") in found["xml"]  # the XML itself as sent
    listed = vmd.get("/vm", params={"limit": "^mem1$"}).json()
    assert (listed if isinstance(listed, dict) else listed[0])["memory"] == mib


VM_ROUTES = [
    ("GET", "/vm/ghost", {}, 404), ("PUT", "/vm/ghost", {"xml": XML}, 404), ("DELETE", "/vm/ghost", {}, 404),
    ("GET", "/vm/ghost/meta", {}, 404), ("POST", "/vm/ghost/meta", {"profile": "x"}, 404),
    ("GET", "/vm/ghost/state", {}, 404), ("POST", "/vm/ghost/state", {"state": "start"}, 404),
    ("GET", "/vm/ghost/node", {}, 404), ("POST", "/vm/ghost/node", {"action": "move"}, 404),
    ("POST", "/vm/ghost/locks", {}, 404), ("GET", "/vm/ghost/console", {}, 404),
    ("GET", f"/vm/{uuid_for(9)}", {}, 404),
]


@pytest.mark.parametrize("method, path, params, code", VM_ROUTES)
def test_unknown_vm_on_every_route(vmd, cluster, method, path, params, code):
    response = vmd.request(method, path, params=params)
    assert response.status_code == code
    message = response.json()["message"]
    assert message in ("VM not found.", "ERROR: Could not find VM 'ghost' in the cluster!",
                       'ERROR: Could not find VM "ghost" in the cluster!'), message


def test_modify(vmd, cluster):
    define(vmd, node="pvchv1")
    new = XML.replace("<vcpu>2</vcpu>", "<vcpu>4</vcpu>")
    response = vmd.put("/vm/test1", params={"restart": "true"}, data={"xml": new})
    assert response.status_code == 200 and response.json() == {"message": "Modified VM 'test1'. Restarting it."}
    assert b"<vcpu>4</vcpu>" in cluster.get(f"/domains/{UUID}/xml")[0]
    assert cluster.get(f"/domains/{UUID}/state")[0] == b"restart"
    assert vmd.get("/vm/test1").json()["vcpu"] == 4
    wrong = vmd.put("/vm/test1", data={"xml": vm_xml("test1", uuid_for(7))})
    assert wrong.status_code == 400 and "is not the UUID" in wrong.json()["message"]
    invalid = vmd.put("/vm/test1", data={"xml": XML.replace("<vcpu>2</vcpu>", "<vcpu>x</vcpu>")})
    assert invalid.status_code == 400 and "failed to validate" in invalid.json()["message"]


def test_undefine(vmd, cluster, zk_server):
    define(vmd, node="pvchv1")
    cluster.set(f"/domains/{UUID}/state", b"start")
    seen = []
    watcher = KazooClient(hosts=zk_server.address)
    watcher.start(timeout=START_TIMEOUT)
    watcher.DataWatch(f"/domains/{UUID}/state", lambda data, stat: seen.append(data) or data is not None)
    response = vmd.delete("/vm/test1")
    assert response.status_code == 200 and response.json() == {"message": "Undefined VM 'test1' from the cluster."}
    assert cluster.exists(f"/domains/{UUID}") is None
    eventually(lambda: None in seen)
    assert [value for value in seen if value] == [b"start", b"stop", b"delete"]  # the v0.6 sequence
    watcher.stop()
    assert vmd.get("/vm/test1").status_code == 404


def test_remove_with_disks_needs_storage(vmd, cluster):
    define(vmd, node="pvchv1")
    response = vmd.delete("/vm/test1", params={"delete_disks": "true"})
    assert response.status_code == 400 and "'ceph' service" in response.json()["message"]
    assert cluster.exists(f"/domains/{UUID}") is not None


def test_meta(vmd, cluster):
    define(vmd, node="pvchv1")
    assert vmd.get("/vm/test1/meta").json() == {"name": "test1", "node_limit": None, "node_selector": "mem",
                                               "node_autostart": False}
    response = vmd.post("/vm/test1/meta", params={"limit": "pvchv1,pvchv3", "selector": "load",
                                                  "autostart": "yes", "profile": "web"})
    assert response.json() == {"message": "Successfully modified PVC metadata of VM 'test1'."}
    assert vmd.get("/vm/test1/meta").json() == {"name": "test1", "node_limit": ["pvchv1", "pvchv3"],
                                               "node_selector": "load", "node_autostart": True}
    assert cluster.get(f"/domains/{UUID}/node_autostart")[0] == b"True"
    assert cluster.get(f"/domains/{UUID}/profile")[0] == b"web"
    vmd.post("/vm/test1/meta", params={"limit": ""})
    assert cluster.get(f"/domains/{UUID}/node_limit")[0] == b""
    assert vmd.post("/vm/test1/meta", params={"selector": "x"}).status_code == 400


def test_state_changes(vmd, cluster):
    define(vmd, node="pvchv1")
    cases = [
        ("restart", 400, "ERROR: VM 'test1' is not in 'start' state!", b"stop"),
        ("shutdown", 400, "ERROR: VM 'test1' is not in 'start' state!", b"stop"),
        ("disable", 200, "Marked VM 'test1' as disable.", b"disable"),
        ("start", 200, "Starting VM 'test1'.", b"start"),
        ("disable", 400, "ERROR: VM 'test1' must be stopped before disabling!", b"start"),
        ("restart", 200, "Restarting VM 'test1'.", b"restart"),
        ("stop", 200, "Forcibly stopping VM 'test1'.", b"stop"),
        ("start", 200, "Starting VM 'test1'.", b"start"),
        ("shutdown", 200, "Shutting down VM 'test1'.", b"shutdown"),
    ]
    for state, code, message, stored in cases:
        response = vmd.post("/vm/test1/state", params={"state": state})
        assert (response.status_code, response.json()) == (code, {"message": message}), state
        assert cluster.get(f"/domains/{UUID}/state")[0] == stored, state
    assert vmd.get("/vm/test1/state").json() == {"name": "test1", "state": "shutdown"}
    assert vmd.post("/vm/test1/state", params={"state": "pause"}).status_code == 400


def test_state_wait(sim, daemon_factory):
    define(sim, node="pvchv1", limit="pvchv1,pvchv2", selector="mem", autostart="false")
    assert sim.post("/vm/test1/state", params={"state": "start", "wait": "true"}).status_code == 200
    assert sim.get("/vm/test1").json() == {**OBJECT, "state": "start"}
    assert sim.get("/node/pvchv1").json()["running_domains"] == [UUID]
    assert sim.post("/vm/test1/state", params={"state": "shutdown", "wait": "true"}).status_code == 200
    assert sim.get("/vm/test1").json() == OBJECT
    assert sim.get("/node/pvchv1").json()["running_domains"] == []
    assert sim.post("/simnode/pvchv1", params={"action": "stop"}).status_code == 200  # nobody answers now
    quick = daemon_factory({"vm": {"wait_timeout": "1"}, "plugins": {"disabled": ["ceph"]}})
    try:
        eventually(lambda: quick.get("/vm/test1/state").json().get("state") == "stop")
        started = time.monotonic()
        timeout = quick.post("/vm/test1/state", params={"state": "start", "wait": "true"})
        assert timeout.status_code == 409 and "has not finished 'start' after 1 s" in timeout.json()["message"]
        assert time.monotonic() - started < 1 + ANSWER_SLACK
    finally:
        quick.stop()


def test_migrate_move_unmigrate(vmd, cluster):
    define(vmd, node="pvchv1")
    cluster.set(f"/domains/{UUID}/state", b"start")
    eventually(lambda: vmd.get("/vm/test1/state").json()["state"] == "start")
    migrate = vmd.post("/vm/test1/node", params={"action": "migrate", "node": "pvchv2"})
    assert migrate.json() == {"message": "Migrating VM 'test1' to node 'pvchv2'."}
    assert vmd.get("/vm/test1/node").json() == {"name": "test1", "node": "pvchv2", "last_node": "pvchv1"}
    assert cluster.get(f"/domains/{UUID}/state")[0] == b"migrate"
    again = vmd.post("/vm/test1/node", params={"action": "migrate", "node": "pvchv3"})
    assert again.json() == {"message": "ERROR: VM 'test1' has been previously migrated."}
    forced = vmd.post("/vm/test1/node", params={"action": "migrate", "node": "pvchv3", "force": "true"})
    assert forced.status_code == 200
    assert vmd.get("/vm/test1/node").json() == {"name": "test1", "node": "pvchv3", "last_node": "pvchv1"}
    cluster.set(f"/domains/{UUID}/state", b"start")
    back = vmd.post("/vm/test1/node", params={"action": "unmigrate"})
    assert back.json() == {"message": "Unmigrating VM 'test1' back to node 'pvchv1'."}
    assert vmd.get("/vm/test1/node").json() == {"name": "test1", "node": "pvchv1", "last_node": ""}
    never = vmd.post("/vm/test1/node", params={"action": "unmigrate"})
    assert never.json() == {"message": "ERROR: VM 'test1' has not been previously migrated."}
    move = vmd.post("/vm/test1/node", params={"action": "move", "node": "pvchv2"})
    assert move.json() == {"message": "Permanently migrating VM 'test1' to node 'pvchv2'."}
    assert vmd.get("/vm/test1").json()["migrated"] == "no"
    for params, message in [
        ({"node": "pvchv9"}, "ERROR: Specified node 'pvchv9' is invalid."),
        ({"node": "pvchv2"}, "ERROR: VM 'test1' is already running on node 'pvchv2'."),
    ]:
        response = vmd.post("/vm/test1/node", params={"action": "move", **params})
        assert (response.status_code, response.json()) == (400, {"message": message})
    vmd.post("/vm/test1/meta", params={"limit": "pvchv2"})
    limited = vmd.post("/vm/test1/node", params={"action": "move", "node": "pvchv3"})
    assert limited.json() == {"message": "ERROR: Specified node 'pvchv3' is not in the allowed list of nodes "
                                         "for VM 'test1'."}
    nowhere = vmd.post("/vm/test1/node", params={"action": "migrate"})
    assert nowhere.json() == {"message": "ERROR: Could not find a valid migration target for VM 'test1'."}
    assert vmd.post("/vm/test1/node", params={"action": "teleport"}).status_code == 400


def test_migrating_a_stopped_vm_starts_it(vmd, cluster):
    define(vmd, node="pvchv1")
    response = vmd.post("/vm/test1/node", params={"action": "migrate"})
    assert response.status_code == 200
    assert cluster.get(f"/domains/{UUID}/state")[0] == b"start"
    assert cluster.get(f"/domains/{UUID}/lastnode")[0] == b"pvchv1"
    assert cluster.get(f"/domains/{UUID}/node")[0] == b"pvchv2"  # ties break by sorted name


def test_concurrent_migrations_stay_consistent(vmd, cluster):
    define(vmd, node="pvchv1")
    cluster.set(f"/domains/{UUID}/state", b"start")
    eventually(lambda: vmd.get("/vm/test1/state").json()["state"] == "start")
    targets = ["pvchv2", "pvchv3"] * 10

    def migrate(target: str) -> int:
        return vmd.post("/vm/test1/node", params={"action": "migrate", "node": target, "force": "true"}).status_code

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(migrate, targets))
    assert set(codes) <= {200, 400, 409}, codes
    assert 200 in codes
    node = cluster.get(f"/domains/{UUID}/node")[0]
    lastnode = cluster.get(f"/domains/{UUID}/lastnode")[0]
    state = cluster.get(f"/domains/{UUID}/state")[0]
    assert node in (b"pvchv2", b"pvchv3") and lastnode == b"pvchv1" and state == b"migrate"
    assert vmd.get("/vm/test1/node").json() == {"name": "test1", "node": node.decode(), "last_node": "pvchv1"}


def test_define_and_undefine_are_never_half_visible(vmd, cluster, zk_server):
    reader = KazooClient(hosts=zk_server.address)
    reader.start(timeout=START_TIMEOUT)
    partial: list = []
    stop = threading.Event()

    def watch_reads():
        while not stop.is_set():
            for child in reader.get_children("/domains"):
                try:
                    keys = reader.get_children(f"/domains/{child}")
                except Exception:  # noqa: BLE001 - deleted between the two reads
                    continue
                if len(keys) not in (0, 11):
                    partial.append(keys)

    thread = threading.Thread(target=watch_reads)
    thread.start()
    try:
        for index in range(15):
            assert define(vmd, vm_xml(f"atom{index}", uuid_for(index)), node="pvchv1").status_code == 200
        for index in range(15):
            assert vmd.delete(f"/vm/atom{index}").status_code == 200
    finally:
        stop.set()
        thread.join()
        reader.stop()
    assert partial == []


def test_console(vmd, cluster):
    define(vmd, node="pvchv1")
    cluster.set(f"/domains/{UUID}/consolelog", b"Debian GNU/Linux 10 test1 ttyS0\n\ntest1 login: \n")
    assert vmd.get("/vm/test1/console", params={"lines": "4"}).json() == {
        "name": "test1", "data": "Debian GNU/Linux 10 test1 ttyS0\n\ntest1 login: \n"}
    assert vmd.get("/vm/test1/console", params={"lines": "2"}).json()["data"] == "test1 login: \n"
    bad = vmd.get("/vm/test1/console", params={"lines": "many"})
    assert bad.status_code == 400 and bad.json()["message"].startswith("Parameter 'lines'")


def test_locks(vmd, cluster):
    define(vmd, node="pvchv1")
    cluster.set(f"/domains/{UUID}/state", b"start")
    eventually(lambda: vmd.get("/vm/test1/state").json()["state"] == "start")
    running = vmd.post("/vm/test1/locks")
    assert running.status_code == 400 and running.json() == {"message": "VM must be stopped to flush locks"}
    vmd.post("/vm/test1/state", params={"state": "stop"})
    needs = vmd.post("/vm/test1/locks")
    assert needs.status_code == 400 and "'ceph' service" in needs.json()["message"]
    assert vmd.get("/vm/test1/locks").status_code == 405


def test_network_in_use_is_not_deleted(vmd, cluster):
    assert vmd.post("/network/100", params={"description": "uplink", "nettype": "bridged"}).status_code == 200
    define(vmd, node="pvchv1")
    refused = vmd.delete("/network/100")
    assert refused.status_code == 409
    assert refused.json()["message"] == ("ERROR: Network 'uplink' is still used by VM(s) test1; remove their "
                                         "interfaces on vmbr100 first")
    assert cluster.exists("/networks/100") is not None
    vmd.delete("/vm/test1")
    assert vmd.delete("/network/100").status_code == 200


def test_status_counts_and_health(vmd, cluster):
    define(vmd, vm_xml("a", uuid_for(1)), node="pvchv1")
    define(vmd, vm_xml("b", uuid_for(2)), node="pvchv1")
    vmd.post("/vm/a/state", params={"state": "start"})
    assert vmd.get("/status").json()["vms"] == {"total": 2, "start": 1, "stop": 1}
    assert vmd.get("/status").json()["health"] == "Degraded"  # a stopped VM is not healthy in v0.6
    vmd.post("/vm/b/state", params={"state": "disable"})
    assert vmd.get("/status").json()["health"] == "Optimal"


def test_vm_with_sparse_xml_and_keys_still_lists(vmd, cluster):
    """v0.6 answered 500 for the whole list when one VM lacked <console>, <features>... or node_autostart."""
    define(vmd, node="pvchv1")
    sparse = (f"<domain type='kvm'><name>bare</name><uuid>{uuid_for(5)}</uuid><memory>1048576</memory>"
              "<vcpu>1</vcpu><os><type>hvm</type></os><devices><interface type='bridge'/></devices></domain>")
    transaction = cluster.transaction()
    base = f"/domains/{uuid_for(5)}"
    transaction.create(base, b"bare")
    for key, value in (("state", "provision"), ("node", "pvchv2"), ("xml", sparse)):
        transaction.create(f"{base}/{key}", value.encode())  # no node_autostart, limit, selector...
    transaction.commit()
    listing = eventually(lambda: (lambda r: r if isinstance(r, list) else None)(vmd.get("/vm").json()))
    bare = [vm for vm in listing if vm["name"] == "bare"][0]
    assert bare["memory"] == 1024 and bare["console"] is None and bare["emulator"] is None
    assert bare["features"] == [] and bare["node_autostart"] is False and bare["node_limit"] is None
    assert bare["node_selector"] is None and bare["networks"] == [{"type": "bridge", "mac": None, "source": None,
                                                                   "model": None}]
    assert vmd.get("/status").status_code == 200
    assert vmd.get("/vm/bare").json()["state"] == "provision"


def test_absent_booleans_default_to_false(vmd, cluster):
    """v0.6 answered 500 when autostart, restart, delete_disks or force was absent."""
    assert define(vmd, node="pvchv1").status_code == 200
    assert cluster.get(f"/domains/{UUID}/node_autostart")[0] == b"False"
    assert vmd.put("/vm/test1", data={"xml": XML}).status_code == 200
    assert cluster.get(f"/domains/{UUID}/state")[0] == b"stop"  # no restart
    assert vmd.post("/vm/test1/node", params={"action": "move", "node": "pvchv2"}).status_code == 200
    assert vmd.delete("/vm/test1").status_code == 200


def test_load_and_vcpus_selectors(vmd, cluster):
    for node, load, vcpus in (("pvchv1", b"0.10", b"8"), ("pvchv2", b"2.50", b"1"), ("pvchv3", b"0.90", b"4")):
        cluster.set(f"/nodes/{node}/cpuload", load)
        cluster.set(f"/nodes/{node}/vcpualloc", vcpus)
    eventually(lambda: vmd.get("/node/pvchv3").json()["vcpu"]["allocated"] == 4)
    eventually(lambda: vmd.get("/node/pvchv2").json()["load"] == 2.5)
    assert define(vmd, vm_xml("l", uuid_for(1)), selector="load").status_code == 200
    assert cluster.get(f"/domains/{uuid_for(1)}/node")[0] == b"pvchv1"
    assert define(vmd, vm_xml("v", uuid_for(2)), selector="vcpus").status_code == 200
    assert cluster.get(f"/domains/{uuid_for(2)}/node")[0] == b"pvchv2"
    # a flushed or dead node is never chosen, whatever its figures
    cluster.set("/nodes/pvchv2/domainstate", b"flushed")
    eventually(lambda: vmd.get("/node/pvchv2").json()["domain_state"] == "flushed")
    assert define(vmd, vm_xml("w", uuid_for(3)), selector="vcpus").status_code == 200
    assert cluster.get(f"/domains/{uuid_for(3)}/node")[0] == b"pvchv3"
    # migration without a node uses the VM's stored selector and limit
    vmd.post("/vm/l/meta", params={"selector": "load", "limit": "pvchv1,pvchv3"})
    assert vmd.post("/vm/l/node", params={"action": "move"}).json() == {
        "message": "Permanently migrating VM 'l' to node 'pvchv3'."}
