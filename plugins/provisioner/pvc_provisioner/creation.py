"""The VM creation task (provisioner.md §3): ten reported steps, and a rollback that always runs.

Steps 1–4 have no side effects; every side effect after them (VM definition,
volumes, mappings, mounts, temporary files) is recorded as it is made, so a
failure at any point undoes exactly what this task did and nothing else
(DECISIONS: every mount undone, every mapping removed, every created volume
removed, no VM left defined), then the task ends FAILURE naming the step.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import shutil
import tempfile
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from pvc_core.errors import ApiError

from . import domain, hostops

log = logging.getLogger("pvc.provisioner.task")

STEPS = (
    "Collecting configuration",
    "Verifying configuration against cluster",
    "Preparing provisioning script",
    "Preparing Libvirt XML configuration",
    "Defining VM on the cluster",
    "Creating storage volumes",
    "Mapping, formatting, and mounting storage volumes locally",
    "Executing provisioning script",
    "Cleaning up local mounts and directories",
    "Starting VM",
)
FIXED_KWARGS = ("vm_name", "vm_id", "temporary_directory", "disks", "networks")
GIB = 1024 ** 3


class TaskFailure(Exception):
    """A step's failure as the operator reads it: the reason text only (§2.11)."""


class Cancelled(TaskFailure):
    """A cancel asked for through ``DELETE /tasks/<id>``, noticed between two steps."""


