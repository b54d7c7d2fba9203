"""Session fixtures: a real ZooKeeper, PostgreSQL and Redis, and real daemons on free ports.

Every service is started by the suite itself when it is not already running,
bound to 127.0.0.1. Daemons run as subprocesses of the installed ``pvcapid``
console script with a generated config file, exactly as in production.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from contract import Contract

from pvc_core.zkserver import ZooKeeperServer, free_port, quiet_port

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = Path(__file__).resolve().parent / "plugins"
BIN = Path(sys.executable).parent
TOKEN = "test-token-" + secrets.token_hex(8)
PG_PASSWORD = "postgres"


# -- waiting --------------------------------------------------------------------------------
#
# A test waits for an event (a predicate turning true), never for a fixed time; a deadline
# only bounds a hang, and is derived from the timeouts the test daemons are configured with,
# generously: CI shares its machine (load 24 on 2 cores has been seen), where a watch event,
# a reconnect or a process start takes many times its idle latency. PVC_TEST_SLOWDOWN
# multiplies every deadline for a machine slower still.

SLOWDOWN = float(os.environ.get("PVC_TEST_SLOWDOWN", "1"))
ZK_REQUEST_TIMEOUT = 3.0   # what base_config gives every test daemon
ZK_SESSION_TIMEOUT = 10.0  # the daemon's default (pvc.zookeeper.session_timeout)
CEPH_TIMEOUT = 5.0         # what ceph_config gives (pvc.ceph.timeout)
CEPH_INTERVAL = 0.3        # what ceph_config gives (pvc.ceph.interval)
CEPH_VOLUME_INTERVAL = 1.0  # what ceph_config gives (pvc.ceph.volume_interval)
# A process (daemon, consumer, server) answering after start; an HTTP request answering.
START_TIMEOUT = SLOWDOWN * 120
REQUEST_TIMEOUT = SLOWDOWN * 60
# What a request whose wait is bounded by a configured timeout may take beyond it (the answer
# itself, on a loaded machine): tests of "the wait is bounded" assert timeout + ANSWER_SLACK.
ANSWER_SLACK = SLOWDOWN * 3.0


def settle_timeout(config: dict | None = None) -> float:
    """How long a ZooKeeper change may take to show through a daemon with this ``config``.

    The worst case without a fault is a lost session on a starved machine: the
    session expires, the client reconnects and the watched views rewarm; we
    allow that four times over.
    """
    zookeeper = (config or {}).get("zookeeper", {})
    session = float(zookeeper.get("session_timeout", ZK_SESSION_TIMEOUT))
    request = float(zookeeper.get("request_timeout", ZK_REQUEST_TIMEOUT))
    return SLOWDOWN * 4 * (session + request)


def ceph_timeout(config: dict | None = None) -> float:
    """How long a Ceph-derived value may take to show through a daemon with this ``config``.

    A collection is several Ceph calls, each bounded by ``ceph.timeout``, and
    comes every ``interval`` (volumes every ``volume_interval``); we allow a
    handful of slow collections.
    """
    ceph = (config or {}).get("ceph", {})
    calls = 20 * float(ceph.get("timeout", CEPH_TIMEOUT))
    intervals = 10 * (float(ceph.get("interval", CEPH_INTERVAL)) + float(ceph.get("volume_interval",
                                                                                  CEPH_VOLUME_INTERVAL)))
    return SLOWDOWN * (calls + intervals)


def wait_until(predicate: Callable[[], Any], timeout: float | None = None, interval: float = 0.05,
               ignoring: tuple[type[BaseException], ...] = (), message: str = "") -> Any:
    """Call ``predicate`` until it returns something true, and return that.

    Fails when ``timeout`` (default: ``settle_timeout()``) has passed, with
    ``message`` and the last value seen; exceptions of the ``ignoring`` types
    count as "not yet".
    """
    limit = settle_timeout() if timeout is None else timeout
    deadline = time.monotonic() + limit
    while True:
        try:
            result = predicate()
        except ignoring as exc:
            result = exc
        else:
            if result:
                return result
        assert time.monotonic() < deadline, f"{message or 'condition not reached'} within {limit:.0f} s " \
                                            f"(last: {result!r:.500})"
        time.sleep(interval)


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_port(port: int, timeout: float = START_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(port):
            return True
        time.sleep(0.1)
    return False


# -- ZooKeeper ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def zk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer(str(tmp_path_factory.mktemp("zk")))
    server.start(timeout=START_TIMEOUT)
    yield server
    server.stop()


@pytest.fixture
def zk_client(zk_server: ZooKeeperServer) -> Iterator[Any]:
    from kazoo.client import KazooClient
    client = KazooClient(hosts=zk_server.address)
    client.start(timeout=START_TIMEOUT)
    yield client
    client.stop()
    client.close()


def empty_tree(client: Any) -> None:
    """Remove everything but /zookeeper. A running daemon's collector may add a key while a subtree
    is being removed (NotEmptyError): such subtrees are removed again."""
    from kazoo.exceptions import NoNodeError, NotEmptyError

    def emptied() -> bool:
        for child in client.get_children("/"):
            if child != "zookeeper":
                client.delete("/" + child, recursive=True)
        return True

    wait_until(emptied, ignoring=(NotEmptyError, NoNodeError), message="could not empty the ZooKeeper tree")


@pytest.fixture
def clean_zk(zk_client: Any) -> Any:
    """An empty tree (the suite's ZooKeeper is shared by all tests)."""
    empty_tree(zk_client)
    return zk_client


# -- PostgreSQL and Redis -------------------------------------------------------------------

def _ensure_postgres() -> None:
    if _port_open(5432):
        return
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions:
        pytest.fail("PostgreSQL is not installed (make test installs it: scripts/install.sh)")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=False)
    if not _wait_port(5432):
        pytest.fail("PostgreSQL did not start on 127.0.0.1:5432")


