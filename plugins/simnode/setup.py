"""Distribution pvc-plugin-simnode: simulated v0.6 node daemons for trying, demos and tests."""

import runpy
from pathlib import Path

from setuptools import setup

# Version and pvc-core range from the core of this tree (pvc_core/version.py, README "Installing as a service").
CORE = runpy.run_path(str(Path(__file__).resolve().parents[2] / "pvc_core" / "version.py"))

setup(
    name="pvc-plugin-simnode",
    version=CORE["VERSION"],
    description="PVC API plugin: simulated node daemons (libvirt test driver; off unless configured)",
    packages=["pvc_simnode"],
    python_requires=">=3.11",
    install_requires=[CORE["core_requirement"](), "kazoo>=2.9", "libvirt-python>=9.0"],
    entry_points={"pvc.plugins": ["simnode = pvc_simnode.plugin"]},
)