def parse_arguments(items: list[str]) -> dict[str, str]:
    """``key=value`` items split at the first ``=`` (§3.7); later items override earlier ones."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TaskFailure(f'Invalid script argument "{item}"')
        if key in FIXED_KWARGS:
            raise TaskFailure(f'Script argument "{key}" clashes with the fixed install() argument of that name')
        out[key] = value
    return out


def mkfs_options(filesystem_args: str) -> list[str]:
    """``-L=root`` → ``-L root``; split at the first ``=`` only; items without ``=`` pass unchanged (§3.6)."""
    words: list[str] = []
    for item in filesystem_args.split():
        option, sep, value = item.partition("=")
        words.extend([option, value] if sep else [item])
    return words


class Creation:
    """One run of the task; ``run()`` returns the success text or raises TaskFailure."""

    def __init__(self, runtime: Any, task_id: str, vm_name: str, profile: str, define_vm: bool = True,
                 start_vm: bool = True, script_args: list[str] | None = None,
                 progress: Callable[[int, str], None] | None = None,
                 on_change: Callable[[dict], None] | None = None):
        self.runtime = runtime
        self.config = runtime.config
        self.task_id = task_id
        self.vm_name = vm_name
        self.profile = profile
        self.define_vm = define_vm
        self.start_vm = start_vm
        self.extra_args = list(script_args or [])
        self.progress = progress or (lambda step, text: None)
        self.on_change = on_change or (lambda ledger: None)
        self.undone: list[str] = []  # what the rollback undid, for the task's log
        self.step = 0
        self.timings: dict[str, float] = {}
        # what this run made, for the rollback
        self.defined = False
        self.created_volumes: list[tuple[str, str]] = []
        self.mappings: list[hostops.Mapping] = []
        self.mounted: list[str] = []
        self.temp_dir: str | None = None
        self.script_file: str | None = None
        self.mapper: hostops.Mapper | None = None

    @property
    def ceph(self) -> Any:
        return self.runtime.service("ceph")

    # -- the ledger: what this run has made so far --------------------------------------------

    def ledger(self) -> dict:
        """Persisted after every side effect, so a worker that dies mid-run can be cleaned up after."""
        return {"vm_name": self.vm_name, "defined": self.defined,
                "volumes": [list(item) for item in self.created_volumes],
                "mappings": [asdict(mapping) for mapping in self.mappings],
                "mapper": self.mapper.mode if self.mapper else None,
                "temp_dir": self.temp_dir, "script_file": self.script_file}

    def _changed(self) -> None:
        try:
            self.on_change(self.ledger())
        except Exception:  # the run goes on; only a crash recovery would miss the entry
            log.exception("could not record the progress ledger of VM %s", self.vm_name)

    @classmethod
    def recover(cls, runtime: Any, ledger: dict) -> None:
        """Undo what a dead worker's run had made, from its last ledger."""
        run = cls(runtime, "", ledger["vm_name"], "")
        run.defined = bool(ledger.get("defined"))
        run.created_volumes = [tuple(item) for item in ledger.get("volumes") or []]
        run.mappings = [hostops.Mapping(**item) for item in ledger.get("mappings") or []]
        run.temp_dir = ledger.get("temp_dir")
        run.script_file = ledger.get("script_file")
        if run.mappings:
            run.mapper = run._make_mapper(ledger.get("mapper") or "auto")
        log.warning("rolling back the interrupted creation of VM %s: %s", run.vm_name, ledger)
        run.rollback()

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> str:
        phases = (self.collect, self.verify, self.prepare_script, self.build_xml, self.define, self.create_volumes,
                  self.prepare_disks, self.run_script, self.clean_local, self.start)
        started = time.monotonic()
        try:
            for number, phase in enumerate(phases, start=1):
                self.step = number
                self.progress(number, STEPS[number - 1])
                begun = time.monotonic()
                phase()
                self.timings[STEPS[number - 1]] = round(time.monotonic() - begun, 4)
        except Cancelled:
            log.warning("creation of VM %s cancelled before step %d (%s)", self.vm_name, self.step,
                        STEPS[self.step - 1])
            self.rollback()
            undone = "; ".join(self.undone) if self.undone else "nothing had been made yet"
            raise Cancelled(f"Cancelled before step {self.step} ({STEPS[self.step - 1]}); rolled back: "
                            f"{undone}") from None
        except Exception as exc:
            reason = self._reason(exc)
            log.warning("creation of VM %s failed at step %d (%s): %s", self.vm_name, self.step,
                        STEPS[self.step - 1], reason)
            self.rollback()
            raise TaskFailure(f"Step {self.step} ({STEPS[self.step - 1]}) failed: {reason}") from exc
        self.timings["total"] = round(time.monotonic() - started, 4)
        if self.define_vm and self.start_vm:
            return f'VM "{self.vm_name}" with profile "{self.profile}" has been provisioned and started successfully'
        return f'VM "{self.vm_name}" with profile "{self.profile}" has been provisioned successfully'

    @staticmethod
    def _reason(exc: Exception) -> str:
        if isinstance(exc, ApiError):
            return exc.message
        if isinstance(exc, TaskFailure):
            return str(exc)
        return str(exc) or type(exc).__name__

    # -- step 1: collect (§3.3) ---------------------------------------------------------------

    def collect(self) -> None:
        inputs = self.runtime.service("provisioner").store.build_inputs(self.profile)
        if inputs is None:
            raise TaskFailure(f'Provisioner profile "{self.profile}" is not present on the cluster')
        self.inputs = inputs
        self.vm_id = domain.vm_id(self.vm_name)
        self.system = inputs["system"]
        self.nets = inputs["networks"]
        self.disks = inputs["disks"]  # ordered by disk_id
        self.script_text = inputs["script"]
        self.script_enabled = bool(self.script_text)
        self.arguments = inputs["arguments"] + self.extra_args
        log.info("creating VM %s from profile %s: %s", self.vm_name, self.profile, inputs)

    # -- step 2: verify (§3.3) -----------------------------------------------------------------

    def verify(self) -> None:
        vms = self.runtime.service("vm")
        if any(entry.get("") == self.vm_name for entry in vms.view.read_direct().values()):
            raise TaskFailure(f"A VM with the name '{self.vm_name}' already exists in the cluster")
        self.node = self._pick_node()
        known = set(self.runtime.service("network").vnis())
        for net in self.nets:
            if str(net["vni"]) not in known:
                raise TaskFailure(f'The network VNI "{net["vni"]}" is not present on the cluster')
        self._check_space()
        self._check_tools()
        self.script_kwargs = parse_arguments(self.arguments) if self.script_enabled else {}
        self.macs = domain.macs(self.inputs["mac_template"], self.vm_id, len(self.nets))
        if self.script_enabled and not any(disk["mountpoint"] and disk["mountpoint"] != "swap"
                                           and not disk["source_volume"] for disk in self.disks):
            log.warning("VM %s: the script runs, but no disk of the profile is mounted for it", self.vm_name)

    def _pick_node(self) -> str:
        need = self.system["vram_mb"] + 512
        best, best_free = None, -1
        for name, entry in sorted(self.runtime.service("node").entries().items()):
            if entry.get("daemonstate") != "run" or entry.get("domainstate") != "ready":
                continue
            try:
                free = int(entry.get("memfree") or 0)
            except ValueError:
                continue
            if free >= need and free > best_free:
                best, best_free = name, free
        if best is None:
            raise TaskFailure(f"No ready cluster node contains at least {self.system['vram_mb']}+512 MB of free RAM")
        return best

    def _check_space(self) -> None:
        needed: dict[str, int] = {}
        for disk in self.disks:
            pool = disk["pool"]
            if disk["source_volume"]:
                size = self.ceph.volume_size(pool, disk["source_volume"])
                if size is None:
                    raise TaskFailure(f"The source volume {pool}/{disk['source_volume']} could not be found")
                gib = -(-size // GIB)
            elif disk["disk_size_gb"] is None:
                raise TaskFailure(f'Disk "{disk["disk_id"]}" has no size')
            else:
                gib = disk["disk_size_gb"]
            needed[pool] = needed.get(pool, 0) + gib
            if self.ceph.volume_exists(pool, f"{self.vm_name}_{disk['disk_id']}"):
                raise TaskFailure(f'The volume "{pool}/{self.vm_name}_{disk["disk_id"]}" already exists')
        free_bytes = self.ceph.pool_free_bytes(sorted(needed)) if needed else {}
        for pool, gib in needed.items():
            if pool not in free_bytes:
                raise TaskFailure(f'Pool "{pool}" is not present on the cluster')
            free = free_bytes[pool] // GIB
            if gib >= free:
                raise TaskFailure(f'Pool "{pool}" has only {free} GB free and VM requires {gib} GB')

    def _check_tools(self) -> None:
        for filesystem in sorted({disk["filesystem"] for disk in self.disks
                                  if disk["filesystem"] and not disk["source_volume"]}):
            binary = "mkswap" if filesystem == "swap" else f"mkfs.{filesystem}"
            if shutil.which(binary) is None:
                raise TaskFailure(f"Failed to find binary for {binary}: not on the PATH")
        if any(disk["filesystem"] and not disk["source_volume"] for disk in self.disks):
            self.mapper = self._make_mapper(self.config["provisioner.volume_mapper"])
            needed = ["rbd"] if self.mapper.mode == "krbd" else ["rbd-fuse", "losetup"]
            for binary in needed + ["mount", "umount"]:
                if shutil.which(binary) is None:
                    raise TaskFailure(f"Failed to find binary for {binary}: not on the PATH "
                                      f"(volume mapper {self.mapper.mode!r})")

    def _make_mapper(self, mode: str) -> hostops.Mapper:
        return hostops.Mapper(self.config["ceph.conf"], self.config["ceph.client"], self.config["ceph.keyring"] or None,
                              mode, self.config["provisioner.command_timeout"])

    # -- step 3: the script (§3.4) --------------------------------------------------------------

    def prepare_script(self) -> None:
        if not self.script_enabled:
            return
        handle, self.script_file = tempfile.mkstemp(prefix="pvc-script-", suffix=".py")
        self._changed()
        with os.fdopen(handle, "w") as out:
            out.write(self.script_text + "\n")
        spec = importlib.util.spec_from_file_location("installer_script", self.script_file)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        if not callable(getattr(module, "install", None)):
            raise TaskFailure("Specified script does not contain an install() function")
        self.install = module.install

    # -- step 4: XML (§3.5) ------------------------------------------------------------------

    def build_xml(self) -> None:
        settings = self.config["provisioner.ceph_cluster"]
        self.vm_uuid = str(uuidlib.uuid4())
        self.xml = domain.render(
            self.vm_name, self.vm_uuid, self.profile, self.system, self.nets, self.macs, self.disks,
            platform.machine(), domain.monitors(settings, self.config["coordinators"]),
            settings["ceph_monitor_port"], settings["ceph_storage_secret_uuid"])
        self.runtime.service("vm").validate_xml(self.xml)

    # -- step 5: define (§3.6) ----------------------------------------------------------------

    def define(self) -> None:
        if not self.define_vm:
            log.info("VM %s not defined (define_vm false); its XML:\n%s", self.vm_name, self.xml)
            return
        self.runtime.service("vm").define(
            self.xml, self.node, self.system["node_limit"], self.system["node_selector"],
            self.system["node_autostart"], state="provision", profile=self.profile)
        self.defined = True
        self._changed()

    # -- step 6: volumes ------------------------------------------------------------------------

    def create_volumes(self) -> None:
        for disk in self.disks:
            pool, name = disk["pool"], f"{self.vm_name}_{disk['disk_id']}"
            try:
                if disk["source_volume"]:
                    self.ceph.volumes.add(pool, name, None, source=disk["source_volume"])
                else:
                    self.ceph.volumes.add(pool, name, f"{disk['disk_size_gb']}G")
            except ApiError as exc:
                what = (f'Failed to clone volume "{disk["source_volume"]}" to "{disk["disk_id"]}"'
                        if disk["source_volume"] else f'Failed to create volume "{disk["disk_id"]}"')
                raise TaskFailure(f"{what}: {exc.message}") from None
            self.created_volumes.append((pool, name))
            self._changed()

    # -- step 7: map, format, mount -------------------------------------------------------------

    def _formatted(self) -> list[dict]:
        return [disk for disk in self.disks if disk["filesystem"] and not disk["source_volume"]]

    def prepare_disks(self) -> None:
        timeout = self.config["provisioner.command_timeout"]
        for disk in self._formatted():
            volume = f"{self.vm_name}_{disk['disk_id']}"
            label = f"{disk['pool']}/{volume}"
            try:
                mapping = self.mapper.map(disk["pool"], volume)  # type: ignore[union-attr]
            except hostops.CommandFailed as exc:
                raise TaskFailure(f'Failed to map volume "{label}": {exc.stderr}') from None
            self.mappings.append(mapping)
            self._changed()
            try:
                if disk["filesystem"] == "swap":
                    hostops.run(["mkswap", "-f", mapping.device], timeout)
                else:
                    hostops.run([f"mkfs.{disk['filesystem']}", *mkfs_options(disk["filesystem_args"] or ""),
                                 mapping.device], timeout)
            except hostops.CommandFailed as exc:
                kind = "swap" if disk["filesystem"] == "swap" else f"{disk['filesystem']} filesystem"
                raise TaskFailure(f'Failed to create {kind} on "{label}": {exc.stderr}') from None
        if not self.script_enabled:
            return
        self.temp_dir = tempfile.mkdtemp(prefix="pvc-provision-")
        self._changed()
        for disk in self._formatted():
            mountpoint = disk["mountpoint"]
            if not mountpoint or mountpoint == "swap":
                continue
            path = self.temp_dir + mountpoint
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as exc:
                raise TaskFailure(f'Failed to create mountpoint "{path}": {exc.strerror}') from None
            device = hostops.rbd_path(disk["pool"], f"{self.vm_name}_{disk['disk_id']}")
            try:
                hostops.run(["mount", device, path], timeout)
            except hostops.CommandFailed as exc:
                raise TaskFailure(f'Failed to mount "{device}" on "{path}": {exc.stderr}') from None
            self.mounted.append(path)

    # -- step 8: install() (§3.7, §4.1) ---------------------------------------------------------

    def run_script(self) -> None:
        if not self.script_enabled:
            return
        root = os.open("/", os.O_RDONLY)
        cwd = os.getcwd()
        try:
            self.install(vm_name=self.vm_name, vm_id=self.vm_id, temporary_directory=self.temp_dir,
                         disks=[dict(disk) for disk in self.disks], networks=[dict(net) for net in self.nets],
                         **self.script_kwargs)
        except Exception as exc:
            raise TaskFailure(f"Failed to run install script: {str(exc) or type(exc).__name__}") from None
        finally:
            # A script that chroots and forgets to come back would make every later step run
            # inside the guest tree (§4.1); the worker's own root and directory are restored.
            os.fchdir(root)
            os.chroot(".")
            os.close(root)
            os.chdir(cwd)

    # -- step 9: cleanup (§3.7) -------------------------------------------------------------------

    def _unmount_all(self, strict: bool) -> None:
        """Everything mounted under the temporary root, deepest first (the script's own binds too)."""
        if not self.temp_dir:
            return
        timeout = self.config["provisioner.command_timeout"]
        for path in sorted(hostops.mounts_under(self.temp_dir), key=lambda p: (-p.count("/"), p)):
            try:
                hostops.run(["umount", path], timeout)
                if not strict:
                    self.undone.append(f"unmounted {path}")
            except hostops.CommandFailed as exc:
                if strict:
                    raise TaskFailure(f'Failed to unmount "{path}": {exc.stderr}') from None
                log.error("cleanup: could not unmount %s: %s", path, exc.stderr)
        self.mounted = []

    def _unmap_all(self, strict: bool) -> None:
        while self.mappings:
            mapping = self.mappings[-1]
            try:
                self.mapper.unmap(mapping)  # type: ignore[union-attr]
                if not strict:
                    self.undone.append(f"unmapped {mapping.device}")
            except hostops.CommandFailed as exc:
                if strict:
                    raise TaskFailure(f'Failed to unmap volume "{mapping.device}": {exc.stderr}') from None
                log.error("cleanup: could not unmap %s: %s", mapping.device, exc.stderr)
            self.mappings.pop()

    def _remove_files(self) -> None:
        if self.temp_dir and not hostops.mounts_under(self.temp_dir):
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None
        if self.script_file:
            try:
                os.unlink(self.script_file)
            except OSError as exc:
                log.error("cleanup: could not remove %s: %s", self.script_file, exc)
            self.script_file = None

    def clean_local(self) -> None:
        self._unmount_all(strict=True)
        self._unmap_all(strict=True)
        self._remove_files()

    # -- step 10: start ------------------------------------------------------------------------

    def start(self) -> None:
        if not self.start_vm:
            return
        if not self.defined:
            log.info("VM %s was not defined, so it is not started", self.vm_name)
            return
        try:
            self.runtime.service("vm").set_state(self.vm_name, "start", wait=False)
        except ApiError as exc:  # v0.6: logged only; the VM is provisioned
            log.warning("could not start VM %s: %s", self.vm_name, exc.message)

    # -- failure ---------------------------------------------------------------------------------

    def rollback(self) -> None:
        """Undo what this run made, each undo failure logged and the rest still tried."""
        for undo in (lambda: self._unmount_all(strict=False), lambda: self._unmap_all(strict=False),
                     self._remove_files, self._remove_volumes, self._undefine):
            try:
                undo()
            except Exception:
                log.exception("cleanup after the failed creation of VM %s", self.vm_name)

    def _remove_volumes(self) -> None:
        while self.created_volumes:
            pool, name = self.created_volumes.pop()
            try:
                self.ceph.volumes.remove(pool, name)
                self.undone.append(f"removed volume {pool}/{name}")
            except ApiError as exc:
                log.error("cleanup: could not remove volume %s/%s: %s", pool, name, exc.message)

    def _undefine(self) -> None:
        if self.defined:
            self.runtime.service("vm").discard_provisioning(self.vm_name)
            self.defined = False
            self.undone.append(f"undefined VM {self.vm_name}")
