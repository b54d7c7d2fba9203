"""A local standalone ZooKeeper (Debian's ``zookeeper`` package) as a child process.

Used by the embedded run (``pvcapid-embedded``) and by the test suite, so
both start ZooKeeper the same way: bound to 127.0.0.1, admin server off,
state under one directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"
CLASSPATH = [ZOOKEEPER_JAR, "/usr/share/java/slf4j-log4j12.jar", "/usr/share/java/log4j-1.2.jar"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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
        self.port = port or free_port()
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
        peers = {index: f"127.0.0.1:{free_port()}:{free_port()}" for index in range(1, size + 1)}
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
