"""Schemathesis over every operation of the served OpenAPI document, against a daemon on real services.

One daemon with authentication on (``X-Api-Key``) and every plugin the suite
loads (node, vm, network, ceph on the suite's memstore Ceph, provisioner on
PostgreSQL + Redis, the example plugin), on a seeded cluster: three nodes, a
managed and a bridged network with a reservation and an ACL, a VM with a real
disk, a pool with a volume and a snapshot, one template of each kind, a
userdata, a script, a profile and a task record. Half of the cases whose path
parameters are valid get them replaced by the names of these objects, so the
handlers behind the 404s are fuzzed too; an operation that changes a seeded
object with a 2xx is followed by a reseed of what it may have changed.

Schemathesis runs its coverage phase (boundary values; with
``PVC_FUZZ_COVERAGE=full`` also every invalid value and missing required
parameter it derives) and its fuzzing phase, positive and negative, over every
operation. Every response must pass ``CHECKS``: no status >= 500, and the
status code, content type and body conform to the document; a request that is
invalid per the document must not be accepted with a 2xx. The first success
of each operation is also sent without the token and with a wrong one
(``ignored_auth``). Failures are collected (not shrunk) so one run lists them
all, each with a curl command and, for a 5xx, the daemon's traceback;
``test_fuzz_summary`` prints the figures and fails when any was found.

Budget: ``PVC_FUZZ_EXAMPLES`` fuzzing examples per operation (the coverage
cases come on top). ``make test`` uses the defaults (about 1,100 requests, well
under a minute of fuzzing); ``make fuzz`` runs this file alone with 75 and the
full coverage phase (about 13,000). ``PVC_FUZZ_SEED`` fixes the seed (the
suite's is fixed, so it is repeatable; ``make fuzz`` draws one each run and
prints it: ``PVC_FUZZ_SEED=<n> make fuzz`` replays that run).

Destructive operations are made safe by reseeding, not by exclusion: DELETEs,
renames, undefine (with ``delete_disks``), OSD out, cluster flags (``pause``
too), maintenance and node states are restored after any 2xx; OSD add/remove
are answered by a played node daemon that records or forgets the OSD in
ZooKeeper only (``NodeDaemonPlayer``: the suite's Ceph keeps its one OSD), and
``POST /initialize`` refuses an initialized cluster. ``EXCLUDED`` lists what is
not fuzzed at all, each with its reason.
"""

from __future__ import annotations

import collections
import http.cookiejar
import json
import os
import random
import re
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from test_node import seed_node
from test_vm import vm_xml

from conftest import AUTH_ON, TOKEN, deep_merge, http_session

EXAMPLES = int(os.environ.get("PVC_FUZZ_EXAMPLES", "4"))
# The coverage phase's cases: "positive" (boundary and typical valid values: the suite's default) or
# "full" (also every invalid value and missing required parameter it derives: about 2,000 more requests)
COVERAGE = os.environ.get("PVC_FUZZ_COVERAGE", "positive")
_seed = os.environ.get("PVC_FUZZ_SEED", "20240611")
SEED = random.SystemRandom().randrange(2 ** 32) if _seed == "random" else int(_seed)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]

# (method, OpenAPI path) -> why it is not fuzzed.
EXCLUDED: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/example/crash"): "the example plugin's deliberate bug: it always raises, to prove that a "
                                      "handler's bug answers a logged JSON 500 (tests/test_http.py)",
}

NAME = "fuzz"  # every seeded object that has a name is called this (templates of all kinds, pool, volume, ...)
VM_UUID = "00000000-0000-4000-8000-00000000f022"
VM_DISK = "fuzzvm_sda"
LEASE_MAC = "52:54:00:00:f0:22"
ACL = "fuzzacl"
NODES = ("pvchv1", "pvchv2", "pvchv3")
CMD_CEPH = "/cmd/ceph"