def _pg_connect(dbname: str = "postgres") -> Any:
    import psycopg2
    try:
        return psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", password=PG_PASSWORD,
                                dbname=dbname, connect_timeout=int(REQUEST_TIMEOUT))
    except psycopg2.OperationalError as exc:
        if "password" not in str(exc) and "authentication" not in str(exc):
            raise
    # A stock Debian install uses password auth on TCP: give the postgres user a known one.
    subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-q", "-c",
                    f"ALTER USER postgres PASSWORD '{PG_PASSWORD}'"], check=True)
    return psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", password=PG_PASSWORD,
                            dbname=dbname, connect_timeout=int(REQUEST_TIMEOUT))


@pytest.fixture(scope="session")
def postgres() -> Iterator[dict]:
    """A fresh database for this run; dropped at the end."""
    _ensure_postgres()
    name = "pvc_test_" + secrets.token_hex(4)
    connection = _pg_connect()
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    yield {"host": "127.0.0.1", "port": "5432", "name": name, "user": "postgres", "pass": PG_PASSWORD}
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    connection.close()


@pytest.fixture(scope="session")
def redis_server() -> dict:
    if not _port_open(6379):
        subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379",
                        "--save", "", "--appendonly", "no"], check=True)
        if not _wait_port(6379):
            pytest.fail("Redis did not start on 127.0.0.1:6379")
    import redis
    # Each run flushes its own database; PVC_TEST_REDIS_DB keeps concurrent runs apart, and each
    # pytest-xdist worker of a run takes the next one down (gw0 the given one, gw1 the one below).
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    db = (int(os.environ.get("PVC_TEST_REDIS_DB", "15")) - worker) % 16
    redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
    return {"host": "127.0.0.1", "port": "6379", "path": f"/{db}"}


# -- the example plugin ---------------------------------------------------------------------

def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", *args], check=True)


@contextlib.contextmanager
def installed(distribution: Path, target: Path) -> Iterator[None]:
    """pip-install a test plugin distribution into ``target``, on the path of this session and its daemons.

    Not into the shared virtualenv: another test session running beside this
    one would see the plugin come and go under its daemons.
    """
    # Built from a copy: setuptools builds in the source tree, and two runs (or pytest-xdist workers)
    # building one tree at once install each other's half-removed files.
    source = Path(tempfile.mkdtemp(prefix="pvc-dist-"))
    try:
        shutil.copytree(distribution, source / distribution.name,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        pip("install", "--no-deps", "--no-build-isolation", "--target", str(target), str(source / distribution.name))
    finally:
        shutil.rmtree(source, ignore_errors=True)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), saved]))
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(target))
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
        importlib.invalidate_caches()


