"""The hook contract (pvc_core/hookspecs.py): every hook documented, implemented and exercised.

``hook_problems`` is the rule (after datasette's tests of its hooks): a hook
specification must have a docstring, a row in README.md's hook table
(section "Writing a plugin") with its exact argument list, an
implementation in a shipped plugin or the example plugin
(tests/plugins/pvc-plugin-example), and a ``test_hook_<name>`` below that
observes its effect through a running daemon. The README must not document
a hook that does not exist. Adding a hook without all of that fails
``test_every_hook_is_documented_implemented_and_tested``;
``test_the_rule_catches_what_it_must`` proves the rule on a made-up hookspec
module.
"""

from __future__ import annotations

import inspect
import re
import signal
import subprocess
import sys
import types
from pathlib import Path

import pluggy
import pytest
import requests
from test_tasks import start_consumer, stop_consumer, wait_task

from conftest import BIN, REQUEST_TIMEOUT, START_TIMEOUT, run_pvcapid, wait_until, write_config
from pvc_core import hookspecs
from pvc_core.plugins import PluginHost, installed_plugins
from pvc_core.zkserver import free_port

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "Writing a plugin"
# tests/plugins/pvc-plugin-broken fails to import on purpose (and is installed only for its own test)
NOT_LOADABLE = {"broken"}


# -- the rule -------------------------------------------------------------------------------

def hookspecs_of(module: types.ModuleType, project: str = "pvc") -> dict[str, tuple[tuple[str, ...], str]]:
    """``{name: (argument names, docstring)}`` of every function marked as a hook specification."""
    marker = f"{project}_spec"
    return {name: (tuple(inspect.signature(function).parameters), inspect.getdoc(function) or "")
            for name, function in inspect.getmembers(module, inspect.isfunction)
            if getattr(function, marker, None) is not None}


def documented_hooks(readme: str, section: str = SECTION) -> dict[str, tuple[tuple[str, ...], str]]:
    """``{name: (argument names, purpose)}`` from the hook table of the README's ``section``.

    A row's first cell holds one or more ``name(arguments)`` in backticks;
    its second cell is the purpose.
    """
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no section '## {section}'"
    out = {}
    for row in match.group(1).splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")] if row.startswith("|") else []
        if len(cells) < 2:
            continue
        for name, arguments in re.findall(r"`(\w+)\(([^)]*)\)`", cells[0]):
            out[name] = (tuple(arg.strip() for arg in arguments.split(",") if arg.strip()), cells[1])
    return out


def hook_problems(specs: dict[str, tuple[tuple[str, ...], str]], documented: dict[str, tuple[tuple[str, ...], str]],
                  implemented: dict[str, list[str]], tested: set[str]) -> list[str]:
    """Everything wrong with the hook contract; empty when every hook is documented, implemented and tested."""
    problems = []
    for name, (arguments, docstring) in sorted(specs.items()):
        signature = f"{name}({', '.join(arguments)})"
        if not docstring.strip():
            problems.append(f"{name}: no docstring in its hook specification")
        if name not in documented:
            problems.append(f"{name}: not in README.md's hook table (section '{SECTION}') as `{signature}`")
        else:
            listed, purpose = documented[name]
            if listed != arguments:
                problems.append(f"{name}: README.md documents `{name}({', '.join(listed)})`, the spec is "
                                f"`{signature}`")
            if not purpose:
                problems.append(f"{name}: README.md's hook table gives no purpose")
        if not implemented.get(name):
            problems.append(f"{name}: no shipped plugin and not the example plugin implements it")
        if name not in tested:
            problems.append(f"{name}: no test_hook_{name} in tests/test_hookspecs.py")
    problems.extend(f"{name}: README.md documents it, but it is no hook specification"
                    for name in sorted(set(documented) - set(specs)))
    return problems


def implementations() -> dict[str, list[str]]:
    """``{hook: [plugins implementing it]}`` over every installed plugin, loaded as the daemon loads them.

    Registering them with pluggy also checks each implementation's arguments
    against its spec; ``check_pending`` fails on an implementation of a hook
    that does not exist (a misspelt hook name would otherwise never be called).
    """
    host = PluginHost()
    names = sorted(set(installed_plugins()) - NOT_LOADABLE)
    host.load(names, explicit=set(names))  # off-by-default ones (simnode) implement hooks too
    host.pm.check_pending()
    return {name: [plugin for plugin, _function, _args in host.implementations(name)]
            for name in hookspecs_of(hookspecs)}


