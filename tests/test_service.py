"""The installable service: wheels, the install script and the systemd units (README "Installing as a service").

Every distribution builds a wheel whose metadata carries the pvc-core range;
scripts/install-service.sh, run into a scratch root and prefix from those
wheels, makes what the units start (and the user, configuration and data
directory they expect); the units pass ``systemd-analyze verify`` with those
paths, and their ``systemd-analyze security --offline=true`` exposure stays
within bounds. systemd is not PID 1 here: the units are analysed, not run.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest
import requests
import yaml
from kazoo.client import KazooClient
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from test_node import seed_node
from test_provisioner_create import wait_done

from conftest import (
    CEPH_TIMEOUT,
    REQUEST_TIMEOUT,
    ROOT,
    START_TIMEOUT,
    Daemon,
    base_config,
    deep_merge,
    settle_timeout,
    wait_until,
)
from pvc_core.version import VERSION, core_requirement
from pvc_core.zkserver import ZooKeeperServer, free_port

UNITS = {"pvcapid.service": ROOT / "deploy" / "pvcapid.service",
         "pvcapid-worker.service": ROOT / "deploy" / "pvcapid-worker.service"}
# `systemd-analyze security` exposure (0 safe .. 10 exposed): the API's bound is the requirement, the
# worker's is what its unit reached (it keeps root for mapping and mounting); neither may grow past it.
EXPOSURE_MAX = {"pvcapid.service": 5.0, "pvcapid-worker.service": 3.9}
PLUGINS = sorted(path.parent.name for path in ROOT.glob("plugins/*/setup.py"))
SERVICE_PLUGINS = ["ceph", "metadata", "network", "node", "provisioner", "vm"]  # the script's default
BUILD_TIMEOUT = START_TIMEOUT * 2
SERVICE_PYTHON = re.search(r"^PYTHON=(\S+)", (ROOT / "scripts" / "install-service.sh").read_text(), re.M).group(1)


def run(command: list[str], env: dict | None = None, timeout: float = BUILD_TIMEOUT,
        **kwargs) -> subprocess.CompletedProcess:
    """A command outside this session's plugin path (the example plugin is on PYTHONPATH)."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**environment, **(env or {})}, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every distribution's wheel, built as `make wheels` does (python -m build --wheel --no-isolation)."""
    out = tmp_path_factory.mktemp("wheels")
    result = run(["bash", str(ROOT / "scripts" / "build-wheels.sh"), str(out)])
    assert result.returncode == 0, result.stderr
    return out


def wheel_metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        name = next(entry for entry in archive.namelist() if entry.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode())


def test_every_distribution_builds_a_wheel_with_the_core_range(wheelhouse):
    wheels = {canonicalize_name(wheel.name.split("-")[0]): wheel for wheel in wheelhouse.glob("*.whl")}
    assert sorted(wheels) == sorted(["pvc-core", *(f"pvc-plugin-{plugin}" for plugin in PLUGINS)])
    core = wheel_metadata(wheels.pop("pvc-core"))
    assert core["Version"] == VERSION
    assert not [line for line in core.get_all("Requires-Dist") if Requirement(line).name == "pvc-core"]
    with zipfile.ZipFile(next(wheelhouse.glob("pvc_core-*.whl"))) as archive:
        assert "pvc_core/version.py" in archive.namelist()
        assert "[console_scripts]\npvcapid = pvc_core.cli:main" in archive.read(
            f"pvc_core-{VERSION}.dist-info/entry_points.txt").decode()
    expected = Requirement(core_requirement())
    assert str(expected.specifier) and VERSION in expected.specifier
    for name, wheel in wheels.items():
        metadata = wheel_metadata(wheel)
        assert metadata["Version"] == VERSION, name
        on_core = [Requirement(line) for line in metadata.get_all("Requires-Dist")
                   if Requirement(line).name == "pvc-core"]
        assert [requirement.specifier for requirement in on_core] == [expected.specifier], (name, on_core)
        with zipfile.ZipFile(wheel) as archive:
            assert "[pvc.plugins]" in archive.read(next(entry for entry in archive.namelist()
                                                        if entry.endswith("entry_points.txt"))).decode(), name


def exposure(unit: Path) -> float:
    result = run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)], timeout=START_TIMEOUT)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert result.returncode == 0 and found, result.stdout + result.stderr
    return float(found.group(1))


def exec_start(unit: Path) -> list[str]:
    lines = [line.split("=", 1)[1] for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1, unit
    return lines[0].split()


def dependency_wheels(wheels: list[Path], out: Path) -> Path:
    """Wheels of every third-party distribution ``wheels`` need, repacked from this session's virtualenv.

    So the install runs as it would against PyPI (pip resolves every
    requirement and installs each distribution, console scripts included) but
    with ``--no-index``: no network, and the versions ``make install`` chose.
    """
    out.mkdir()
    # Markers are the service interpreter's (Debian's python may be older than this one)
    version = run([SERVICE_PYTHON, "-c", "import platform; print(platform.python_version())"]).stdout.strip()
    environment = {**default_environment(), "python_full_version": version,
                   "python_version": ".".join(version.split(".")[:2]), "extra": ""}
    todo = [line for wheel in wheels for line in wheel_metadata(wheel).get_all("Requires-Dist") or ()]
    done: set[str] = set()
    while todo:
        requirement = Requirement(todo.pop())
        name = canonicalize_name(requirement.name)
        if name in done or name.startswith("pvc-") or (requirement.marker and not requirement.marker.evaluate(
                environment)):
            continue
        done.add(name)
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise AssertionError(f"{name} ({requirement}) is needed by the service's python {version}: add it to "
                                 "requirements-dev.txt") from None
        repack(distribution, out)
        todo.extend(distribution.requires or ())
    return out


def repack(distribution: importlib.metadata.Distribution, out: Path) -> None:
    """The installed distribution as the wheel it came from: its files under site-packages, a new RECORD."""
    files = [Path(entry) for entry in distribution.files or ()]
    record = next(entry for entry in files if entry.name == "RECORD" and entry.parent.suffix == ".dist-info")
    tags = [line.split(": ", 1)[1].split("-") for line in distribution.read_text("WHEEL").splitlines()
            if line.startswith("Tag: ")]
    tag = "-".join(".".join(dict.fromkeys(parts)) for parts in zip(*tags, strict=True))  # py2.py3-none-any
    name = re.sub(r"[-_.]+", "_", distribution.metadata["Name"])
    lines = []
    with zipfile.ZipFile(out / f"{name}-{distribution.version}-{tag}.whl", "w") as archive:
        for entry in files:
            path = Path(distribution.locate_file(entry))
            if entry.parts[0] == ".." or "__pycache__" in entry.parts or not path.is_file() or \
                    entry.name in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"):
                continue
            data = path.read_bytes()
            archive.writestr(entry.as_posix(), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            lines.append(f"{entry.as_posix()},sha256={digest},{len(data)}")
        archive.writestr(record.as_posix(), "\n".join([*lines, f"{record.as_posix()},,"]) + "\n")


@dataclass
class Installed:
    """What scripts/install-service.sh made in a scratch root: the units, the prefix, the user."""

    root: Path
    prefix: Path
    default_prefix: str
    command: list[str]  # the install command; run again by the re-run test
    stdout: str

    @property
    def config(self) -> Path:
        return self.root / "etc" / "pvc" / "pvcapid.yaml"

    @property
    def data_dir(self) -> Path:
        return self.root / "var" / "lib" / "pvc"

    def entry(self, database: str, name: str) -> list[str]:
        """The line of ``name`` in the scratch root's /etc/passwd or /etc/group, split."""
        return next(line.split(":") for line in (self.root / "etc" / database).read_text().splitlines()
                    if line.split(":")[0] == name)

    def user(self) -> tuple[int, int]:
        entry = self.entry("passwd", "pvcapid")
        return int(entry[2]), int(entry[3])


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Installed:
    """The default install (every plugin but simnode) into a scratch root, offline.

    The scratch root starts with this machine's user and group files, so the
    user it adds has an id no account here has (the confined run uses it).
    """
    tmp_path = tmp_path_factory.mktemp("service")
    script = (ROOT / "scripts" / "install-service.sh").read_text()
    default_prefix = re.search(r"^PREFIX=(\S+)", script, re.M).group(1)
    root = tmp_path / "root"
    prefix = root / default_prefix.lstrip("/")
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group"):
        (root / "etc" / name).write_text(Path("/etc", name).read_text())
    for name in ("shadow", "gshadow"):
        (root / "etc" / name).write_text("")
    ours = [next(wheelhouse.glob(f"pvc_{name}-*.whl")) for name in ("core", *(f"plugin_{p}" for p in SERVICE_PLUGINS))]
    dependencies = dependency_wheels(ours, tmp_path / "dependencies")
    command = ["bash", str(ROOT / "scripts" / "install-service.sh"), "--root", str(root), "--prefix", str(prefix),
               "--wheels", str(wheelhouse), "--pip-args", f"--no-index --find-links {dependencies} --no-compile"]
    result = run(command)
    assert result.returncode == 0, result.stdout + result.stderr
    return Installed(root, prefix, default_prefix, command, result.stdout)