@pytest.fixture(scope="session", autouse=True)
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The third-party plugin distribution, installed like any other for the whole run."""
    with installed(PLUGIN_DIR / "pvc-plugin-example", tmp_path_factory.mktemp("example-plugin")):
        yield


# -- daemons --------------------------------------------------------------------------------

def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def base_config(coordinator: str, port: int, data_dir: str) -> dict:
    return {
        "debug": "False",
        "data_dir": data_dir,
        "coordinators": [coordinator],
        "zookeeper": {"request_timeout": str(ZK_REQUEST_TIMEOUT)},
        # the well-known 169.254.169.254:80 is not ours to bind here; tests/test_metadata.py enables it on loopback
        "metadata": {"enabled": "False"},
        "api": {
            "listen_address": "127.0.0.1",
            "listen_port": str(port),
            "authentication": {"enabled": "False"},
            "ssl": {"enabled": "False"},
        },
    }


AUTH_ON = {"api": {"authentication": {"enabled": "True", "secret_key": "s3cret-signing-key",
                                      "tokens": [{"description": "empty", "token": ""},
                                                 {"description": "test", "token": TOKEN}]}}}


def http_session(socket_timeout: float = 10.0) -> requests.Session:
    """A requests session that does not reuse a connection idle for half the daemon's ``api.socket_timeout``
    (default 10 s) or more. The daemon closes a connection idle that long, and a request sent on it just as
    the daemon closes it gets no answer at all ("Remote end closed connection without response"). That is
    HTTP keep-alive's own race, and every client meets it; here it failed a concurrent test whose connections
    had been idle for 10.16 s. A connection reused well before the daemon's limit cannot meet it."""
    import urllib3
    max_idle = socket_timeout / 2

    def fresh(base: type) -> type:
        class Pool(base):  # type: ignore[misc, valid-type]
            def _put_conn(self, conn: Any) -> None:
                if conn is not None:
                    conn.pvc_idle_since = time.monotonic()
                super()._put_conn(conn)

            def _get_conn(self, timeout: float | None = None) -> Any:
                conn = super()._get_conn(timeout)
                since = getattr(conn, "pvc_idle_since", None)
                if since is not None and time.monotonic() - since >= max_idle:
                    conn.close()  # urllib3 connects a closed connection again on its next request
                return conn
        return Pool

    session = requests.Session()
    for prefix in ("http://", "https://"):
        adapter = requests.adapters.HTTPAdapter()
        adapter.poolmanager.pool_classes_by_scheme = {"http": fresh(urllib3.HTTPConnectionPool),
                                                      "https": fresh(urllib3.HTTPSConnectionPool)}
        session.mount(prefix, adapter)
    return session


class Daemon:
    """One pvcapid process with its own config file and data directory."""

    def __init__(self, workdir: Path, config: dict, scheme: str = "http"):
        self.workdir = workdir
        self.config = config
        self.port = int(config["api"]["listen_port"])
        self.scheme = scheme
        self.config_path = workdir / "pvcapid.yaml"
        self.config_path.write_text(yaml.safe_dump({"pvc": config}))
        self.log_path = workdir / "daemon.log"
        self.process: subprocess.Popen | None = None
        self.http = http_session(float(config["api"].get("socket_timeout", 10.0)))
        self.verify: str | bool = True  # the test CA's file for an SSL daemon
        self.env: dict[str, str] = {}  # set before start(): extra environment (systemd's NOTIFY_SOCKET)
        self.command = [str(BIN / "pvcapid")]  # set before start(): another pvcapid, or one run through a wrapper
        self._contract: Contract | None = None

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + "/api/v1" + path

    def start(self, timeout: float = START_TIMEOUT) -> Daemon:
        self._contract = None  # the restarted daemon may load other plugins
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([*self.command, "--config", str(self.config_path)],
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env={**os.environ, **self.env})
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pvcapid exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.http.get(self.url("/"), timeout=REQUEST_TIMEOUT, verify=self.verify).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"pvcapid did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        process, self.process = self.process, None
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                return -9
        return process.returncode

    def request(self, method: str, path: str, validate: bool = True, **kwargs: Any) -> requests.Response:
        """Every answer (redirects included) is checked against the daemon's own OpenAPI document;
        ``validate=False`` only for requests that deliberately break HTTP itself."""
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        kwargs.setdefault("verify", self.verify)
        response = self.http.request(method, self.url(path), **kwargs)
        if validate:
            for answer in (*response.history, response):
                self.contract().check(answer.request.method, urlsplit(answer.request.url).path,
                                      answer.status_code, answer.headers.get("Content-Type"), answer.content)
        return response

    def contract(self) -> Contract:
        """The daemon's /api/v1/openapi.json, fetched once per start."""
        if self._contract is None:
            headers = {}
            authentication = self.config["api"]["authentication"]
            if str(authentication.get("enabled")).lower() in ("true", "yes", "on", "1"):
                tokens = [entry["token"] for entry in authentication.get("tokens", []) if entry.get("token")]
                headers["X-Api-Key"] = tokens[0] if tokens else ""
            answer = requests.get(self.url("/openapi.json"), headers=headers, timeout=REQUEST_TIMEOUT,
                                  verify=self.verify)
            assert answer.status_code == 200, f"GET /api/v1/openapi.json answered {answer.status_code}"
            self._contract = Contract(answer.json())
        return self._contract

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)


