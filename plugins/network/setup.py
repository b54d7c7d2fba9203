"""Distribution pvc-plugin-network: virtual networks, DHCP reservations and firewall ACLs."""

from setuptools import setup

setup(
    name="pvc-plugin-network",
    version="0.6.100",
    description="PVC API plugin: client networks, DHCP leases/reservations, firewall ACLs",
    packages=["pvc_network"],
    python_requires=">=3.11",
    install_requires=["pvc-core"],
    entry_points={"pvc.plugins": ["network = pvc_network.plugin"]},
)
