"""A plugin built for another core is refused at load time, naming the plugin, its range and the core's version.

The range is the plugin distribution's ``Requires-Dist: pvc-core`` (README
"Installing as a service"); the loader reads it before importing the plugin.
"""

from __future__ import annotations

from packaging.requirements import Requirement

from conftest import installed, run_pvcapid, write_config
from pvc_core import __version__
from pvc_core.compat import core_mismatch
from pvc_core.plugins import installed_plugins
from pvc_core.version import core_requirement

SHIPPED = {f"pvc-plugin-{name}" for name in ("node", "vm", "network", "ceph", "provisioner", "metadata", "simnode")}
SETUP = '''
from setuptools import setup

setup(name="pvc-plugin-future", version="2.0.0", packages=["pvc_future"],
      install_requires=["pvc-core{wanted}"], entry_points={{"pvc.plugins": ["future = pvc_future.plugin"]}})
'''


def test_plugin_for_another_core_is_refused_before_import(tmp_path, daemon_factory):
    major = int(__version__.split(".")[0])
    wanted = f">={major + 1}.0,<{major + 2}"  # the next major release of the core: never this one
    source = tmp_path / "pvc-plugin-future"
    (source / "pvc_future").mkdir(parents=True)
    (source / "pvc_future" / "__init__.py").write_text("")
    (source / "pvc_future" / "plugin.py").write_text('raise RuntimeError("imported although refused")\n')
    (source / "setup.py").write_text(SETUP.format(wanted=wanted))
    daemon = daemon_factory(start=False)
    with installed(source, tmp_path / "site"):
        expected = (f"ERROR: Failed to load plugins: plugin 'future' (pvc-plugin-future 2.0.0) requires "
                    f"pvc-core{wanted}, but this core is pvc-core {__version__}")
        for args in (["--config", str(daemon.config_path)], ["--check-config", "--config", str(daemon.config_path)]):
            result = run_pvcapid(*args)
            assert (result.returncode, result.stderr.strip()) == (1, expected)
        # disabling it is the operator's way out, as for a plugin that fails to import
        write_config(daemon.config_path, {**daemon.config, "plugins": {"disabled": ["future"]}})
        assert run_pvcapid("--check-config", "--config", str(daemon.config_path)).returncode == 0

    # every shipped plugin declares the range of this core, which accepts it and refuses the next major release
    expected = Requirement(core_requirement()).specifier
    shipped = {name: entry.dist for name, entry in installed_plugins().items()
               if entry.dist.metadata["Name"] in SHIPPED}
    assert sorted(distribution.metadata["Name"] for distribution in shipped.values()) == sorted(SHIPPED)
    for name, distribution in shipped.items():
        ranges = [Requirement(line).specifier for line in distribution.requires or []
                  if Requirement(line).name == "pvc-core"]
        assert ranges == [expected], (name, distribution.requires)
        assert core_mismatch(name, distribution) is None
        assert core_mismatch(name, distribution, f"{major + 1}.0.0") == (
            f"plugin {name!r} ({distribution.metadata['Name']} {distribution.version}) requires "
            f"{core_requirement()}, but this core is pvc-core {major + 1}.0.0")
