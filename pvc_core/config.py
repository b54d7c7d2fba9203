"""Configuration: loading the YAML file and validating it against declared fields.

The file is read with PyYAML's BaseLoader, as v0.6 does, so every scalar is a
string and the v0.6 CLI (which parses the same file) sees the same values we
do. Fields are declared once (core fields here, plugin fields through the
``pvc_config_fields`` hook) and validation names the full dotted key and what
was expected, because that message is all an operator sees when the daemon
refuses to start.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from .auth import SCOPES, token_digest
from .errors import ConfigError
from .logformat import FORMATS as LOG_FORMATS

DEFAULT_PATHS = ("/etc/pvc/pvcapid.yaml", "/etc/pvc/pvc-api.yaml")
REQUIRED = object()

TRUE_WORDS = frozenset(("y", "yes", "t", "true", "on", "1"))
FALSE_WORDS = frozenset(("n", "no", "f", "false", "off", "0"))


def parse_bool(value: str) -> bool:
    """strtobool semantics (any case); raises ValueError otherwise."""
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(value)


def _as_str(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise ValueError("a single value")
    return value


def _as_int(value: Any) -> int:
    return int(_as_str(value))


def _as_float(value: Any) -> float:
    return float(_as_str(value))


def _as_bool(value: Any) -> bool:
    return parse_bool(_as_str(value))


def _as_map(value: Any) -> dict:
    if isinstance(value, dict):
        return value
    raise ValueError("a mapping")


def _as_list(value: Any) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    raise ValueError("a list")


KINDS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "str": (_as_str, "a string"),
    "int": (_as_int, "an integer"),
    "float": (_as_float, "a number"),
    "bool": (_as_bool, "a boolean (true/false/yes/no/on/off/1/0)"),
    "list": (_as_list, "a list"),
    "map": (_as_map, "a mapping"),
    "any": (lambda v: v, "any value"),
}


@dataclass
class Field:
    """One configuration key.

    ``required_if`` names a boolean key (dotted, from ``pvc``) that makes this
    key mandatory when true: the "keys of a disabled feature are optional"
    rule of DECISIONS, declared rather than coded per key.
    """

    kind: str = "str"
    default: Any = REQUIRED
    help: str = ""
    required_if: str | None = None
    check: Callable[[Any], str | None] | None = None
    items: dict[str, Field] | None = None  # for lists of mappings
    # A value that must never be echoed (tokens, the secret key): errors name the key, not the value,
    # because the error line goes to the journal. The items of a secret list are secret too.
    secret: bool = False

    @property
    def optional(self) -> bool:
        return self.default is not REQUIRED


@dataclass
class Section:
    """A mapping of fields; ``optional`` sections may be absent entirely."""

    fields: dict[str, Field | Section] = field(default_factory=dict)
    optional: bool = False
    help: str = ""


def _port_check(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "a port number between 1 and 65535"


def _positive(value: float) -> str | None:
    return None if value > 0 else "a positive number"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "zero or a positive number"


def _coordinators_check(value: list) -> str | None:
    if not value:
        return "a non-empty list of host or host:port entries"
    for item in value:
        if not isinstance(item, str) or not item:
            return "a list of host or host:port entries"
        host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        if port and not (port.isascii() and port.isdigit()):
            return f"host:port entries with a numeric port, got {item!r}"
    return None


EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()  # of the empty token, which never matches


def _hex_digest_check(value: str) -> str | None:
    if len(value) != 64 or not all(char in "0123456789abcdefABCDEF" for char in value):
        return "a SHA-256 digest in hex (64 characters; printf %s TOKEN | sha256sum)"
    if value.lower() == EMPTY_SHA256:
        return "the digest of a non-empty token (this is the SHA-256 of the empty string)"
    return None


# One entry of pvc.api.authentication.tokens. ``token`` and ``token_sha256`` have no default of
# their own (None: absent), so that ``check_tokens`` can ask for exactly one of them.
TOKEN_FIELDS = {
    "description": Field("str", default=""),
    "token": Field("str", default=None, secret=True),
    "token_sha256": Field("str", default=None, secret=True, check=_hex_digest_check),
    "scope": Field("str", default="admin",
                   check=lambda value: None if value in SCOPES else "read, write or admin"),
}


BULK_READS = ("auto", "true", "false")
METRICS_AUTH = ("none", "read")


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str | None]:
    return lambda value: None if value in choices else " or ".join(choices)


def core_schema() -> Section:
    """The daemon's own keys (api-general.md §11 plus the keys we add)."""
    return Section({
        "debug": Field("bool", help="debug logging and indented JSON"),
        "coordinators": Field("list", check=_coordinators_check,
                              help="ZooKeeper hosts, host or host:port (default port 2181)"),
        "data_dir": Field("str", default="/var/lib/pvc",
                          help="where the embedded SQLite database and queue live"),
        "plugins": Section({
            "enabled": Field("list", default=None, help="plugins to load (default: all installed)"),
            "disabled": Field("list", default=[], help="installed plugins not to load"),
            "include": Field("list", default=[], help="plugins that are off by default (simnode) to load too"),
        }, optional=True),
        "zookeeper": Section({
            "session_timeout": Field("float", default=10.0, check=_positive),
            "request_timeout": Field("float", default=5.0, check=_positive,
                                     help="longest wait for one ZooKeeper operation before 503"),
            "bulk_reads": Field("str", default="auto",
                                check=lambda value: None if value in BULK_READS else "auto, true or false",
                                help="warm watched views with multiRead and SetWatches (ZooKeeper 3.6+); auto "
                                     "asks the ensemble once"),
        }, optional=True),
        "api": Section({
            "listen_address": Field("str"),
            "listen_port": Field("int", check=_port_check),
            "threads": Field("int", default=16, check=_positive, help="worker threads kept ready"),
            "threads_max": Field("int", default=256, check=_positive,
                                 help="worker threads the pool may grow to while every thread is busy"),
            "backlog": Field("int", default=1024, check=_positive,
                             help="connections the kernel queues before they are accepted (listen backlog; "
                                  "net.core.somaxconn caps it)"),
            "header_timeout": Field("float", default=10.0, check=_positive,
                                    help="seconds from a request's first byte until its headers must have arrived"),
            "body_timeout": Field("float", default=60.0, check=_positive,
                                  help="seconds from a request's headers until its body must have arrived"),
            "max_connections_per_client": Field("int", default=64, check=_non_negative,
                                                help="open connections one client address may hold (0: no "
                                                     "cap; set 0 behind a proxy that connects from one "
                                                     "address)"),
            "access_log": Field("bool", default=True, help="one line per request on stdout"),
            "max_body_size": Field("int", default=16 * 1024 * 1024, check=_positive,
                                   help="largest accepted request body in bytes"),
            "listener_retry": Field("float", default=10.0, check=_positive,
                                    help="seconds between attempts to bind a plugin's listener that cannot bind yet"),
            "socket_timeout": Field("float", default=10.0, check=_positive,
                                    help="seconds a keep-alive connection may stay idle, and any one read or "
                                         "write may wait"),
            "authentication": Section({
                "enabled": Field("bool"),
                "secret_key": Field("str", default="", required_if="api.authentication.enabled", secret=True),
                "tokens": Field("list", default=[], required_if="api.authentication.enabled",
                                items=TOKEN_FIELDS, secret=True,
                                help="[{description, token or token_sha256, scope: read|write|admin}]"),
                "session_lifetime": Field("int", default=43200, check=_positive,
                                          help="seconds a login session stays valid"),
            }),
            "ssl": Section({
                "enabled": Field("bool"),
                "cert_file": Field("str", default="", required_if="api.ssl.enabled"),
                "key_file": Field("str", default="", required_if="api.ssl.enabled"),
            }),
        }),
        "tasks": Section({  # pvc_core.taskmonitor
            "wait_max": Field("float", default=300.0, check=_positive,
                              help="longest timeout of GET /tasks/<id>/wait, seconds"),
            "max_waiters": Field("int", default=32, check=_positive,
                                 help="requests that may wait on tasks at once (each holds a worker thread)"),
            "poll_interval": Field("float", default=0.25, check=_positive,
                                   help="how often the daemon's one task monitor looks for ended and cancelled "
                                        "records and at what node daemons did, seconds"),
            "heartbeat": Field("float", default=10.0, check=_positive,
                               help="how often a daemon marks the tasks it follows as followed; one unmarked for "
                                    "three times this is failed by any daemon"),
        }, optional=True),
        "log": Section({
            "format": Field("str", default="text", check=_one_of(LOG_FORMATS),
                            help="text (one line per record) or json (one JSON object per line)"),
        }, optional=True),
        "metrics": Section({
            "enabled": Field("bool", default=False, help="serve GET /api/v1/metrics (Prometheus text format)"),
            "auth": Field("str", default="none", check=_one_of(METRICS_AUTH),
                          help="none: no token needed; read: a token or session of scope read or above"),
        }, optional=True),
        "audit": Section({
            "enabled": Field("bool", default=True, help="record every mutating request in the database"),
            "retention_days": Field("int", default=90, check=_non_negative,
                                    help="entries older than this many days are purged (0: kept for ever)"),
            "purge_interval": Field("float", default=3600.0, check=_positive,
                                    help="seconds between purges of old entries (one at start too)"),
            "backlog": Field("int", default=10000, check=_positive,
                             help="entries kept while the database does not answer; newer ones are dropped"),
            "max_value_length": Field("int", default=1024, check=_positive,
                                      help="characters kept of each parameter value (XML, scripts...)"),
        }, optional=True),
        "provisioner": Section({
            "database": Section({
                "host": Field("str"),
                "port": Field("int", check=_port_check),
                "name": Field("str"),
                "user": Field("str"),
                "pass": Field("str"),
                "timeout": Field("float", default=5.0, check=_positive,
                                 help="longest wait for PostgreSQL to accept a connection or answer one "
                                      "statement, seconds (then 503)"),
            }, optional=True, help="PostgreSQL; absent means the embedded SQLite database"),
            "queue": Section({
                "host": Field("str"),
                "port": Field("int", check=_port_check),
                "path": Field("str", default="/0"),
            }, optional=True, help="Redis; absent means the SQLite-backed queue"),
        }, optional=True),
    })


