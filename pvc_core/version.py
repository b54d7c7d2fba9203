"""The core's version and the pvc-core range the plugins of this tree accept.

A module without imports on purpose: every ``setup.py`` of the tree reads it
with ``runpy`` (the core's for its version, each plugin's for its version and
its ``Requires-Dist: pvc-core`` range), so the version is written only here.
"""

VERSION = "0.6.100"


def core_requirement(version: str = VERSION) -> str:
    """The requirement a plugin built against ``version`` declares: that minor release or a later one of
    the same major version (``pvc-core>=0.6,<1`` for 0.6.x). The loader refuses a plugin whose range
    excludes the running core (``pvc_core.compat``)."""
    major, minor = version.split(".")[:2]
    return f"pvc-core>={major}.{minor},<{int(major) + 1}"