def test_install_script_makes_what_the_units_start(tmp_path, installed):
    root, prefix, default_prefix = installed.root, installed.prefix, installed.default_prefix
    assert "wrote" in installed.stdout and "token" in installed.stdout and "@TOKEN@" not in installed.stdout

    # The units' ExecStart are the shipped ones with the prefix: the default install makes exactly those.
    units = root / "etc" / "systemd" / "system"
    for name, shipped in UNITS.items():
        command = exec_start(shipped)
        assert command[0].startswith(default_prefix + "/bin/"), command
        started = exec_start(units / name)
        assert started == [command[0].replace(default_prefix, str(prefix), 1), *command[1:]]
        assert os.access(started[0], os.X_OK), started[0]
    verify = run(["systemd-analyze", "verify", "--man=no", *(str(units / name) for name in UNITS)],
                 timeout=START_TIMEOUT)
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")

    # What they start runs from the prefix, on Debian's python: the API, and the consumer with every plugin's tasks.
    bin_dir = prefix / "bin"
    assert Path(os.path.realpath(bin_dir / "python")).parent == Path("/usr/bin")
    assert run([str(bin_dir / "pvcapid"), "--version"]).stdout.strip() == f"pvcapid {VERSION}"
    assert run([str(bin_dir / "python"), "-c", "import pvc_core; print(pvc_core.__file__)"],
               cwd=tmp_path).stdout.startswith(str(prefix))
    assert run([str(bin_dir / "huey_consumer"), "--help"]).returncode == 0
    trial = tmp_path / "trial.yaml"  # the written configuration, its data_dir out of the real /var/lib
    trial.write_text(yaml.safe_dump({"pvc": {**yaml.safe_load(installed.config.read_text())["pvc"],
                                             "data_dir": str(tmp_path / "data")}}))
    checked = run([str(bin_dir / "pvcapid"), "--check-config", "--config", str(trial)], cwd=tmp_path)
    assert checked.stdout.strip() == f"Configuration {trial} is valid; plugins: {', '.join(SERVICE_PLUGINS)}", \
        checked.stderr
    consumer = run([str(bin_dir / "python"), "-c", "import pvc_core.consumer as c; print(*c.huey._registry._registry)"],
                   cwd=tmp_path, env={"PVC_CONFIG_FILE": str(trial)})
    assert any(task.endswith(".provisioner.create_vm") for task in consumer.stdout.split()), consumer.stderr

    # The user, the configuration only it and root read, the data directory and shared SQLite files its own.
    uid, gid = installed.user()
    assert uid < 1000 and installed.entry("passwd", "pvcapid")[5:] == ["/var/lib/pvc", "/usr/sbin/nologin"]
    assert "pvcapid" in installed.entry("group", "ceph")[3].split(",")
    text = installed.config.read_text()
    assert "@" not in text and yaml.safe_load(text)["pvc"]["api"]["authentication"]["tokens"][0]["token"]
    config = installed.config
    for path, owner, mode in ((config, (0, gid), 0o640), (config.parent, (0, gid), 0o750),
                              (installed.data_dir, (uid, gid), 0o750),
                              (installed.data_dir / "pvc.db", (uid, gid), 0o640),
                              (installed.data_dir / "huey.db", (uid, gid), 0o640)):
        info = path.stat()
        assert ((info.st_uid, info.st_gid), stat.S_IMODE(info.st_mode)) == (owner, mode), path
    assert os.readlink(config.parent / "pvc-api.yaml") == "pvcapid.yaml"
    assert (root / "etc" / "modules-load.d" / "pvcapid.conf").read_text().splitlines()[-1] == "rbd"


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_exposure_stays_within_bounds(name):
    """The API runs unprivileged (≤ 5.0, 'OK'); the worker keeps only what mapping and mounting need."""
    unit = UNITS[name].read_text()
    value = exposure(UNITS[name])
    assert value <= EXPOSURE_MAX[name], f"{name}: exposure {value} > {EXPOSURE_MAX[name]}"
    if name == "pvcapid.service":
        assert "\nUser=pvcapid\n" in unit and "\nStateDirectory=pvc\n" in unit


