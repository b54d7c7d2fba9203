"""A plugin distribution whose module fails to import: the daemon must refuse to start."""

from setuptools import setup

setup(
    name="pvc-plugin-broken",
    version="0.0.1",
    packages=["pvc_broken"],
    entry_points={"pvc.plugins": ["broken = pvc_broken.plugin"]},
)