def merge_section(into: Section, extra: Section, where: str = "pvc") -> None:
    """Add a plugin's fields to the schema; a clash with a declared key is a bug."""
    for name, spec in extra.fields.items():
        current = into.fields.get(name)
        if current is None:
            into.fields[name] = spec
        elif isinstance(current, Section) and isinstance(spec, Section):
            merge_section(current, spec, f"{where}.{name}")
        else:
            raise ConfigError(f"{where}.{name}: declared twice (by the core and a plugin, or two plugins)")


class Config:
    """Validated configuration: nested dicts of typed values under ``pvc``."""

    def __init__(self, data: dict, path: str | None = None, raw: dict | None = None):
        self.data = data
        self.path = path
        self.raw = raw or {}

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def __getitem__(self, dotted: str) -> Any:
        value = self.get(dotted, REQUIRED)
        if value is REQUIRED:
            raise KeyError(dotted)
        return value

    def has(self, dotted: str) -> bool:
        return self.get(dotted, REQUIRED) is not REQUIRED


def find_config_path(explicit: str | None = None) -> str:
    """--config, then PVC_CONFIG_FILE, then the two default paths of DECISIONS."""
    if explicit:
        return explicit
    env = os.environ.get("PVC_CONFIG_FILE")
    if env:
        return env
    for candidate in DEFAULT_PATHS:
        if os.path.exists(candidate):
            return candidate
    raise ConfigError(
        "no configuration file: set PVC_CONFIG_FILE, pass --config PATH, "
        f"or create one of {', '.join(DEFAULT_PATHS)}"
    )


