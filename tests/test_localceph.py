"""Ports of local servers that are started again on the same port: the embedded Ceph's mon, a ZooKeeper.

The mon's ports are fixed in ceph.conf and its monmap when the cluster is
made. Picked by the kernel (bind to port 0), they lay in its ephemeral range,
where any outgoing connection may hold them as its local port at the next
start: 1 ``make run`` in 3 lost its Ceph that way ("Address already in
use"). Now they are picked below that range, and a start whose mon port is
busy anyway waits for it, and says which port and what holds it.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest
from test_embedded import alive

from conftest import ANSWER_SLACK, START_TIMEOUT, wait_until
from pvc_core.zkserver import (
    QUIET_BASE,
    ZooKeeperEnsemble,
    ZooKeeperServer,
    ephemeral_range,
    port_free,
    port_holders,
    quiet_port,
)


def test_ports_kept_across_restarts_are_below_the_ephemeral_range(tmp_path):
    """A port picked for a server that is started again (a ZooKeeper, its ensemble's peers, the mon's pair)
    is free and below the kernel's ephemeral range, where no outgoing connection takes its local port."""
    low, _high = ephemeral_range()
    picks = [quiet_port() for _ in range(50)]
    assert all(QUIET_BASE <= port < low for port in picks), picks
    assert len(set(picks)) > 40  # picked at random, so that parallel runs hardly meet
    first = quiet_port(count=2)
    assert first + 1 < low and port_free(first) and port_free(first + 1)
    assert QUIET_BASE <= ZooKeeperServer(str(tmp_path / "zk")).port < low
    peers = [int(port) for member in ZooKeeperEnsemble(str(tmp_path / "ensemble")).members
             for port in member.peers[member.myid].split(":")[1:]]
    assert all(QUIET_BASE <= port < low for port in peers), peers


def test_port_holders_name_a_listener_and_its_process():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_free(port, reuse=True)
        assert f"LISTEN, pid {os.getpid()} (" in "; ".join(port_holders(port))
    assert port_free(port, reuse=True) and port_holders(port) == []


def test_a_restart_waits_for_the_mons_port_held_by_another_socket(tmp_path):
    """A new cluster's mon ports are below the ephemeral range. With the mon's port held by a listener (as
    an outgoing connection held it on an older cluster's port), a restart says so and waits, bounded by its
    timeout, then starts once the port is free; a start whose wait runs out fails naming the port and its
    holder, before any daemon is started."""
    from pvc_ceph.localceph import LocalCeph
    notices: list[str] = []
    ceph = LocalCeph(str(tmp_path / "ceph"), objectstore="bluestore", size_gb=2, notify=notices.append)
    holder = socket.socket()
    try:
        ceph.start(timeout=2 * START_TIMEOUT)
        ports = ceph.mon_ports()
        low, _high = ephemeral_range()
        assert len(ports) == 2 and ports[1] == ports[0] + 1 and QUIET_BASE <= ports[0] < ports[1] < low, ports
        ceph.stop()

        # SO_REUSEADDR: the stopped mon's accepted connections may still be in TIME_WAIT on the port
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", ports[0]))
        holder.listen()
        started = time.monotonic()
        with pytest.raises(RuntimeError) as failed:
            ceph.start(timeout=1)
        assert time.monotonic() - started < 1 + ANSWER_SLACK
        assert re.search(rf"port 127\.0\.0\.1:{ports[0]} is still in use after 1 s \(held by LISTEN, "
                         rf"pid {os.getpid()} ", str(failed.value)), str(failed.value)
        assert ceph.pids() == {} or not any(alive(pid) for pid in ceph.pids().values())
        assert notices and f"127.0.0.1:{ports[0]} is in use" in notices[-1]

        seen: list[list[int]] = []

        def release() -> None:
            """Frees the port once the start is seen waiting for it (or after the deadline, to end the test)."""
            try:
                seen.append(wait_until(lambda: list(ceph.waiting_for), timeout=START_TIMEOUT, interval=0.02,
                                       message="the start to wait for the mon's port"))
            finally:
                holder.close()
        releaser = threading.Thread(target=release)
        releaser.start()
        ceph.start(timeout=2 * START_TIMEOUT)
        releaser.join(START_TIMEOUT)
        assert seen == [[ports[0]]]
        assert ceph.waiting_for == []
        assert ceph.mon_ports() == ports  # the same mon, on its monmap's address
        assert "HEALTH" in ceph.ceph("health")
    finally:
        holder.close()
        ceph.kill()
