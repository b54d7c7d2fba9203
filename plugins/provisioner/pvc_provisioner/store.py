"""Templates, userdata, scripts and profiles: the rows of provisioner.md §1 and the rules of §2.

Every answer is a message string or the JSON shapes of §2.1; every refusal an
ApiError. By-name lookups are exact (§0.5, "Required"); list filters keep
v0.6's LIKE semantics, evaluated here so that SQLite and PostgreSQL agree
(case-sensitive on both).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import peewee

from pvc_core import etags
from pvc_core.errors import BadRequest, Conflict, NotFound
from pvc_core.routes import API_PREFIX

from . import domain
from .models import Network, NetworkTemplate, Profile, Script, Storage, StorageTemplate, SystemTemplate, Userdata

NOT_FOUND = {SystemTemplate: "No system templates found", NetworkTemplate: "No network templates found",
             StorageTemplate: "No storage templates found", Userdata: "No userdata documents found",
             Script: "No scripts found", Profile: "No profiles found"}
MAX_VNI = 16777215  # a VXLAN ID (the largest a cluster network can have)
KIND = {SystemTemplate: "system template", NetworkTemplate: "network template",
        StorageTemplate: "storage template", Userdata: "userdata", Script: "script"}
# Where each kind's element GET is (its ETag), for the 412 of a conditional change.
READ_PATH = {SystemTemplate: "template/system", NetworkTemplate: "template/network",
             StorageTemplate: "template/storage", Userdata: "userdata", Script: "script", Profile: "profile"}


def like_filter(limit: str | None) -> Callable[[str], bool]:
    """v0.6's fuzzy ``limit`` (§0.5): contains, unless anchored with ``^``/``$``; ``%``/``_`` are wildcards."""
    if not limit:
        return lambda name: True
    pattern = limit[1:] if limit.startswith("^") else "%" + limit
    pattern = pattern[:-1] if pattern.endswith("$") else pattern + "%"
    regex = re.compile("".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern),
                       re.DOTALL)
    return lambda name: regex.fullmatch(name) is not None


def system_object(row: SystemTemplate) -> dict:
    return {"id": row.id, "name": row.name, "vcpu_count": row.vcpu_count, "vram_mb": row.vram_mb,
            "serial": bool(row.serial), "vnc": bool(row.vnc), "vnc_bind": row.vnc_bind,
            "node_limit": row.node_limit, "node_selector": row.node_selector,
            "node_autostart": bool(row.node_autostart)}


def net_object(row: Network) -> dict:
    return {"id": row.id, "network_template": row.network_template_id, "vni": row.vni}


def document_object(row: Userdata | Script) -> dict:
    column = "userdata" if isinstance(row, Userdata) else "script"
    return {"id": row.id, "name": row.name, column: getattr(row, column)}


def disk_object(row: Storage) -> dict:
    return {"id": row.id, "storage_template": row.storage_template_id, "pool": row.pool, "disk_id": row.disk_id,
            "source_volume": row.source_volume, "disk_size_gb": row.disk_size_gb, "mountpoint": row.mountpoint,
            "filesystem": row.filesystem, "filesystem_args": row.filesystem_args or ""}