# -- the units' confinement, applied without systemd ----------------------------------------------
#
# systemd is not PID 1 here, so the units cannot be started. What of their [Service] confinement a
# process can apply to itself is applied from the unit files: the user, the capability bounding,
# inheritable and ambient sets and no-new-privileges (setpriv), the umask, and MemoryDenyWriteExecute
# (the kernel's PR_SET_MDWE, which refuses what systemd's seccomp filter refuses). The namespace and
# system-call filter options are only analysed (systemd-analyze above).

LAUNCH = """import ctypes, os, sys
umask, mdwe, command = sys.argv[1], sys.argv[2], sys.argv[3:]
os.umask(int(umask, 8))
if mdwe == "yes" and ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, REFUSE_EXEC_GAIN
    sys.exit("PR_SET_MDWE: " + os.strerror(ctypes.get_errno()))
os.environ.pop("PYTHONPATH", None)
os.execv(command[0], command)
"""
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # systemd's default PATH for services


def service_settings(unit: Path) -> dict[str, list[str]]:
    """The [Service] section: every value of each key, in order (repeated keys add up)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def confined(unit: Path, command: list[str], user: tuple[int, int] | None) -> list[str]:
    settings = service_settings(unit)

    def caps(key: str) -> str:
        names = [name.removeprefix("CAP_").lower() for value in settings.get(key, []) for name in value.split()]
        return "".join(f",+{name}" for name in names)

    setpriv = ["/usr/bin/setpriv", f"--bounding-set=-all{caps('CapabilityBoundingSet')}",
               f"--inh-caps=-all{caps('AmbientCapabilities')}", f"--ambient-caps=-all{caps('AmbientCapabilities')}"]
    if user is not None:
        setpriv += [f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups"]
    if settings.get("NoNewPrivileges") == ["yes"]:
        setpriv.append("--no-new-privs")
    return ["/usr/bin/python3", "-c", LAUNCH, settings.get("UMask", ["0022"])[-1],
            settings.get("MemoryDenyWriteExecute", ["no"])[-1], *setpriv, *command]


def traversable(path: Path, base: Path) -> None:
    """Let other users through ``path`` and its parents up to ``base`` (pytest makes them 0700), and
    through any ancestor above that which is closed too (pytest-xdist puts ``base`` in a 0700 one)."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if directory.is_relative_to(base) or not mode & 0o001:
            directory.chmod(mode | 0o011)


