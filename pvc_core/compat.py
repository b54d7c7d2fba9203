"""Whether an installed plugin was built for this core: its ``Requires-Dist: pvc-core`` range.

Every plugin of this tree declares the range ``pvc_core.version.core_requirement``
gives (``pvc-core>=0.6,<1``); a third-party plugin declares its own. The loader
asks before importing a plugin, so one built for another core is refused with a
message naming the plugin, the range and this core's version, rather than
failing later on a hook or an import that changed.
"""

from __future__ import annotations

import importlib.metadata

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .version import VERSION

CORE_DISTRIBUTION = "pvc-core"


def required_core(distribution: importlib.metadata.Distribution) -> list[Requirement]:
    """The distribution's requirements on pvc-core that apply here (markers evaluated, no extras)."""
    found = []
    for line in distribution.requires or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue  # pip would not have installed it; nothing of ours to judge
        if canonicalize_name(requirement.name) != CORE_DISTRIBUTION:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        found.append(requirement)
    return found


def readable(requirement: Requirement) -> str:
    """The range lower bound first (``>=1.0,<2``; metadata stores it sorted as text, ``<2,>=1.0``)."""
    return ",".join(sorted((str(spec) for spec in requirement.specifier), key=lambda spec: spec.startswith("<")))


def core_mismatch(plugin: str, distribution: importlib.metadata.Distribution | None,
                  core_version: str = VERSION) -> str | None:
    """Why ``plugin`` (from ``distribution``) cannot run on ``core_version``, or None when it can.

    A plugin that names pvc-core without a range, or not at all, is taken at
    its word: it runs on any core.
    """
    if distribution is None:
        return None
    try:
        version = Version(core_version)
    except InvalidVersion:
        return None
    for requirement in required_core(distribution):
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            name = distribution.metadata["Name"]
            return (f"plugin {plugin!r} ({name} {distribution.version}) requires "
                    f"{CORE_DISTRIBUTION}{readable(requirement)}, but this core is {CORE_DISTRIBUTION} {core_version}")
    return None
