"""VM creation end to end: a real huey_consumer, real Ceph volumes mapped and mounted, real ZooKeeper.

Runs once on PostgreSQL + Redis and once on the embedded default (SQLite +
SQLite-backed Huey). Failures must leave nothing behind: checked through
Ceph, the mount table, the loop devices and ZooKeeper.
"""

from __future__ import annotations

import ast
import os
import subprocess
import tempfile
import time
from xml.etree import ElementTree as ET

import pytest
from test_node import eventually, seed_node
from test_task_kinds import WAKE_BOUND, database_record
from test_tasks import start_consumer, stop_consumer

from conftest import REQUEST_TIMEOUT, START_TIMEOUT, deep_merge, wait_until

POOL = "provpool"
SCRIPT = '''
import os

def install(**kwargs):
    root = kwargs["temporary_directory"]
    os.makedirs(root + "/etc", exist_ok=True)
    with open(root + "/etc/provisioned", "w") as out:
        out.write("%s %d %s %s" % (kwargs["vm_name"], kwargs["vm_id"], kwargs["greeting"],
                                   ",".join(str(net["vni"]) for net in kwargs["networks"])))
    with open(root + "/var/marker", "w") as out:
        out.write(",".join(disk["disk_id"] for disk in kwargs["disks"]))
'''
FAILING_SCRIPT = '''
def install(**kwargs):
    with open(kwargs["temporary_directory"] + "/partial", "w") as out:
        out.write("half-done")
    raise RuntimeError("the mirror is unreachable")
'''

# the test may be slow to set the flag on a loaded machine: a worker is killed and another started meanwhile
SLEEPER_SCRIPT = f'''
import os, time

def install(**kwargs):
    with open(kwargs["temporary_directory"] + "/started", "w") as out:
        out.write(kwargs["vm_name"])
    deadline = time.monotonic() + {round(4 * START_TIMEOUT)}
    while not os.path.exists(kwargs["flag"]):
        if time.monotonic() > deadline:
            raise RuntimeError("the flag never came")
        time.sleep(0.05)
'''
FLAG = os.path.join(tempfile.gettempdir(), "pvc-test-release-flag")


@pytest.fixture(params=["postgresql-redis", "embedded-sqlite"], scope="module")
def provd(request, daemon_factory, ceph_config, zk_server):
    from kazoo.client import KazooClient
    backends = {}
    if request.param == "postgresql-redis":
        backends = {"provisioner": {"database": request.getfixturevalue("postgres"),
                                    "queue": request.getfixturevalue("redis_server")}}
    zk = KazooClient(hosts=zk_server.address)
    zk.start(timeout=START_TIMEOUT)
    for child in zk.get_children("/"):
        if child != "zookeeper":
            zk.delete("/" + child, recursive=True)
    daemon = daemon_factory(deep_merge(deep_merge(ceph_config, {"ceph": {"collector": "False"},
                                                                "vm": {"delete_grace": "0.05"}}), backends))
    assert daemon.post("/initialize").status_code == 200
    seed_node(zk, "pvchv1", memfree="4096")
    seed_node(zk, "pvchv2", memfree="9000")
    seed_node(zk, "pvchv3", memfree="20000", domain="flushed")
    eventually(lambda: daemon.get("/node/pvchv2").status_code == 200)
    for vni in ("1001", "1002"):
        assert daemon.post(f"/network/{vni}", params={"description": f"net{vni}", "nettype": "bridged"}
                           ).status_code == 200
    response = daemon.post("/storage/ceph/pool", params={"pool": POOL, "pgs": "8", "replcfg": "copies=1,mincopies=1"})
    assert response.status_code == 200, response.text
    seed_profiles(daemon)
    daemon.consumer = start_consumer(daemon, workers=1)
    daemon.zk = zk
    yield daemon
    assert stop_consumer(daemon.consumer) == 0, (daemon.workdir / "consumer.log").read_text()
    daemon.delete(f"/storage/ceph/pool/{POOL}", params={"yes-i-really-mean-it": ""})
    daemon.stop()
    zk.stop()
    zk.close()