class NodeDaemonPlayer:
    """Answers the v0.6 ``/cmd/ceph`` mailbox as a node daemon does, without touching Ceph.

    Under its write lock: ``osd_add <node>,<device>,<weight>`` records a new OSD the way a v0.6
    node does, ``osd_remove <id>`` forgets one; then the answer is written. So the OSD add and
    remove operations are fuzzed to their end, not to a 503 for want of a node daemon.
    """

    def __init__(self, address: str):
        from kazoo.client import KazooClient
        self.client = KazooClient(hosts=address)
        self.client.start(timeout=15)
        self.client.DataWatch(CMD_CEPH, self._react)

    def _react(self, data: bytes | None, _stat: Any) -> bool:
        command = (data or b"").decode(errors="replace")
        if command and not command.startswith(("success-", "failure-")):
            threading.Thread(target=self._answer, args=(command,), daemon=True).start()
        return True

    def _answer(self, command: str) -> None:
        with self.client.WriteLock(CMD_CEPH, "node-fuzz"):
            answer = "failure"
            verb, _, args = command.partition(" ")
            try:
                if verb == "osd_add":
                    node, device, _weight = args.split(",")
                    ids = [int(child) for child in self.client.get_children("/ceph/osds") if child.isdecimal()]
                    osd = str(max(ids, default=0) + 1)
                    transaction = self.client.transaction()
                    for key, value in (("", ""), ("/node", node), ("/device", device), ("/stats", "{}")):
                        transaction.create(f"/ceph/osds/{osd}{key}", value.encode())
                    answer = "success" if not any(isinstance(r, Exception) for r in transaction.commit()) \
                        else "failure"
                elif verb == "osd_remove":
                    self.client.delete(f"/ceph/osds/{args}", recursive=True)
                    answer = "success"
            except Exception:  # a v0.6 node answers failure whatever went wrong
                answer = "failure"
            self.client.set(CMD_CEPH, f"{answer}-{command}".encode())

    def stop(self) -> None:
        self.client.stop()
        self.client.close()


@dataclass
class Finding:
    operation: str
    check: str
    status: int | None
    message: str
    curl: str
    count: int = 0
    log: str = ""