def read_raw(path: str) -> dict:
    """Parse the YAML file (BaseLoader) and return the mapping under ``pvc``."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.load(handle, Loader=yaml.BaseLoader)
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        text = " ".join(str(exc).split())
        raise ConfigError(f"Failed to parse configuration file {path}: {text}") from None
    if not isinstance(document, dict) or not isinstance(document.get("pvc"), dict):
        raise ConfigError(f"{path}: expected a mapping with a top-level 'pvc' section")
    return document["pvc"]


def merge_raw(raw: dict, overrides: dict) -> dict:
    """``raw`` with ``overrides`` laid over it, section by section (values as text, like the file's)."""
    out = dict(raw)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_raw(out[key], value)
        else:
            out[key] = value
    return out


def _flag(raw: dict, dotted: str) -> bool:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    try:
        return _as_bool(node)
    except ValueError:
        return False


def _got(value: Any, secret: bool) -> str:
    """The end of an error line: the value as given, unless it is secret."""
    return " (the value is not shown)" if secret else f", got {value!r}"


def _convert(spec: Field, value: Any, key: str, secret: bool = False) -> Any:
    convert, expected = KINDS[spec.kind]
    secret = secret or spec.secret
    try:
        result = convert(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{key}: expected {expected}{_got(value, secret)}") from None
    if spec.items is not None:
        result = [_validate_items(spec.items, item, f"{key}[{index}]", secret) for index, item in enumerate(result)]
    if spec.check is not None:
        problem = spec.check(result)
        if problem:
            raise ConfigError(f"{key}: expected {problem}{_got(value, secret)}")
    return result


def _validate_items(fields: dict[str, Field], item: Any, key: str, secret: bool = False) -> dict:
    if not isinstance(item, dict):
        raise ConfigError(f"{key}: expected a mapping with keys {', '.join(fields)}{_got(item, secret)}")
    out = {}
    for name, spec in fields.items():
        if name in item:
            out[name] = _convert(spec, item[name], f"{key}.{name}")
        elif spec.optional:
            out[name] = spec.default
        else:
            raise ConfigError(f"{key}.{name}: required key is missing")
    return out


def _has_default(spec: Field | Section) -> bool:
    if isinstance(spec, Section):
        return spec.optional or all(_has_default(child) for child in spec.fields.values())
    return spec.optional


def validate(schema: Section, raw: dict, prefix: str = "pvc", root: dict | None = None) -> dict:
    """Check ``raw`` against ``schema``; unknown keys are kept as they are (v0.6 ignores them)."""
    root = raw if root is None else root
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {raw!r}")
    out: dict = {key: value for key, value in raw.items() if key not in schema.fields}
    for name, spec in schema.fields.items():
        key = f"{prefix}.{name}"
        present = name in raw and raw[name] is not None
        if isinstance(spec, Section):
            if present:
                out[name] = validate(spec, raw[name], key, root)
            elif spec.optional:
                # An absent optional section still yields its defaults when it
                # has no required key of its own (e.g. a plugin's settings);
                # one with required keys (database, queue) stays absent.
                if all(_has_default(child) for child in spec.fields.values()):
                    out[name] = validate(spec, {}, key, root)
            else:
                raise ConfigError(f"{key}: required section is missing")
            continue
        if present and not (raw[name] == "" and spec.optional and spec.kind != "str"):
            out[name] = _convert(spec, raw[name], key)
        elif spec.required_if and _flag(root, spec.required_if):
            raise ConfigError(f"{key}: required when pvc.{spec.required_if} is true")
        elif spec.optional:
            out[name] = spec.default
        else:
            raise ConfigError(f"{key}: required key is missing ({KINDS[spec.kind][1]} expected)")
    return out


def check_tokens(tokens: list[dict]) -> None:
    """Each entry gives its token exactly one way, and one token never has two scopes.

    A token given twice with the same scope is harmless (the first
    description names it in the access log); with two scopes it is ambiguous,
    so it is refused rather than resolved either way.
    """
    scopes: dict[str, tuple[int, str]] = {}
    for index, entry in enumerate(tokens):
        key = f"pvc.api.authentication.tokens[{index}]"
        clear, hashed = entry["token"], entry["token_sha256"]
        if clear is not None and hashed is not None:
            raise ConfigError(f"{key}: expected exactly one of token and token_sha256, got both")
        if clear is None and hashed is None:
            raise ConfigError(f"{key}.token: required key is missing (or token_sha256, the token's SHA-256 "
                              "in hex)")
        digest = hashed.lower() if hashed is not None else (token_digest(clear).hex() if clear else "")
        if not digest:
            continue  # an empty token never matches (the v0.6 sample ships one)
        first = scopes.setdefault(digest, (index, entry["scope"]))
        if first[1] != entry["scope"]:
            raise ConfigError(f"{key}: the same token as tokens[{first[0]}] with another scope "
                              f"({entry['scope']!r}, there {first[1]!r}); give each token one entry")


def check_semantics(config: Config) -> None:
    """Cross-key rules that a single field cannot express."""
    tokens = config["api.authentication.tokens"]
    check_tokens(tokens)
    if config["api.authentication.enabled"]:
        if not config["api.authentication.secret_key"]:
            raise ConfigError("pvc.api.authentication.secret_key: expected a non-empty string "
                              "when authentication is enabled (it signs the session cookies)")
        if not any(entry["token"] or entry["token_sha256"] for entry in tokens):
            raise ConfigError("pvc.api.authentication.tokens: expected at least one non-empty token "
                              "when authentication is enabled")
    if config["api.ssl.enabled"]:
        for name in ("cert_file", "key_file"):
            path = config[f"api.ssl.{name}"]
            if not path:
                raise ConfigError(f"pvc.api.ssl.{name}: required when pvc.api.ssl.enabled is true")
            if not os.access(path, os.R_OK):
                raise ConfigError(f"pvc.api.ssl.{name}: expected a readable PEM file, got {path!r}")


def build(schema: Section, raw: dict, path: str | None = None) -> Config:
    """Validate ``raw`` (the ``pvc`` mapping) into a Config."""
    config = Config(validate(schema, raw), path=path, raw=raw)
    check_semantics(config)
    return config


def coordinator_hosts(coordinators: list[str]) -> str:
    """kazoo's host string; every entry gets the default port 2181 unless it has one."""
    hosts = []
    for item in coordinators:
        if item.startswith("[") or item.count(":") == 1:
            hosts.append(item)
        else:
            hosts.append(f"{item}:2181")
    return ",".join(hosts)
