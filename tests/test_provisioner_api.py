"""The provisioner's template, userdata, script and profile endpoints (provisioner.md §2) on a real database."""

from __future__ import annotations

import pytest
from test_node import eventually, seed_node

from conftest import START_TIMEOUT, deep_merge

POOL = "provapi"


@pytest.fixture(scope="module")
def provd(daemon_factory, ceph_config, clean_zk_module):
    daemon = daemon_factory(deep_merge(ceph_config, {"ceph": {"collector": "False"}}))
    assert daemon.post("/initialize").status_code == 200
    seed_node(clean_zk_module, "pvchv1")
    eventually(lambda: daemon.get("/node/pvchv1").status_code == 200)
    created = daemon.post("/storage/ceph/pool", params={"pool": POOL, "pgs": "8", "replcfg": "copies=1,mincopies=1"})
    assert created.status_code == 200, created.text
    yield daemon
    daemon.delete(f"/storage/ceph/pool/{POOL}", params={"yes-i-really-mean-it": ""})
    daemon.stop()


@pytest.fixture(scope="module")
def clean_zk_module(zk_server):
    from kazoo.client import KazooClient
    client = KazooClient(hosts=zk_server.address)
    client.start(timeout=START_TIMEOUT)
    for child in client.get_children("/"):
        if child != "zookeeper":
            client.delete("/" + child, recursive=True)
    yield client
    client.stop()
    client.close()


def ok(response, fragment: str = "") -> dict:
    assert response.status_code == 200, response.text
    if fragment:
        assert fragment in response.json()["message"], response.json()
    return response.json()


def refused(response, code: int, fragment: str) -> None:
    assert response.status_code == code, response.text
    assert fragment in response.json()["message"], response.json()


def test_default_rows_and_placeholder(provd):
    assert provd.get("/provisioner").status_code == 404
    assert provd.get("/provisioner/userdata/empty").json() == [{"id": 1, "name": "empty", "userdata": ""}]
    assert provd.get("/provisioner/script/empty").json() == [{"id": 1, "name": "empty", "script": ""}]
    assert provd.get("/provisioner/profile/").status_code == 404


def test_system_templates(provd):
    ok(provd.post("/provisioner/template/system", params={
        "name": "sys1", "vcpus": "2", "vram": "1024", "serial": "True", "vnc": "False", "vnc_bind": "0.0.0.0",
        "node_limit": "hv1,hv2", "node_selector": "mem"}), 'Added new system template "sys1"')
    ok(provd.post("/provisioner/template/system/sys2", params={
        "vcpus": "4", "vram": "8192", "serial": "False", "vnc": "True", "vnc_bind": "0.0.0.0",
        "start_with_node": "yes"}))
    one = provd.get("/provisioner/template/system/sys1").json()
    assert one == [{"id": one[0]["id"], "name": "sys1", "vcpu_count": 2, "vram_mb": 1024, "serial": True,
                    "vnc": False, "vnc_bind": None, "node_limit": "hv1,hv2", "node_selector": "mem",
                    "node_autostart": False}]
    two = provd.get("/provisioner/template/system/sys2").json()[0]
    assert two["vnc_bind"] == "0.0.0.0" and two["node_autostart"] is True
    names = [row["name"] for row in provd.get("/provisioner/template/system", params={"limit": "sys"}).json()]
    assert names == ["sys1", "sys2"]
    assert [row["name"] for row in provd.get("/provisioner/template/system", params={"limit": "^sys1$"}).json()] \
        == ["sys1"]
    assert provd.get("/provisioner/template/system", params={"limit": "SYS"}).status_code == 404  # case-sensitive
    refused(provd.post("/provisioner/template/system", params={
        "name": "sys1", "vcpus": "2", "vram": "1", "serial": "no", "vnc": "no"}), 400,
        'The system template "sys1" already exists')
    refused(provd.post("/provisioner/template/system", params={
        "name": "bad", "vcpus": "lots", "vram": "1", "serial": "no", "vnc": "no"}), 400, "'vcpus'")
    refused(provd.post("/provisioner/template/system", params={"name": "bad", "vcpus": "1", "vram": "1"}), 400,
            "'serial'")
    refused(provd.post("/provisioner/template/system", params={
        "name": "bad", "vcpus": "1", "vram": "1", "serial": "maybe", "vnc": "no"}), 400, "'serial'")
    # PUT modifies (DECISIONS)
    ok(provd.put("/provisioner/template/system/sys1", params={"vram": "2048", "vnc": "yes", "vnc_bind": "::"}),
       'Modified system template "sys1"')
    changed = provd.get("/provisioner/template/system/sys1").json()[0]
    assert changed["vram_mb"] == 2048 and changed["vnc"] is True and changed["vnc_bind"] == "::"
    refused(provd.put("/provisioner/template/system/nope", params={"vram": "1"}), 404, "does not exist")
    refused(provd.put("/provisioner/template/system/sys1", params={"vram": "big"}), 400, "'vram'")
    ok(provd.delete("/provisioner/template/system/sys2"), 'Removed system template "sys2"')
    refused(provd.delete("/provisioner/template/system/sys2"), 404, 'The system template "sys2" does not exist')
    refused(provd.get("/provisioner/template/system/sys2"), 404, "No system templates found")


