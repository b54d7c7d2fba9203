"""Distribution pvc-plugin-metadata: the EC2-style metadata API that gives booting VMs their userdata."""

from setuptools import setup

setup(
    name="pvc-plugin-metadata",
    version="0.6.100",
    description="PVC API plugin: the metadata API for cloud-init (instance id, name, profile, user-data)",
    packages=["pvc_metadata"],
    python_requires=">=3.11",
    install_requires=["pvc-core"],
    entry_points={"pvc.plugins": ["metadata = pvc_metadata.plugin"]},
)