@pytest.fixture(scope="session")
def daemon_factory(tmp_path_factory: pytest.TempPathFactory, zk_server: ZooKeeperServer
                   ) -> Iterator[Callable[..., Daemon]]:
    started = STARTED

    def make(extra: dict | None = None, start: bool = True, coordinator: str | None = None,
             scheme: str = "http", verify: str | bool = True) -> Daemon:
        workdir = tmp_path_factory.mktemp("daemon")
        config = deep_merge(base_config(coordinator or zk_server.address, quiet_port(), str(workdir / "data")),
                            extra or {})
        daemon = Daemon(workdir, config, scheme=scheme)
        daemon.verify = verify
        started.append(daemon)
        if config.get("coordinators") != base_config(zk_server.address, 0, "")["coordinators"]:
            ON_OWN_ZOOKEEPER.append(daemon)
        return daemon.start() if start else daemon

    yield make
    for daemon in started:
        daemon.stop()


ON_OWN_ZOOKEEPER: list[Daemon] = []  # daemons of a test on a ZooKeeper of its own: stopped with their test
STARTED: list[Daemon] = []  # every daemon of the run, in the order made
SESSION_DAEMONS: set[int] = set()  # ids of the daemons the session fixtures share: kept to the end


@pytest.fixture(scope="module", autouse=True)
def stop_daemons_of_the_module() -> Iterator[None]:
    """The daemons a module made are stopped with it: left running they keep writing to the shared
    ZooKeeper (a Ceph collector's ``/ceph`` keys, a lock) under later modules' trees, whose
    ``/initialize`` then finds keys it did not expect; and every one left costs the machine."""
    first = len(STARTED)
    yield
    for daemon in STARTED[first:]:
        if id(daemon) not in SESSION_DAEMONS:
            daemon.stop()


@pytest.fixture(autouse=True)
def stop_daemons_on_own_zookeeper() -> Iterator[None]:
    """A daemon on a test's own ZooKeeper outlives that ZooKeeper (the factory lives for the session):
    left for the rest of the run it only retries, and one such daemon hung in its stop at the end."""
    yield
    while ON_OWN_ZOOKEEPER:
        ON_OWN_ZOOKEEPER.pop().stop()


@pytest.fixture(scope="session")
def daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    """Auth off, embedded database and queue: the default shape."""
    return kept(daemon_factory())


def kept(daemon: Daemon) -> Daemon:
    """A daemon that session fixtures share: not stopped with the module that first asked for it."""
    SESSION_DAEMONS.add(id(daemon))
    return daemon


@pytest.fixture(scope="session")
def auth_daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    return kept(daemon_factory(AUTH_ON))


def run_pvcapid(*args: str, env: dict | None = None, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "pvcapid"), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump({"pvc": config}))
    return path


@pytest.fixture
def broken_plugin(tmp_path: Path) -> Iterator[None]:
    """A plugin that fails to import, installed only for the test that asks for it."""
    try:
        with installed(PLUGIN_DIR / "pvc-plugin-broken", tmp_path / "broken-plugin"):
            yield
    finally:
        shutil.rmtree(PLUGIN_DIR / "pvc-plugin-broken" / "build", ignore_errors=True)


# -- Ceph -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def ceph_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real single-host Ceph (memstore, 127.0.0.1), started once for the run."""
    from pvc_ceph.localceph import LocalCeph
    cluster = LocalCeph(str(tmp_path_factory.mktemp("ceph")), objectstore="memstore", size_gb=10)
    cluster.start(timeout=2 * START_TIMEOUT)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def ceph_config(ceph_cluster: Any) -> dict:
    return {"ceph": {"conf": ceph_cluster.conf, "keyring": ceph_cluster.keyring, "interval": str(CEPH_INTERVAL),
                     "volume_interval": str(CEPH_VOLUME_INTERVAL), "timeout": str(CEPH_TIMEOUT)}}


# -- simulated node daemons (plugins/simnode) -----------------------------------------------

SIM_NODES = ("pvchv1", "pvchv2", "pvchv3")


def sim_config(extra: dict | None = None, **simnode: str) -> dict:
    """A daemon that runs three simulated node daemons (quick keepalives; waits bounded like the rest)."""
    wait = str(settle_timeout())
    return deep_merge({"plugins": {"include": ["simnode"]},
                       "simnode": {"keepalive_interval": "0.5", "fence_intervals": "6", "migrate_timeout": wait,
                                   **simnode},
                       "vm": {"delete_grace": "0.05", "wait_timeout": wait}, "node": {"wait_timeout": wait}},
                      extra or {})


