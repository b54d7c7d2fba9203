"""The eight v0.6 tables (provisioner.md §1.1) with their exact names, and the schema version.

Column names are v0.6's so that an existing v0.6 PostgreSQL database is used
unchanged; foreign keys therefore set ``column_name`` (peewee would append
``_id``) and have no ON DELETE action, so the database itself refuses to
delete a template a profile still uses.
"""

from __future__ import annotations

import peewee

from pvc_core.db import BaseModel

SCHEMA_VERSION = 1


class SystemTemplate(BaseModel):
    name = peewee.TextField(unique=True)
    vcpu_count = peewee.IntegerField()
    vram_mb = peewee.IntegerField()
    serial = peewee.BooleanField()
    vnc = peewee.BooleanField()
    vnc_bind = peewee.TextField(null=True)
    node_limit = peewee.TextField(null=True)
    node_selector = peewee.TextField(null=True)
    node_autostart = peewee.BooleanField()

    class Meta:
        table_name = "system_template"


class NetworkTemplate(BaseModel):
    name = peewee.TextField(unique=True)
    mac_template = peewee.TextField(null=True)

    class Meta:
        table_name = "network_template"


class Network(BaseModel):
    network_template = peewee.ForeignKeyField(NetworkTemplate, column_name="network_template",
                                              backref="networks")
    vni = peewee.IntegerField()

    class Meta:
        table_name = "network"


class StorageTemplate(BaseModel):
    name = peewee.TextField(unique=True)

    class Meta:
        table_name = "storage_template"


class Storage(BaseModel):
    storage_template = peewee.ForeignKeyField(StorageTemplate, column_name="storage_template", backref="disks")
    pool = peewee.TextField()
    disk_id = peewee.TextField()
    source_volume = peewee.TextField(null=True)
    disk_size_gb = peewee.IntegerField(null=True)
    mountpoint = peewee.TextField(null=True)
    filesystem = peewee.TextField(null=True)
    filesystem_args = peewee.TextField(null=True)

    class Meta:
        table_name = "storage"


class Userdata(BaseModel):
    name = peewee.TextField(unique=True)
    userdata = peewee.TextField()

    class Meta:
        table_name = "userdata"


class Script(BaseModel):
    name = peewee.TextField(unique=True)
    script = peewee.TextField()

    class Meta:
        table_name = "script"


class Profile(BaseModel):
    name = peewee.TextField(unique=True)
    system_template = peewee.ForeignKeyField(SystemTemplate, column_name="system_template", null=True)
    network_template = peewee.ForeignKeyField(NetworkTemplate, column_name="network_template", null=True)
    storage_template = peewee.ForeignKeyField(StorageTemplate, column_name="storage_template", null=True)
    userdata = peewee.ForeignKeyField(Userdata, column_name="userdata", null=True)
    script = peewee.ForeignKeyField(Script, column_name="script", null=True)
    arguments = peewee.TextField(null=True)

    class Meta:
        table_name = "profile"


class SchemaVersion(BaseModel):
    """One row: the version the tables above are at; migrations run from it upwards."""

    component = peewee.TextField(primary_key=True)
    version = peewee.IntegerField()

    class Meta:
        table_name = "pvc_schema_version"


MODELS = (SystemTemplate, NetworkTemplate, Network, StorageTemplate, Storage, Userdata, Script, Profile,
          SchemaVersion)

# version -> function(database) bringing the schema from version-1 to version; v0.6 is version 1.
MIGRATIONS: dict[int, object] = {}


def prepare(database: peewee.Database) -> int:
    """Create absent tables, migrate, and add the default ``empty`` rows (§1.2) if they are absent.

    Idempotent and safe to run from the API and the worker at once: every
    step is create-if-absent inside one transaction.
    """
    with database.connection_context():
        database.create_tables(MODELS, safe=True)
        with database.atomic():
            row = SchemaVersion.get_or_none(SchemaVersion.component == "provisioner")
            version = row.version if row else SCHEMA_VERSION
            for target in sorted(number for number in MIGRATIONS if number > version):
                MIGRATIONS[target](database)  # type: ignore[operator]
                version = target
            if row is None:
                SchemaVersion.insert(component="provisioner", version=version).on_conflict_ignore().execute()
            elif row.version != version:
                SchemaVersion.update(version=version).where(SchemaVersion.component == "provisioner").execute()
        for model, column in ((Userdata, "userdata"), (Script, "script")):
            if model.get_or_none(model.name == "empty") is None:
                try:
                    with database.atomic():
                        model.insert(name="empty", **{column: ""}).execute()
                except peewee.IntegrityError:
                    pass  # another process added it meanwhile
    return version
