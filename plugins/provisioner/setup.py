"""Distribution pvc-plugin-provisioner: templates, profiles and VM creation through Huey."""

from setuptools import setup

setup(
    name="pvc-plugin-provisioner",
    version="0.6.100",
    description="PVC API plugin: provisioner templates, scripts, profiles and the VM creation task",
    packages=["pvc_provisioner"],
    package_data={"pvc_provisioner": ["examples/*"]},
    python_requires=">=3.11",
    install_requires=["pvc-core"],
    entry_points={"pvc.plugins": ["provisioner = pvc_provisioner.plugin"]},
)
