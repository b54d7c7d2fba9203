"""POST /storage/ceph/volume/<pool>/<volume>/upload (PVC 1.x): disk images streamed into RBD volumes.

Real Ceph (memstore), real qemu-img: an image is made with qemu-img from known bytes, uploaded, and
the volume read back through librbd is compared with qemu-img's own raw conversion of it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import os
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from kazoo.client import KazooClient
from pvc_ceph.schema import upload_hold
from test_task_kinds import check, ended
from test_vm import UUID
from test_vm_storage import in_use, vm_xml

from conftest import (
    ANSWER_SLACK,
    CEPH_TIMEOUT,
    REQUEST_TIMEOUT,
    START_TIMEOUT,
    ceph_timeout,
    deep_merge,
    empty_tree,
    settle_timeout,
    simulated,
    wait_until,
)

MIB = 1024 * 1024
POOL = "upl"
SIZE = 32 * MIB
BODY_TIMEOUT = 3.0


def upload_config(ceph_config: dict) -> dict:
    # a short body timeout: a stalled upload is cut (408) within seconds
    return deep_merge(ceph_config, {"ceph": {"collector": "False"}, "api": {"body_timeout": str(BODY_TIMEOUT)}})


@pytest.fixture(scope="module")
def up(daemon_factory, zk_server, ceph_config) -> Iterator:
    client = KazooClient(hosts=zk_server.address)
    client.start(timeout=START_TIMEOUT)
    empty_tree(client)
    daemon = daemon_factory(upload_config(ceph_config), start=False)
    # what a daemon that died during an upload left behind goes when the ceph plugin starts
    stale = Path(daemon.config["data_dir"]) / "uploads" / f"{POOL}.gone.upload-0123456789ab.spool"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x" * 1000)
    daemon.start()
    try:
        assert leftovers(daemon) == []
        assert daemon.post("/initialize").status_code == 200
        made = daemon.post("/storage/ceph/pool", params={"pool": POOL, "pgs": "8", "replcfg": "copies=1,mincopies=1"})
        assert made.status_code == 200, made.text
        yield daemon
        daemon.delete(f"/storage/ceph/pool/{POOL}", params={"yes-i-really-mean-it": "yes"})
    finally:
        daemon.stop()
        client.stop()
        client.close()


def volume(daemon, name: str, size: int = SIZE) -> str:
    made = daemon.post("/storage/ceph/volume", params={"pool": POOL, "volume": name, "size": str(size)})
    assert made.status_code == 200, made.text
    return name


def upload(daemon, name: str, image_format: str, **kwargs):
    return daemon.post(f"/storage/ceph/volume/{POOL}/{name}/upload", params={"image_format": image_format},
                       **kwargs)


def image_of(ceph_cluster, name: str) -> tuple[str, int, list]:
    """(sha256 of the whole volume, its size, its snapshots), read through librbd."""
    import rados
    import rbd
    with rados.Rados(conffile=ceph_cluster.conf, conf={"keyring": ceph_cluster.keyring}) as cluster, \
            cluster.open_ioctx(POOL) as ioctx, rbd.Image(ioctx, name, read_only=True) as image:
        digest, size = hashlib.sha256(), image.size()
        for offset in range(0, size, 4 * MIB):
            digest.update(image.read(offset, min(4 * MIB, size - offset)))
        return digest.hexdigest(), size, [snap["name"] for snap in image.list_snaps()]


def snapshots_of(ceph_cluster, name: str) -> list[str]:
    import rados
    import rbd
    with rados.Rados(conffile=ceph_cluster.conf, conf={"keyring": ceph_cluster.keyring}) as cluster, \
            cluster.open_ioctx(POOL) as ioctx, rbd.Image(ioctx, name, read_only=True) as image:
        return [snap["name"] for snap in image.list_snaps()]


def digest_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=START_TIMEOUT)


def leftovers(daemon) -> list[str]:
    directory = Path(daemon.config["data_dir"]) / "uploads"
    return sorted(os.listdir(directory)) if directory.exists() else []


def test_raw_and_qcow2_uploads_read_back_identical(up, ceph_cluster, tmp_path):
    name = volume(up, "disk1")
    first = tmp_path / "first.raw"
    first.write_bytes(os.urandom(SIZE))
    done = upload(up, name, "raw", data=first.open("rb"), headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 200, done.text
    assert done.json() == {"message": f"Wrote uploaded file to volume '{name}' in pool '{POOL}'."}
    assert image_of(ceph_cluster, name) == (digest_of(first), SIZE, [])

    # a qcow2 made by qemu-img from known bytes, with a hole where the volume now holds data
    source = tmp_path / "source.raw"
    source.write_bytes(os.urandom(12 * MIB) + bytes(8 * MIB) + os.urandom(12 * MIB))
    qcow2, back = tmp_path / "image.qcow2", tmp_path / "back.raw"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(source), str(qcow2))
    qemu_img("convert", "-f", "qcow2", "-O", "raw", str(qcow2), str(back))
    assert digest_of(back) == digest_of(source)
    with qcow2.open("rb") as image:  # as PVC 1.x's CLI sends it: a multipart part named "file"
        done = upload(up, name, "qcow2", files={"file": ("filename", image, "application/octet-stream")})
    assert done.status_code == 200, done.text
    assert done.json() == {"message": f"Converted and wrote uploaded file to volume '{name}' in pool '{POOL}'."}
    assert image_of(ceph_cluster, name) == (digest_of(back), SIZE, [])
    assert leftovers(up) == []

    recorded = up.get(f"/storage/ceph/volume/{POOL}/{name}").json()  # the volume's record follows it
    assert recorded["name"] == name and recorded["pool"] == POOL
    assert {key: recorded["stats"][key] for key in ("name", "size", "snapshot_count", "format", "object_size")} == \
        {"name": name, "size": "32M", "snapshot_count": 0, "format": 2, "object_size": 4 * MIB}

    # vdi, sent as a plain octet-stream body
    vdi = tmp_path / "image.vdi"
    qemu_img("convert", "-f", "raw", "-O", "vdi", str(first), str(vdi))
    done = upload(up, name, "vdi", data=vdi.open("rb"))
    assert done.status_code == 200, done.text
    assert image_of(ceph_cluster, name) == (digest_of(first), SIZE, [])
    assert leftovers(up) == []


def refused(response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert fragment in response.json()["message"], response.json()


def test_refused_uploads_leave_the_volume_as_it_was(up, ceph_cluster, tmp_path):
    name = volume(up, "disk2")
    content = tmp_path / "content.raw"
    content.write_bytes(os.urandom(SIZE))
    assert upload(up, name, "raw", data=content.read_bytes()).status_code == 200
    before = image_of(ceph_cluster, name)
    assert before == (digest_of(content), SIZE, [])

    refused(upload(up, name, "iso", data=b"x" * 1000), 400, "image_format")
    refused(upload(up, name, "raw"), 400, "expected the disk image")
    refused(up.post(f"/storage/ceph/volume/{POOL}/nosuch/upload", params={"image_format": "raw"}, data=b"x"),
            404, "No volume with name 'nosuch'")
    larger = tmp_path / "larger.qcow2"
    qemu_img("create", "-f", "qcow2", str(larger), str(2 * SIZE))
    refused(upload(up, name, "qcow2", data=larger.read_bytes()), 400, f"virtual size of {2 * SIZE} bytes exceeds")
    garbage = upload(up, name, "qcow2", data=os.urandom(MIB))
    refused(garbage, 400, "qemu-img could not read it as qcow2: qemu-img: Could not open the uploaded image: ")
    assert ".spool" not in garbage.json()["message"] and "uploads" not in garbage.json()["message"]
    backed = tmp_path / "backed.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", str(backed), str(MIB))
    refused(upload(up, name, "qcow2", data=backed.read_bytes()), 400, "expected a self-contained qcow2 image")
    refused(upload(up, name, "raw", files={"image": ("f", b"x" * 100)}), 400, "part named 'file'")

    # a raw body whose Content-Length passes the volume's size: refused before any byte of it is read
    connection = http.client.HTTPConnection("127.0.0.1", up.port, timeout=START_TIMEOUT)
    connection.putrequest("POST", f"/api/v1/storage/ceph/volume/{POOL}/{name}/upload?image_format=raw")
    connection.putheader("Content-Length", str(SIZE + 1))
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 400 and answer.getheader("Connection") == "close"
    assert json.loads(answer.read())["message"].startswith(f"Image data: expected at most {SIZE} bytes")
    connection.close()
    # a body that ends (the client's half-close) before its Content-Length: cut short, not whole; refused and
    # rolled back, raw or converted
    for image_format in ("raw", "qcow2"):
        with socket.create_connection(("127.0.0.1", up.port), timeout=START_TIMEOUT) as cut:
            cut.sendall(f"POST /api/v1/storage/ceph/volume/{POOL}/{name}/upload?image_format={image_format} "
                        f"HTTP/1.1\r\nHost: x\r\nContent-Length: {3 * MIB}\r\n\r\n".encode() + b"\x44" * (5 * MIB // 4))
            cut.shutdown(socket.SHUT_WR)
            answer = http.client.HTTPResponse(cut)
            answer.begin()
            assert answer.status == 400, answer.read()
            assert json.loads(answer.read())["message"] == (
                f"Request body: expected the {3 * MIB} bytes of its Content-Length, got {5 * MIB // 4} before the "
                "connection closed (was the upload cut short?)")
        assert image_of(ceph_cluster, name) == before
        (record,) = up.get("/tasks", params={"kind": "ceph.volume.upload", "limit": "1"}).json()
        assert record["state"] == "FAILURE" and record["status"].startswith("Request body: expected the ")

    # one that fits a (thin) volume of 12 GiB, but not the pool (on a memstore of 10 GiB): refused the same way
    huge = volume(up, "huge", 12 * 1024 * MIB)
    connection = http.client.HTTPConnection("127.0.0.1", up.port, timeout=START_TIMEOUT)
    connection.putrequest("POST", f"/api/v1/storage/ceph/volume/{POOL}/{huge}/upload?image_format=raw")
    connection.putheader("Content-Length", str(11 * 1024 * MIB))
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 400
    message = json.loads(answer.read())["message"]
    assert message.startswith(f"Image data: its Content-Length is {11 * 1024 * MIB} bytes, but pool '{POOL}' can "
                              "store only "), message
    connection.close()
    assert snapshots_of(ceph_cluster, huge) == [] and up.delete(f"/storage/ceph/volume/{POOL}/{huge}").status_code \
        == 200

    # a body that stops arriving after one object was written: 408 once a piece is api.body_timeout late,
    # and the object written is rolled back
    connection = http.client.HTTPConnection("127.0.0.1", up.port, timeout=START_TIMEOUT)
    connection.putrequest("POST", f"/api/v1/storage/ceph/volume/{POOL}/{name}/upload?image_format=raw")
    connection.putheader("Content-Length", str(SIZE))
    connection.endheaders()
    connection.send(b"\x33" * (5 * MIB))
    started = time.monotonic()
    answer = connection.getresponse()
    assert answer.status == 408, answer.read()
    # (the wait began at the server's last read, just before ``started``; the rollback is one Ceph call)
    assert BODY_TIMEOUT - 1 < time.monotonic() - started < BODY_TIMEOUT + ANSWER_SLACK + CEPH_TIMEOUT
    assert "api.body_timeout" in json.loads(answer.read())["message"]
    connection.close()
    assert image_of(ceph_cluster, name) == before

    # a chunked raw body found longer than the volume once the volume is written: rolled back
    def longer() -> Iterator[bytes]:
        for _ in range(SIZE // MIB):
            yield b"\x5a" * MIB
        yield b"tail"
    refused(upload(up, name, "raw", data=longer()), 400, "got more; grow the volume first")

    assert image_of(ceph_cluster, name) == before  # the same bytes, no snapshot left behind
    assert leftovers(up) == []
    # the statistics are collected every ceph.volume_interval: the removed snapshot leaves them by then
    wait_until(lambda: up.get(f"/storage/ceph/volume/{POOL}/{name}").json()["stats"]["snapshot_count"] == 0,
               timeout=ceph_timeout(), message="the volume's statistics still count the upload's snapshot")


def check_summary(path: Path, image_format: str) -> str:
    """qemu-img check's summary line for a damaged image (exit 2): what the 400 quotes."""
    result = subprocess.run(["qemu-img", "check", "-f", image_format, str(path)], capture_output=True, text=True,
                            timeout=START_TIMEOUT)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr[:500])
    return next(line for line in result.stdout.splitlines() if line.strip())


