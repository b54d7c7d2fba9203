"""A local standalone ZooKeeper (Debian's ``zookeeper`` package) as a child process.

Used by the embedded run (``pvcapid-embedded``) and by the test suite, so
both start ZooKeeper the same way: bound to 127.0.0.1, admin server off,
state under one directory. The port helpers here serve every local server
(ZooKeeper, the local Ceph's mon): ``quiet_port`` for a port that must stay the
same across restarts, ``free_port`` for one that lives as long as one process.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time

ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"
CLASSPATH = [ZOOKEEPER_JAR, "/usr/share/java/slf4j-log4j12.jar", "/usr/share/java/log4j-1.2.jar"]


EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
EPHEMERAL_DEFAULT = (32768, 60999)  # Linux's default, when the range cannot be read
QUIET_BASE = 10000  # the lowest port quiet_port picks: below it lie the well-known and registered services


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, from the kernel's ephemeral range (bind to port 0): only for a server that lives as
    long as one process. Any outgoing connection may take the port as its local one once it is released, so
    a server started again on it may find it taken: use ``quiet_port`` for that."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (lowest, highest): where every bind to port 0 and every outgoing
    connection takes its local port from."""
    try:
        with open(EPHEMERAL_RANGE, encoding="ascii") as handle:
            low, high = (int(value) for value in handle.read().split())
        return low, high
    except (OSError, ValueError):
        return EPHEMERAL_DEFAULT