def hooks_with_tests() -> set[str]:
    return {name.removeprefix("test_hook_") for name, value in inspect.getmembers(sys.modules[__name__])
            if name.startswith("test_hook_") and callable(value)}


def test_every_hook_is_documented_implemented_and_tested():
    specs = hookspecs_of(hookspecs)
    assert len(specs) >= 11  # the hooks of pvc_core/hookspecs.py were found at all
    implemented = implementations()
    assert set(implemented["pvc_routes"]) >= {"node", "vm", "network", "ceph", "provisioner", "metadata", "example"}
    problems = hook_problems(specs, documented_hooks(README.read_text()), implemented, hooks_with_tests())
    assert problems == []


def test_the_rule_catches_what_it_must():
    """A made-up hookspec module: its new hook lacks everything, and each lack is reported."""
    mark = pluggy.HookspecMarker("pvc")
    module = types.ModuleType("madeup_hookspecs")

    def pvc_old(runtime):
        """Does the old thing."""

    def pvc_new(runtime, extra):
        pass

    def helper(runtime):
        """Not marked: not a hook."""

    module.pvc_old, module.pvc_new, module.helper = mark(pvc_old), mark(pvc_new), helper
    specs = hookspecs_of(module)
    assert specs == {"pvc_old": (("runtime",), "Does the old thing."), "pvc_new": (("runtime", "extra"), "")}
    readme = ("# x\n\n## Writing a plugin\n\n| hook | purpose |\n|---|---|\n"
              "| `pvc_old(runtime)` | the old thing |\n| `pvc_gone()` | removed long ago |\n\n"
              "## Layout\n\n| `pvc_new(runtime, extra)` | outside the section: does not count |\n")
    documented = documented_hooks(readme)
    assert documented == {"pvc_old": (("runtime",), "the old thing"), "pvc_gone": ((), "removed long ago")}
    assert hook_problems(specs, documented, {"pvc_old": ["example"]}, {"pvc_old"}) == [
        "pvc_new: no docstring in its hook specification",
        "pvc_new: not in README.md's hook table (section 'Writing a plugin') as `pvc_new(runtime, extra)`",
        "pvc_new: no shipped plugin and not the example plugin implements it",
        "pvc_new: no test_hook_pvc_new in tests/test_hookspecs.py",
        "pvc_gone: README.md documents it, but it is no hook specification",
    ]
    # a documented signature that drifted from the spec, and a row without a purpose
    drifted = {"pvc_old": (("runtime", "huey"), ""), "pvc_new": (("runtime", "extra"), "new")}
    assert hook_problems({"pvc_old": specs["pvc_old"]}, drifted, {"pvc_old": ["vm"]}, {"pvc_old"})[:2] == [
        "pvc_old: README.md documents `pvc_old(runtime, huey)`, the spec is `pvc_old(runtime)`",
        "pvc_old: README.md's hook table gives no purpose",
    ]
    assert hook_problems({"pvc_old": specs["pvc_old"]}, documented, {"pvc_old": ["vm"]}, {"pvc_old"}) == [
        "pvc_gone: README.md documents it, but it is no hook specification"]
    assert "pvc_plugin_info" in hooks_with_tests() and "pvc_new" not in hooks_with_tests()


def test_a_new_hook_in_pvc_core_fails_the_check(monkeypatch):
    """The real module, README and plugins, with one hook added as a careless change would add it."""
    def pvc_backup(runtime, target):
        pass

    monkeypatch.setattr(hookspecs, "pvc_backup", hookspecs.hookspec(pvc_backup), raising=False)
    problems = hook_problems(hookspecs_of(hookspecs), documented_hooks(README.read_text()), implementations(),
                             hooks_with_tests())
    assert problems == [
        "pvc_backup: no docstring in its hook specification",
        "pvc_backup: not in README.md's hook table (section 'Writing a plugin') as `pvc_backup(runtime, target)`",
        "pvc_backup: no shipped plugin and not the example plugin implements it",
        "pvc_backup: no test_hook_pvc_backup in tests/test_hookspecs.py",
    ]


# -- each hook, observed through a running daemon with the example plugin ----------------------

@pytest.fixture(scope="module")
def own(daemon_factory):
    """A daemon of its own: its own listener port, greeting and database for the example plugin; metrics on."""
    port = free_port()
    daemon = daemon_factory({"example": {"greeting": "Howdy", "listen_port": str(port)},
                             "metrics": {"enabled": "true"}})
    daemon.example_port = port
    yield daemon
    daemon.stop()