def node_map(daemon: Daemon) -> dict[str, dict]:
    """GET /node by name ({} on 404; one node collapses to an object in v0.6)."""
    answer = daemon.get("/node")
    if answer.status_code != 200:
        return {}
    found = answer.json()
    return {node["name"]: node for node in (found if isinstance(found, list) else [found])}


def sim_ready(daemon: Daemon, names: tuple[str, ...] = SIM_NODES) -> bool:
    nodes = node_map(daemon)
    return sorted(nodes) == sorted(names) and all(
        (node["daemon_state"], node["domain_state"]) == ("run", "ready") for node in nodes.values()) and \
        [node["coordinator_state"] for node in nodes.values()].count("primary") == 1


@pytest.fixture
def sim_factory(daemon_factory: Callable[..., Daemon], clean_zk: Any) -> Iterator[Callable[..., Daemon]]:
    """Start a daemon with simulated nodes on an empty, then initialized, cluster; it is stopped after the test
    (its nodes would otherwise keep writing keepalives into the next test's tree)."""
    started: list[Daemon] = []

    def make(extra: dict | None = None, **simnode: str) -> Daemon:
        daemon = daemon_factory(sim_config(extra, **simnode))
        started.append(daemon)
        assert daemon.post("/initialize").status_code == 200
        wait_until(lambda: sim_ready(daemon), message="the simulated nodes did not come up run/ready, one primary")
        return daemon

    yield make
    for daemon in started:
        daemon.stop()


@pytest.fixture
def sim(sim_factory: Callable[..., Daemon]) -> Daemon:
    """Three simulated nodes, no Ceph."""
    return sim_factory({"plugins": {"disabled": ["ceph"]}})


@contextlib.contextmanager
def simulated(daemon_factory: Callable[..., Daemon], api: Daemon, extra: dict | None = None) -> Iterator[Daemon]:
    """Simulated nodes on a cluster already initialized (without nodes of its own) for the block, once ``api``
    sees them run/ready; for tests whose daemon under test is another one."""
    nodes = daemon_factory(sim_config(extra))
    try:
        wait_until(lambda: sim_ready(api), message="the simulated nodes did not come up run/ready, one primary")
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen]]:
    """A Redis of this test's own (port, process), which it may stop or freeze (SIGSTOP)."""
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = socket.socket()
    wait_until(lambda: probe.connect_ex(("127.0.0.1", port)) == 0, timeout=START_TIMEOUT,
               message="redis-server to listen")
    probe.close()
    yield port, process
    os.kill(process.pid, signal.SIGCONT)
    process.terminate()
    process.wait(timeout=START_TIMEOUT)


@pytest.fixture
def own_postgres() -> Iterator[dict]:
    """A PostgreSQL server of this test's own, which it may freeze: ``{"settings": the
    provisioner.database section, "freeze": callable, "thaw": callable}``. It runs as the postgres
    user (initdb refuses root) from a directory that user owns."""
    import glob
    import tempfile
    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    directory = tempfile.mkdtemp(prefix="pvc-pg-")
    os.chmod(directory, 0o755)
    shutil.chown(directory, "postgres", "postgres")
    data = os.path.join(directory, "data")
    subprocess.run([f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres"], user="postgres",
                   group="postgres", check=True, capture_output=True, timeout=START_TIMEOUT)
    port = free_port()
    process = subprocess.Popen([f"{bindir}/postgres", "-D", data, "-p", str(port), "-k", directory,
                                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"], user="postgres",
                               group="postgres", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready() -> bool:
        return subprocess.run([f"{bindir}/pg_isready", "-h", "127.0.0.1", "-p", str(port)],
                              capture_output=True).returncode == 0
    wait_until(ready, timeout=START_TIMEOUT, message="the test's own PostgreSQL to accept connections")

    def processes() -> list[int]:
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout
        return [process.pid, *(int(pid) for pid in children.split())]

    def signal_all(number: int) -> None:
        for pid in processes():
            # a backend that had just ended is listed until the server reaps it, which it may do meanwhile
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)

    def freeze() -> None:
        signal_all(signal.SIGSTOP)

    def thaw() -> None:
        signal_all(signal.SIGCONT)

    yield {"settings": {"host": "127.0.0.1", "port": str(port), "name": "postgres", "user": "postgres",
                        "pass": ""}, "freeze": freeze, "thaw": thaw}
    thaw()
    process.send_signal(signal.SIGINT)  # "fast" shutdown: SIGTERM would wait for the daemon's pool to go
    try:
        process.wait(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    shutil.rmtree(directory, ignore_errors=True)