def data_end(path: Path, image_format: str) -> int:
    """Where the image's tables place the end of its data in the file (qemu-img map)."""
    result = subprocess.run(["qemu-img", "map", "-f", image_format, "--output=json", str(path)], check=True,
                            capture_output=True, text=True, timeout=START_TIMEOUT)
    return max(extent["offset"] + extent["length"] for extent in json.loads(result.stdout) if extent["data"])


def test_a_cut_image_is_refused_and_the_volume_kept(up, ceph_cluster, tmp_path):
    """A qcow2 cut after 1000 bytes or 500 KB still opens (qemu-img info) and converts, its missing clusters
    read as zeros: without ``qemu-img check`` the volume's data became zeros and the answer was 200. A vdi cut
    short passes ``qemu-img check``; ``qemu-img map`` places its data past the file's end. All 400, the volume's
    bytes and snapshots as they were."""
    name = volume(up, "cut")
    assert upload(up, name, "raw", data=b"\xab" * SIZE).status_code == 200
    before = image_of(ceph_cluster, name)
    assert before == (hashlib.sha256(b"\xab" * SIZE).hexdigest(), SIZE, [])
    source = tmp_path / "source.raw"
    source.write_bytes(os.urandom(12 * MIB) + bytes(8 * MIB) + os.urandom(12 * MIB))
    whole = {}
    for image_format in ("qcow2", "vdi", "qcow"):
        whole[image_format] = tmp_path / f"whole.{image_format}"
        qemu_img("convert", "-f", "raw", "-O", image_format, str(source), str(whole[image_format]))

    def damaged(cut: Path) -> str:  # qcow2: qemu-img check finds the errors
        return (f"Image data: the uploaded qcow2 image is damaged (qemu-img check: {check_summary(cut, 'qcow2')}); "
                "expected an intact qcow2 image, one that `qemu-img check` finds no errors in: was the file cut "
                "short? Upload it whole")

    def short(cut: Path) -> str:  # vdi: check passes it, qemu-img map shows data past the file's end
        return (f"Image data: the uploaded vdi image is cut short: its tables place data up to byte "
                f"{data_end(cut, 'vdi')}, but the file has {cut.stat().st_size} bytes; expected the whole image file")

    for length in (1000, 500 * 1000):
        for image_format, expected in (("qcow2", damaged), ("vdi", short)):
            cut = tmp_path / f"cut-{length}.{image_format}"
            cut.write_bytes(whole[image_format].read_bytes()[:length])
            answer = upload(up, name, image_format, data=cut.read_bytes())
            assert answer.status_code == 400, answer.text
            assert answer.json() == {"message": expected(cut)}, (image_format, length)
            assert image_of(ceph_cluster, name) == before
    assert leftovers(up) == []

    # whole images pass: qcow (version 1), a format qemu-img cannot check (exit 63), and qcow2
    for image_format in ("qcow", "qcow2"):
        done = upload(up, name, image_format, data=whole[image_format].read_bytes())
        assert done.status_code == 200, done.text
        assert image_of(ceph_cluster, name) == (digest_of(source), SIZE, [])


