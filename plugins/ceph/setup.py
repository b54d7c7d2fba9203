"""Distribution pvc-plugin-ceph: the /storage/ceph endpoints (librados/librbd from Debian)."""

import runpy
from pathlib import Path

from setuptools import setup

# Version and pvc-core range from the core of this tree (pvc_core/version.py, README "Installing as a service").
CORE = runpy.run_path(str(Path(__file__).resolve().parents[2] / "pvc_core" / "version.py"))

setup(
    name="pvc-plugin-ceph",
    version=CORE["VERSION"],
    description="PVC API plugin: Ceph storage status, statistics collection and the storage service",
    packages=["pvc_ceph"],
    python_requires=">=3.11",
    install_requires=[CORE["core_requirement"]()],
    entry_points={"pvc.plugins": ["ceph = pvc_ceph.plugin"]},
)