def test_network_templates_and_nets(provd):
    ok(provd.post("/provisioner/template/network",
                  params={"name": "net1", "mac_template": "{prefix}:2f:1f:{vmid}{netid}"}),
       'Added new network template "net1"')
    ok(provd.post("/provisioner/template/network/net1/net/200"), 'Added new network "200" to network template "net1"')
    ok(provd.post("/provisioner/template/network/net1/net", params={"vni": "300"}))
    refused(provd.post("/provisioner/template/network/net1/net/200"), 400,
            'The VNI "200" in network template "net1" already exists')
    refused(provd.post("/provisioner/template/network/net1/net/abc"), 400, "'vni'")
    refused(provd.post("/provisioner/template/network/none/net/200"), 404, "does not exist")
    listing = provd.get("/provisioner/template/network/net1").json()
    assert [net["vni"] for net in listing[0]["networks"]] == [200, 300]
    assert listing[0]["mac_template"] == "{prefix}:2f:1f:{vmid}{netid}"
    nets = provd.get("/provisioner/template/network/net1/net").json()
    assert [net["vni"] for net in nets] == [200, 300] and nets[0]["network_template"] == listing[0]["id"]
    assert provd.get("/provisioner/template/network/net1/net/300").json()["vni"] == 300
    assert provd.get("/provisioner/template/network/net1/net/999").status_code == 404
    assert provd.get("/provisioner/template/network/net1/net/abc").status_code == 404
    refused(provd.get("/provisioner/template/network/none/net"), 404, "Template not found")
    ok(provd.delete("/provisioner/template/network/net1/net/200"), 'Removed network "200" from network template')
    refused(provd.delete("/provisioner/template/network/net1/net/200"), 404, "does not exist")
    refused(provd.delete("/provisioner/template/network/net1/net/x"), 404, "does not exist")
    refused(provd.post("/provisioner/template/network", params={"name": "net1"}), 400, "already exists")
    ok(provd.post("/provisioner/template/network/net2"))
    ok(provd.delete("/provisioner/template/network/net2"), 'Removed network template "net2"')
    overview = provd.get("/provisioner/template", params={"limit": "net1"}).json()
    assert set(overview) == {"system_templates", "network_templates", "storage_templates"}
    assert [row["name"] for row in overview["network_templates"]] == ["net1"] and overview["system_templates"] == []


def test_storage_templates_and_disks(provd):
    ok(provd.post("/provisioner/template/storage", params={"name": "st1"}), 'Added new storage template "st1"')
    ok(provd.post("/provisioner/template/storage/st1/disk/sda", params={
        "pool": POOL, "disk_size": "4", "filesystem": "ext4", "filesystem_arg": ["-L=root", "-m=1"],
        "mountpoint": "/"}), 'Added new disk "sda" to storage template "st1"')
    ok(provd.post("/provisioner/template/storage/st1/disk", params={"disk_id": "sdb", "pool": POOL, "disk_size": "2"}))
    disk = provd.get("/provisioner/template/storage/st1/disk/sda").json()
    assert disk == {"id": disk["id"], "storage_template": disk["storage_template"], "pool": POOL, "disk_id": "sda",
                    "source_volume": None, "disk_size_gb": 4, "mountpoint": "/", "filesystem": "ext4",
                    "filesystem_args": "-L=root -m=1"}
    assert [d["disk_id"] for d in provd.get("/provisioner/template/storage/st1/disk").json()] == ["sda", "sdb"]
    assert provd.get("/provisioner/template/storage/st1").json()[0]["disks"][1]["filesystem_args"] == ""
    bad = [
        ({"pool": POOL}, "sda", 400, 'The disk "sda" in storage template "st1" already exists'),
        ({"pool": POOL, "disk_size": "big"}, "sdc", 400, "'disk_size'"),
        ({"pool": POOL, "disk_size": "1.5"}, "sdc", 400, "'disk_size'"),
        ({"pool": POOL, "mountpoint": "/"}, "sdc", 400, "A filesystem must be specified along with a mountpoint."),
        ({"pool": POOL, "source_volume": "img", "disk_size": "1"}, "sdc", 400, "Clone volumes are not compatible"),
        ({"disk_size": "1"}, "sdc", 400, "'pool'"),
    ]
    for params, disk_id, code, fragment in bad:
        refused(provd.post(f"/provisioner/template/storage/st1/disk/{disk_id}", params=params), code, fragment)
    refused(provd.post("/provisioner/template/storage/none/disk/sda", params={"pool": POOL}), 404, "does not exist")
    refused(provd.get("/provisioner/template/storage/st1/disk/sdz"), 404, "does not exist")
    refused(provd.get("/provisioner/template/storage/none/disk"), 404, "Template not found")
    ok(provd.delete("/provisioner/template/storage/st1/disk/sdb"), 'Removed disk "sdb" from storage template "st1"')
    refused(provd.delete("/provisioner/template/storage/st1/disk/sdb"), 404, "does not exist")
    refused(provd.post("/provisioner/template/storage", params={"name": "st1"}), 400, "already exists")


