"""A request body handed to its handler as it arrives (``Route.stream_body``): a disk image of many GB.

Every other body is read whole before the handler runs (``api.max_body_size``
bounds it); an image upload must instead go to its destination piece by
piece, so that the daemon's memory stays flat whatever the image's size. The
body is a plain stream (``application/octet-stream``, or any other type) or,
as PVC 1.x's CLI sends it, ``multipart/form-data`` with one part named
``file``; ``pieces`` gives the data in pieces of one size either way.

Each piece must arrive within ``api.body_timeout`` (a client that stalls gets
408, as with any body); the handler bounds the total (the volume's size). A
body not read to its end when the answer is sent closes the connection:
cheroot would parse its rest as the next request.

A body sent with a ``Content-Encoding`` other than ``identity`` (gzip, as
``curl --compressed`` may send it) is refused with 415 before its handler runs:
the body is handed over as it arrives, never decoded, so an image would be
written as its compressed bytes (and was, answered 200).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from . import connections
from .body import BodyUnreadable, _BodyReader
from .errors import ApiError

READ_BYTES = 1024 * 1024  # one socket read of a piece
HEADER_LIMIT = 64 * 1024  # the multipart preamble and part headers
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_NAME = re.compile(rb'name="([^"]*)"', re.IGNORECASE)


class StreamedBody:
    """The body of one request, read by its handler (possibly in a worker thread) until it ends."""

    def __init__(self, request: Any):
        self.clock = connections.body_clock()
        length = request.headers.get("Content-Length")
        self.length = int(length) if length is not None else None  # None: chunked
        self.content_type = request.headers.get("Content-Type", "application/octet-stream")
        self.encoding = request.headers.get("Content-Encoding", "").strip()
        self._reader = _BodyReader(request.body.fp, length, self.clock)
        self.received = 0
        self.ended = False
        self._answered = False

    def require_unencoded(self) -> None:
        """415 for a body with a content coding other than ``identity``: what is read is what is written."""
        codings = [coding.strip().lower() for coding in self.encoding.split(",") if coding.strip()]
        if any(coding != "identity" for coding in codings):
            raise ApiError(f"Content-Encoding: {self.encoding}: expected the data itself, not encoded (no "
                           "Content-Encoding, or identity): a streamed body (a disk image) is written as it arrives "
                           "and never decoded; send the image itself, decompressed (a compressed image format such "
                           "as qcow2 is fine)", 415, headers={"Connection": "close"})

    def read(self, size: int = READ_BYTES) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end of the body."""
        if self._answered:
            raise BodyUnreadable("Request body: the request was answered before its body was read")
        if self.ended:
            return b""
        if self.clock is not None:
            connections.renew_body_deadline(self.clock)
        data = self._reader.read(size if self.length is None else min(size, self.length - self.received))
        if not data and self.length is not None and self.received < self.length and size:
            # cheroot answers the end of a connection closed early (the client's half-close, the daemon's
            # stop) as the end of the body: taken for the whole, a cut upload would be written as complete
            raise BodyUnreadable(f"Request body: expected the {self.length} bytes of its Content-Length, got "
                                 f"{self.received} before the connection closed (was the upload cut short?)")
        if not data:
            self.ended = True
        self.received += len(data)
        return data

    def finish(self) -> None:
        """The answer is being sent: no more reads; an unread rest closes the connection."""
        self._answered = True
        if self.clock is not None:
            self.clock.deadline = None
        if not self.ended and self.length != self.received:
            connections.close_connection()

    def multipart(self) -> bool:
        return self.content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"

    def image_length(self) -> int | None:
        """The image's size as the request declares it: its Content-Length, unless chunked or multipart (whose
        framing the length counts too)."""
        return None if self.length is None or self.multipart() else self.length

    def pieces(self, size: int) -> Iterator[bytes]:
        """The data (the ``file`` part of a multipart body) in pieces of ``size`` bytes, the last shorter."""
        buffer = bytearray()
        for data in (self._file_part() if self.multipart() else self._plain()):
            buffer += data
            while len(buffer) >= size:
                yield bytes(buffer[:size])
                del buffer[:size]
        if buffer:
            yield bytes(buffer)

    def _plain(self) -> Iterator[bytes]:
        while data := self.read():
            yield data

    def _file_part(self) -> Iterator[bytes]:
        """The content of the part named ``file``, which must come first (PVC 1.x's CLI sends only it)."""
        match = _BOUNDARY.search(self.content_type)
        if match is None:
            raise ApiError("Content-Type: expected multipart/form-data with a boundary parameter", 400)
        opening = b"--" + match.group(1).encode("latin-1")
        buffer = bytearray()
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            data = self.read(HEADER_LIMIT)
            if not data or len(buffer) > HEADER_LIMIT:
                raise ApiError("Request body: expected a multipart/form-data part named 'file' holding the image",
                               400)
            buffer += data
        head = bytes(buffer[:end])
        del buffer[:end + 4]
        start = head.find(opening + b"\r\n")
        name = _NAME.search(head[start:]) if start >= 0 else None
        if name is None or name.group(1) != b"file":
            shown = name.group(1).decode("latin-1") if name else "none"
            raise ApiError(f"Request body: expected the image in a multipart/form-data part named 'file' "
                           f"(as PVC 1.x's CLI sends it), got a part named {shown!r} first", 400)
        delimiter = b"\r\n" + opening
        keep = len(delimiter) - 1
        while True:
            index = buffer.find(delimiter)
            if index >= 0:
                if index:
                    yield bytes(buffer[:index])
                self._skip_epilogue(len(buffer) - index)
                return
            if len(buffer) > keep:
                yield bytes(buffer[:-keep])
                del buffer[:-keep]
            data = self.read()
            if not data:
                raise ApiError("Request body: the multipart/form-data part 'file' ends without its closing "
                               "boundary (was the upload cut short?)", 400)
            buffer += data

    def _skip_epilogue(self, already: int) -> None:
        """Read the closing boundary and what little may follow it; more (another part) is left unread."""
        while already < HEADER_LIMIT:
            data = self.read(HEADER_LIMIT)
            if not data:
                return
            already += len(data)
