"""A tiny third-party plugin distribution: the test suite pip-installs it to prove the plugin API."""

from setuptools import setup

setup(
    name="pvc-plugin-example",
    version="1.2.3",
    packages=["pvc_example"],
    install_requires=["pvc-core>=0.6,<1"],  # the core releases this plugin is written for (README "Writing a plugin")
    entry_points={"pvc.plugins": [
        "example = pvc_example.plugin",
        "example_dependent = pvc_example.dependent",
    ]},
)