def test_userdata_and_scripts(provd):
    document = "#cloud-config\npackages:\n  - a+b & c%20\n"
    ok(provd.post("/provisioner/userdata", params={"name": "ud1"}, data={"data": document}),
       'Created userdata document "ud1"')
    assert provd.get("/provisioner/userdata/ud1").json()[0]["userdata"] == document
    assert provd.get("/provisioner/template/userdata/ud1").json()[0]["userdata"] == document  # seed alias
    ok(provd.put("/provisioner/userdata/ud1", params={"name": "ignored"}, data={"data": "new"}),
       'Updated userdata document "ud1"')
    assert provd.get("/provisioner/userdata/ud1").json()[0]["userdata"] == "new"
    ok(provd.post("/provisioner/userdata/ud2", data={"data": ""}))
    assert provd.get("/provisioner/userdata/ud2").json()[0]["userdata"] == ""
    refused(provd.post("/provisioner/userdata", params={"name": "ud1"}, data={"data": "x"}), 400, "already exists")
    refused(provd.post("/provisioner/userdata", params={"name": "ud3"}), 400, "'data'")
    refused(provd.put("/provisioner/userdata/none", data={"data": "x"}), 404, 'The userdata "none" does not exist')
    ok(provd.delete("/provisioner/userdata/ud2"), 'Removed userdata document "ud2"')
    script = "def install(**kwargs):\n    pass\n"
    ok(provd.post("/provisioner/script", params={"name": "sc1"}, data={"data": script}),
       'Created provisioning script "sc1"')
    ok(provd.post("/provisioner/script/sc2", data={"data": script}), 'Created provisioning script "sc2"')
    assert [row["name"] for row in provd.get("/provisioner/script").json()] == ["empty", "sc1", "sc2"]
    ok(provd.put("/provisioner/script/sc2", data={"data": "x = 1"}), 'Updated provisioning script "sc2"')
    assert provd.get("/provisioner/script/sc2").json()[0]["script"] == "x = 1"
    ok(provd.delete("/provisioner/script/sc2"))
    refused(provd.delete("/provisioner/script/sc2"), 404, 'The script "sc2" does not exist')
    refused(provd.get("/provisioner/script", params={"limit": "zzz"}), 404, "No scripts found")


def test_profiles(provd):
    ok(provd.post("/provisioner/template/system/psys", params={"vcpus": "1", "vram": "512", "serial": "1", "vnc": "0"}))
    ok(provd.post("/provisioner/template/network/pnet"))
    ok(provd.post("/provisioner/template/storage/pst"))
    refs = {"system_template": "psys", "network_template": "pnet", "storage_template": "pst", "userdata": "empty",
            "script": "empty"}
    ok(provd.post("/provisioner/profile", params={"name": "p1", **refs, "arg": ["deb_release=buster", "a=b=c"]}),
       'Created VM profile "p1"')
    ok(provd.post("/provisioner/profile/p2", params={**{k: v for k, v in refs.items() if k != "storage_template"},
                                                     "disk_template": "pst"}))
    p1 = provd.get("/provisioner/profile/p1").json()[0]
    assert p1 == {"id": p1["id"], "name": "p1", "system_template": "psys", "network_template": "pnet",
                  "storage_template": "pst", "userdata": "empty", "script": "empty",
                  "arguments": ["deb_release=buster", "a=b=c"]}
    assert provd.get("/provisioner/profile/p2").json()[0]["arguments"] == [""]
    for field, label in (("system_template", "system template"), ("network_template", "network template"),
                         ("storage_template", "storage template"), ("userdata", "userdata template"),
                         ("script", "script")):
        refused(provd.post("/provisioner/profile", params={"name": "p3", **{**refs, field: "missing"}}), 400,
                f'The {label} "missing" for profile "p3" does not exist')
    refused(provd.post("/provisioner/profile", params={"name": "p1", **refs}), 400, 'The profile "p1" already exists')
    refused(provd.post("/provisioner/profile", params={"name": "p3", "system_template": "psys"}), 400,
            "'network_template'")
    ok(provd.put("/provisioner/profile/p1", params={"userdata": "empty", "arg": "only=one"}),
       'Modified VM profile "p1"')
    assert provd.get("/provisioner/profile/p1").json()[0]["arguments"] == ["only=one"]
    ok(provd.put("/provisioner/profile/p1", params={"script": "empty"}))
    assert provd.get("/provisioner/profile/p1").json()[0]["arguments"] == ["only=one"]  # unchanged without arg
    ok(provd.put("/provisioner/profile/p1", params={"arg": ""}))
    assert provd.get("/provisioner/profile/p1").json()[0]["arguments"] == [""]  # present-but-empty clears
    refused(provd.put("/provisioner/profile/p1", params={"network_template": "missing"}), 400, "does not exist")
    refused(provd.put("/provisioner/profile/none", params={}), 404, 'The profile "none" does not exist')
    # in use: refused with the users named, nothing removed
    refused(provd.delete("/provisioner/template/system/psys"), 409, 'Failed to delete entry "psys"')
    refused(provd.delete("/provisioner/template/network/pnet"), 409, "in use by profile(s) p1, p2")
    refused(provd.delete("/provisioner/userdata/empty"), 409, "in use")
    assert provd.get("/provisioner/template/system/psys").status_code == 200
    ok(provd.delete("/provisioner/profile/p1"), 'Removed VM profile "p1"')
    ok(provd.delete("/provisioner/profile/p2"))
    ok(provd.delete("/provisioner/template/system/psys"))
    refused(provd.delete("/provisioner/profile/p1"), 404, "does not exist")


