"""Distribution pvc-plugin-provisioner: templates, profiles and VM creation through Huey."""

import runpy
from pathlib import Path

from setuptools import setup

# Version and pvc-core range from the core of this tree (pvc_core/version.py, README "Installing as a service").
CORE = runpy.run_path(str(Path(__file__).resolve().parents[2] / "pvc_core" / "version.py"))

setup(
    name="pvc-plugin-provisioner",
    version=CORE["VERSION"],
    description="PVC API plugin: provisioner templates, scripts, profiles and the VM creation task",
    packages=["pvc_provisioner"],
    package_data={"pvc_provisioner": ["examples/*"]},
    python_requires=">=3.11",
    install_requires=[CORE["core_requirement"]()],
    entry_points={"pvc.plugins": ["provisioner = pvc_provisioner.plugin"]},
)
