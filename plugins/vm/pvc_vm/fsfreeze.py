"""A running VM's guest filesystems frozen through its node while its disks are snapshotted.

The node that runs the VM does it (libvirt's virDomainFSFreeze/Thaw, through
the guest agent): the API asks it over the ``/cmd/domains`` mailbox with
``domain_fsfreeze <uuid>`` and ``domain_fsthaw <uuid>``, this daemon's
additions to the v0.6 protocol. A node daemon that does not know them (v0.6)
leaves the mailbox as it was, and the snapshot is then taken anyway,
crash-consistent, the answer saying why it was not frozen: a snapshot must
not depend on a guest agent.

Every wait is bounded by ``vm.fsfreeze_timeout``. The thaw is sent whenever
the guest may be frozen (the node said so, did not answer in time, or its
answer was lost), also when a disk's snapshot failed; a node also thaws by
itself after its own bound, should this daemon die in between.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pvc_core.cmdchannel import CommandChannel
from pvc_core.errors import ServiceUnavailable

from . import schema

log = logging.getLogger("pvc.vm")

FREEZE, THAW = "domain_fsfreeze", "domain_fsthaw"


@dataclass
class Freeze:
    """What happened to the guest's filesystems: ``note`` ends the answer's message (with its own brackets)."""

    note: str = ""


def _ask(channel: CommandChannel, command: str, uuid: str, node: str, timeout: float) -> tuple[bool | None, str]:
    """(True: done, False: refused or not taken, None: not known, so the guest may be frozen), and why not."""
    try:
        token = channel.ask(f"{command} {uuid}", timeout)
    except ServiceUnavailable as exc:
        return None, exc.message
    if token == f"success-{command}":
        return True, ""
    if token == f"failure-{command}":
        return False, f"node '{node}' answered 'failure-{command}' (its log says why)"
    if token == command:
        return False, (f"no node daemon took '{command}' (node '{node}' may be down, or its daemon may predate "
                       "this command)")
    return None, f"the node's answer to '{command}' was lost ({schema.CMD_DOMAINS} held '{token}')"


@contextmanager
def frozen(service: Any, uuid: str, wanted: bool = True) -> Iterator[Freeze]:
    """Hold a running VM's guest filesystems frozen for the block; a VM that is not running (or nothing
    ``wanted``: no disk to snapshot) is left alone, no command sent."""
    zk = service.zk
    state, node = zk.get(schema.key(uuid, "state")), zk.get(schema.key(uuid, "node")) or ""
    if state != "start" or not wanted:
        yield Freeze()
        return
    channel = CommandChannel(service.runtime, schema.CMD_DOMAINS)
    timeout = service.runtime.config["vm.fsfreeze_timeout"]
    done, why = _ask(channel, FREEZE, uuid, node, timeout)
    said = f"the guest filesystems were frozen through node '{node}'" if done else \
        f"the guest filesystems were not frozen: {why}"
    result = Freeze(f" ({said})")
    try:
        yield result
    finally:
        if done is not False:
            thawed, why = _ask(channel, THAW, uuid, node, timeout)
            if not thawed:
                log.error("VM %s: the thaw of its guest filesystems on node %s was not confirmed: %s", uuid, node,
                          why)
                result.note = f" ({said}; their thaw was not confirmed: {why})"