def test_create_and_status_validation(provd):
    refused(provd.post("/provisioner/create", params={"name": "vm1"}), 400, "'profile'")
    refused(provd.post("/provisioner/create", params={"name": "vm1", "profile": "none"}), 400,
            'Profile "none" is not valid.')
    refused(provd.post("/provisioner/create", params={"name": "a b&c", "profile": "none"}), 400, "'name'")
    refused(provd.post("/provisioner/create", params={"name": "vm1", "profile": "none", "start_vm": "sure"}), 400,
            "'start_vm'")
    refused(provd.get("/provisioner/status/0b0e5d1e-0000-4000-8000-000000000000"), 404, "No provisioner task")
    queue = provd.get("/provisioner/status").json()
    assert set(queue) == {"scheduled", "active", "reserved"}


def test_json_bodies_and_openapi(provd):
    ok(provd.post("/provisioner/template/storage", json={"name": "jst"}))
    ok(provd.post("/provisioner/template/storage/jst/disk", json={"disk_id": "vda", "pool": POOL, "disk_size": 3,
                                                                 "filesystem": "xfs",
                                                                 "filesystem_arg": ["-f", "-L=data"]}))
    assert provd.get("/provisioner/template/storage/jst/disk/vda").json()["filesystem_args"] == "-f -L=data"
    paths = provd.get("/openapi.json").json()["paths"]
    assert "/api/v1/provisioner/template/storage/{template}/disk/{disk_id}" in paths
    assert "/api/v1/provisioner/template/userdata/{userdata}" in paths


def test_database_unreachable(daemon_factory, postgres):
    """503 naming the database for the rows; the queue overview keeps its three keys (null), as the v0.6 CLI needs."""
    from pvc_core.zkserver import free_port
    daemon = daemon_factory({"ceph": {"collector": "False"},
                             "provisioner": {"database": {**postgres, "port": str(free_port())}}})
    try:
        response = daemon.get("/provisioner/profile")
        assert response.status_code == 503 and "PostgreSQL database" in response.json()["message"]
        assert daemon.post("/provisioner/create", params={"name": "x", "profile": "y"}).status_code == 503
        assert daemon.get("/provisioner/status").json() == {"scheduled": None, "active": None, "reserved": None}
    finally:
        daemon.stop()