def seed_profiles(daemon) -> None:
    calls = [
        ("/provisioner/template/system/small", {"vcpus": "2", "vram": "1024", "serial": "yes", "vnc": "no",
                                                "node_limit": "pvchv1,pvchv2", "node_autostart": "yes"}),
        ("/provisioner/template/network/twonets", {"mac_template": "{prefix}:2f:1f:{vmid}{netid}"}),
        ("/provisioner/template/network/twonets/net/1001", {}),
        ("/provisioner/template/network/twonets/net/1002", {}),
        ("/provisioner/template/storage/rootvar", {}),
        ("/provisioner/template/storage/rootvar/disk/sda", {"pool": POOL, "disk_size": "1", "filesystem": "ext4",
                                                            "filesystem_arg": ["-L=root", "-m=1"], "mountpoint": "/"}),
        ("/provisioner/template/storage/rootvar/disk/sdb", {"pool": POOL, "disk_size": "2", "filesystem": "ext4",
                                                            "filesystem_arg": "-L=var", "mountpoint": "/var"}),
        ("/provisioner/userdata/hello", {"data": "#cloud-config\n"}),
    ]
    for path, params in calls:
        response = daemon.post(path, params=params)
        assert response.status_code == 200, (path, response.text)
    for name, text in (("writer", SCRIPT), ("failing", FAILING_SCRIPT), ("sleeper", SLEEPER_SCRIPT)):
        assert daemon.post(f"/provisioner/script/{name}", data={"data": text}).status_code == 200
    for name, script, arg in (("web", "writer", "greeting=hi=there"), ("broken", "failing", "greeting=hi"),
                              ("slow", "sleeper", f"flag={FLAG}")):
        response = daemon.post(f"/provisioner/profile/{name}", params={
            "system_template": "small", "network_template": "twonets", "storage_template": "rootvar",
            "userdata": "hello", "script": script, "arg": arg})
        assert response.status_code == 200, response.text


