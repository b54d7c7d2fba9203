"""Every hook of pvc_core.hookspecs, implemented the way a real plugin would."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import peewee

from pvc_core import hookimpl
from pvc_core.config import Field, Section
from pvc_core.db import BaseModel
from pvc_core.errors import Conflict, NotFound
from pvc_core.params import BOOLEAN, INTEGER, STRING, Param
from pvc_core.routes import CONFLICT, Route
from pvc_core.shapes import INT, MESSAGE, STR, array, nullable, obj

COUNTER_KEY = "/example_counter"
TASK_NAME = "example.count"
LIFECYCLE_FILE = "example-lifecycle"
STARTED: list[str] = []
HELLOS = [0]  # greetings served by this process (the example's metric)
_HELLOS_LOCK = threading.Lock()
log = logging.getLogger("pvc.example")


class Greeting(BaseModel):
    name = peewee.CharField(unique=True)

    class Meta:
        table_name = "example_greeting"


class ExampleService:
    """What other plugins may call."""

    def __init__(self, runtime: Any):
        self.runtime = runtime
        self.count_task: Any = None

    def greeting(self) -> str:
        return self.runtime.config["example.greeting"]


def hello(ctx: Any, params: dict) -> dict:
    with _HELLOS_LOCK:
        HELLOS[0] += 1
    greeting = ctx.service("example").greeting()
    log.info("greeting %s", params["name"])  # a plugin's line within a request: it carries the request id
    text = f"{greeting}, {params['name']}"
    if params["loud"]:
        text = text.upper()
    return {"message": text, "times": params["times"], "tags": params["tag"], "color": params["color"],
            "started": STARTED}


def get_counter(ctx: Any, params: dict) -> dict:
    value = ctx.runtime.zk.get(COUNTER_KEY)
    if value is None:
        raise NotFound("The example counter does not exist")
    return {"counter": int(value)}


def set_counter(ctx: Any, params: dict) -> dict:
    ctx.runtime.zk.write({COUNTER_KEY: params["value"]})
    return {"message": f"Counter set to {params['value']}"}


def start_job(ctx: Any, params: dict) -> dict:
    runtime = ctx.runtime
    runtime.ensure_schema()
    extra = {"crash": True} if params["crash"] else {}
    record = runtime.tasks.submit(ctx.service("example").count_task, "example", params["steps"], params["fail"],
                                  total=params["steps"], **extra)
    return {"task_id": record.id}


def add_greeting(ctx: Any, params: dict) -> dict:
    ctx.runtime.ensure_schema()
    try:
        Greeting.create(name=params["name"])
    except peewee.IntegrityError:
        raise Conflict(f"A greeting named '{params['name']}' exists already") from None
    return {"message": f"Added {params['name']}", "count": Greeting.select().count()}


def crash(ctx: Any, params: dict) -> dict:
    raise RuntimeError("deliberate bug for the 500 test")


@hookimpl
def pvc_plugin_info() -> dict:
    return {"requires": [], "optional": ["ceph"], "description": "Example plugin for the test suite"}


@hookimpl
def pvc_config_fields() -> Section:
    return Section({"example": Section({
        "greeting": Field("str", default="Hello"),
        "listen_port": Field("int", default=0, help="port of the example's own listener; 0 = none"),
    }, optional=True)})


@hookimpl
def pvc_services(runtime: Any) -> dict:
    return {"example": ExampleService(runtime)}


@hookimpl
def pvc_routes(runtime: Any) -> list:
    own = []
    if runtime.config["example.listen_port"]:
        own = [Route("GET", "/whoami", whoami, auth=False, listener="example", summary="Own listener",
                     returns=obj({"listener": STR, "remote": STR}))]
    return own + [
        Route("GET", "/example/hello", hello, (
            Param("name", STRING, default="world", aliases=("who",), help="whom to greet"),
            Param("times", INTEGER, default=1),
            Param("loud", BOOLEAN, default=False),
            Param("tag", STRING, repeated=True),
            Param("color", STRING, choices=("red", "green")),
        ), summary="Say hello", aliases=("/example/greet",),
            returns=obj({"message": STR, "times": INT, "tags": array(STR), "color": nullable(STR),
                         "started": array(STR)})),
        Route("GET", "/example/counter", get_counter, summary="Read the counter", returns=obj({"counter": INT}),
              responses={404: "The counter does not exist"}),
        Route("POST", "/example/counter", set_counter, (Param("value", INTEGER, required=True),),
              summary="Set the counter", returns=MESSAGE, responses=CONFLICT),
        Route("POST", "/example/job", start_job, (
            Param("steps", INTEGER, default=3, minimum=0, maximum=1000), Param("fail", BOOLEAN, default=False),
            Param("crash", BOOLEAN, default=False, help="raise an exception in the task (Huey logs the failure)")),
            summary="Run a background job", returns=obj({"task_id": STR})),
        Route("GET", "/example/crash", crash, summary="Always fails with an unhandled error", status=500,
              returns=obj({"message": STR, "request_id": STR})),
        Route("POST", "/example/greeting", add_greeting, (Param("name", STRING, required=True),),
              summary="Store a greeting row", returns=obj({"message": STR, "count": INT}), responses=CONFLICT),
    ]


@hookimpl
def pvc_listeners(runtime: Any) -> dict:
    port = runtime.config["example.listen_port"]
    return {"example": ("127.0.0.1", port)} if port else {}


def whoami(ctx: Any, params: dict) -> dict:
    return {"listener": ctx.listener, "remote": ctx.remote_address}


@hookimpl
def pvc_health(runtime: Any) -> list:
    """A dependency the test controls: down while ``<data_dir>/example-down`` exists."""
    from pvc_core.health import Probe
    marker = os.path.join(runtime.config["data_dir"], "example-down")

    def check() -> None:
        if os.path.exists(marker):
            raise ConnectionRefusedError(marker)
    return [Probe("example", check, 1.0, "example's own timeout")]


@hookimpl
def pvc_db_models() -> list:
    return [Greeting]


@hookimpl
def pvc_tasks(huey: Any, runtime: Any) -> None:
    @huey.task(name=TASK_NAME)
    def count(task_id: str, steps: int, fail: bool, crash: bool = False) -> int:
        # One line per execution, for the test that two consumers run each task once.
        with open(os.path.join(runtime.config["data_dir"], "example-runs.log"), "a") as runs:
            runs.write(f"{task_id} {os.getpid()}\n")
        runtime.tasks.start(task_id)
        for step in range(1, steps + 1):
            runtime.tasks.progress(task_id, step, steps, f"Step {step} of {steps}")
        if crash:
            runtime.tasks.fail(task_id, "asked to crash")
            raise RuntimeError(f"example job {task_id} crashed as asked")
        if fail:
            log.warning("example job %s failed: asked to fail", task_id)
            runtime.tasks.fail(task_id, "asked to fail")
            return -1
        runtime.tasks.succeed(task_id, {"counted": steps})
        return steps

    runtime.service("example").count_task = count


def lifecycle_file(runtime: Any) -> str:
    """Where start and stop are recorded, so a test sees them after the process has gone."""
    return os.path.join(runtime.config["data_dir"], LIFECYCLE_FILE)


def record(runtime: Any, line: str) -> None:
    os.makedirs(runtime.config["data_dir"], exist_ok=True)
    with open(lifecycle_file(runtime), "a", encoding="utf-8") as handle:
        handle.write(f"{line} pid={os.getpid()}\n")


@hookimpl
def pvc_start(runtime: Any) -> None:
    STARTED.append("example")
    record(runtime, "start")


@hookimpl
def pvc_stop(runtime: Any) -> None:
    STARTED.append("stopped")
    record(runtime, "stop")


@hookimpl
def pvc_status(runtime: Any) -> dict:
    value = runtime.zk.get(COUNTER_KEY)
    return {"fields": {"example_counter": int(value or 0)}, "degraded": value == "13"}


@hookimpl
def pvc_initialize_keys(runtime: Any) -> dict:
    return {COUNTER_KEY: 0}


@hookimpl
def pvc_metrics(runtime: Any) -> list:
    return [ExampleMetrics()]


class ExampleMetrics:
    """Counted in memory: a scrape costs nothing."""

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily
        yield CounterMetricFamily("pvc_example_hellos", "Greetings served by this daemon", value=HELLOS[0])