def lifecycle(daemon) -> list[tuple[str, int]]:
    """``(event, pid)`` as the example's pvc_start/pvc_stop recorded them in the daemon's data directory."""
    path = daemon.workdir / "data" / "example-lifecycle"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(event, int(pid.removeprefix("pid="))) for event, pid in (line.split() for line in lines)]


def test_hook_pvc_plugin_info(daemon):
    plugins = {plugin["name"]: plugin for plugin in daemon.get("/plugins").json()}
    assert plugins["example"]["description"] == "Example plugin for the test suite"
    assert plugins["example"]["requires"] == [] and plugins["example"]["optional"] == ["ceph"]
    assert plugins["example_dependent"]["requires"] == ["example"]  # and it loads after example


def test_hook_pvc_config_fields(daemon, own, tmp_path):
    assert daemon.get("/example/hello").json()["message"] == "Hello, world"  # the declared default
    assert own.get("/example/hello").json()["message"] == "Howdy, world"  # the configured value
    config = {**own.config, "example": {"listen_port": "lots"}}  # checked against the declared type
    result = run_pvcapid("--check-config", "--config", str(write_config(tmp_path / "c.yaml", config)))
    assert result.returncode == 1 and "pvc.example.listen_port: expected an integer" in result.stderr


def test_hook_pvc_routes(daemon):
    assert daemon.get("/example/hello", params={"who": "you", "loud": "yes"}).json()["message"] == "HELLO, YOU"
    assert daemon.get("/example/greet").json()["message"] == "Hello, world"  # a declared alias
    routes = {plugin["name"]: plugin["routes"] for plugin in daemon.get("/plugins").json()}["example"]
    assert "POST /api/v1/example/counter" in routes
    assert "/api/v1/example/hello" in daemon.get("/openapi.json").json()["paths"]


def test_hook_pvc_listeners(own):
    # the extra server may start just after the main one
    [answer] = wait_until(lambda: [requests.get(f"http://127.0.0.1:{own.example_port}/whoami",
                                                timeout=REQUEST_TIMEOUT)],
                          ignoring=(requests.RequestException,), message="the example's listener did not answer")
    assert answer.json() == {"listener": "example", "remote": "127.0.0.1"}
    assert own.get("/whoami").status_code == 404  # its route is on its listener only


def test_hook_pvc_services(daemon, own):
    """example_dependent's route calls the service example publishes, on each daemon's own config."""
    assert daemon.get("/example-dependent/shout").json() == {"message": "HELLO"}
    assert own.get("/example-dependent/shout").json() == {"message": "HOWDY"}
    assert {plugin["name"]: plugin["services"] for plugin in daemon.get("/plugins").json()}["example"] == ["example"]


def test_hook_pvc_start(own):
    assert own.get("/example/hello").json()["started"] == ["example"]  # ran in the serving process, once
    assert [event for event, pid in lifecycle(own) if pid == own.process.pid] == ["start"]


def test_hook_pvc_stop(daemon_factory):
    daemon = daemon_factory()
    pid = daemon.process.pid
    assert lifecycle(daemon) == [("start", pid)]
    assert daemon.stop() == 0
    assert lifecycle(daemon) == [("start", pid), ("stop", pid)]


def test_hook_pvc_tasks(own):
    consumer = start_consumer(own, workers=1)
    try:
        task_id = own.post("/example/job", params={"steps": "2"}).json()["task_id"]
        done = wait_task(own, task_id)
        assert (done["name"], done["state"], done["result"]) == ("example.count", "SUCCESS", {"counted": 2})
    finally:
        assert stop_consumer(consumer) == 0, (own.workdir / "consumer.log").read_text()


def test_hook_pvc_db_models(own):
    """The example's model got its table in this daemon's own (new) database."""
    assert own.post("/example/greeting", params={"name": "first"}).json() == {"message": "Added first", "count": 1}
    assert own.post("/example/greeting", params={"name": "second"}).json()["count"] == 2


def test_hook_pvc_status(daemon, clean_zk):
    assert daemon.post("/initialize").status_code == 200
    assert daemon.post("/example/counter", params={"value": "5"}).status_code == 200
    status = daemon.get("/status").json()
    assert status["example_counter"] == 5 and status["health"] == "Optimal"
    assert daemon.post("/example/counter", params={"value": "13"}).status_code == 200
    status = daemon.get("/status").json()
    assert status["example_counter"] == 13 and status["health"] == "Degraded"  # the example's "degraded"