class Store:
    """The provisioner's database rows, as the API and the creation task see them."""

    def __init__(self, runtime: Any):
        self.runtime = runtime
        self._prepared = False

    @property
    def database(self) -> peewee.Database:
        return self.runtime.database

    def ready(self) -> None:
        """Tables, migrations and default rows, once per process (503 while the database is down)."""
        if self._prepared:
            return
        from .models import prepare
        self.runtime.ensure_schema()
        prepare(self.database)
        self._prepared = True

    def session(self) -> Any:
        self.ready()
        return self.database.connection_context()

    # -- generic ---------------------------------------------------------------------------

    def _find(self, model: type, name: str) -> Any:
        return model.get_or_none(model.name == name)

    def _require(self, model: type, name: str) -> Any:
        row = self._find(model, name)
        if row is None:
            raise NotFound(f'The {KIND[model]} "{name}" does not exist')
        return row

    def _hold(self, model: type, row: Any, name: str) -> None:
        """Inside a transaction: hold the template ``row`` until the commit, so that checking its elements
        (a VNI, a disk ID already there) and inserting one are a single step for every thread of every
        daemon. The no-op UPDATE takes PostgreSQL's row lock (SQLite's write lock), which a concurrent
        adder waits for; its check then reads what this one committed. The template gone meanwhile: 404.
        """
        if not model.update(name=model.name).where(model.id == row.id).execute():
            raise NotFound(f'The {KIND[model]} "{name}" does not exist')

    @contextmanager
    def _conditional(self, model: type, name: str, if_match: etags.Precondition | None,
                     creates: bool = False) -> Iterator[None]:
        """A change made only while the row's answer has the ETag ``if_match`` names (``pvc_core.etags``;
        without one, no transaction is added: v0.6's behaviour).

        Inside one transaction, the row is locked first (a no-op UPDATE: PostgreSQL's row lock, SQLite's
        write lock, for which a concurrent change of any daemon waits), then its answer is read and hashed
        as the element GET hashes it, then the change runs: a concurrent change is either wholly before
        (and the ETag differs: 412) or wholly after. An absent row is the 404 the change answers without
        If-Match, unless the change ``creates`` it (then If-Match cannot hold: 412). Needs ``session()``.
        """
        if if_match is None:
            yield
            return
        label = KIND.get(model, "profile")
        with self.database.atomic():
            current = None
            if model.update(name=model.name).where(model.name == name).execute():
                current = etags.of_content(self.shape(model, self._find(model, name)))
            elif not creates:
                raise NotFound(f'The {label} "{name}" does not exist')
            if_match.require(current, f'The {label} "{name}"', f"{API_PREFIX}/provisioner/{READ_PATH[model]}/{name}")
            yield

    def shape(self, model: type, row: Any) -> dict:
        """The answer of one row, as its element GET gives it (and its ETag is made of)."""
        if model is Profile:
            return self._profile_object(row, {field: dict(ref.select(ref.id, ref.name).where(
                ref.id == getattr(row, f"{field}_id")).tuples()) for field, ref, _label in self.REFERENCES})
        return {SystemTemplate: system_object, NetworkTemplate: self._network_object,
                StorageTemplate: self._storage_object, Userdata: document_object, Script: document_object}[model](row)

    def _rows(self, model: type, limit: str | None) -> list:
        keep = like_filter(limit)
        return [row for row in model.select().order_by(model.id) if keep(row.name)]

    def _listing(self, model: type, limit: str | None, exact: str | None, shape: Callable[[Any], dict]) -> list[dict]:
        """A list GET (fuzzy ``limit``) or an element GET (``exact`` name), 404 when nothing matches."""
        with self.session():
            if exact is not None:
                found = self._find(model, exact)
                rows = [found] if found is not None and like_filter(limit)(found.name) else []
            else:
                rows = self._rows(model, limit)
            if not rows:
                raise NotFound(NOT_FOUND[model])
            return [shape(row) for row in rows]

    def _refuse_existing(self, model: type, name: str, text: str) -> None:
        if self._find(model, name) is not None:
            raise BadRequest(text)

    def _insert(self, model: type, name: str, failure: str, **fields: Any) -> None:
        try:
            with self.database.atomic():
                model.create(name=name, **fields)
        except peewee.IntegrityError as exc:
            raise BadRequest(f'{failure}: {_first_line(exc)}') from None

    def _users(self, field: Any, row: Any) -> list[str]:
        return [profile.name for profile in Profile.select(Profile.name).where(field == row.id).order_by(Profile.id)]

    def _delete(self, model: type, name: str, profile_field: Any, children: Any = None) -> Any:
        """Refuse while a profile uses the row (a deterministic text, §1.3), else delete with its children."""
        row = self._require(model, name)
        users = self._users(profile_field, row)
        if users:
            raise Conflict(f'Failed to delete entry "{name}": {KIND[model]} is in use by profile(s) '
                           f'{", ".join(users)}')
        try:
            with self.database.atomic():
                if children is not None:
                    children.delete().where(children_fk(children) == row.id).execute()
                row.delete_instance()
        except peewee.IntegrityError as exc:  # a profile was added meanwhile
            raise Conflict(f'Failed to delete entry "{name}": {_first_line(exc)}') from None
        return row

    # -- the template overview (§2.2) -----------------------------------------------------------

    def templates(self, limit: str | None) -> dict:
        with self.session():
            return {"system_templates": [system_object(row) for row in self._rows(SystemTemplate, limit)],
                    "network_templates": [self._network_object(row) for row in self._rows(NetworkTemplate, limit)],
                    "storage_templates": [self._storage_object(row) for row in self._rows(StorageTemplate, limit)]}

    # -- system templates (§2.3) ---------------------------------------------------------------

    def systems(self, limit: str | None, exact: str | None = None) -> list[dict]:
        return self._listing(SystemTemplate, limit, exact, system_object)

    def add_system(self, name: str, fields: dict, if_match: etags.Precondition | None = None) -> str:
        with self.session(), self._conditional(SystemTemplate, name, if_match, creates=True):
            self._refuse_existing(SystemTemplate, name, f'The system template "{name}" already exists')
            self._insert(SystemTemplate, name, f'Failed to create system template "{name}"',
                         vcpu_count=fields["vcpus"], vram_mb=fields["vram"], serial=fields["serial"],
                         vnc=fields["vnc"], vnc_bind=fields["vnc_bind"] if fields["vnc"] else None,
                         node_limit=fields["node_limit"], node_selector=fields["node_selector"],
                         node_autostart=bool(fields["node_autostart"]))
        return f'Added new system template "{name}"'

    def modify_system(self, name: str, fields: dict, if_match: etags.Precondition | None = None) -> str:
        """v0.7's modify (§6.4), which DECISIONS adopts: each given field replaces the stored one."""
        columns = {"vcpus": "vcpu_count", "vram": "vram_mb", "serial": "serial", "vnc": "vnc",
                   "vnc_bind": "vnc_bind", "node_limit": "node_limit", "node_selector": "node_selector",
                   "node_autostart": "node_autostart"}
        with self.session(), self._conditional(SystemTemplate, name, if_match):
            row = self._require(SystemTemplate, name)
            changes = {columns[key]: value for key, value in fields.items() if value is not None}
            vnc = changes.get("vnc", row.vnc)
            if not vnc:
                changes["vnc_bind"] = None
            if changes:
                SystemTemplate.update(**changes).where(SystemTemplate.id == row.id).execute()
        return f'Modified system template "{name}"'

    def remove_system(self, name: str, if_match: etags.Precondition | None = None) -> str:
        with self.session(), self._conditional(SystemTemplate, name, if_match):
            self._delete(SystemTemplate, name, Profile.system_template)
        return f'Removed system template "{name}"'

    # -- network templates (§2.4) --------------------------------------------------------------

    def _network_object(self, row: NetworkTemplate) -> dict:
        nets = Network.select().where(Network.network_template == row.id).order_by(Network.id)
        return {"id": row.id, "name": row.name, "mac_template": row.mac_template,
                "networks": [net_object(net) for net in nets]}

    def networks(self, limit: str | None, exact: str | None = None) -> list[dict]:
        return self._listing(NetworkTemplate, limit, exact, self._network_object)

    def add_network(self, name: str, mac_template: str | None, if_match: etags.Precondition | None = None) -> str:
        if mac_template:
            try:
                domain.check_mac_template(mac_template)
            except ValueError as exc:
                raise BadRequest(f"Parameter 'mac_template': expected a template rendering a unicast MAC address "
                                 f"from {{prefix}}, {{vmid}} and {{netid}}, e.g. {{prefix}}:2f:1f:{{vmid}}{{netid}}, "
                                 f"got {mac_template!r}: {exc}") from None
        with self.session(), self._conditional(NetworkTemplate, name, if_match, creates=True):
            self._refuse_existing(NetworkTemplate, name, f'The network template "{name}" already exists')
            self._insert(NetworkTemplate, name, f'Failed to create network template "{name}"',
                         mac_template=mac_template)
        return f'Added new network template "{name}"'

    def remove_network(self, name: str, if_match: etags.Precondition | None = None) -> str:
        with self.session(), self._conditional(NetworkTemplate, name, if_match):
            self._delete(NetworkTemplate, name, Profile.network_template, children=Network)
        return f'Removed network template "{name}"'

    def _template_for_element(self, model: type, name: str) -> Any:
        row = self._find(model, name)
        if row is None:
            raise NotFound("Template not found")
        return row

    def nets(self, name: str, vni: str | None = None) -> Any:
        with self.session():
            template = self._template_for_element(NetworkTemplate, name)
            nets = [net_object(net) for net in
                    Network.select().where(Network.network_template == template.id).order_by(Network.id)]
            if vni is None:
                return nets
            for net in nets:
                if str(net["vni"]) == vni.strip():
                    return net
            raise NotFound(f'The VNI "{vni}" in network template "{name}" does not exist')

    def add_net(self, name: str, vni: str, if_match: etags.Precondition | None = None) -> str:
        with self.session(), self._conditional(NetworkTemplate, name, if_match):
            template = self._require(NetworkTemplate, name)
            number = _vni(vni)
            with self.database.atomic():
                self._hold(NetworkTemplate, template, name)
                if Network.select().where((Network.network_template == template.id)
                                          & (Network.vni == number)).exists():
                    raise BadRequest(f'The VNI "{vni}" in network template "{name}" already exists')
                Network.create(network_template=template.id, vni=number)
        return f'Added new network "{vni}" to network template "{name}"'

    def remove_net(self, name: str, vni: str, if_match: etags.Precondition | None = None) -> str:
        with self.session(), self._conditional(NetworkTemplate, name, if_match):
            template = self._require(NetworkTemplate, name)
            try:
                number = int(vni)
            except ValueError:
                number = None
            query = Network.delete().where((Network.network_template == template.id) & (Network.vni == number))
            if number is None or query.execute() == 0:
                raise NotFound(f'The VNI "{vni}" in network template "{name}" does not exist')
        return f'Removed network "{vni}" from network template "{name}"'

    # -- storage templates and disks (§2.5, §2.6) ---------------------------------------------------

    def _storage_object(self, row: StorageTemplate) -> dict:
        return {"id": row.id, "name": row.name, "disks": [disk_object(disk) for disk in self._disk_rows(row)]}

    def _disk_rows(self, template: StorageTemplate) -> list[Storage]:
        return list(Storage.select().where(Storage.storage_template == template.id).order_by(Storage.id))

    def storages(self, limit: str | None, exact: str | None = None) -> list[dict]:
        return self._listing(StorageTemplate, limit, exact, self._storage_object)

    def add_storage(self, name: str, if_match: etags.Precondition | None = None) -> str:
        with self.session(), self._conditional(StorageTemplate, name, if_match, creates=True):
            self._refuse_existing(StorageTemplate, name, f'The storage template "{name}" already exists')
            self._insert(StorageTemplate, name, f'Failed to create entry "{name}"')
        return f'Added new storage template "{name}"'

    def remove_storage(self, name: str, if_match: etags.Precondition | None = None) -> str:
        with self.session(), self._conditional(StorageTemplate, name, if_match):
            self._delete(StorageTemplate, name, Profile.storage_template, children=Storage)
        return f'Removed storage template "{name}"'

    def disks(self, name: str, disk_id: str | None = None) -> Any:
        with self.session():
            template = self._template_for_element(StorageTemplate, name)
            disks = [disk_object(disk) for disk in self._disk_rows(template)]
            if disk_id is None:
                return disks
            for disk in disks:
                if disk["disk_id"] == disk_id:
                    return disk
            raise NotFound(f'The disk "{disk_id}" in storage template "{name}" does not exist')

    def add_disk(self, name: str, disk_id: str, fields: dict, if_match: etags.Precondition | None = None) -> str:
        with self.session(), self._conditional(StorageTemplate, name, if_match):
            template = self._require(StorageTemplate, name)
            with self.database.atomic():
                self._hold(StorageTemplate, template, name)
                if any(disk.disk_id == disk_id for disk in self._disk_rows(template)):
                    raise BadRequest(f'The disk "{disk_id}" in storage template "{name}" already exists')
                if fields["mountpoint"] and not fields["filesystem"]:
                    raise BadRequest("A filesystem must be specified along with a mountpoint.")
                if fields["source_volume"] and (fields["disk_size"] is not None or fields["filesystem"]
                                                or fields["mountpoint"]):
                    raise BadRequest("Clone volumes are not compatible with disk size, filesystem, or mountpoint "
                                     "specifications.")
                if not fields["source_volume"] and fields["disk_size"] is not None and fields["disk_size"] < 1:
                    raise BadRequest(f"Parameter 'disk_size': expected a whole number of GiB of at least 1, "
                                     f"got {fields['disk_size']!r}")
                Storage.create(storage_template=template.id, pool=fields["pool"], disk_id=disk_id,
                               source_volume=fields["source_volume"] or None, disk_size_gb=fields["disk_size"],
                               mountpoint=fields["mountpoint"] or None, filesystem=fields["filesystem"] or None,
                               filesystem_args=" ".join(fields["filesystem_arg"]))
        return f'Added new disk "{disk_id}" to storage template "{name}"'

    def remove_disk(self, name: str, disk_id: str, if_match: etags.Precondition | None = None) -> str:
        with self.session(), self._conditional(StorageTemplate, name, if_match):
            template = self._require(StorageTemplate, name)
            deleted = Storage.delete().where((Storage.storage_template == template.id)
                                             & (Storage.disk_id == disk_id)).execute()
            if not deleted:
                raise NotFound(f'The disk "{disk_id}" in storage template "{name}" does not exist')
        return f'Removed disk "{disk_id}" from storage template "{name}"'

    # -- userdata and scripts (§2.7, §2.8) -----------------------------------------------------------

    def documents(self, model: type, limit: str | None, exact: str | None = None) -> list[dict]:
        return self._listing(model, limit, exact, document_object)

    def add_document(self, model: type, name: str, data: str, if_match: etags.Precondition | None = None) -> str:
        column, label = ("userdata", "userdata document") if model is Userdata else ("script", "script")
        with self.session(), self._conditional(model, name, if_match, creates=True):
            self._refuse_existing(model, name, f'The {label} "{name}" already exists')
            self._insert(model, name, f'Failed to create entry "{name}"', **{column: data})
        return (f'Created userdata document "{name}"' if model is Userdata
                else f'Created provisioning script "{name}"')

    def update_document(self, model: type, name: str, data: str, if_match: etags.Precondition | None = None) -> str:
        column = "userdata" if model is Userdata else "script"
        with self.session(), self._conditional(model, name, if_match):
            row = self._require(model, name)
            model.update(**{column: data}).where(model.id == row.id).execute()
        return (f'Updated userdata document "{name}"' if model is Userdata
                else f'Updated provisioning script "{name}"')

    def remove_document(self, model: type, name: str, if_match: etags.Precondition | None = None) -> str:
        with self.session(), self._conditional(model, name, if_match):
            self._delete(model, name, Profile.userdata if model is Userdata else Profile.script)
        return (f'Removed userdata document "{name}"' if model is Userdata
                else f'Removed provisioning script "{name}"')

    # -- profiles (§2.9) -----------------------------------------------------------------------------

    REFERENCES = (("system_template", SystemTemplate, "system template"),
                  ("network_template", NetworkTemplate, "network template"),
                  ("storage_template", StorageTemplate, "storage template"),
                  ("userdata", Userdata, "userdata template"),
                  ("script", Script, "script"))

    def _profile_object(self, row: Profile, names: dict[str, dict[int, str]]) -> dict:
        referenced = {field: names[field].get(getattr(row, f"{field}_id")) for field, _model, _label in self.REFERENCES}
        return {"id": row.id, "name": row.name, **referenced, "arguments": (row.arguments or "").split("|")}

    def profiles(self, limit: str | None, exact: str | None = None) -> list[dict]:
        """Referenced rows are named from one query per table, not one per profile and reference."""
        names: dict[str, dict[int, str]] = {}

        def shape(row: Profile) -> dict:
            if not names:
                for field, model, _label in self.REFERENCES:
                    names[field] = dict(model.select(model.id, model.name).tuples())
            return self._profile_object(row, names)

        return self._listing(Profile, limit, exact, shape)

    def _resolve(self, name: str, given: dict) -> dict:
        out = {}
        for field, model, label in self.REFERENCES:
            value = given.get(field)
            if value is None:
                continue
            row = self._find(model, value)
            if row is None:
                raise BadRequest(f'The {label} "{value}" for profile "{name}" does not exist')
            out[field] = row.id
        return out

    def add_profile(self, name: str, given: dict, arguments: list[str],
                    if_match: etags.Precondition | None = None) -> str:
        with self.session(), self._conditional(Profile, name, if_match, creates=True):
            self._refuse_existing(Profile, name, f'The profile "{name}" already exists')
            references = self._resolve(name, given)
            self._insert(Profile, name, f'Failed to create entry "{name}"', arguments=_join_arguments(arguments),
                         **references)
        return f'Created VM profile "{name}"'

    def modify_profile(self, name: str, given: dict, arguments: list[str],
                       if_match: etags.Precondition | None = None) -> str:
        with self.session(), self._conditional(Profile, name, if_match):
            row = self._require_profile(name)
            changes: dict[str, Any] = self._resolve(name, given)
            if arguments:
                changes["arguments"] = _join_arguments([item for item in arguments if item != ""])
            if changes:
                Profile.update(**changes).where(Profile.id == row.id).execute()
        return f'Modified VM profile "{name}"'

    def _require_profile(self, name: str) -> Profile:
        row = self._find(Profile, name)
        if row is None:
            raise NotFound(f'The profile "{name}" does not exist')
        return row

    def remove_profile(self, name: str, if_match: etags.Precondition | None = None) -> str:
        with self.session(), self._conditional(Profile, name, if_match):
            self._require_profile(name).delete_instance()
        return f'Removed VM profile "{name}"'

    def profile_exists(self, name: str) -> bool:
        with self.session():
            return self._find(Profile, name) is not None

    # -- what the creation task reads (§3.3 step 1) ----------------------------------------------

    def build_inputs(self, profile_name: str) -> dict | None:
        """Everything one creation needs, read in one session; None when the profile is gone."""
        with self.session():
            profile = self._find(Profile, profile_name)
            if profile is None:
                return None
            system = SystemTemplate.get_or_none(SystemTemplate.id == profile.system_template_id)
            network = NetworkTemplate.get_or_none(NetworkTemplate.id == profile.network_template_id)
            storage = StorageTemplate.get_or_none(StorageTemplate.id == profile.storage_template_id)
            script = Script.get_or_none(Script.id == profile.script_id)
            missing = [label for label, row in (("system template", system), ("network template", network),
                                                ("storage template", storage), ("script", script)) if row is None]
            if missing:
                raise ValueError(f'Provisioner profile "{profile_name}" lacks its {", ".join(missing)}')
            disks = sorted((disk_object(row) for row in self._disk_rows(storage)), key=lambda disk: disk["disk_id"])
            nets = [net_object(row) for row in
                    Network.select().where(Network.network_template == network.id).order_by(Network.id)]
            return {"profile": profile.name, "arguments": [item for item in (profile.arguments or "").split("|")
                                                           if item],
                    "system": system_object(system), "mac_template": network.mac_template or "",
                    "networks": nets, "disks": disks, "script": script.script}

    def userdata_of_profile(self, profile_name: str) -> str | None:
        """The userdata text of a profile (the metadata API's answer); None when the profile is gone."""
        with self.session():
            profile = self._find(Profile, profile_name)
            if profile is None or profile.userdata_id is None:
                return None
            row = Userdata.get_or_none(Userdata.id == profile.userdata_id)
            return row.userdata if row is not None else None


def children_fk(model: type) -> Any:
    return Network.network_template if model is Network else Storage.storage_template


def _vni(vni: int | str) -> int:
    """A VNI: the body's ``vni`` (its Param checked it) or the path's, refused with the Param's message."""
    try:
        number = int(vni)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_VNI:
        raise BadRequest(f"Parameter 'vni': expected an integer from 1 to {MAX_VNI}, got {str(vni)!r}")
    return number


def _join_arguments(arguments: Iterable[str]) -> str:
    items = list(arguments)
    for item in items:
        if "|" in item:
            raise BadRequest(f"Parameter 'arg': expected key=value without '|' (the stored separator), got {item!r}")
    return "|".join(items)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
