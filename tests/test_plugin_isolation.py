"""Plugins talk to each other only through published services (DESIGN.md, README "Writing a plugin").

The sources of every plugin package (shipped ones under plugins/, the test
ones under tests/plugins/) are read as ASTs: no plugin may import another
plugin's package (statically or through importlib), and none may name
another plugin's ZooKeeper keys (the roots its schema module declares).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIRS = sorted([*ROOT.glob("plugins/*/"), *ROOT.glob("tests/plugins/*/")])
NOT_SOURCES = {"build"}  # setuptools' copy of a test plugin


def plugin_packages() -> dict[str, Path]:
    """Top-level package name -> directory, for every plugin distribution in the tree."""
    found = {}
    for dist in PLUGIN_DIRS:
        for candidate in sorted(dist.iterdir()):
            if candidate.name not in NOT_SOURCES and (candidate / "__init__.py").is_file():
                found[candidate.name] = candidate
    return found


def sources(package: Path) -> list[Path]:
    return sorted(path for path in package.rglob("*.py") if NOT_SOURCES.isdisjoint(path.parts))


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import, and of importlib/__import__ calls with a literal name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def cross_plugin_imports(own: str, source: str, packages: set[str]) -> list[str]:
    """The imports in ``source`` (a module of package ``own``) of another plugin's package."""
    return [f"line {line}: {module}" for line, module in imported_modules(ast.parse(source))
            if module.split(".")[0] in packages - {own}]


def schema_roots(package: Path) -> list[str]:
    """The absolute ZooKeeper paths a plugin's schema module declares at module level."""
    schema = package / "schema.py"
    if not schema.is_file():
        return []
    return [node.value.value for node in ast.parse(schema.read_text()).body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str) and node.value.value.startswith("/")]


def string_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants (f-string pieces included) that are not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant):
            docstrings.add(id(body[0].value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def foreign_keys(own: str, source: str, roots: dict[str, list[str]]) -> list[str]:
    """Literals in ``source`` that name a ZooKeeper path under another plugin's schema roots."""
    return [f"line {line}: {value!r} is under {other}'s {root}"
            for line, value in string_literals(ast.parse(source))
            for other, paths in roots.items() if other != own
            for root in paths if value == root or value.startswith(root + "/")]


PACKAGES = plugin_packages()
# The simulator plays the v0.6 node daemon: the other party of the ZooKeeper contract, which writes the very
# keys the API plugins only read. It names them in its own schema module and owns none of them, so it is
# exempt from the key rule both ways (never from the import rule).
NODE_DAEMON_SIDE = {"pvc_simnode"}


def test_every_plugin_distribution_is_scanned():
    assert {"pvc_node", "pvc_vm", "pvc_network", "pvc_ceph", "pvc_provisioner", "pvc_metadata",
            "pvc_example"} <= set(PACKAGES)
    assert all(sources(package) for package in PACKAGES.values())


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_plugin_imports_another_plugin(package):
    problems = [f"{path.relative_to(ROOT)} {problem}" for path in sources(PACKAGES[package])
                for problem in cross_plugin_imports(package, path.read_text(), set(PACKAGES))]
    assert problems == [], "use the other plugin's service (runtime.service(name)) instead"


@pytest.mark.parametrize("package", sorted(set(PACKAGES) - NODE_DAEMON_SIDE))
def test_no_plugin_names_another_plugins_zookeeper_keys(package):
    roots = {name: schema_roots(path) for name, path in PACKAGES.items() if name not in NODE_DAEMON_SIDE}
    assert roots["pvc_vm"] and roots["pvc_network"] and roots["pvc_node"]
    problems = [f"{path.relative_to(ROOT)} {problem}" for path in sources(PACKAGES[package])
                for problem in foreign_keys(package, path.read_text(), roots)]
    assert problems == [], "ask the plugin that owns these keys (its service) instead"


def test_the_scanners_find_what_they_must():
    """The checks above, against sources written to break the rule (and ones that keep it)."""
    packages = {"pvc_vm", "pvc_network", "pvc_metadata"}
    bad = ("import pvc_vm\nfrom pvc_network import schema\nfrom pvc_vm.domainxml import info\n"
           "import importlib\nmodule = importlib.import_module('pvc_network.schema')\n"
           "def late():\n    import pvc_vm.service as s\n    return __import__('pvc_vm')\n")
    assert cross_plugin_imports("pvc_metadata", bad, packages) == [
        "line 1: pvc_vm", "line 2: pvc_network", "line 3: pvc_vm.domainxml", "line 5: pvc_network.schema",
        "line 7: pvc_vm.service", "line 8: pvc_vm"]
    good = ("from . import schema\nfrom .caller import identify\nimport pvc_core\nfrom pvc_core.routes import Route\n"
            "import pvc_metadata.plugin\nimport json\n")
    assert cross_plugin_imports("pvc_metadata", good, packages) == []
    roots = {"pvc_vm": ["/domains"], "pvc_network": ["/networks"]}
    keys = ('"""Reads /domains/<uuid> through the vm service."""\n'
            'A = "/domains"\nB = f"/networks/{vni}/dhcp4_leases"\nC = "/domainsX"\nD = "/network/1"\n')
    assert foreign_keys("pvc_metadata", keys, roots) == [
        "line 2: '/domains' is under pvc_vm's /domains", "line 3: '/networks/' is under pvc_network's /networks"]
    assert foreign_keys("pvc_vm", 'A = "/domains/x"\n', roots) == []