def test_hook_pvc_health(own):
    """The example plugin's probe joins GET /health: 503 naming it while it is down, 200 again after."""
    import os
    marker = os.path.join(own.config["data_dir"], "example-down")

    def example() -> tuple[int, dict]:
        answer = own.get("/health")
        return answer.status_code, answer.json()["checks"]["example"]
    assert example()[1] == {"status": "ok", "message": "reachable"}
    open(marker, "w").close()
    try:
        status, check = wait_until(lambda: (lambda got: got if got[1]["status"] != "ok" else None)(example()),
                                   message="the example's probe to report it down")
        assert status == 503 and check == {"status": "unavailable", "message": "unreachable (ConnectionRefusedError)"}
    finally:
        os.remove(marker)
    wait_until(lambda: example()[1]["status"] == "ok", message="the example's probe to report it up again")


def test_hook_pvc_metrics(own):
    """The example's collector joins GET /metrics: its greeting count moves with the greetings served."""
    from prometheus_client.parser import text_string_to_metric_families

    def hellos() -> float:
        families = text_string_to_metric_families(own.get("/metrics").text)
        return next(sample.value for family in families for sample in family.samples
                    if sample.name == "pvc_example_hellos_total")
    before = hellos()
    for _ in range(3):
        assert own.get("/example/hello").status_code == 200
    assert hellos() == before + 3


def test_hook_pvc_initialize_keys(daemon, clean_zk):
    assert daemon.get("/example/counter").status_code == 404
    assert daemon.post("/initialize").status_code == 200
    assert clean_zk.get("/example_counter")[0] == b"0"
    assert daemon.get("/example/counter").json() == {"counter": 0}


def test_hook_pvc_embedded_options():
    """The ceph and simnode plugins add their options to pvcapid-embedded; the core names neither."""
    result = subprocess.run([str(BIN / "pvcapid-embedded"), "--help"], capture_output=True, text=True,
                            timeout=REQUEST_TIMEOUT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0 and "--no-ceph" in result.stdout and "--nodes N" in result.stdout
    core = (Path(__file__).resolve().parent.parent / "pvc_core" / "embedded.py").read_text()
    assert not [word for word in ("pvc_ceph", "LocalCeph", "--no-ceph", "pvc_simnode", "--nodes") if word in core]


def test_hook_pvc_embedded(tmp_path):
    """An embedded run without Ceph: the simnode part's first configuration includes the simulator, its
    --nodes overrides the count for this run, and the daemon it runs has those simulated nodes."""
    data_dir, port, zk_port = tmp_path / "data", free_port(), free_port()
    log = open(tmp_path / "embedded.log", "wb")
    process = subprocess.Popen([str(BIN / "pvcapid-embedded"), "--data-dir", str(data_dir), "--port", str(port),
                                "--zk-port", str(zk_port), "--no-ceph", "--nodes", "2"], stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        def nodes() -> list[str]:
            assert process.poll() is None, (tmp_path / "embedded.log").read_text()
            found = requests.get(base + "/node", timeout=REQUEST_TIMEOUT).json()
            found = found if isinstance(found, list) else [found]
            return sorted(node["name"] for node in found if node.get("daemon_state") == "run")
        wait_until(lambda: nodes() == ["pvchv1", "pvchv2"], timeout=START_TIMEOUT,
                   ignoring=(requests.RequestException, KeyError, TypeError),
                   message="the embedded run's simulated nodes did not come up")
        assert [node["name"] for node in requests.get(base + "/simnode", timeout=REQUEST_TIMEOUT).json()] == [
            "pvchv1", "pvchv2"]
        config = (data_dir / "pvcapid.yaml").read_text()
        assert "    plugins:\n        include: [simnode]\n    simnode:\n        nodes: 2\n" in config
        assert "ceph:" not in config  # --no-ceph: the ceph part added nothing
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=START_TIMEOUT) == 0


def test_a_misspelt_hook_implementation_stops_the_daemon():
    """pluggy registers an implementation of an unknown hook without complaint; it would never run."""
    import types

    from pvc_core import hookimpl
    from pvc_core.errors import PluginError

    good, misspelt = types.ModuleType("good"), types.ModuleType("misspelt")
    good.pvc_routes = hookimpl(lambda runtime: [])
    misspelt.pvc_route = hookimpl(lambda runtime: [])
    host = PluginHost()
    host.pm.register(good, name="good")
    host.check_hook_names()  # nothing pending: no complaint
    host.pm.register(misspelt, name="misspelt")
    with pytest.raises(PluginError, match="plugin 'misspelt'.*pvc_route"):
        host.check_hook_names()
