"""Distribution pvc-plugin-node: the /node endpoints."""

from setuptools import setup

setup(
    name="pvc-plugin-node",
    version="0.6.100",
    description="PVC API plugin: hypervisor nodes (list, states, flush/ready, coordinator role)",
    packages=["pvc_node"],
    python_requires=">=3.11",
    install_requires=["pvc-core"],
    entry_points={"pvc.plugins": ["node = pvc_node.plugin"]},
)