def port_free(port: int, host: str = "127.0.0.1", reuse: bool = False) -> bool:
    """Whether a listening socket could bind ``host:port`` now (it is bound and released at once).

    ``reuse`` binds as a server does (SO_REUSEADDR, which ceph-mon and ZooKeeper set): the TIME_WAIT
    connections its own earlier run left do not count, a listener or any other connection on the port
    (TIME_WAIT included) does. Without it, any socket on the port counts: stricter, for picking a port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def quiet_port(host: str = "127.0.0.1", count: int = 1) -> int:
    """The first of ``count`` consecutive free ports outside the kernel's ephemeral range, for a server that
    is stopped and started again on the same port (the embedded Ceph's mon, whose port is fixed in its
    monmap; a ZooKeeper restarted by a test).

    A port of ``free_port`` is in the ephemeral range: once released, any outgoing connection on the machine
    may hold it as its local port, and the restart then fails with "Address already in use" (1 ``make run``
    in 3 did for the local Ceph). Outside the range only an explicit bind can take it. The ports are picked
    at random below the range (above it when nothing is left below) and checked by binding, so that two
    pickers running at once (pytest workers, suites side by side) hardly ever meet.
    """
    low, high = ephemeral_range()
    picker = random.SystemRandom()
    for start, end in ((QUIET_BASE, low), (high + 1, 65536)):
        candidates = range(start, end - count + 1)
        if not candidates:
            continue
        for _ in range(1000):
            port = picker.choice(candidates)
            if all(port_free(port + offset, host) for offset in range(count)):
                return port
        raise RuntimeError(f"no {count} free consecutive ports between {start} and {end - 1} on {host}")
    for _ in range(1000):  # the whole range is ephemeral: the kernel's pick is as good as any
        port = free_port(host)
        if port + count <= 65536 and all(port_free(port + offset, host) for offset in range(1, count)):
            return port
    raise RuntimeError(f"no {count} free consecutive ports on {host}")


TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
              "0B": "CLOSING"}


def _proc_address(text: str) -> str:
    """``ADDR:PORT`` of /proc/net/tcp{,6} (the address in hexadecimal, 32-bit words in host order)."""
    address, port = text.split(":")
    raw = bytes.fromhex(address)
    words = b"".join(raw[index:index + 4][::-1] for index in range(0, len(raw), 4))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return f"{socket.inet_ntop(family, words)}:{int(port, 16)}"


def port_holders(port: int) -> list[str]:
    """What holds a TCP ``port`` on this machine, one line each ("ESTABLISHED to 127.0.0.1:2181, pid 42
    (java)"), from /proc/net/tcp{,6} and the processes' sockets; for a message that says why the port is
    busy. Best effort: a process this user may not look into is left unnamed."""
    found: dict[str, str] = {}  # socket inode -> description; a TIME_WAIT has none ("0")
    plain: list[str] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or int(fields[1].rsplit(":", 1)[1], 16) != port:
                continue
            state = TCP_STATES.get(fields[3], fields[3])
            what = state if state == "LISTEN" else f"{state} to {_proc_address(fields[2])}"
            if fields[9] == "0":
                plain.append(what)
            else:
                found[fields[9]] = what
    for pid in (entry for entry in os.listdir("/proc") if entry.isdigit()) if found else ():
        links = (_readlink(f"/proc/{pid}/fd/{fd}") for fd in _listdir(f"/proc/{pid}/fd"))
        mine = {link[8:-1] for link in links if link.startswith("socket:[")} & found.keys()
        if mine:
            try:
                with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
                    name = handle.read().strip()
            except OSError:
                name = "?"
            for inode in mine:
                found[inode] += f", pid {pid} ({name})"
    return sorted(found.values()) + plain


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:  # the process has ended, or is not this user's to look into
        return []


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed meanwhile
        return ""


def four_letter_word(port: int, word: str, host: str = "127.0.0.1", timeout: float = 1.0) -> str:
    """First bytes of a 4lw answer; empty when nothing answers (3.8 may not close the socket)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(word.encode())
            return sock.recv(4).decode(errors="replace")
    except OSError:
        return ""


class ZooKeeperServer:
    """Start, stop and restart one ZooKeeper; restart keeps the data directory."""

    def __init__(self, directory: str, port: int | None = None, heap: str = "256m",
                 force_sync: bool = False, myid: int | None = None, peers: dict[int, str] | None = None):
        """``myid`` and ``peers`` (``{id: "127.0.0.1:<peer port>:<election port>"}``, this server's
        included) make it one member of an ensemble (``ZooKeeperEnsemble``)."""
        self.directory = os.path.abspath(directory)
        self.port = port or quiet_port()  # the same port after a restart
        self.heap = heap
        self.force_sync = force_sync
        self.myid = myid
        self.peers = peers or {}
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> str:
        os.makedirs(os.path.join(self.directory, "data"), exist_ok=True)
        config = os.path.join(self.directory, "zoo.cfg")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(
                "tickTime=2000\ninitLimit=10\nsyncLimit=5\n"
                f"dataDir={self.directory}/data\nclientPort={self.port}\nclientPortAddress=127.0.0.1\n"
                f"maxClientCnxns=0\nforceSync={'yes' if self.force_sync else 'no'}\n"
                "admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr,stat,wchs,wchc\n"
                + "".join(f"server.{peer}={address}\n" for peer, address in sorted(self.peers.items())))
        if self.myid is not None:
            with open(os.path.join(self.directory, "data", "myid"), "w", encoding="utf-8") as handle:
                handle.write(f"{self.myid}\n")
        with open(os.path.join(self.directory, "log4j.properties"), "w", encoding="utf-8") as handle:
            handle.write("log4j.rootLogger=WARN, CONSOLE\n"
                         "log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n"
                         "log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n"
                         "log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p %m%n\n")
        return config

    def launch(self) -> None:
        """Start the process without waiting for it to serve."""
        if not os.path.exists(ZOOKEEPER_JAR):
            raise RuntimeError(f"{ZOOKEEPER_JAR} is missing: apt-get install zookeeper")
        if four_letter_word(self.port, "ruok") == "imok":
            raise RuntimeError(f"something already answers on 127.0.0.1:{self.port}")
        config = self._write_config()
        classpath = ":".join([self.directory, *CLASSPATH])
        log = open(os.path.join(self.directory, "zk.log"), "ab")
        self.process = subprocess.Popen(
            ["java", "-Xms32m", f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
             "-Dzookeeper.jmx.log4j.disable=true",
             # an ensemble's election backs off up to 60 s between rounds that hear nothing new: a lost
             # leader's survivors on a loaded machine were seen electing none for 120 s; 2 s keeps them trying
             *(["-Dzookeeper.fastleader.maxNotificationInterval=2000"] if self.peers else []),
             f"-Dlog4j.configuration=file:{self.directory}/log4j.properties",
             "-cp", classpath, "org.apache.zookeeper.server.quorum.QuorumPeerMain" if self.peers
             else "org.apache.zookeeper.server.ZooKeeperServerMain", config],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def start(self, timeout: float = 60.0) -> ZooKeeperServer:
        self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ZooKeeper exited with {self.process.returncode}; "
                                   f"see {self.directory}/zk.log")
            # ruok answers before the database is loaded; srvr only once serving.
            if four_letter_word(self.port, "srvr") == "Zook":
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ZooKeeper did not answer on {self.address} within {timeout:.0f}s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def mode(self) -> str:
        """``leader``, ``follower`` or ``standalone`` from ``srvr``; "" when it does not serve."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"srvr")
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
        except OSError:
            return ""
        for line in answer.decode(errors="replace").splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return ""


class ZooKeeperEnsemble:
    """Three (or ``size``) local servers as one ensemble, for tests of a lost leader."""

    def __init__(self, directory: str, size: int = 3, heap: str = "128m"):
        peers = {index: f"127.0.0.1:{quiet_port()}:{quiet_port()}" for index in range(1, size + 1)}
        self.members = [ZooKeeperServer(os.path.join(directory, f"zk{index}"), heap=heap, myid=index, peers=peers)
                        for index in peers]

    @property
    def addresses(self) -> list[str]:
        return [member.address for member in self.members]

    def start(self, timeout: float = 120.0) -> ZooKeeperEnsemble:
        """Start every member; return once one leads and the others follow."""
        for member in self.members:
            member.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            modes = sorted(member.mode() for member in self.members)
            if modes.count("leader") == 1 and modes.count("follower") == len(self.members) - 1:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the ensemble did not elect a leader within {timeout:.0f}s")

    def leader(self) -> ZooKeeperServer | None:
        return next((member for member in self.members if member.running and member.mode() == "leader"), None)

    def stop(self) -> None:
        for member in self.members:
            member.stop()
