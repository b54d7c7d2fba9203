"""Distribution pvc-plugin-network: virtual networks, DHCP reservations and firewall ACLs."""

import runpy
from pathlib import Path

from setuptools import setup

# Version and pvc-core range from the core of this tree (pvc_core/version.py, README "Installing as a service").
CORE = runpy.run_path(str(Path(__file__).resolve().parents[2] / "pvc_core" / "version.py"))

setup(
    name="pvc-plugin-network",
    version=CORE["VERSION"],
    description="PVC API plugin: client networks, DHCP leases/reservations, firewall ACLs",
    packages=["pvc_network"],
    python_requires=">=3.11",
    install_requires=[CORE["core_requirement"]()],
    entry_points={"pvc.plugins": ["network = pvc_network.plugin"]},
)