def rbd_cli(ceph_cluster, *args: str) -> None:
    subprocess.run(["rbd", "--conf", ceph_cluster.conf, "--keyring", ceph_cluster.keyring, *args], check=True,
                   capture_output=True, timeout=START_TIMEOUT)


def test_a_locked_volume_is_refused_naming_the_lock(up, ceph_cluster, tmp_path):
    """A lock taken from outside the cluster (``rbd lock add``): 400 naming the lock (client, cookie, address)
    and how to release it, raw or converted, the volume as it was; the way the answer offers releases it."""
    import rados
    name = volume(up, "locked")
    assert upload(up, name, "raw", data=b"\xab" * SIZE).status_code == 200
    before = image_of(ceph_cluster, name)
    rbd_cli(ceph_cluster, "lock", "add", f"{POOL}/{name}", "mycookie")
    with rados.Rados(conffile=ceph_cluster.conf, conf={"keyring": ceph_cluster.keyring}) as cluster, \
            cluster.open_ioctx(POOL) as ioctx:
        expected = in_use(ioctx, POOL, name, "uploading an image to it")
    assert "'mycookie'" in expected and f"rbd lock rm {POOL}/{name} 'mycookie' client." in expected
    qcow2 = tmp_path / "image.qcow2"
    qemu_img("create", "-f", "qcow2", str(qcow2), str(MIB))
    for image_format, data in (("raw", b"\x01" * MIB), ("qcow2", qcow2.read_bytes())):
        answer = upload(up, name, image_format, data=data)
        assert answer.status_code == 400, answer.text
        assert answer.json() == {"message": expected}, image_format
        assert image_of(ceph_cluster, name) == before
    assert leftovers(up) == []

    release = expected.split("release the lock (")[1].removesuffix(") before uploading an image to it")
    rbd_cli(ceph_cluster, *shlex.split(release)[1:])
    assert upload(up, name, "raw", data=b"\x01" * MIB).status_code == 200
    assert image_of(ceph_cluster, name) == (hashlib.sha256(b"\x01" * MIB + b"\xab" * (SIZE - MIB)).hexdigest(),
                                            SIZE, [])


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_memory_stays_flat_while_a_large_raw_image_streams(up, ceph_cluster):
    """A 1 GiB raw image (issue 16's size), streamed in chunks: the daemon's RSS, sampled all along, grows by far
    less. The volume is removed afterwards: memstore holds its data in the OSD's memory."""
    total = 1024 * MIB
    name = volume(up, "big", total)
    block = os.urandom(MIB)
    expected = hashlib.sha256()
    for _ in range(total // MIB):
        expected.update(block)
    pid = up.process.pid
    baseline, peak = rss(pid), [0]
    sending = threading.Event()
    sending.set()

    def sample() -> None:
        while sending.is_set():
            peak[0] = max(peak[0], rss(pid))
            time.sleep(0.02)  # a sampling period, not a wait for anything
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        done = upload(up, name, "raw", data=(block for _ in range(total // MIB)))
    finally:
        sending.clear()
        sampler.join()
    assert done.status_code == 200, done.text
    growth = peak[0] - baseline
    print(f"RSS {baseline / MIB:.0f} MiB before, peak {peak[0] / MIB:.0f} MiB: +{growth / MIB:.1f} MiB "
          f"for a {total // MIB} MiB image")
    assert growth < 64 * MIB, f"RSS grew by {growth / MIB:.0f} MiB while a {total // MIB} MiB image streamed"
    assert image_of(ceph_cluster, name) == (expected.hexdigest(), total, [])
    assert up.delete(f"/storage/ceph/volume/{POOL}/{name}").status_code == 200  # memstore holds it in memory


def test_an_upload_is_a_task_that_a_cancel_or_the_daemons_end_rolls_back(up, ceph_cluster, tmp_path, zk_client):
    """The record counts the bytes written and ends with the answer. A cancel between two pieces stops the
    upload (409) and rolls the volume back; so does the restart of a daemon killed under an upload."""
    name = volume(up, "tasked")
    first = tmp_path / "first.raw"
    first.write_bytes(os.urandom(8 * MIB))
    done = upload(up, name, "raw", data=first.open("rb"), headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 200, done.text
    record = ended(up, done.headers["X-Task-Id"])
    check(record, "ceph.volume.upload", "ceph", done.json()["message"],
          f"Uploading a raw image to RBD volume {POOL}/{name}")
    assert (record["current"], record["total"]) == (8 * MIB, 8 * MIB)
    assert record["kwargs"] == {"pool": POOL, "volume": name, "image_format": "raw"}
    before = image_of(ceph_cluster, name)

    def written() -> dict:
        """The running record, once it shows the first piece (4 MiB) written."""
        return wait_until(lambda: [task for task in up.get("/tasks", params={
            "kind": "ceph.volume.upload", "state": "RUNNING"}).json() if task["current"] >= 4 * MIB],
            message="the upload's first piece written")[0]

    seen: list = []

    def cancelled_after_one_piece() -> Iterator[bytes]:
        yield b"\x77" * (4 * MIB)
        seen.append(written())
        assert up.delete(f"/tasks/{seen[0]['id']}").status_code == 202
        yield b"\x78" * (4 * MIB)  # read, not written: the cancel is met before the next piece
    answer = upload(up, name, "raw", data=cancelled_after_one_piece())
    assert answer.status_code == 409 and answer.headers["X-Task-Id"] == seen[0]["id"], answer.text
    assert answer.json()["message"].startswith(f"ERROR: Cancelled the upload to RBD volume '{name}' in pool '{POOL}' "
                                               f"after writing {4 * MIB} bytes; the volume was rolled back")
    record = ended(up, seen[0]["id"])
    assert record["state"] == "FAILURE" and record["status"] == f"Cancelled: {answer.json()['message']}"
    assert record["cancelled"] is not None and record["current"] == 4 * MIB
    assert image_of(ceph_cluster, name) == before
    assert zk_client.exists(upload_hold(POOL, name)) is None  # a cancelled upload holds its volume no longer

    # the daemon killed after the first piece: its restart rolls the volume back and ends the record
    killed: list = []

    def killed_after_one_piece() -> Iterator[bytes]:
        yield b"\x79" * (4 * MIB)
        killed.append(written())
        up.process.kill()
        up.process.wait()
        yield b"\x7a" * (4 * MIB)
    with contextlib.suppress(requests.ConnectionError):
        upload(up, name, "raw", data=killed_after_one_piece())
    assert image_of(ceph_cluster, name)[0] != before[0]  # the first piece is in, over a snapshot
    up.process = None
    up.start()
    record = ended(up, killed[0]["id"])
    assert (record["state"], record["status"]) == (
        "FAILURE", f"Interrupted: the API daemon that ran it stopped; volume {POOL}/{name} was rolled back to what "
                   "it held before the upload")
    assert image_of(ceph_cluster, name) == before
    # the killed daemon's hold, left to its ZooKeeper session until that expires, was taken over by its restart
    # (which rolled the volume back under it) and is gone
    assert zk_client.exists(upload_hold(POOL, name)) is None
    assert upload(up, name, "raw", data=b"\x7b" * MIB).status_code == 200


# -- the volume held for the whole upload ------------------------------------------------------------------


class Paced:
    """A chunked body the test holds open: 4 MiB, then 1 MiB each time a third of ``BODY_TIMEOUT`` passes (within
    the daemon's wait for the next piece) until ``finish`` is set, which ends it. ``sent``: every byte, in order.
    A body that would pass the volume's size sends nothing more, and the daemon's 408 fails the test."""

    def __init__(self) -> None:
        self.finish = threading.Event()
        self.sent = bytearray()

    def __iter__(self) -> Iterator[bytes]:
        piece = os.urandom(4 * MIB)
        self.sent += piece
        yield piece
        while not self.finish.wait(BODY_TIMEOUT / 3):
            if len(self.sent) + MIB > SIZE:
                self.finish.wait(settle_timeout())
                return
            piece = os.urandom(MIB)
            self.sent += piece
            yield piece

    def digest(self) -> str:
        """The volume's expected sha256 once the body is written: the rest of the volume stays zero."""
        return hashlib.sha256(bytes(self.sent) + bytes(SIZE - len(self.sent))).hexdigest()


def in_the_background(daemon, name: str, body: Paced) -> Iterator:
    """The paced upload on a thread of its own (a session of its own too); its answer checked against the
    daemon's OpenAPI document like every other."""
    def send() -> requests.Response:
        answer = requests.post(daemon.url(f"/storage/ceph/volume/{POOL}/{name}/upload"),
                               params={"image_format": "raw"}, data=iter(body), timeout=REQUEST_TIMEOUT)
        daemon.contract().check("POST", urlsplit(answer.request.url).path, answer.status_code,
                                answer.headers.get("Content-Type"), answer.content)
        return answer
    return ThreadPoolExecutor(max_workers=1).submit(send)


def hold_of(zk, name: str) -> dict | None:
    found = zk.exists(upload_hold(POOL, name))
    return None if found is None else json.loads(zk.get(upload_hold(POOL, name))[0])


def busy(name: str, task_id: str, doing: str) -> dict:
    """The 409 of anything that would conflict with the upload running as task ``task_id``."""
    return {"message": f"ERROR: Volume '{name}' in pool '{POOL}' is being written by an upload running now (task "
                       f"{task_id}: GET /tasks/{task_id}); wait for it to end, or cancel it (DELETE /tasks/{task_id}), "
                       f"before {doing}"}


@pytest.fixture(scope="module")
def second(up, daemon_factory, ceph_config):
    """Another API daemon of the same cluster, configured as ``up``."""
    daemon = daemon_factory(upload_config(ceph_config))
    yield daemon
    daemon.stop()


def test_an_upload_holds_its_volume_on_every_daemon_until_it_ends(up, second, daemon_factory, ceph_cluster,
                                                                    zk_client):
    """The upload's checks (no running VM, no lock) held only when it began: a VM started two seconds later ran
    on the disk being written, and two uploads at once mixed their data. Now, while an upload streams, through
    either daemon: a second upload, starting, migrating (which starts it) or restarting with a new XML the VM
    whose disk it is, rolling the volume or the VM back, resizing, renaming or removing the volume are 409,
    naming the upload's task, and change nothing; the upload completes with its own bytes. Once it ended, an
    upload works again, and the VM starts."""
    name = volume(up, "held")
    with simulated(daemon_factory, up, {"plugins": {"disabled": ["ceph"]}}):
        defined = up.post("/vm", params={"node": "pvchv1"}, data={"xml": vm_xml("holder", UUID, (f"{POOL}/{name}",))})
        assert defined.status_code == 200, defined.text
        assert up.post(f"/storage/ceph/snapshot/{POOL}/{name}/before").status_code == 200
        assert up.post("/vm/holder/snapshot", params={"snapshot_name": "vmbefore"}).status_code == 200
        state_key = f"/domains/{UUID}/state"
        node_before = zk_client.get(f"/domains/{UUID}/node")[0]

        body = Paced()
        answer = in_the_background(up, name, body)
        hold = wait_until(lambda: (hold_of(zk_client, name) or {}).get("task_id") and hold_of(zk_client, name),
                          message="the upload's hold naming its task")
        task = hold["task_id"]
        assert hold["worker"].startswith("api@")

        refusals = [
            (up, "POST", f"/storage/ceph/volume/{POOL}/{name}/upload", {"image_format": "raw"}, b"\x01" * MIB,
             "uploading an image to it"),
            (second, "POST", f"/storage/ceph/volume/{POOL}/{name}/upload", {"image_format": "raw"}, b"\x02" * MIB,
             "uploading an image to it"),
            (up, "POST", "/vm/holder/state", {"state": "start"}, None, "starting VM 'holder'"),
            (second, "POST", "/vm/holder/state", {"state": "start", "wait": "true"}, None, "starting VM 'holder'"),
            (up, "POST", "/vm/holder/node", {"action": "migrate", "node": "pvchv2"}, None,
             "starting VM 'holder' on node 'pvchv2'"),
            (up, "PUT", "/vm/holder", {"restart": "true"}, {"xml": vm_xml("holder", UUID, (f"{POOL}/{name}",))},
             "restarting VM 'holder'"),
            (up, "POST", f"/storage/ceph/snapshot/{POOL}/{name}/before/rollback", {}, None, "rolling it back"),
            (second, "POST", f"/storage/ceph/snapshot/{POOL}/{name}/before/rollback", {}, None, "rolling it back"),
            (up, "POST", "/vm/holder/snapshot/rollback", {"snapshot_name": "vmbefore"}, None,
             "rolling VM 'holder' back"),
            (up, "PUT", f"/storage/ceph/volume/{POOL}/{name}", {"size": "64M"}, None, "resizing it"),
            (up, "PUT", f"/storage/ceph/volume/{POOL}/{name}", {"new_name": "moved"}, None, "renaming it"),
            (up, "DELETE", f"/storage/ceph/volume/{POOL}/{name}", {}, None, "removing it"),
        ]
        for daemon, method, path, params, data, doing in refusals:
            refusal = daemon.request(method, path, params=params, data=data)
            assert (refusal.status_code, refusal.json()) == (409, busy(name, task, doing)), (daemon.port, path)
            assert zk_client.get(state_key)[0] == b"stop"  # nothing started the VM
            assert hold_of(zk_client, name)["task_id"] == task  # nor did a refused upload take the hold away
        assert zk_client.get(f"/domains/{UUID}/node")[0] == node_before
        assert up.get(f"/storage/ceph/volume/{POOL}/{name}").json()["stats"]["size"] == "32M"

        body.finish.set()
        done = answer.result(timeout=settle_timeout())
        assert done.status_code == 200 and done.headers["X-Task-Id"] == task, done.text
        assert image_of(ceph_cluster, name)[0] == body.digest()
        assert sorted(image_of(ceph_cluster, name)[2]) == ["before", "vmbefore"]  # the upload's own snapshot went
        assert zk_client.exists(upload_hold(POOL, name)) is None

        # the volume is free again: an upload through the other daemon, then the VM starts and runs
        again = upload(second, name, "raw", data=b"\x03" * MIB)
        assert again.status_code == 200, again.text
        assert zk_client.exists(upload_hold(POOL, name)) is None
        started = up.post("/vm/holder/state", params={"state": "start", "wait": "true"})
        assert started.status_code == 200, started.text
        assert zk_client.get(state_key)[0] == b"start"
        # and now an upload is refused for the running VM, as before, its hold gone with the refusal
        refusal = upload(up, name, "raw", data=b"\x04" * MIB)
        assert refusal.status_code == 409 and "is a disk of running VM(s) holder" in refusal.json()["message"]
        assert zk_client.exists(upload_hold(POOL, name)) is None
        stopped = up.post("/vm/holder/state", params={"state": "stop", "wait": "true"})
        assert stopped.status_code == 200, stopped.text
    assert image_of(ceph_cluster, name)[0] == hashlib.sha256(
        b"\x03" * MIB + bytes(body.sent[MIB:]) + bytes(SIZE - len(body.sent))).hexdigest()


def test_an_encoded_body_is_refused_and_the_volume_kept(up, ceph_cluster, zk_client):
    """A body sent with Content-Encoding: gzip was written into the volume as the compressed bytes, and
    answered 200. The body is never decoded: 415 saying so, the volume as it was; identity is no encoding."""
    name = volume(up, "encoded")
    assert upload(up, name, "raw", data=b"\xab" * SIZE).status_code == 200
    before = image_of(ceph_cluster, name)
    for encoding in ("gzip", "identity, gzip", "br"):
        answer = upload(up, name, "raw", data=gzip.compress(b"\x01" * MIB), headers={"Content-Encoding": encoding})
        assert answer.status_code == 415, answer.text
        assert answer.json() == {"message": f"Content-Encoding: {encoding}: expected the data itself, not encoded (no "
                                            "Content-Encoding, or identity): a streamed body (a disk image) is "
                                            "written as it arrives and never decoded; send the image itself, "
                                            "decompressed (a compressed image format such as qcow2 is fine)"}
        assert image_of(ceph_cluster, name) == before
        assert zk_client.exists(upload_hold(POOL, name)) is None
    done = upload(up, name, "raw", data=b"\x01" * MIB, headers={"Content-Encoding": "identity"})
    assert done.status_code == 200, done.text
    assert image_of(ceph_cluster, name)[0] == hashlib.sha256(b"\x01" * MIB + b"\xab" * (SIZE - MIB)).hexdigest()


def test_the_hold_goes_with_every_end_of_an_upload(up, ceph_cluster, zk_client):
    """Success, a refusal after the hold was taken (a damaged image), a cut body, a cancel: the volume is held
    no longer afterwards, and the next upload is not refused for it."""
    name = volume(up, "ends")
    key = upload_hold(POOL, name)
    assert upload(up, name, "raw", data=b"\x11" * MIB).status_code == 200
    assert zk_client.exists(key) is None
    refused(upload(up, name, "qcow2", data=os.urandom(MIB)), 400, "qemu-img could not read it as qcow2")
    assert zk_client.exists(key) is None

    def longer() -> Iterator[bytes]:
        for _ in range(SIZE // MIB):
            yield b"\x5a" * MIB
        yield b"tail"
    refused(upload(up, name, "raw", data=longer()), 400, "got more; grow the volume first")
    assert zk_client.exists(key) is None

    def cancelled() -> Iterator[bytes]:
        yield b"\x77" * (4 * MIB)
        task = wait_until(lambda: (hold_of(zk_client, name) or {}).get("task_id"),
                          message="the upload's hold naming its task")
        wait_until(lambda: up.get(f"/tasks/{task}").json()["current"] >= 4 * MIB, message="the first piece written")
        assert up.delete(f"/tasks/{task}").status_code == 202
        yield b"\x78" * (4 * MIB)
    answer = upload(up, name, "raw", data=cancelled())
    assert answer.status_code == 409 and "ERROR: Cancelled the upload" in answer.json()["message"], answer.text
    assert zk_client.exists(key) is None
    assert image_of(ceph_cluster, name)[0] == hashlib.sha256(b"\x11" * MIB + bytes(SIZE - MIB)).hexdigest()
