"""Running the storage command-line tools the bindings do not cover (the rbd CLI's export/import, qemu-img).

One place maps how such a run fails: a tool missing from the API host or one that does not finish in
time is the host's trouble (503, naming the Debian package); a tool that refuses its input is the
caller's (the error the caller chooses, with the tool's own words).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from pvc_core.errors import ApiError, ServiceUnavailable


def run(command: list[str], timeout: float, what: str, missing: str,
        refused: Callable[[str], ApiError]) -> str:
    """``command``'s standard output; ``what`` completes "could not …", ``missing`` says how to install it."""
    result = finished(command, timeout, what, missing)
    if result.returncode != 0:
        raise refused(result.stderr.strip())
    return result.stdout


def finished(command: list[str], timeout: float, what: str, missing: str) -> subprocess.CompletedProcess:
    """``command`` run to its end, whatever its exit status: for a tool whose exit status is an answer
    (``qemu-img check``: 2 is "corrupt", 3 "leaks only"), which the caller reads; a missing or slow tool is
    503 all the same."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ServiceUnavailable(missing) from None
    except subprocess.TimeoutExpired:
        raise ServiceUnavailable(f"{command[0]} could not {what} within {timeout:.0f} s") from None
