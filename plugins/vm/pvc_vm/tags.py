"""A VM's tags (PVC 1.x): kept where PVC 1.x keeps them, served from the watched view.

PVC 1.x stores each tag as a child of the VM's ``tags`` key, with the children
``type`` and ``protected``. The watched view follows a fixed set of keys per
VM, not the children of one, so the value of ``tags`` itself holds the JSON
list of those children, written in the same transaction as they are and
guarded by its version: a list of 10,000 VMs with their tags stays a read of
memory, and two writers of one VM's tags cannot interleave. Every change
recomputes that list from the children it reads, never from the old value,
so a tree whose children were written by other tooling is put right by the
next change.
"""

from __future__ import annotations

import json
from typing import Any

from pvc_core.config import parse_bool
from pvc_core.errors import BadRequest, NotFound

from . import schema

Tags = dict[str, dict[str, Any]]  # name -> {"type": str, "protected": bool}


def parse(value: str | None) -> list[dict]:
    """The VM answer's ``tags`` (PVC 1.x: ``[{name, type, protected}]``, by name) from the stored list."""
    return [{"name": item["name"], "type": str(item.get("type") or schema.TAG_USER),
             "protected": item.get("protected") is True} for item in schema.stored_items(value)]


def has(value: str | None, name: str) -> bool:
    """Whether the stored list names ``name`` (the ``tag`` filter of ``GET /vm``). The quick test on the text
    looks for the name as JSON writes it too: the stored list escapes non-ASCII letters, quotes and
    backslashes (``café`` is ``caf\\u00e9`` there)."""
    if not value or (name not in value and json.dumps(name)[1:-1] not in value):  # most VMs: no tags, or not this
        return False
    return any(item["name"] == name for item in parse(value))


def summary(tags: Tags) -> str:
    return json.dumps([{"name": name, "type": tags[name]["type"], "protected": tags[name]["protected"]}
                       for name in sorted(tags)])


def requested(user_tags: list[str], protected_tags: list[str]) -> Tags:
    """``user_tags``/``protected_tags`` of a definition (a name in both is protected, as in PVC 1.x)."""
    out: Tags = {name: {"type": schema.TAG_USER, "protected": False} for name in user_tags}
    out.update({name: {"type": schema.TAG_USER, "protected": True} for name in protected_tags})
    return out


def new_keys(uuid: str, tags: Tags) -> dict[str, str]:
    """The keys of a new VM's tags, for its creating transaction (none when it has none)."""
    if not tags:
        return {}
    keys = {schema.tags(uuid): summary(tags)}
    for name, tag in tags.items():
        keys[schema.tag(uuid, name)] = name
        keys[schema.tag_key(uuid, name, "type")] = tag["type"]
        keys[schema.tag_key(uuid, name, "protected")] = str(tag["protected"])
    return keys


def read(zk: Any, uuid: str) -> Tags:
    """The tags as the children say (PVC 1.x's truth), read now."""
    names = zk.children(schema.tags(uuid)) or []
    values = zk.get_many(schema.tag_key(uuid, name, field) for name in names for field in ("type", "protected"))
    out: Tags = {}
    for name in names:
        kind = values[schema.tag_key(uuid, name, "type")]
        try:
            protected = parse_bool(values[schema.tag_key(uuid, name, "protected")] or "False")
        except ValueError:
            protected = False
        out[name] = {"type": kind if kind is not None else schema.TAG_USER, "protected": protected}
    return out


def change(zk: Any, uuid: str, ident: str, action: str, name: str, protected: bool) -> str:
    """Add (or re-flag) or remove one tag, children and list in one version-guarded transaction."""
    container, root = schema.tags(uuid), schema.vm(uuid)

    def attempt() -> str:
        versions = zk.get_versioned([root, container])
        if versions[root][0] is None:
            raise NotFound("VM not found.")
        version = versions[container][1]
        current = read(zk, uuid)
        transaction = zk.transaction()
        transaction.check(root, versions[root][1])
        if action == "add":
            tag = schema.tag(uuid, name)
            if version < 0:
                transaction.create(container, b"")
            if name in current and current[name]["protected"] and not protected:
                # re-adding would unprotect it, and a plain remove then go through: the guard would mean nothing
                raise BadRequest(f"The tag '{name}' is protected; expected protected=true to add it again (it "
                                 "stays protected), or to remove it with protected=true first.")
            if name in current:
                transaction.set_data(schema.tag_key(uuid, name, "type"), schema.TAG_USER.encode())
                transaction.set_data(schema.tag_key(uuid, name, "protected"), str(protected).encode())
            else:
                transaction.create(tag, name.encode())
                transaction.create(schema.tag_key(uuid, name, "type"), schema.TAG_USER.encode())
                transaction.create(schema.tag_key(uuid, name, "protected"), str(protected).encode())
            current[name] = {"type": schema.TAG_USER, "protected": protected}
            message = f"Successfully added tag '{name}' to VM '{ident}'."
        else:
            tag = current.get(name)
            if tag is None:
                raise BadRequest(f"The tag '{name}' does not exist on VM '{ident}'.")
            if tag["type"] != schema.TAG_USER:
                raise BadRequest(f"The tag '{name}' is not a user tag and cannot be removed.")
            if tag["protected"] and not protected:
                raise BadRequest(f"The tag '{name}' is protected; expected protected=true to remove it.")
            for path in sorted(zk.subtree(schema.tag(uuid, name)), key=lambda p: (-p.count("/"), p)):
                transaction.delete(path)
            del current[name]
            message = f"Successfully removed tag '{name}' from VM '{ident}'."
        # a create above makes version 0 of the list's key; this set is its first change
        transaction.set_data(container, summary(current).encode(), version=max(version, 0))
        zk.commit(transaction, f"tag change of VM {ident}")
        return message

    return zk.optimistic(attempt)
