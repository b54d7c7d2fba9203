"""Distribution pvc-core: the pvcapid daemon core (config, server, routing, plugins)."""

import runpy
from pathlib import Path

from setuptools import find_packages, setup

# The version is written once, in pvc_core/version.py (read, not imported: pvc_core needs its dependencies).
VERSION = runpy.run_path(str(Path(__file__).resolve().parent / "pvc_core" / "version.py"))["VERSION"]

setup(
    name="pvc-core",
    version=VERSION,
    description="PVC cluster API daemon (v0.6 compatible), plugin core",
    packages=find_packages(include=["pvc_core", "pvc_core.*"]),
    package_data={"pvc_core": ["static/*"]},
    python_requires=">=3.11",
    install_requires=[
        "cherrypy>=18.8",
        "kazoo>=2.9",
        "pluggy>=1.3",
        "stevedore>=5.0",
        "huey>=2.5",
        "peewee>=3.16",
        "psycopg2-binary>=2.9",
        "redis>=4.5",
        "pyyaml>=6.0",
        "prometheus_client>=0.17",
        "packaging>=22",
        "regex>=2022.1",
    ],
    entry_points={
        "console_scripts": [
            "pvcapid = pvc_core.cli:main",
            "pvcapid-embedded = pvc_core.embedded:main",
        ],
    },
)
