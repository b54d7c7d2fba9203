"""What the creation task does on the worker host: run commands, map RBD volumes, mount filesystems.

Volumes are mapped with the kernel's rbd driver (``rbd map``) where the
kernel has one; otherwise through ``rbd-fuse`` plus a loop device, which
needs only FUSE. Either way the device is reachable as
``/dev/rbd/<pool>/<volume>`` during the script (§4.1: boot loaders use it).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

log = logging.getLogger("pvc.provisioner.host")


class CommandFailed(Exception):
    def __init__(self, command: list[str], code: int, stderr: str):
        super().__init__(stderr or f"{command[0]} exited with {code}")
        self.command = command
        self.code = code
        self.stderr = stderr


def run(command: list[str] | str, timeout: float = 600) -> str:
    """Run without a shell (§3.1); stdout on success, CommandFailed with stderr otherwise."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    log.debug("running %s", shlex.join(argv))
    try:
        done = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)
    except FileNotFoundError:
        raise CommandFailed(argv, 127, f"{argv[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(argv, -1, f"{argv[0]} did not finish within {timeout:g} s") from None
    stdout = done.stdout.decode("ascii", "replace").strip()
    if done.returncode != 0:
        stderr = done.stderr.decode("ascii", "replace").strip() or stdout
        raise CommandFailed(argv, done.returncode, stderr)
    return stdout


def kernel_rbd() -> bool:
    if os.path.isdir("/sys/bus/rbd"):
        return True
    if shutil.which("modprobe"):
        subprocess.run(["modprobe", "rbd"], capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    return os.path.isdir("/sys/bus/rbd")


def rbd_path(pool: str, volume: str) -> str:
    return f"/dev/rbd/{pool}/{volume}"


@dataclass
class Mapping:
    pool: str
    volume: str
    device: str  # /dev/rbd/<pool>/<volume>
    fuse_dir: str | None = None
    loop: str | None = None
    link: bool = False


class Mapper:
    """Map and unmap volumes with the Ceph identity of the ceph plugin's configuration."""

    def __init__(self, conf: str, client: str, keyring: str | None, mode: str = "auto", timeout: float = 600):
        self.ceph_args = ["-c", conf, "--name", client] + (["--keyring", keyring] if keyring else [])
        self.timeout = timeout
        self.mode = ("krbd" if kernel_rbd() else "fuse") if mode == "auto" else mode

    def map(self, pool: str, volume: str) -> Mapping:
        device = rbd_path(pool, volume)
        if self.mode == "krbd":
            run(["rbd", "map", f"{pool}/{volume}", *self.ceph_args], self.timeout)
            return Mapping(pool, volume, device)
        fuse_dir = tempfile.mkdtemp(prefix="pvc-rbd-fuse-")
        mapping = Mapping(pool, volume, device, fuse_dir=fuse_dir)
        try:
            run(["rbd-fuse", "-p", pool, "-r", volume, *self.ceph_args, fuse_dir], self.timeout)
            image = os.path.join(fuse_dir, volume)
            deadline = time.monotonic() + 30
            while not os.path.exists(image):
                if time.monotonic() > deadline:
                    raise CommandFailed(["rbd-fuse"], 1, f"rbd-fuse did not show {pool}/{volume}")
                time.sleep(0.05)
            mapping.loop = run(["losetup", "--find", "--show", image], self.timeout)
            os.makedirs(os.path.dirname(device), exist_ok=True)
            if not os.path.lexists(device):
                os.symlink(mapping.loop, device)
                mapping.link = True
        except Exception:
            self._release(mapping)
            raise
        return mapping

    def unmap(self, mapping: Mapping) -> None:
        if self.mode == "krbd":
            run(["rbd", "unmap", mapping.device, *self.ceph_args], self.timeout)
            return
        self._release(mapping, strict=True)

    def _release(self, mapping: Mapping, strict: bool = False) -> None:
        errors = []
        if mapping.link and os.path.islink(mapping.device):
            os.unlink(mapping.device)
            mapping.link = False
            try:
                os.rmdir(os.path.dirname(mapping.device))
            except OSError:
                pass  # other volumes of the pool are mapped
        if mapping.loop:
            try:
                run(["losetup", "--detach", mapping.loop], self.timeout)
                mapping.loop = None
            except CommandFailed as exc:
                errors.append(str(exc))
        if mapping.fuse_dir:
            if os.path.ismount(mapping.fuse_dir):
                try:
                    _unmount_retrying(mapping.fuse_dir, self.timeout)
                except CommandFailed as exc:
                    errors.append(str(exc))
            if not os.path.ismount(mapping.fuse_dir):
                os.rmdir(mapping.fuse_dir)
                mapping.fuse_dir = None
        if errors and strict:
            raise CommandFailed(["unmap"], 1, "; ".join(errors))


def _unmount_retrying(path: str, timeout: float) -> None:
    """A loop device being detached can hold the FUSE file for a moment; umount retries briefly."""
    deadline = time.monotonic() + 10
    while True:
        try:
            run(["umount", path], timeout)
            return
        except CommandFailed:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or below ``prefix`` from /proc/self/mounts (what cleanup and tests check)."""
    with open("/proc/self/mounts") as handle:
        points = [line.split()[1].replace("\\040", " ") for line in handle]
    return [point for point in points if point == prefix or point.startswith(prefix.rstrip("/") + "/")]
