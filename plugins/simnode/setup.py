"""Distribution pvc-plugin-simnode: simulated v0.6 node daemons for trying, demos and tests."""

from setuptools import setup

setup(
    name="pvc-plugin-simnode",
    version="0.6.100",
    description="PVC API plugin: simulated node daemons (libvirt test driver; off unless configured)",
    packages=["pvc_simnode"],
    python_requires=">=3.11",
    install_requires=["pvc-core", "kazoo>=2.9", "libvirt-python>=9.0"],
    entry_points={"pvc.plugins": ["simnode = pvc_simnode.plugin"]},
)