def free_low_port() -> int:
    """A port below 1024 free on 127.0.0.1: binding it needs CAP_NET_BIND_SERVICE."""
    for port in range(1023, 600, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below 1024 on 127.0.0.1")


POOL = "servicepool"
SCRIPT = '''
import os, stat, time

def install(**kwargs):
    root = kwargs["temporary_directory"]
    os.mknod(root + "/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))         # CAP_MKNOD
    with open(root + "/passwd", "w") as out:
        out.write("x")
    os.chown(root + "/passwd", 1000, 1000)                                    # CAP_CHOWN
    os.chmod(root + "/passwd", 0o4755)                                        # another's set-uid file: CAP_FOWNER
    outside = os.open("/", os.O_RDONLY)
    os.chroot(root)                                                           # CAP_SYS_CHROOT
    os.chdir("/")
    inside = sorted(os.listdir("/"))
    os.fchdir(outside)
    os.chroot(".")
    os.close(outside)
    if "null" not in inside or not os.stat(root + "/passwd").st_mode & stat.S_ISUID:
        raise RuntimeError("the new root is not as written: %r" % inside)
    try:
        time.clock_settime(time.CLOCK_REALTIME, time.clock_gettime(time.CLOCK_REALTIME))  # CAP_SYS_TIME
    except PermissionError:
        return
    raise RuntimeError("the clock could be set: the unit's capability bounding set is not in force")
'''


def test_confined_service_creates_a_vm(tmp_path_factory, installed, ceph_cluster):
    """The installed API as its unprivileged user and the worker with only its unit's capabilities create a VM
    with a formatted disk (rbd mapping, mkfs, mount, the script's chroot, mknod and chown) on the installed
    configuration, data directory and a copied Ceph keyring; the worker, started first, leaves no file in the
    data directory the API's user cannot write."""
    work = tmp_path_factory.mktemp("confined")
    traversable(installed.root, tmp_path_factory.getbasetemp())
    uid, gid = installed.user()
    zookeeper = ZooKeeperServer(str(work / "zk")).start(timeout=START_TIMEOUT)
    # The Ceph client configuration of a host (monitors, cephx) and a copy of the key only pvcapid's group reads.
    conf = ceph_cluster.conf
    wanted = [line for line in Path(conf).read_text().splitlines()
              if line.split("=")[0].strip() in ("fsid", "mon host") or line.startswith("auth ")]
    client_conf = installed.config.parent / "ceph.conf"
    client_conf.write_text("[global]\n" + "\n".join(wanted) + "\n")
    keyring = installed.config.parent / "ceph.client.admin.keyring"
    shutil.copy(ceph_cluster.keyring, keyring)
    os.chown(keyring, 0, gid)
    keyring.chmod(0o640)
    written = yaml.safe_load(installed.config.read_text())["pvc"]
    token = written["api"]["authentication"]["tokens"][0]["token"]
    metadata_port = free_low_port()
    config = deep_merge(written, deep_merge(base_config(zookeeper.address, free_port(), str(installed.data_dir)), {
        "api": {"authentication": written["api"]["authentication"]},
        "metadata": {"enabled": "True", "listen_address": "127.0.0.1", "listen_port": str(metadata_port)},
        "ceph": {"conf": str(client_conf), "keyring": str(keyring), "timeout": str(CEPH_TIMEOUT)}}))
    installed.config.write_text(yaml.safe_dump({"pvc": config}))  # keeps its root:pvcapid 0640

    worker_unit, api_unit = UNITS["pvcapid-worker.service"], UNITS["pvcapid.service"]
    log = open(work / "consumer.log", "ab")
    worker = subprocess.Popen(
        confined(worker_unit, [*exec_start(installed.root / "etc/systemd/system/pvcapid-worker.service"),
                               "-d", "0.05", "-m", "0.5"], user=None),
        env={"PATH": SYSTEM_PATH, "PVC_CONFIG_FILE": str(installed.config), "PYTHONUNBUFFERED": "true"},
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd="/")
    log.close()
    daemon = Daemon(work, config)
    daemon.config_path = installed.config
    daemon.command = confined(api_unit, exec_start(installed.root / "etc/systemd/system/pvcapid.service"),
                              user=(uid, gid))
    daemon.env = {"PATH": SYSTEM_PATH, "HOME": str(installed.data_dir)}
    daemon.http.headers["X-Api-Key"] = token
    zk = KazooClient(hosts=zookeeper.address)
    try:
        # the worker's runtime has opened the shared SQLite database (as root: its WAL) before the API starts
        wait_until(lambda: (installed.data_dir / "pvc.db-wal").exists() or worker.poll() is not None,
                   timeout=START_TIMEOUT, message="the worker did not open its database")
        assert worker.poll() is None, (work / "consumer.log").read_text()
        daemon.start()
        status = Path(f"/proc/{daemon.process.pid}/status").read_text()
        assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in status and "NoNewPrivs:\t1" in status, status
        # its metadata listener, on a port below 1024 (an unknown caller: 404), once it has bound
        wait_until(lambda: requests.get(f"http://127.0.0.1:{metadata_port}/latest/meta-data/instance-id",
                                        timeout=REQUEST_TIMEOUT).status_code == 404,
                   ignoring=(requests.ConnectionError,), timeout=START_TIMEOUT)
        assert daemon.post("/initialize").status_code == 200
        zk.start(timeout=START_TIMEOUT)
        seed_node(zk, "pvchv1", memfree="20000")
        wait_until(lambda: daemon.get("/node/pvchv1").status_code == 200, timeout=settle_timeout(config))
        response = daemon.post("/storage/ceph/pool", params={"pool": POOL, "pgs": "8",
                                                             "replcfg": "copies=1,mincopies=1"})
        assert response.status_code == 200, response.text
        for path, params in (
                ("/provisioner/template/system/small", {"vcpus": "1", "vram": "512", "serial": "yes", "vnc": "no"}),
                ("/provisioner/template/network/nonet", {}),
                ("/provisioner/template/storage/onedisk", {}),
                ("/provisioner/template/storage/onedisk/disk/sda", {"pool": POOL, "disk_size": "1",
                                                                    "filesystem": "ext4", "mountpoint": "/"}),
                ("/provisioner/script/confined", {"data": SCRIPT}),
                ("/provisioner/profile/confined", {"system_template": "small", "network_template": "nonet",
                                                   "storage_template": "onedisk", "userdata": "empty",
                                                   "script": "confined"})):
            response = daemon.post(path, data=params)
            assert response.status_code == 200, (path, response.text)
        response = daemon.post("/provisioner/create", params={"name": "confined1", "profile": "confined",
                                                              "start_vm": "false"})
        assert response.status_code == 202, response.text
        record, _ = wait_done(daemon, response.json()["task_id"])
        assert record["state"] == "SUCCESS", (record, (work / "consumer.log").read_text()[-3000:])
        assert daemon.get("/vm/confined1").json()["disks"]
        assert daemon.get(f"/storage/ceph/volume/{POOL}/confined1_sda").status_code == 200
        owners = {path.name: (path.stat().st_uid, path.stat().st_gid) for path in installed.data_dir.iterdir()}
        assert set(owners.values()) == {(uid, gid)}, owners
        assert daemon.delete(f"/storage/ceph/pool/{POOL}", params={"yes-i-really-mean-it": "yes"}).status_code == 200
    finally:
        worker.send_signal(signal.SIGINT)
        worker.wait(timeout=START_TIMEOUT)
        stopped = daemon.stop()
        zk.stop()
        zk.close()
        zookeeper.stop()  # whatever the daemon's end: a ZooKeeper left running outlives the run
        installed.config.write_text(yaml.safe_dump({"pvc": written}))
        assert stopped == 0, daemon.log()


def test_install_script_again_keeps_the_configuration_and_drops_plugins_left_out(tmp_path, installed):
    """A second run (an upgrade) with fewer plugins: the configuration stays as it was, the others are gone."""
    text = installed.config.read_text()
    result = run([*installed.command, "--plugins", "node"])
    assert result.returncode == 0 and "wrote" not in result.stdout, result.stdout + result.stderr
    assert installed.config.read_text() == text and stat.S_IMODE(installed.config.stat().st_mode) == 0o640
    trial = tmp_path / "trial.yaml"
    trial.write_text(yaml.safe_dump({"pvc": {**yaml.safe_load(text)["pvc"], "data_dir": str(tmp_path / "data")}}))
    checked = run([str(installed.prefix / "bin" / "pvcapid"), "--check-config", "--config", str(trial)], cwd=tmp_path)
    assert checked.stdout.strip() == f"Configuration {trial} is valid; plugins: node", checked.stderr