def wait_done(daemon, task_id: str, timeout: float = 2 * START_TIMEOUT) -> tuple[dict, list[tuple[str, int]]]:
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    while True:
        response = daemon.get(f"/provisioner/status/{task_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if (body["state"], body["current"]) not in seen:
            seen.append((body["state"], body["current"]))
        if body["state"] in ("SUCCESS", "FAILURE"):
            return body, seen
        assert time.monotonic() < deadline, (body, (daemon.workdir / "consumer.log").read_text()[-3000:])
        time.sleep(0.05)


def create(daemon, name: str, profile: str, **params: str) -> str:
    response = daemon.post("/provisioner/create", params={"name": name, "profile": profile, **params})
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    assert response.headers["Location"].endswith(f"/api/v1/provisioner/status/{task_id}")
    return task_id


def images(ceph_cluster) -> dict[str, int]:
    import rados
    import rbd
    handle = rados.Rados(conffile=ceph_cluster.conf, conf={"keyring": ceph_cluster.keyring})
    handle.connect(timeout=REQUEST_TIMEOUT)
    try:
        with handle.open_ioctx(POOL) as ioctx:
            out = {}
            for name in rbd.RBD().list(ioctx):
                with rbd.Image(ioctx, name, read_only=True) as image:
                    out[name] = image.size()
            return out
    finally:
        handle.shutdown()


def host_leftovers() -> dict:
    """Mounts, loop devices and /dev/rbd links that a creation could leave on this host."""
    with open("/proc/self/mounts") as handle:
        mounts = [line.split()[1] for line in handle if "pvc-provision-" in line or "pvc-rbd-fuse" in line
                  or "rbd-fuse" in line.split()[0]]
    loops = subprocess.run(["losetup", "--list", "--noheadings", "--output", "BACK-FILE"], capture_output=True,
                           text=True).stdout.split()
    links = os.listdir(f"/dev/rbd/{POOL}") if os.path.isdir(f"/dev/rbd/{POOL}") else []
    return {"mounts": mounts, "loops": [loop for loop in loops if "pvc-rbd-fuse" in loop], "links": links}


def vm_keys(zk, name: str) -> tuple[str, dict] | None:
    for uuid in zk.get_children("/domains"):
        if zk.get(f"/domains/{uuid}")[0].decode() == name:
            return uuid, {child: zk.get(f"/domains/{uuid}/{child}")[0].decode()
                          for child in zk.get_children(f"/domains/{uuid}")}
    return None


def read_back(ceph_cluster, volume: str, path: str) -> str:
    from pvc_provisioner.hostops import Mapper, run
    mapper = Mapper(ceph_cluster.conf, "client.admin", ceph_cluster.keyring)
    mapping = mapper.map(POOL, volume)
    target = tempfile.mkdtemp()
    try:
        run(["mount", "-o", "ro", mapping.device, target])
        try:
            with open(target + path) as handle:
                return handle.read()
        finally:
            run(["umount", target])
    finally:
        mapper.unmap(mapping)
        os.rmdir(target)


def test_create_two_disks_two_nets(provd, ceph_cluster):
    from pvc_vm.domainxml import SchemaValidator
    task_id = create(provd, "web3", "web")
    done, seen = wait_done(provd, task_id)
    assert done == {"state": "SUCCESS", "current": 10, "total": 10, "result": done["result"],
                    "status": 'VM "web3" with profile "web" has been provisioned and started successfully'}, done
    running = [step for state, step in seen if state == "RUNNING"]
    assert running == sorted(running) and set(running) <= set(range(1, 11))
    assert set(done["result"]["timings"]) >= {"Creating storage volumes", "Executing provisioning script", "total"}
    # Ceph: both volumes, their sizes
    volumes = images(ceph_cluster)
    assert volumes["web3_sda"] == 1024 ** 3 and volumes["web3_sdb"] == 2 * 1024 ** 3
    assert provd.get(f"/storage/ceph/volume/{POOL}/web3_sdb").status_code == 200
    # ZooKeeper: the VM with its metadata, started on the node with the most free memory that is ready
    uuid, keys = vm_keys(provd.zk, "web3")
    assert keys["state"] == "start" and keys["profile"] == "web" and keys["node"] == "pvchv2"
    assert keys["node_limit"] == "pvchv1,pvchv2" and keys["node_autostart"] == "True"
    assert keys["rbdlist"] == f"{POOL}/web3_sda,{POOL}/web3_sdb"
    SchemaValidator().validate(keys["xml"])  # libvirt's own RNG schema
    root = ET.fromstring(keys["xml"])
    assert root.findtext("name") == "web3" and root.findtext("uuid") == uuid
    disks = [(disk.find("source").get("name"), disk.find("target").get("dev"))
             for disk in root.iter("disk") if disk.get("type") == "network"]
    assert disks == [(f"{POOL}/web3_sda", "sda"), (f"{POOL}/web3_sdb", "sdb")]
    nics = [(nic.find("mac").get("address"), nic.find("source").get("bridge")) for nic in root.iter("interface")]
    assert nics == [("52:54:01:2f:1f:30", "vmbr1001"), ("52:54:01:2f:1f:31", "vmbr1002")]  # vm_id 3 → {vmid}=3
    assert provd.get("/vm/web3").json()["profile"] == "web"
    # the script's file is on the root volume, its /var file on the var volume
    assert read_back(ceph_cluster, "web3_sda", "/etc/provisioned") == "web3 3 hi=there 1001,1002"
    assert read_back(ceph_cluster, "web3_sdb", "/marker") == "sda,sdb"
    assert host_leftovers() == {"mounts": [], "loops": [], "links": []}
    # the same name again is refused when submitted (409), no task queued, nothing touched
    tasks_before = provd.get("/tasks", params={"plugin": "provisioner"}).json()
    again = provd.post("/provisioner/create", params={"name": "web3", "profile": "web"})
    assert again.status_code == 409, again.text
    assert again.json() == {"message": "A VM with the name 'web3' already exists in the cluster"}
    assert provd.get("/tasks", params={"plugin": "provisioner"}).json() == tasks_before
    assert set(images(ceph_cluster)) >= {"web3_sda", "web3_sdb"}
    # queue overview: nothing active any more, args/kwargs as Python literals for the v0.6 CLI
    queue = provd.get("/provisioner/status").json()
    assert queue["scheduled"] == {} and queue["active"] == {} and queue["reserved"] == {}
    assert provd.delete("/vm/web3", params={"delete_disks": "true"}).status_code == 200


def test_install_failure_leaves_nothing(provd, ceph_cluster):
    before = set(images(ceph_cluster))
    done, seen = wait_done(provd, create(provd, "bad1", "broken", start_vm="false"))
    assert done["state"] == "FAILURE"
    assert done["status"] == ("Step 8 (Executing provisioning script) failed: "
                              "Failed to run install script: the mirror is unreachable")
    assert ("RUNNING", 8) in seen
    assert set(images(ceph_cluster)) == before  # both volumes it made are gone from Ceph
    assert provd.get(f"/storage/ceph/volume/{POOL}/bad1_sda").status_code == 404  # and from /ceph
    assert vm_keys(provd.zk, "bad1") is None
    assert provd.get("/vm/bad1").status_code == 404
    assert host_leftovers() == {"mounts": [], "loops": [], "links": []}
    assert not [name for name in os.listdir(tempfile.gettempdir()) if name.startswith(("pvc-provision-",
                                                                                      "pvc-script-"))]


def test_verification_failures(provd, ceph_cluster):
    calls = [
        ("/provisioner/template/system/huge", {"vcpus": "1", "vram": "500000", "serial": "no", "vnc": "no"}),
        ("/provisioner/template/network/ghost", {}), ("/provisioner/template/network/ghost/net/4040", {}),
        ("/provisioner/template/storage/toobig", {}),
        ("/provisioner/template/storage/toobig/disk/sda", {"pool": POOL, "disk_size": "100000"}),
        # a template may name a pool that does not exist (yet): creation checks it (provisioner.md §2.6, §3.3)
        ("/provisioner/template/storage/nowhere", {}),
        ("/provisioner/template/storage/nowhere/disk/sda", {"pool": "nowhere", "disk_size": "1"}),
    ]
    for path, params in calls:
        assert provd.post(path, params=params).status_code == 200
    cases = [
        ({"system_template": "huge"}, "No ready cluster node contains at least 500000+512 MB of free RAM"),
        ({"network_template": "ghost"}, 'The network VNI "4040" is not present on the cluster'),
        ({"storage_template": "toobig"}, f'Pool "{POOL}" has only'),
        ({"storage_template": "nowhere"}, 'Pool "nowhere" is not present on the cluster'),
    ]
    for index, (change, text) in enumerate(cases):
        name = f"check{index}"
        refs = {"system_template": "small", "network_template": "twonets", "storage_template": "rootvar",
                "userdata": "hello", "script": "empty", **change}
        assert provd.post(f"/provisioner/profile/{name}", params=refs).status_code == 200
        done, _ = wait_done(provd, create(provd, "vm" + name, name))
        assert done["state"] == "FAILURE" and text in done["status"], done
    assert not [name for name in images(ceph_cluster) if name.startswith("vmcheck")]


def test_no_define_no_script(provd, ceph_cluster):
    refs = {"system_template": "small", "network_template": "twonets", "storage_template": "rootvar",
            "userdata": "hello", "script": "empty"}
    assert provd.post("/provisioner/profile/plain", params=refs).status_code == 200
    done, _ = wait_done(provd, create(provd, "plain1", "plain", define_vm="false", start_vm="false"))
    assert done["state"] == "SUCCESS", done
    assert done["status"] == 'VM "plain1" with profile "plain" has been provisioned successfully'
    assert vm_keys(provd.zk, "plain1") is None  # not defined
    assert {"plain1_sda", "plain1_sdb"} <= set(images(ceph_cluster))  # volumes made and formatted
    assert host_leftovers() == {"mounts": [], "loops": [], "links": []}
    for disk in ("sda", "sdb"):
        assert provd.delete(f"/storage/ceph/volume/{POOL}/plain1_{disk}").status_code == 200


def wait_step(daemon, task_id: str, step: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        body = daemon.get(f"/provisioner/status/{task_id}").json()
        if body["state"] == "RUNNING" and body["current"] >= step:
            return
        assert body["state"] in ("PENDING", "RUNNING") and time.monotonic() < deadline, body
        time.sleep(0.05)


def test_cancel_a_queued_and_a_running_creation(provd, ceph_cluster):
    """DELETE /tasks/<id>: the queued creation never runs; the running one stops before its next step and rolls
    back (no volume, no VM, no mount left), its record FAILURE 'Cancelled…' with the rollback in its log; a
    client waiting on it is answered the moment it ends (the worker, another process, ended it)."""
    import threading
    if os.path.exists(FLAG):
        os.unlink(FLAG)
    before = set(images(ceph_cluster))
    running = create(provd, "slow3", "slow", start_vm="false")
    wait_step(provd, running, 8)  # inside install(): VM defined, volumes made, mapped, mounted
    queued = create(provd, "slow4", "slow", start_vm="false")
    assert provd.get(f"/tasks/{queued}").json()["state"] == "PENDING"

    cancelled = provd.delete(f"/tasks/{queued}")
    assert cancelled.status_code == 200, cancelled.text
    record = cancelled.json()
    status = f"Cancelled before it started: DELETE /tasks/{queued}"
    assert (record["state"], record["status"], record["kind"], record["started"]) == ("FAILURE", status,
                                                                                      "provisioner.create", None)
    assert record["cancelled"] == record["ended"] and [line["message"] for line in record["log"]] == ["Queued", status]
    assert record == database_record(provd, queued)
    assert provd.get(f"/provisioner/status/{queued}").json()["status"] == status  # the v0.6 route shows it too
    assert provd.delete(f"/tasks/{queued}").status_code == 409

    asked = provd.delete(f"/tasks/{running}")
    assert asked.status_code == 202 and asked.json()["state"] == "RUNNING" and asked.json()["cancelled"]
    answers: list = []
    waiter = threading.Thread(target=lambda: answers.append(
        (provd.get(f"/tasks/{running}/wait", params={"timeout": str(2 * START_TIMEOUT)}), time.time())))
    waiter.start()
    open(FLAG, "w").close()  # install() returns; the cancel is noticed before step 9
    try:
        waiter.join(timeout=3 * START_TIMEOUT)
    finally:
        os.unlink(FLAG)
    [(answer, returned)] = answers
    assert answer.status_code == 200
    done = answer.json()
    print(f"wait answered {returned - done['ended']:.3f} s after the worker ended the record")
    assert 0 <= returned - done["ended"] < WAKE_BOUND
    assert done["state"] == "FAILURE" and done["status"].startswith(
        "Cancelled before step 9 (Cleaning up local mounts and directories); rolled back: ")
    for undone in (f"removed volume {POOL}/slow3_sda", f"removed volume {POOL}/slow3_sdb", "undefined VM slow3"):
        assert undone in done["status"] and undone in done["result"]["undone"]
    assert done["result"]["cancelled"] is True and done["cancelled"] == asked.json()["cancelled"]
    messages = [line["message"] for line in done["log"]]
    assert messages[:2] == ["Queued", "Collecting configuration"] and "Executing provisioning script" in messages
    assert f"Cancel requested: DELETE /tasks/{running}" in messages and messages[-1] == done["status"]
    assert done == database_record(provd, running)
    # nothing left behind: Ceph, /ceph keys, the VM's keys, mounts and mappings
    assert set(images(ceph_cluster)) == before
    assert provd.get(f"/storage/ceph/volume/{POOL}/slow3_sda").status_code == 404
    assert vm_keys(provd.zk, "slow3") is None and vm_keys(provd.zk, "slow4") is None
    assert host_leftovers() == {"mounts": [], "loops": [], "links": []}
    # the queued one was taken by the worker after that, and not run
    log = provd.workdir / "consumer.log"
    wait_until(lambda: f"provisioning task {queued} was cancelled before it started; not run" in log.read_text(),
               message="the worker to skip the cancelled task")
    assert provd.get(f"/tasks/{queued}").json() == record
    assert not [name for name in images(ceph_cluster) if name.startswith("slow4_")]


def test_queue_overview_and_worker_crash(provd, ceph_cluster):
    """A killed worker's creation ends FAILURE and is rolled back by the next consumer; the queue shows both."""
    if os.path.exists(FLAG):
        os.unlink(FLAG)
    first = create(provd, "slow1", "slow", start_vm="false")
    wait_step(provd, first, 8)  # inside install(): volumes made, mapped, mounted
    second = create(provd, "slow2", "slow", define_vm="false", start_vm="false")
    assert provd.get(f"/provisioner/status/{second}").json() == {
        "state": "PENDING", "current": 0, "total": 1, "status": "Pending job start"}
    queue = provd.get("/provisioner/status").json()
    assert queue["scheduled"] == {}
    [(worker, active)] = queue["active"].items()
    [(_, reserved)] = queue["reserved"].items()
    assert worker.startswith("huey@") and [entry["id"] for entry in active] == [first]
    assert ast.literal_eval(active[0]["args"]) == ("slow1", "slow")
    assert ast.literal_eval(active[0]["kwargs"]) == {"define_vm": True, "start_vm": False}
    assert active[0]["acknowledged"] is True and isinstance(active[0]["time_start"], float)
    assert [entry["id"] for entry in reserved] == [second]
    assert ast.literal_eval(reserved[0]["kwargs"]) == {"define_vm": False, "start_vm": False}
    assert host_leftovers()["mounts"]  # the run is mounted right now
    provd.consumer.kill()  # SIGKILL: no cleanup of its own
    provd.consumer.wait()
    assert provd.get(f"/provisioner/status/{first}").json()["state"] == "RUNNING"
    provd.consumer = start_consumer(provd, workers=1)
    done, _ = wait_done(provd, first, timeout=START_TIMEOUT)  # a new consumer starts and recovers
    assert done["state"] == "FAILURE" and done["status"] == "Worker terminated during provisioning"
    wait_step(provd, second, 8)  # the queued creation survived the crash and runs now
    now = host_leftovers()  # only slow2's own mappings (recovery ran before the worker took slow2)
    assert [loop for loop in now["loops"] if "slow1_" in loop] == [] and now["loops"]
    assert [link for link in now["links"] if link.startswith("slow1_")] == []
    assert len(now["mounts"]) == 2 + 2  # slow2: two fuse mappings, two filesystems
    assert not [name for name in images(ceph_cluster) if name.startswith("slow1_")]
    assert vm_keys(provd.zk, "slow1") is None
    open(FLAG, "w").close()
    try:
        finished, _ = wait_done(provd, second)
    finally:
        os.unlink(FLAG)
    assert finished["state"] == "SUCCESS", finished
    assert host_leftovers() == {"mounts": [], "loops": [], "links": []}
    for disk in ("sda", "sdb"):
        assert provd.delete(f"/storage/ceph/volume/{POOL}/slow2_{disk}").status_code == 200


def test_clones_and_runtime_arguments(provd, ceph_cluster):
    """A clone disk copies its source (sized from it); create's own arg overrides the profile's."""
    assert provd.post("/storage/ceph/volume", params={"pool": POOL, "volume": "golden", "size": "1G"}
                      ).status_code == 200
    calls = [("/provisioner/template/storage/cloned", {}),
             ("/provisioner/template/storage/cloned/disk/sda", {"pool": POOL, "disk_size": "1", "filesystem": "ext4",
                                                                "mountpoint": "/"}),
             ("/provisioner/template/storage/cloned/disk/sdb", {"pool": POOL, "source_volume": "golden"})]
    for path, params in calls:
        assert provd.post(path, params=params).status_code == 200, path
    script = ('def install(**kwargs):\n'
              '    open(kwargs["temporary_directory"] + "/args", "w").write(kwargs["greeting"] + " "\n'
              '        + ",".join(str(d["source_volume"]) for d in kwargs["disks"]))\n')
    assert provd.post("/provisioner/script/argwriter", data={"data": script}).status_code == 200
    assert provd.post("/provisioner/profile/cloning", params={
        "system_template": "small", "network_template": "twonets", "storage_template": "cloned",
        "userdata": "hello", "script": "argwriter", "arg": "greeting=from-profile"}).status_code == 200
    done, _ = wait_done(provd, create(provd, "clone5", "cloning", define_vm="false", start_vm="false",
                                      arg="greeting=from-create"))
    assert done["state"] == "SUCCESS", done
    volumes = images(ceph_cluster)
    assert volumes["clone5_sdb"] == volumes["golden"] == 1024 ** 3
    assert read_back(ceph_cluster, "clone5_sda", "/args") == "from-create None,golden"
    missing = provd.post("/storage/ceph/volume", params={"pool": POOL, "volume": "golden2", "size": "1G"})
    assert missing.status_code == 200
    assert provd.post("/provisioner/template/storage/cloned2", params={}).status_code == 200
    assert provd.post("/provisioner/template/storage/cloned2/disk/sda",
                      params={"pool": POOL, "source_volume": "golden2"}).status_code == 200
    assert provd.delete(f"/storage/ceph/volume/{POOL}/golden2").status_code == 200  # gone before creation
    assert provd.post("/provisioner/profile/cloning2", params={
        "system_template": "small", "network_template": "twonets", "storage_template": "cloned2",
        "userdata": "hello", "script": "empty"}).status_code == 200
    failed, _ = wait_done(provd, create(provd, "clone6", "cloning2"))
    assert failed["state"] == "FAILURE" and f"The source volume {POOL}/golden2 could not be found" in failed["status"]
    for volume in ("clone5_sda", "clone5_sdb", "golden"):
        assert provd.delete(f"/storage/ceph/volume/{POOL}/{volume}").status_code == 200
