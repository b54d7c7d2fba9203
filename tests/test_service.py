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
import stat
import subprocess
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT, START_TIMEOUT
from pvc_core.version import VERSION, core_requirement

UNITS = {"pvcapid.service": ROOT / "deploy" / "pvcapid.service",
         "pvcapid-worker.service": ROOT / "deploy" / "pvcapid-worker.service"}
# `systemd-analyze security` exposure (0 safe .. 10 exposed): the API's bound is the requirement, the
# worker's is what its unit reached (it keeps root for mapping and mounting); neither may grow past it.
EXPOSURE_MAX = {"pvcapid.service": 5.0, "pvcapid-worker.service": 3.9}
PLUGINS = sorted(path.parent.name for path in ROOT.glob("plugins/*/setup.py"))
SERVICE_PLUGINS = ["ceph", "metadata", "network", "node", "provisioner", "vm"]  # the script's default
BUILD_TIMEOUT = START_TIMEOUT * 2


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
    todo = [line for wheel in wheels for line in wheel_metadata(wheel).get_all("Requires-Dist") or ()]
    done: set[str] = set()
    while todo:
        requirement = Requirement(todo.pop())
        name = canonicalize_name(requirement.name)
        if name in done or name.startswith("pvc-") or (requirement.marker and not requirement.marker.evaluate(
                {"extra": ""})):
            continue
        done.add(name)
        distribution = importlib.metadata.distribution(name)
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


def test_install_script_makes_what_the_units_start(tmp_path, wheelhouse):
    script = (ROOT / "scripts" / "install-service.sh").read_text()
    default_prefix = re.search(r"^PREFIX=(\S+)", script, re.M).group(1)
    root = tmp_path / "root"
    prefix = root / default_prefix.lstrip("/")
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "shadow", "gshadow"):
        (root / "etc" / name).write_text("")
    (root / "etc" / "group").write_text("ceph:x:64045:\n")
    ours = [next(wheelhouse.glob(f"pvc_{name}-*.whl")) for name in ("core", *(f"plugin_{p}" for p in SERVICE_PLUGINS))]
    dependencies = dependency_wheels(ours, tmp_path / "dependencies")

    install = ["bash", str(ROOT / "scripts" / "install-service.sh"), "--root", str(root), "--prefix", str(prefix),
               "--wheels", str(wheelhouse), "--pip-args", f"--no-index --find-links {dependencies} --no-compile"]
    result = run(install)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wrote" in result.stdout and "token" in result.stdout and "@TOKEN@" not in result.stdout

    # The units' ExecStart are the shipped ones with the prefix: the default install makes exactly those.
    units = root / "etc" / "systemd" / "system"
    for name, shipped in UNITS.items():
        command = exec_start(shipped)
        assert command[0].startswith(default_prefix + "/bin/"), command
        installed = exec_start(units / name)
        assert installed == [command[0].replace(default_prefix, str(prefix), 1), *command[1:]]
        assert os.access(installed[0], os.X_OK), installed[0]
    verify = run(["systemd-analyze", "verify", "--man=no", *(str(units / name) for name in UNITS)],
                 timeout=START_TIMEOUT)
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")

    # What they start runs from the prefix: the API, and the consumer with every plugin's tasks.
    bin_dir = prefix / "bin"
    assert run([str(bin_dir / "pvcapid"), "--version"]).stdout.strip() == f"pvcapid {VERSION}"
    assert run([str(bin_dir / "python"), "-c", "import pvc_core; print(pvc_core.__file__)"],
               cwd=tmp_path).stdout.startswith(str(prefix))
    assert run([str(bin_dir / "huey_consumer"), "--help"]).returncode == 0
    config = root / "etc" / "pvc" / "pvcapid.yaml"
    trial = tmp_path / "trial.yaml"  # the written configuration, its data_dir out of the real /var/lib
    trial.write_text(yaml.safe_dump({"pvc": {**yaml.safe_load(config.read_text())["pvc"],
                                             "data_dir": str(tmp_path / "data")}}))
    checked = run([str(bin_dir / "pvcapid"), "--check-config", "--config", str(trial)], cwd=tmp_path)
    assert checked.stdout.strip() == f"Configuration {trial} is valid; plugins: {', '.join(SERVICE_PLUGINS)}", \
        checked.stderr
    consumer = run([str(bin_dir / "python"), "-c", "import pvc_core.consumer as c; print(*c.huey._registry._registry)"],
                   cwd=tmp_path, env={"PVC_CONFIG_FILE": str(trial)})
    assert any(task.endswith(".provisioner.create_vm") for task in consumer.stdout.split()), consumer.stderr

    # The user, the configuration only it and root read, the data directory and shared SQLite files its own.
    user = next(line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()
                if line.startswith("pvcapid:"))
    uid, gid = int(user[2]), int(user[3])
    assert uid < 1000 and user[5:] == ["/var/lib/pvc", "/usr/sbin/nologin"]
    assert "ceph:x:64045:pvcapid" in (root / "etc" / "group").read_text()
    text = config.read_text()
    assert "@" not in text and yaml.safe_load(text)["pvc"]["api"]["authentication"]["tokens"][0]["token"]
    for path, owner, mode in ((config, (0, gid), 0o640), (config.parent, (0, gid), 0o750),
                              (root / "var" / "lib" / "pvc", (uid, gid), 0o750),
                              (root / "var" / "lib" / "pvc" / "pvc.db", (uid, gid), 0o640),
                              (root / "var" / "lib" / "pvc" / "huey.db", (uid, gid), 0o640)):
        info = path.stat()
        assert ((info.st_uid, info.st_gid), stat.S_IMODE(info.st_mode)) == (owner, mode), path
    assert os.readlink(config.parent / "pvc-api.yaml") == "pvcapid.yaml"
    assert (root / "etc" / "modules-load.d" / "pvcapid.conf").read_text().splitlines()[-1] == "rbd"

    # Run again with fewer plugins (an upgrade): the configuration is kept, the plugins left out are gone.
    result = run([*install, "--plugins", "node"])
    assert result.returncode == 0 and "wrote" not in result.stdout, result.stdout + result.stderr
    assert config.read_text() == text and stat.S_IMODE(config.stat().st_mode) == 0o640
    checked = run([str(bin_dir / "pvcapid"), "--check-config", "--config", str(trial)], cwd=tmp_path)
    assert checked.stdout.strip() == f"Configuration {trial} is valid; plugins: node", checked.stderr


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_exposure_stays_within_bounds(name):
    """The API runs unprivileged (≤ 5.0, 'OK'); the worker keeps only what mapping and mounting need."""
    unit = UNITS[name].read_text()
    value = exposure(UNITS[name])
    assert value <= EXPOSURE_MAX[name], f"{name}: exposure {value} > {EXPOSURE_MAX[name]}"
    if name == "pvcapid.service":
        assert "\nUser=pvcapid\n" in unit and "\nStateDirectory=pvc\n" in unit
