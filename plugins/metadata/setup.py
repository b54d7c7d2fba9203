"""Distribution pvc-plugin-metadata: the EC2-style metadata API that gives booting VMs their userdata."""

import runpy
from pathlib import Path

from setuptools import setup

# Version and pvc-core range from the core of this tree (pvc_core/version.py, README "Installing as a service").
CORE = runpy.run_path(str(Path(__file__).resolve().parents[2] / "pvc_core" / "version.py"))

setup(
    name="pvc-plugin-metadata",
    version=CORE["VERSION"],
    description="PVC API plugin: the metadata API for cloud-init (instance id, name, profile, user-data)",
    packages=["pvc_metadata"],
    python_requires=">=3.11",
    install_requires=[CORE["core_requirement"]()],
    entry_points={"pvc.plugins": ["metadata = pvc_metadata.plugin"]},
)
