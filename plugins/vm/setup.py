"""Distribution pvc-plugin-vm: the /vm endpoints."""

import runpy
from pathlib import Path

from setuptools import setup

# Version and pvc-core range from the core of this tree (pvc_core/version.py, README "Installing as a service").
CORE = runpy.run_path(str(Path(__file__).resolve().parents[2] / "pvc_core" / "version.py"))

setup(
    name="pvc-plugin-vm",
    version=CORE["VERSION"],
    description="PVC API plugin: virtual machines (define, modify, state, migrate, metadata, console)",
    packages=["pvc_vm"],
    python_requires=">=3.11",
    install_requires=[CORE["core_requirement"](), "lxml>=4.9", "libvirt-python>=9.0"],
    entry_points={"pvc.plugins": ["vm = pvc_vm.plugin"]},
)
