"""Distribution pvc-plugin-node: the /node endpoints."""

import runpy
from pathlib import Path

from setuptools import setup

# Version and pvc-core range from the core of this tree (pvc_core/version.py, README "Installing as a service").
CORE = runpy.run_path(str(Path(__file__).resolve().parents[2] / "pvc_core" / "version.py"))

setup(
    name="pvc-plugin-node",
    version=CORE["VERSION"],
    description="PVC API plugin: hypervisor nodes (list, states, flush/ready, coordinator role)",
    packages=["pvc_node"],
    python_requires=">=3.11",
    install_requires=[CORE["core_requirement"]()],
    entry_points={"pvc.plugins": ["node = pvc_node.plugin"]},
)