def test_examples_ship_with_the_package(tmp_path):
    """The example scripts and userdata are package data; the dummy one honours the install() contract."""
    import importlib.util
    from importlib.resources import files
    examples = files("pvc_provisioner") / "examples"
    names = sorted(item.name for item in examples.iterdir())
    assert names == ["debootstrap_script.py", "dummy_script.py", "multipart-userdata.yaml", "userdata.yaml"]
    compile((examples / "debootstrap_script.py").read_text(), "debootstrap_script.py", "exec")
    spec = importlib.util.spec_from_file_location("dummy", str(examples / "dummy_script.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.install(vm_name="x", vm_id=0, temporary_directory=str(tmp_path), disks=[], networks=[]) is None
    with pytest.raises(KeyError):
        module.install(vm_name="x")
    assert "#cloud-config" in (examples / "userdata.yaml").read_text()
    assert "==BOUNDARY==" in (examples / "multipart-userdata.yaml").read_text()


def test_every_list_route(provd):
    """The list forms, each with and without a limit, after the tests above have filled them."""
    ok(provd.post("/provisioner/template/storage", params={"name": "list-st"}))
    ok(provd.post("/provisioner/template/network", params={"name": "list-net"}))
    ok(provd.post("/provisioner/userdata", params={"name": "list-ud"}, data={"data": "x"}))
    ok(provd.post("/provisioner/template/system/list-sys", params={"vcpus": "1", "vram": "1", "serial": "0",
                                                                   "vnc": "0"}))
    ok(provd.post("/provisioner/profile/list-p", params={
        "system_template": "list-sys", "network_template": "list-net", "storage_template": "list-st",
        "userdata": "list-ud", "script": "empty"}))
    for path, name in (("/provisioner/template/system", "list-sys"), ("/provisioner/template/network", "list-net"),
                       ("/provisioner/template/storage", "list-st"), ("/provisioner/userdata", "list-ud"),
                       ("/provisioner/template/userdata", "list-ud"), ("/provisioner/script", "empty"),
                       ("/provisioner/profile", "list-p")):
        everything = provd.get(path).json()
        ids = [row["id"] for row in everything]
        assert ids == sorted(ids) and name in [row["name"] for row in everything], path
        assert [row["name"] for row in provd.get(path, params={"limit": f"^{name}$"}).json()] == [name], path
        assert provd.get(path, params={"limit": "^no-such-thing"}).status_code == 404, path
    overview = provd.get("/provisioner/template").json()
    assert "list-st" in [row["name"] for row in overview["storage_templates"]]
    assert provd.get("/provisioner/template", params={"limit": "^nothing$"}).json() == {
        "system_templates": [], "network_templates": [], "storage_templates": []}
    assert provd.get("/provisioner/profile", params={"limit": "list_p"}).json()[0]["name"] == "list-p"  # _ wildcard


V06_SCHEMA = """
CREATE TABLE system_template (id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, vcpu_count INT NOT NULL,
    vram_mb INT NOT NULL, serial BOOL NOT NULL, vnc BOOL NOT NULL, vnc_bind TEXT, node_limit TEXT,
    node_selector TEXT, node_autostart BOOL NOT NULL);
CREATE TABLE network_template (id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, mac_template TEXT);
CREATE TABLE network (id SERIAL PRIMARY KEY, network_template INT REFERENCES network_template(id),
    vni INT NOT NULL);
CREATE TABLE storage_template (id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE storage (id SERIAL PRIMARY KEY, storage_template INT REFERENCES storage_template(id),
    pool TEXT NOT NULL, disk_id TEXT NOT NULL, source_volume TEXT, disk_size_gb INT, mountpoint TEXT,
    filesystem TEXT, filesystem_args TEXT);
CREATE TABLE userdata (id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, userdata TEXT NOT NULL);
CREATE TABLE script (id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, script TEXT NOT NULL);
CREATE TABLE profile (id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    system_template INT REFERENCES system_template(id), network_template INT REFERENCES network_template(id),
    storage_template INT REFERENCES storage_template(id), userdata INT REFERENCES userdata(id),
    script INT REFERENCES script(id), arguments TEXT);
INSERT INTO userdata(name, userdata) VALUES ('empty', '');
INSERT INTO script(name, script) VALUES ('empty', '');
INSERT INTO system_template(name, vcpu_count, vram_mb, serial, vnc, vnc_bind, node_limit, node_selector,
    node_autostart) VALUES ('old-sys', 2, 1024, true, false, NULL, 'hv1,hv2', 'mem', false);
INSERT INTO network_template(name, mac_template) VALUES ('old-net', NULL);
INSERT INTO network(network_template, vni) VALUES (1, 200), (1, 300);
INSERT INTO storage_template(name) VALUES ('old-st');
INSERT INTO storage(storage_template, pool, disk_id, source_volume, disk_size_gb, mountpoint, filesystem,
    filesystem_args) VALUES (1, 'vms', 'sda', NULL, 4, '/', 'ext4', '-L=root');
INSERT INTO profile(name, system_template, network_template, storage_template, userdata, script, arguments)
    VALUES ('old-profile', 1, 1, 1, 1, 1, 'deb_release=buster|a=b');
"""


def test_a_v06_database_is_used_as_it_is(daemon_factory, postgres):
    """Tables made by v0.6's own DDL (provisioner.md §1.1) with rows in them: read, extended, versioned."""
    import secrets

    import psycopg2
    name = "pvc_v06_" + secrets.token_hex(4)
    admin = psycopg2.connect(host=postgres["host"], port=5432, user=postgres["user"], password=postgres["pass"],
                             dbname=postgres["name"])
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        with psycopg2.connect(host=postgres["host"], port=5432, user=postgres["user"], password=postgres["pass"],
                              dbname=name) as connection, connection.cursor() as cursor:
            cursor.execute(V06_SCHEMA)
        daemon = daemon_factory({"ceph": {"collector": "False"},
                                 "provisioner": {"database": {**postgres, "name": name}}})
        try:
            assert daemon.get("/provisioner/profile/old-profile").json() == [{
                "id": 1, "name": "old-profile", "system_template": "old-sys", "network_template": "old-net",
                "storage_template": "old-st", "userdata": "empty", "script": "empty",
                "arguments": ["deb_release=buster", "a=b"]}]
            assert [net["vni"] for net in daemon.get("/provisioner/template/network/old-net/net").json()] == [200, 300]
            assert daemon.get("/provisioner/template/storage/old-st/disk/sda").json()["filesystem_args"] == "-L=root"
            assert daemon.get("/provisioner/userdata").json() == [{"id": 1, "name": "empty", "userdata": ""}]  # once
            ok(daemon.post("/provisioner/template/network/old-net/net/400"))  # the SERIAL sequences go on
            assert daemon.get("/provisioner/template/network/old-net/net/400").json()["id"] == 3
            refused(daemon.delete("/provisioner/template/storage/old-st"), 409, "in use by profile(s) old-profile")
        finally:
            daemon.stop()
        with psycopg2.connect(host=postgres["host"], port=5432, user=postgres["user"], password=postgres["pass"],
                              dbname=name) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT component, version FROM pvc_schema_version")
            assert cursor.fetchall() == [("provisioner", 1)]
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_disks_may_name_pools_and_volumes_that_do_not_exist_yet(provd):
    """provisioner.md §2.6: the pool and the clone's source are checked when a VM is created (§3.3), not
    when the template is written (as v0.6); their names must still be names."""
    ok(provd.post("/provisioner/template/storage", params={"name": "later"}))
    ok(provd.post("/provisioner/template/storage/later/disk/sda", params={"pool": "nopool-yet", "disk_size": "4"}),
       'Added new disk "sda" to storage template "later"')
    ok(provd.post("/provisioner/template/storage/later/disk/sdb", params={"pool": POOL, "source_volume": "img-yet"}))
    disks = provd.get("/provisioner/template/storage/later/disk").json()
    assert [(disk["pool"], disk["source_volume"]) for disk in disks] == [("nopool-yet", None), (POOL, "img-yet")]
    for params, fragment in (({"pool": ".."}, "Parameter 'pool': expected a name without '/'"),
                             ({"pool": "a/b"}, "Parameter 'pool': expected a name without '/'"),
                             ({"pool": POOL, "source_volume": "x\ny"}, "Parameter 'source_volume': expected a name"),
                             ({"pool": POOL, "disk_size": "99999999999"},
                              "Parameter 'disk_size': expected an integer from 1 to 1000000"),
                             ({"pool": POOL, "disk_size": "0"}, "Parameter 'disk_size'")):
        refused(provd.post("/provisioner/template/storage/later/disk/sdc", params=params), 400, fragment)
    refused(provd.post("/provisioner/template/storage/later/disk", params={"disk_id": "s/d", "pool": POOL}), 400,
            "Parameter 'disk_id': expected a name without '/'")


@pytest.mark.parametrize("path, params, fragment", [
    ("/provisioner/template/system", {"name": "", "vcpus": "1", "vram": "512", "serial": "1", "vnc": "0"},
     "Parameter 'name': expected a name without '/' or control characters, not '.' or '..', got ''"),
    ("/provisioner/template/system", {"name": "a\r\nb", "vcpus": "1", "vram": "512", "serial": "1", "vnc": "0"},
     "Parameter 'name': expected a name without '/' or control characters"),
    ("/provisioner/template/system/%2E%2E", {"vcpus": "1", "vram": "512", "serial": "1", "vnc": "0"},
     "Name in the path: expected a name without '/' or control characters, not '.' or '..', got '..'"),
    ("/provisioner/template/network", {"name": "tab\there"}, "Parameter 'name'"),
    ("/provisioner/template/storage", {"name": ".."}, "Parameter 'name'"),
    ("/provisioner/userdata", {"name": "a\x7fb", "data": "x"}, "Parameter 'name'"),
    ("/provisioner/script", {"name": "", "data": "x"}, "Parameter 'name'"),
    ("/provisioner/profile", {"name": "p\n", "system_template": "s", "network_template": "n",
                              "storage_template": "t", "userdata": "empty", "script": "empty"}, "Parameter 'name'"),
    # vcpus and vram: positive, and within what a guest (and the database's 32-bit column) can take
    ("/provisioner/template/system", {"name": "big", "vcpus": "99999999999", "vram": "512", "serial": "1",
                                      "vnc": "0"}, "Parameter 'vcpus': expected an integer from 1 to 4096"),
    ("/provisioner/template/system", {"name": "neg", "vcpus": "-2", "vram": "512", "serial": "1", "vnc": "0"},
     "Parameter 'vcpus': expected an integer from 1 to 4096, got '-2'"),
    ("/provisioner/template/system", {"name": "neg", "vcpus": "1", "vram": "-512", "serial": "1", "vnc": "0"},
     "Parameter 'vram': expected an integer from 1 to 16777216, got '-512'"),
    ("/provisioner/template/system", {"name": "zero", "vcpus": "1", "vram": "0", "serial": "1", "vnc": "0"},
     "Parameter 'vram'"),
    # a MAC template is rendered when stored: one that cannot give a unicast MAC is refused now, not at creation
    ("/provisioner/template/network", {"name": "m", "mac_template": "xyz"},
     "Parameter 'mac_template': expected a template rendering a unicast MAC address"),
    ("/provisioner/template/network", {"name": "m", "mac_template": "{prefix}:2f:1f:{vmid}"},
     "Parameter 'mac_template'"),
    ("/provisioner/template/network", {"name": "m", "mac_template": "{prefix}:2f:1f:{vm}{netid}"},
     "uses the unknown field {vm}"),
    ("/provisioner/template/network", {"name": "m", "mac_template": "{netid}{vmid}:00:00:00:00:00"},
     "a multicast address"),
    ("/provisioner/template/network", {"name": "m", "mac_template": "{prefix}:2f:1f:{vmid}{netid"},
     "Parameter 'mac_template'"),
])
def test_names_bounds_and_mac_templates_refused(provd, path, params, fragment):
    refused(provd.post(path, params=params), 400, fragment)
    assert provd.get("/provisioner/template", params={"limit": "^(big|neg|zero|m)$"}).json() == {
        "system_templates": [], "network_templates": [], "storage_templates": []}


def test_bounds_on_changes_and_nets(provd):
    ok(provd.post("/provisioner/template/system/bounded", params={"vcpus": "2", "vram": "512", "serial": "1",
                                                                  "vnc": "0"}))
    refused(provd.put("/provisioner/template/system/bounded", params={"vcpus": "0"}), 400,
            "Parameter 'vcpus': expected an integer from 1 to 4096, got '0'")
    refused(provd.put("/provisioner/template/system/bounded", params={"vram": "99999999999"}), 400, "'vram'")
    assert provd.get("/provisioner/template/system/bounded").json()[0]["vcpu_count"] == 2
    ok(provd.post("/provisioner/template/network/bounded", params={"mac_template": "{prefix}:2f:1f:{vmid}{netid}"}))
    for vni in ("0", "-1", "16777216", "99999999999"):
        refused(provd.post(f"/provisioner/template/network/bounded/net/{vni}"), 400,
                f"Parameter 'vni': expected an integer from 1 to 16777215, got '{vni}'")
    ok(provd.post("/provisioner/template/network/bounded/net/16777215"))
    ok(provd.delete("/provisioner/template/system/bounded"))
    ok(provd.delete("/provisioner/template/network/bounded"))


SELECTOR_CHOICES = "expected one of mem, vcpus, load, vms"


def test_a_system_templates_node_selector_is_one_the_nodes_know(provd):
    """A selector no node daemon knows left its VMs unmigratable (and shut down by a flush): refused as a VM's
    meta selector is, on a new template and on a change, with nothing stored; each known one is kept."""
    system = {"vcpus": "1", "vram": "512", "serial": "yes", "vnc": "no"}
    for bogus in ("bogus", "", "None", "MEM", "mem,vcpus"):
        refused(provd.post("/provisioner/template/system", params={"name": "sel-new", **system,
                                                                   "node_selector": bogus}), 400,
                f"Parameter 'node_selector': {SELECTOR_CHOICES}, got {bogus!r}")
        refused(provd.post("/provisioner/template/system/sel-new", params={**system, "node_selector": bogus}), 400,
                f"Parameter 'node_selector': {SELECTOR_CHOICES}, got {bogus!r}")
        refused(provd.get("/provisioner/template/system/sel-new"), 404, "No system templates found")
    ok(provd.post("/provisioner/template/system/sel", params={**system, "vnc": "yes", "vnc_bind": "::",
                                                              "node_limit": "pvchv1", "node_selector": "vms",
                                                              "node_autostart": "yes"}))
    before = provd.get("/provisioner/template/system/sel").json()
    assert before == [{"id": before[0]["id"], "name": "sel", "vcpu_count": 1, "vram_mb": 512, "serial": True,
                       "vnc": True, "vnc_bind": "::", "node_limit": "pvchv1", "node_selector": "vms",
                       "node_autostart": True}]
    for bogus in ("bogus", "", "None"):
        refused(provd.put("/provisioner/template/system/sel", params={"node_selector": bogus}), 400,
                f"Parameter 'node_selector': {SELECTOR_CHOICES}, got {bogus!r}")
        # refused whole: the valid fields sent with it are not applied either
        refused(provd.put("/provisioner/template/system/sel", params={"vcpus": "2", "node_selector": bogus}), 400,
                "'node_selector'")
        assert provd.get("/provisioner/template/system/sel").json() == before
    for selector in ("mem", "vcpus", "load", "vms"):
        ok(provd.put("/provisioner/template/system/sel", params={"node_selector": selector}))
        assert provd.get("/provisioner/template/system/sel").json() == [{**before[0], "node_selector": selector}]
        ok(provd.post(f"/provisioner/template/system/sel-{selector}", params={**system, "node_selector": selector}))
        assert provd.get(f"/provisioner/template/system/sel-{selector}").json()[0]["node_selector"] == selector
        ok(provd.delete(f"/provisioner/template/system/sel-{selector}"))
    ok(provd.post("/provisioner/template/system/sel-default", params=system))  # absent: null (VMs get mem)
    assert provd.get("/provisioner/template/system/sel-default").json()[0]["node_selector"] is None
    declared = provd.get("/openapi.json").json()["paths"]["/api/v1/provisioner/template/system/{template}"]
    for method in ("post", "put"):
        selector = [param for param in declared[method]["parameters"] if param["name"] == "node_selector"]
        assert selector[0]["schema"] == {"type": "string", "enum": ["mem", "vcpus", "load", "vms"]}, selector
    ok(provd.delete("/provisioner/template/system/sel"))
    ok(provd.delete("/provisioner/template/system/sel-default"))


def test_a_nets_vni_is_declared_and_checked_as_an_integer(provd):
    ok(provd.post("/provisioner/template/network/vnis"))
    ok(provd.post("/provisioner/template/network/vnis/net", params={"vni": "1"}))
    ok(provd.post("/provisioner/template/network/vnis/net", json={"vni": 16777215}))
    before = provd.get("/provisioner/template/network/vnis").json()
    assert [net["vni"] for net in before[0]["networks"]] == [1, 16777215]
    expected = "Parameter 'vni': expected an integer from 1 to 16777215"
    refused(provd.post("/provisioner/template/network/vnis/net"), 400,
            "Parameter 'vni': required, expected an integer from 1 to 16777215")
    for vni in ("abc", "0", "16777216", "-5", "1.5", ""):
        refused(provd.post("/provisioner/template/network/vnis/net", params={"vni": vni}), 400,
                f"{expected}, got {vni!r}")
    for vni in ("abc", "0", "16777216"):  # the VNI in the path: the same message
        refused(provd.post(f"/provisioner/template/network/vnis/net/{vni}"), 400, f"{expected}, got {vni!r}")
    assert provd.get("/provisioner/template/network/vnis").json() == before
    declared = provd.get("/openapi.json").json()["paths"]["/api/v1/provisioner/template/network/{template}/net"]
    vni = [param for param in declared["post"]["parameters"] if param["name"] == "vni"]
    assert vni[0]["required"] is True
    assert vni[0]["schema"] == {"type": "integer", "minimum": 1, "maximum": 16777215}, vni
    ok(provd.delete("/provisioner/template/network/vnis"))


def test_name_filters_a_list(provd):
    """The seeds' ``?name=`` on a list route is an exact-name filter (it returned every row before)."""
    ok(provd.post("/provisioner/userdata", params={"name": "filter-a"}, data={"data": "a"}))
    ok(provd.post("/provisioner/userdata", params={"name": "filter-ab"}, data={"data": "ab"}))
    ok(provd.post("/provisioner/template/storage", params={"name": "filter-a"}))
    ok(provd.post("/provisioner/script", params={"name": "filter-a"}, data={"data": "x = 1"}))
    for path in ("/provisioner/userdata", "/provisioner/template/userdata", "/provisioner/template/storage",
                 "/provisioner/script"):
        assert [row["name"] for row in provd.get(path, params={"name": "filter-a"}).json()] == ["filter-a"], path
        refused(provd.get(path, params={"name": "filter"}), 404, "found")  # exact, not "contains"
        assert provd.get(path, params={"name": "filter-a", "limit": "zzz"}).status_code == 404  # both apply
    assert provd.get("/provisioner/userdata", params={"name": "filter-ab"}).json()[0]["userdata"] == "ab"
    for path in ("/provisioner/template/system", "/provisioner/template/network", "/provisioner/profile"):
        refused(provd.get(path, params={"name": "filter-none"}), 404, "found")
    ok(provd.delete("/provisioner/userdata/filter-a"))
    ok(provd.delete("/provisioner/userdata/filter-ab"))
    ok(provd.delete("/provisioner/template/storage/filter-a"))
    ok(provd.delete("/provisioner/script/filter-a"))


def test_create_refuses_an_existing_vm_name_at_once(provd):
    """A VM name already in the cluster is refused when the creation is submitted (409), not by the task."""
    from test_vm import define
    ok(provd.post("/provisioner/template/system/dup-sys", params={"vcpus": "1", "vram": "512", "serial": "1",
                                                                  "vnc": "0"}))
    ok(provd.post("/provisioner/template/network/dup-net"))
    ok(provd.post("/provisioner/template/storage/dup-st"))
    ok(provd.post("/provisioner/profile/dup-p", params={
        "system_template": "dup-sys", "network_template": "dup-net", "storage_template": "dup-st",
        "userdata": "empty", "script": "empty"}))
    defined = define(provd, node="pvchv1")
    assert defined.status_code == 200, defined.text
    try:
        tasks = provd.get("/tasks").json()
        response = provd.post("/provisioner/create", params={"name": "test1", "profile": "dup-p"})
        assert response.status_code == 409, response.text
        assert response.json() == {"message": "A VM with the name 'test1' already exists in the cluster"}
        assert provd.get("/tasks").json() == tasks  # nothing queued
        refused(provd.post("/provisioner/create", params={"name": "..", "profile": "dup-p"}), 400, "'name'")
    finally:
        assert provd.delete("/vm/test1").status_code == 200
        ok(provd.delete("/provisioner/profile/dup-p"))


def test_nul_bytes_and_32_bit_overflows_never_reach_postgresql(daemon_factory, postgres):
    """PostgreSQL refuses NUL in text and integers beyond 32 bits (were 500s): each is a 400 naming the
    parameter, before the database."""
    daemon = daemon_factory({"ceph": {"collector": "False"}, "provisioner": {"database": postgres}})
    try:
        system = {"vcpus": "1", "vram": "512", "serial": "1", "vnc": "0"}
        for method, path, params, data, fragment in (
                ("POST", "/provisioner/userdata", {"name": "a\x00b"}, {"data": "x"}, "Parameter 'name'"),
                ("POST", "/provisioner/userdata", {"name": "nul-data"}, {"data": "x\x00y"},
                 "Parameter 'data': expected text without NUL bytes"),
                ("POST", "/provisioner/script/nul%00name", {}, {"data": "x"}, "Path segment <script>"),
                ("GET", "/provisioner/template/system", {"limit": "\x00"}, None, "Parameter 'limit'"),
                ("GET", "/provisioner/profile/x%00", {}, None, "Path segment <profile>"),
                ("POST", "/provisioner/template/system", {"name": "huge", **system, "vcpus": "99999999999"}, None,
                 "Parameter 'vcpus'"),
                ("POST", "/provisioner/template/system", {"name": "huge", **system, "vram": str(2 ** 31)}, None,
                 "Parameter 'vram'")):
            response = daemon.request(method, path, params=params, data=data)
            assert response.status_code == 400, (path, response.text)
            assert response.json()["message"].startswith(fragment), (path, response.json())
        assert daemon.get("/provisioner/userdata/nul-data").status_code == 404
        assert "Traceback" not in daemon.log()
    finally:
        daemon.stop()
