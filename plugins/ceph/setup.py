"""Distribution pvc-plugin-ceph: the /storage/ceph endpoints (librados/librbd from Debian)."""

from setuptools import setup

setup(
    name="pvc-plugin-ceph",
    version="0.6.100",
    description="PVC API plugin: Ceph storage status, statistics collection and the storage service",
    packages=["pvc_ceph"],
    python_requires=">=3.11",
    install_requires=["pvc-core"],
    entry_points={"pvc.plugins": ["ceph = pvc_ceph.plugin"]},
)
