"""Distribution pvc-plugin-vm: the /vm endpoints."""

from setuptools import setup

setup(
    name="pvc-plugin-vm",
    version="0.6.100",
    description="PVC API plugin: virtual machines (define, modify, state, migrate, metadata, console)",
    packages=["pvc_vm"],
    python_requires=">=3.11",
    install_requires=["pvc-core", "lxml>=4.9", "libvirt-python>=9.0"],
    entry_points={"pvc.plugins": ["vm = pvc_vm.plugin"]},
)