@dataclass
class FuzzRun:
    """The seeded daemon, the seed values of path parameters, and what the run has seen."""

    daemon: Any
    zk: Any
    task_id: str = ""
    rng: random.Random = field(default_factory=lambda: random.Random(SEED))
    session: requests.Session = field(default_factory=http_session)  # the fuzzer's requests
    seeding: requests.Session = field(default_factory=http_session)  # the seeding's
    requests: int = 0
    reseeds: int = 0
    statuses: collections.Counter = field(default_factory=collections.Counter)
    operations: collections.Counter = field(default_factory=collections.Counter)
    kinds: collections.Counter = field(default_factory=collections.Counter)  # (phase, mode) -> requests
    substituted: int = 0
    findings: dict[tuple, Finding] = field(default_factory=dict)
    ceph_flags_set: set[str] = field(default_factory=set)
    auth_probed: set[str] = field(default_factory=set)  # operations whose auth enforcement was probed
    succeeded: set[str] = field(default_factory=set)  # operations that answered a 2xx at least once
    started: float = field(default_factory=time.monotonic)
    document: dict | None = None  # the served OpenAPI document, fetched when first needed

    # -- seeding ------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        # the seeding is set-up, not under test: its answers are not checked against the document here
        kwargs.setdefault("timeout", 60)
        return self.seeding.request(method, self.daemon.url(path), **kwargs)

    def api(self, method: str, path: str, expect: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        """A seeding call; one that fails is a finding (the fuzzing goes on without that object)."""
        response = self.request(method, path, **kwargs)
        if response.status_code not in expect:
            label = f"{method} {path} (seeding)"
            key = (label, "seeding", response.status_code)
            if key not in self.findings:
                request_id = response.headers.get("X-Request-Id", "")
                self.findings[key] = Finding(label, "seeding", response.status_code, response.text[:1500],
                                             f"{method} {path} {kwargs}", log=self.log_for(request_id))
            self.findings[key].count += 1
        return response

    def exists(self, path: str) -> bool:
        return self.request("GET", path).status_code == 200

    def seed_all(self) -> None:
        self.seed_cluster()
        self.seed_networks()
        self.seed_storage()
        self.seed_vm()
        self.seed_provisioner()

    def seed_cluster(self) -> None:
        for name in NODES:
            if self.zk.exists(f"/nodes/{name}"):
                for key, value in (("daemonstate", "run"), ("domainstate", "ready"), ("routerstate", "secondary")):
                    self.zk.set(f"/nodes/{name}/{key}", value.encode())
            else:
                seed_node(self.zk, name)
        self.zk.set("/primary_node", NODES[0].encode())
        self.api("POST", "/status", params={"state": "false"})
        deadline = time.monotonic() + 60
        while len(self.request("GET", "/node").json()) < len(NODES):  # the daemon's view of /nodes catches up
            assert time.monotonic() < deadline, "the seeded nodes did not show in GET /node"
            time.sleep(0.05)

    def seed_networks(self) -> None:
        if not self.exists("/network/1001"):
            self.api("POST", "/network", params=[
                ("vni", "1001"), ("description", "fuzznet"), ("nettype", "managed"), ("domain", "fuzz.local"),
                ("name_servers", "10.100.0.1"), ("ip4_network", "10.10.1.0/24"), ("ip4_gateway", "10.10.1.1"),
                ("ip6_network", "2001:db8:1001::/64"), ("dhcp4", "True"), ("dhcp4_start", "10.10.1.100"),
                ("dhcp4_end", "10.10.1.199")])
        elif not self.exists("/network/fuzznet"):  # renamed
            self.api("PUT", "/network/1001", params={"description": "fuzznet"})
        if not self.exists("/network/100"):
            self.api("POST", "/network/100", params={"description": "fuzzbridge", "nettype": "bridged"})
        if not self.exists(f"/network/1001/lease/{LEASE_MAC}"):
            self.api("POST", "/network/1001/lease", params={"macaddress": LEASE_MAC, "ipaddress": "10.10.1.22",
                                                            "hostname": "fuzzhost"})
        if not self.exists(f"/network/1001/acl/{ACL}"):
            self.api("POST", "/network/1001/acl", params={"description": ACL, "rule": "tcp dport 22 accept",
                                                          "direction": "in"})

    def seed_storage(self) -> None:
        for flag in self.ceph_flags_set:
            self.request("POST", "/storage/ceph/option", params={"option": flag, "action": "unset"})
        self.ceph_flags_set.clear()
        if not self.zk.exists("/ceph/osds/0"):  # the suite's OSD, as its node daemon records it
            transaction = self.zk.transaction()
            for key, value in (("", ""), ("/node", NODES[0]), ("/device", "/dev/sdb"), ("/stats", "{}")):
                transaction.create(f"/ceph/osds/0{key}", value.encode())
            transaction.commit()
        self.request("POST", "/storage/ceph/osd/0/state", params={"state": "in"})
        if not self.exists(f"/storage/ceph/pool/{NAME}"):
            self.api("POST", "/storage/ceph/pool", params={"pool": NAME, "pgs": "8", "replcfg": "copies=1,mincopies=1"})
        for volume in (NAME, VM_DISK):
            if not self.exists(f"/storage/ceph/volume/{NAME}/{volume}"):
                self.api("POST", "/storage/ceph/volume", params={"pool": NAME, "volume": volume, "size": "64M"})
        if not self.exists(f"/storage/ceph/snapshot/{NAME}/{NAME}/{NAME}"):
            self.api("POST", "/storage/ceph/snapshot", params={"pool": NAME, "volume": NAME, "snapshot": NAME})

    def seed_vm(self) -> None:
        if self.exists(f"/vm/{NAME}"):
            return
        if self.zk.exists(f"/domains/{VM_UUID}"):  # a fuzz case renamed it (its disk too): both names back
            self.zk.set(f"/domains/{VM_UUID}/state", b"stop")  # a rename takes a stopped VM
            self.api("POST", f"/vm/{VM_UUID}/rename", params={"new_name": NAME})
            return
        self.seed_storage()  # delete_disks may have taken its disk
        xml = vm_xml(NAME, VM_UUID).replace("vms/fuzz_sda", f"{NAME}/{VM_DISK}")
        self.api("POST", "/vm", params={"node": NODES[0], "limit": ",".join(NODES[:2]), "selector": "mem"},
                 data={"xml": xml})

    def seed_provisioner(self) -> None:
        base = "/provisioner"
        calls = [
            (f"{base}/template/system/{NAME}", {"vcpus": "1", "vram": "512", "serial": "yes", "vnc": "no"}),
            (f"{base}/template/network/{NAME}", {"mac_template": "{prefix}:2f:1f:{vmid}{netid}"}),
            (f"{base}/template/network/{NAME}/net/1001", {}),
            (f"{base}/template/storage/{NAME}", {}),
            (f"{base}/template/storage/{NAME}/disk/sda", {"pool": NAME, "disk_size": "1", "filesystem": "ext4",
                                                          "mountpoint": "/"}),
            (f"{base}/userdata/{NAME}", {"data": "#cloud-config\n"}),
            (f"{base}/script/{NAME}", {"data": "def install(**kwargs):\n    pass\n"}),
            (f"{base}/profile/{NAME}", {"system_template": NAME, "network_template": NAME, "storage_template": NAME,
                                        "userdata": NAME, "script": NAME, "arg": "greeting=hi"}),
        ]
        for path, params in calls:
            if not self.exists(path):
                self.api("POST", path, data=params)
        if not self.task_id:
            created = self.api("POST", f"{base}/create", expect=(202,),
                               params={"name": "fuzzcreated", "profile": NAME, "start_vm": "no"})
            self.task_id = created.json().get("task_id", "") if created.status_code == 202 else ""

    def reseed_after(self, method: str, path: str, query: dict | None) -> None:
        """Restore what a successful change at ``path`` may have altered of the seed."""
        self.reseeds += 1
        relative = path.removeprefix("/api/v1")
        if relative.startswith(("/storage/ceph/option", "/storage/ceph/cluster-option")):
            if (query or {}).get("action") == "set":  # a flag such as pause would stall the storage
                self.ceph_flags_set.add(str(query.get("option")))
            self.seed_storage()
        elif relative.startswith("/storage"):
            self.seed_storage()
            self.seed_vm()
        elif relative.startswith("/vm"):
            self.seed_vm()
        elif relative.startswith("/network"):
            self.seed_networks()
        elif relative.startswith("/provisioner"):
            self.seed_provisioner()
        elif relative.startswith(("/node", "/status", "/initialize")):
            self.seed_cluster()

    # -- fuzzing ------------------------------------------------------------------------------

    def seed_values(self) -> dict[str, list[str]]:
        return {
            "vm": [NAME, VM_UUID], "node": list(NODES), "vni": ["1001", "fuzznet", "100"], "mac": [LEASE_MAC],
            "description": [ACL], "osdid": ["0"], "pool": [NAME], "volume": [NAME, VM_DISK], "snapshot": [NAME],
            "task_id": [self.task_id] if self.task_id else [], "template": [NAME], "disk_id": ["sda"],
            "userdata": [NAME], "script": [NAME], "profile": [NAME],
        }

    def substitute(self, case: Any) -> None:
        """Point half of the valid cases with path parameters at the seeded objects."""
        if not case.path_parameters or self.rng.random() < 0.5:
            return
        meta = case.meta
        if meta is not None:
            component = meta.components.get(_path_location())
            if component is not None and component.mode.is_negative:
                return
        values = self.seed_values()
        for name in list(case.path_parameters):
            if values.get(name):
                case.path_parameters[name] = self.rng.choice(values[name])
        if case.headers and "If-Match" in case.headers and self.rng.random() < 0.5:
            # a generated entity tag never matches (412): half of them become "*", which holds on the seeded
            # object, so that the change itself is reached with If-Match too
            case.headers["If-Match"] = "*"
        self.substituted += 1

    def run(self, case: Any) -> None:
        # Hypothesis owns the global random state during a test; nothing done here may move it
        state = random.getstate()
        try:
            self._run(case)
        finally:
            random.setstate(state)

    def _run(self, case: Any) -> None:
        self.substitute(case)
        label = case.operation.label
        self.operations[label] += 1
        self.requests += 1
        meta = case.meta
        self.kinds[(meta.phase.name.value if meta else "?", meta.generation.mode.value if meta else "?")] += 1
        try:
            response = case.call(session=self.session, timeout=60)
        except requests.RequestException as exc:
            self.record(case, label, "transport", None, f"{type(exc).__name__}: {exc}", "")
            return
        self.statuses[response.status_code] += 1
        if 200 <= response.status_code < 300:
            self.succeeded.add(label)
        checks = list(CHECKS)
        if 200 <= response.status_code < 300 and label not in self.auth_probed:
            # the first success of each operation is sent again without the token and with a wrong one
            self.auth_probed.add(label)
            checks.append(ignored_auth)
        request_id = (response.headers.get("x-request-id") or [""])[0]
        failures: tuple = ()
        try:
            case.validate_response(response, checks=checks)
        except FailureGroup as group:
            failures = group.exceptions
        for failure in failures:
            if type(failure).__name__ == "AcceptedNegativeData" and self.valid_on_the_wire(case, response):
                continue
            self.record(case, label, type(failure).__name__, response.status_code,
                        f"{failure.title}: {failure.message}", request_id)
        if response.status_code >= 500 and not any(type(f).__name__ == "ServerError" for f in failures):
            # whatever Schemathesis thinks of the case (a probe it does not judge, say): a 5xx is a finding
            self.record(case, label, "ServerError", response.status_code, "Server error", request_id)
        if 200 <= response.status_code < 300 and case.method.upper() != "GET":
            self.reseed_after(case.method.upper(), case.formatted_path, case.query)

    def valid_on_the_wire(self, case: Any, response: requests.Response) -> bool:
        """Whether a "negative" case that was accepted is in fact valid as the daemon received it.

        A query string is text: Schemathesis's boolean ``true`` for a string
        parameter arrives as the valid string "true", and an empty flag is
        declared valid (``allowEmptyValue``). Only a case whose mutation lies
        in the query alone, and whose query as sent fits every declared
        parameter read as text, is excused.
        """
        meta = case.meta
        if meta is None:
            return False
        mutated = {str(location) for location, component in meta.components.items() if component.mode.is_negative}
        if not mutated or any("query" not in location.lower() for location in mutated):
            return False
        if self.document is None:
            self.document = self.seeding.get(self.daemon.url("/openapi.json"), timeout=60).json()
        operation = self.document["paths"][case.operation.path][case.method.lower()]
        sent = urllib.parse.parse_qs(urllib.parse.urlsplit(response.request.url).query, keep_blank_values=True)
        for param in operation.get("parameters", []):
            if param["in"] != "query":
                continue
            values = [value for name in (param["name"], *param.get("x-aliases", ())) for value in sent.get(name, [])]
            if not values:
                if param.get("required"):
                    return False
                continue
            schema = param["schema"]
            items = schema["items"] if schema.get("type") == "array" else schema
            checked = values if schema.get("type") == "array" else values[-1:]  # the last one wins
            if not all(_text_fits(value, items, param.get("allowEmptyValue", False)) for value in checked):
                return False
        return True

    def record(self, case: Any, label: str, check: str, status: int | None, message: str, request_id: str) -> None:
        # one finding per operation, check and status (the first request that showed it is kept)
        key = (label, check, status)
        finding = self.findings.get(key)
        if finding is None:
            curl = case.as_curl_command(headers={"X-Api-Key": "$TOKEN"})
            log = self.log_for(request_id) if status is not None and status >= 500 else ""
            finding = self.findings[key] = Finding(label, check, status, message[:1500], curl, log=log)
        finding.count += 1

    def log_for(self, request_id: str) -> str:
        """The daemon's log lines of one request (the traceback of a 500 carries its request id)."""
        if not request_id:
            return ""
        time.sleep(0.1)
        lines = self.daemon.log().splitlines()
        hits = [index for index, line in enumerate(lines) if request_id in line]
        if not hits:
            return ""
        block = lines[hits[0]:hits[-1] + 1]  # from the error line to the access line: the traceback
        if len(block) > 16:
            block = [block[0], "  ..."] + block[-14:]
        return "\n".join(block)

    def report(self) -> str:
        elapsed = time.monotonic() - self.started
        served = sum(1 for line in self.daemon.log().splitlines() if " pvc.access: " in line)
        lines = [f"fuzz: {self.requests} requests over {len(self.operations)} operations in {elapsed:.0f} s "
                 f"(seed {SEED}, {EXAMPLES} fuzzing examples per operation, coverage {COVERAGE}, "
                 f"{self.substituted} cases on seeded objects, {self.reseeds} reseeds, auth probed on "
                 f"{len(self.auth_probed)} operations; the daemon served {served} requests in all)",
                 "fuzz: statuses " + ", ".join(f"{code}: {count}" for code, count in sorted(self.statuses.items())),
                 "fuzz: cases " + ", ".join(f"{phase} {mode}: {count}"
                                            for (phase, mode), count in sorted(self.kinds.items())),
                 "fuzz: operations that never answered 2xx: "
                 + (", ".join(sorted(set(self.operations) - self.succeeded)) or "none")]
        for finding in sorted(self.findings.values(), key=lambda f: (f.check, f.operation)):
            lines.append(f"FINDING {finding.check} {finding.status} x{finding.count} {finding.operation}\n"
                         f"  {finding.message}\n  {finding.curl}")
            if finding.log:
                lines.append("  daemon log:\n" + finding.log)
        return "\n".join(lines)


BOOLEAN_WORDS = {"true", "t", "yes", "y", "on", "1", "false", "f", "no", "n", "off", "0"}


def _text_fits(raw: str, schema: dict, allow_empty: bool) -> bool:
    """One query value, as text, against a parameter's schema (the oracle is this test's, not the daemon's)."""
    if raw == "" and allow_empty:
        return True
    kind = schema.get("type")
    if kind == "boolean":
        return raw.lower() in BOOLEAN_WORDS
    if kind in ("integer", "number"):
        pattern = r"[+-]?[0-9]+" if kind == "integer" else r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"
        if not re.fullmatch(pattern, raw):
            return False
        value = int(raw) if kind == "integer" else float(raw)
        return (schema.get("minimum") is None or value >= schema["minimum"]) and \
               (schema.get("maximum") is None or value <= schema["maximum"])
    if "enum" in schema and raw not in [str(choice) for choice in schema["enum"]]:
        return False
    if "\x00" in raw or len(raw) > schema.get("maxLength", len(raw)) or len(raw) < schema.get("minLength", 0):
        return False
    return schema.get("pattern") is None or re.search(schema["pattern"], raw) is not None


def _path_location() -> Any:
    from schemathesis.core.parameters import ParameterLocation
    return ParameterLocation.PATH


@pytest.fixture(scope="module")
def fuzz_database(postgres: dict) -> Any:
    """A database of its own: the fuzzer's rows and queued tasks must not reach the other modules' daemons."""
    import psycopg2
    name = "pvc_fuzz_" + secrets.token_hex(4)
    connection = psycopg2.connect(host=postgres["host"], port=int(postgres["port"]), user=postgres["user"],
                                  password=postgres["pass"], dbname="postgres", connect_timeout=5)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    yield {**postgres, "name": name}
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    connection.close()


@pytest.fixture(scope="module")
def fuzz_run(daemon_factory, ceph_config, ceph_cluster, fuzz_database, redis_server, zk_server):
    from kazoo.client import KazooClient
    zk = KazooClient(hosts=zk_server.address)
    zk.start(timeout=15)
    for child in zk.get_children("/"):
        if child != "zookeeper":
            zk.delete("/" + child, recursive=True)
    pools_before = set(_pools(ceph_cluster))
    config = deep_merge(deep_merge(AUTH_ON, ceph_config), {
        # short waits: no node daemon answers here, so every wait runs to its timeout
        "ceph": {"interval": "2", "volume_interval": "10", "osd_add_timeout": "0.5", "osd_remove_timeout": "0.5"},
        "vm": {"delete_grace": "0", "wait_timeout": "0.5"},
        "node": {"wait_timeout": "0.5"},
        "tasks": {"wait_max": "0.5"},  # the seeded creation stays queued (no worker): its wait runs to the timeout
        "provisioner": {"database": fuzz_database, "queue": redis_server},
    })
    daemon = daemon_factory(config)
    run = FuzzRun(daemon=daemon, zk=zk)
    # the token authenticates every request; a session cookie some case obtained must not
    run.session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    run.session.headers["X-Api-Key"] = TOKEN
    run.seeding.headers["X-Api-Key"] = TOKEN
    run.api("POST", "/initialize")
    run.seed_all()
    player = NodeDaemonPlayer(zk_server.address)
    yield run
    player.stop()
    daemon.stop()
    _remove_new_pools(ceph_cluster, pools_before)
    import redis
    redis.Redis(host=redis_server["host"], port=int(redis_server["port"]),
                db=int(redis_server["path"].lstrip("/"))).flushdb()  # the creations queued here never run
    zk.stop()
    zk.close()


def _pools(ceph_cluster: Any) -> list[str]:
    import rados
    handle = rados.Rados(conffile=ceph_cluster.conf, conf={"keyring": ceph_cluster.keyring})
    handle.connect(timeout=10)
    try:
        return handle.list_pools()
    finally:
        handle.shutdown()


def _remove_new_pools(ceph_cluster: Any, before: set[str]) -> None:
    import rados
    handle = rados.Rados(conffile=ceph_cluster.conf, conf={"keyring": ceph_cluster.keyring})
    handle.connect(timeout=10)
    try:
        for pool in set(handle.list_pools()) - before:
            handle.mon_command(json.dumps({"prefix": "osd pool rm", "pool": pool, "pool2": pool,
                                           "yes_i_really_really_mean_it": True}), b"")
    finally:
        handle.shutdown()


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_run: FuzzRun) -> Any:
    config = schemathesis.Config(seed=SEED)
    schema = schemathesis.openapi.from_url(fuzz_run.daemon.url("/openapi.json"), config=config,
                                           headers={"X-Api-Key": TOKEN}, timeout=30)
    schema.config.update(base_url=fuzz_run.daemon.base, headers={"X-Api-Key": TOKEN},
                         suppress_health_check=[schemathesis.config.HealthCheck.all])
    both = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    # the token is given above: no generated values for the security schemes' header and cookie
    schema.config.generation.update(modes=both, max_examples=EXAMPLES, no_shrink=True, database="none",
                                    with_security_parameters=False)
    schema.config.phases.coverage.generation.update(
        modes=both if COVERAGE == "full" else [schemathesis.GenerationMode.POSITIVE])
    return schema


lazy_schema = schemathesis.pytest.from_fixture("fuzz_schema")
for (_method, _path), _reason in EXCLUDED.items():
    lazy_schema = lazy_schema.exclude(method=_method, path=_path)


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    # Schemathesis 4.32's lazy schemas rename the running item through ``Node._nodeid`` for their
    # per-operation reports; pytest 9.2 keeps the id elsewhere. Giving the item the attribute back
    # is enough (the report then names the test, and each failure its operation).
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.mark.timeout(0)
# Schemathesis' own strategies touch the global random module (a Hypothesis deprecation, not ours to fix)
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@lazy_schema.parametrize()
def test_fuzz(case, fuzz_run):
    fuzz_run.run(case)


@pytest.mark.timeout(60)
def test_fuzz_summary(fuzz_run, capsys):
    report = fuzz_run.report()
    with capsys.disabled():
        print("\n" + report)
    (fuzz_run.daemon.workdir / "fuzz-report.txt").write_text(report + "\n")
    assert fuzz_run.requests > 0, "test_fuzz did not run"
    assert not fuzz_run.findings, report
