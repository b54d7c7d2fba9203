"""What a network can do: list, create, modify, remove; reservations; firewall ACLs.

Plain Python over the core's ZooKeeper helpers and watched views; no HTTP here.
Reads are served from watched views (``network.watch``): ``/networks`` with
each network's scalar keys, and, created on a network's first read of them,
its leases, its two reservation containers and its two ACL chains. Reading
the keys one by one cost about 1,200 ZooKeeper gets for 100 networks and 4,000
for a list of 1,000 leases on every request. The views apply this daemon's own
writes as they commit and follow other writers (node daemons record leases)
through their watches; while one warms, reads go to ZooKeeper directly.

Changes read ZooKeeper directly: their checks (unique descriptions, ACL orders,
the object still being there) must see what other writers committed a moment
ago, not what a watch has delivered so far. Every change of several keys is one
transaction. Changes whose correctness depends on what was read are guarded by
bumping the version of the parent znode in the same transaction, so two
concurrent callers cannot interleave: the loser retries on fresh data
(``zk.optimistic``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from pvc_core import etags, matching
from pvc_core.errors import BadRequest, Conflict, NotFound
from pvc_core.params import is_name
from pvc_core.routes import API_PREFIX, Encoded, EncodedArray, collapse_encoded, encode_json, quoted

from . import schema, validate

log = logging.getLogger("pvc.network")

Entry = Mapping[str, str | None]  # a view entry: "" is the child's own value, then its keys


def not_found(ident: str, mutation: bool = True) -> NotFound:
    text = f'ERROR: Could not find network "{ident}" in the cluster!'
    return NotFound(quoted(text) if mutation else text)


def present(entry: Entry | None) -> bool:
    """An entry of a child that exists (a view may hold a just-deleted child's keys for a moment)."""
    return entry is not None and entry.get("") is not None


def network_object(vni: str, entry: Entry) -> dict:
    """The v0.6 network object (network.md §3.1), keys in order."""
    get = {name: entry.get(name) or schema.NONE for name in schema.SCALARS}
    return {
        "vni": int(vni),
        "description": entry[""],
        "type": get["nettype"],
        "domain": get["domain"],
        "name_servers": (entry.get("name_servers") or "").split(","),
        "ip6": {"network": get["ip6_network"], "gateway": get["ip6_gateway"], "dhcp_flag": get["dhcp6_flag"]},
        "ip4": {"network": get["ip4_network"], "gateway": get["ip4_gateway"], "dhcp_flag": get["dhcp4_flag"],
                "dhcp_start": get["dhcp4_start"], "dhcp_end": get["dhcp4_end"]},
    }


def lease_object(mac: str, entry: Entry) -> dict:
    """A live (dynamic) lease."""
    return {"hostname": entry.get("hostname") or "", "ip4_address": entry.get("ipaddr") or "",
            "mac_address": mac, "timestamp": entry.get("expiry") or "0"}


def reservation_object(mac: str, entries: Iterable[Entry | None]) -> dict | None:
    """A static reservation from the first container (``schema.RESERVATION_KEYS`` order) that holds an address."""
    for entry in entries:
        if present(entry) and entry.get("ipaddr") is not None:
            return {"hostname": entry.get("hostname") or "", "ip4_address": entry["ipaddr"],
                    "mac_address": mac, "timestamp": "static"}
    return None


def rule_objects(direction: str, entries: Mapping[str, Entry]) -> list[dict]:
    """One chain's ACL objects in numeric order (v0.6 sorted the text: D10); ties by description."""
    out = []
    for description, entry in entries.items():
        order_text = entry.get("order") or ""
        order = int(order_text) if re.fullmatch(r"-?[0-9]+", order_text) else 1 << 30
        out.append({"direction": direction, "order": order, "description": description,
                    "rule": entry.get("rule") or ""})
    out.sort(key=lambda entry: (entry["order"], entry["description"]))
    return out


class NetworkService:
    """Networks, DHCP reservations and ACLs of the cluster."""

    def __init__(self, runtime: Any):
        self.runtime = runtime
        self._views: dict[str, Any] = {}  # root -> its watched view, once read
        self._acl_changes = threading.Lock()  # this daemon's ACL changes take turns (zk.in_turn)

    @property
    def zk(self) -> Any:
        return self.runtime.zk

    def start(self) -> None:
        """Warm the view of ``/networks`` now, so the first list is served from memory."""
        _ = self._networks()

    # -- where reads come from -------------------------------------------------------------

    def _source(self, root: str, keys: tuple[str, ...], encoder: Any = None) -> Any:
        """The shared watched view of ``root`` (started on first use; ``encoder`` builds the kept
        answers of its children as it warms), or with ``network.watch`` off an unstarted one, which
        answers the same calls from ZooKeeper directly. A read made while a view warms reads directly."""
        view = self._views.get(root)
        if view is None:
            watch = self.runtime.config["network.watch"]
            view = self.runtime.view(root, keys, watch=watch, encoder=encoder)
            if not watch:
                return view
            self._views[root] = view
        return view

    def _sync(self) -> None:
        """Catch the views up with every change committed before now (``SubtreeView.sync``; one call
        serves all of them, they share the client's queues). A view not ready is read directly anyway."""
        for view in list(self._views.values()):
            if view.ready:
                view.sync()
                return

    def _networks(self) -> Any:
        # No encoder: it would run for every child as the view warms, a non-numeric one too.
        return self._source(schema.ROOT, schema.SCALARS)

    def _lease_view(self, vni: str) -> Any:
        return self._source(schema.key(vni, schema.LEASES), schema.LEASE_VIEW_KEYS, self._encode_lease)

    def _reservation_views(self, vni: str) -> list[Any]:
        return [self._source(schema.key(vni, container), schema.RESERVATION_VIEW_KEYS)
                for container in schema.RESERVATION_KEYS]

    def _rule_view(self, vni: str, direction: str) -> Any:
        return self._source(schema.rules(vni, direction), schema.RULE_VIEW_KEYS)

    # -- reading ---------------------------------------------------------------------------

    @staticmethod
    def _numeric(children: Iterable[str]) -> list[str]:
        """The VNIs among ``/networks``'s children, by number; anything else is logged and skipped."""
        children = list(children)
        valid = [child for child in children if child.isascii() and child.isdigit()]
        if len(valid) != len(children):
            log.warning("ignoring non-numeric keys under %s: %s", schema.ROOT,
                        ", ".join(child for child in children if not (child.isascii() and child.isdigit())))
        return sorted(valid, key=int)

    def vnis(self) -> list[str]:
        return self._numeric(self._networks().names())

    def count(self) -> int:
        return len(self.vnis())

    def descriptions(self) -> dict[str, str]:
        """``{vni: description}`` by VNI, from the view."""
        names = self._networks().names()
        return {vni: names[vni] for vni in self._numeric(names)}

    def _descriptions_direct(self) -> dict[str, str]:
        """``descriptions`` read from ZooKeeper now, for a change's uniqueness check."""
        children = self.zk.children(schema.ROOT) or []
        vnis = self._numeric(children)
        values = self.zk.get_many(schema.network(vni) for vni in vnis)
        return {vni: values[schema.network(vni)] for vni in vnis if values[schema.network(vni)] is not None}

    def _read_direct(self, vni: str) -> dict | None:
        """One network object read from ZooKeeper now (one pipelined round trip), or None."""
        values = self.zk.get_many([schema.network(vni), *(schema.key(vni, name) for name in schema.SCALARS)])
        if values[schema.network(vni)] is None:
            return None
        return network_object(vni, {"": values[schema.network(vni)],
                                    **{name: values[schema.key(vni, name)] for name in schema.SCALARS}})

    def resolve(self, ident: str, mutation: bool = True) -> str:
        """v0.6 resolution: digits are a VNI, anything else a description.

        A read resolves through the view; a change (``mutation``) reads
        ZooKeeper, so it finds a network another daemon created a moment ago.
        """
        if ident.isascii() and ident.isdigit():
            view = None if mutation else self._networks()
            if view is not None and view.ready:
                found = ident in view.names()
            else:
                found = self.zk.exists(schema.network(ident))
            if found:
                return ident
            raise not_found(ident, mutation)
        for vni, description in (self._descriptions_direct() if mutation else self.descriptions()).items():
            if description == ident:
                return vni
        raise not_found(ident, mutation)

    @staticmethod
    def _encode_network(vni: str, entry: Entry) -> bytes:
        return encode_json(network_object(vni, entry))

    def _encoded_networks(self, vnis: list[str]) -> Encoded | EncodedArray:
        """The objects of these networks, serialized once per change of their keys (v0.6 collapse)."""
        parts = self._networks().encoded(vnis, self._encode_network) if vnis else []
        if not parts:
            raise NotFound("Network not found.")
        return collapse_encoded(parts)

    def list_encoded(self, limit: str | None) -> Encoded | EncodedArray:
        """Every network by VNI, or those whose VNI or description matches the regex ``limit``."""
        names = self._networks().names()
        vnis = self._numeric(names)
        if limit:
            pattern = matching.regex(limit)
            vnis = [vni for vni in vnis if pattern.match(str(int(vni))) or pattern.match(names[vni])]
        return self._encoded_networks(vnis)

    def get_encoded(self, ident: str) -> tuple[Encoded | EncodedArray, str]:
        """The networks whose VNI or description is ``ident`` (one, collapsed, in practice), and the ETag
        of that answer (the one network's, in practice)."""
        view = self._networks()
        names = view.names()
        parts, tags = [], []
        for vni in self._numeric(names):
            if str(int(vni)) == ident or names[vni] == ident:
                found = view.answer(vni, self._encode_network)
                if found is not None:
                    parts.append(found[0])
                    tags.append(found[1])
        if not parts:
            raise NotFound("Network not found.")
        return collapse_encoded(parts), etags.of_parts(tags)

    def _guard(self, vni: str, ident: str, if_match: etags.Precondition | None) -> etags.Guard:
        """The network's keys as a change reads them, 412 unless ``if_match`` holds (the ETag of
        GET /network/<vni>); the change commits with its checks (``pvc_core.etags``)."""
        return etags.guard(self.zk, if_match, schema.network_answer(vni), f'Network "{ident}"',
                           f"{API_PREFIX}/network/{ident}")

    # -- composing and checking a configuration -------------------------------------------

    @staticmethod
    def compose(nettype: str, description: str, fields: dict[str, Any]) -> dict[str, str]:
        """Validate a whole network configuration; the scalar key values to store.

        ``fields`` holds domain, name_servers (list), ip4_network, ip4_gateway,
        ip6_network, ip6_gateway, dhcp4 (bool), dhcp4_start, dhcp4_end, each
        None when unset.
        """
        out = {"nettype": nettype}
        domain = fields.get("domain")
        if domain:
            validate.domain(domain)
        elif nettype == "managed":
            domain = f"{description}.local"
        out["domain"] = domain or schema.NONE
        out["name_servers"] = ",".join(validate.name_servers(fields.get("name_servers") or []))

        net4 = validate.ip4_network(fields["ip4_network"]) if fields.get("ip4_network") else None
        gateway4 = fields.get("ip4_gateway")
        if net4 is not None:
            if not gateway4:
                raise validate.bad("ip4_gateway", f"an IPv4 address inside {net4} (required with ip4_network)",
                                   gateway4)
            validate.inside("ip4_gateway", validate.ip4_address("ip4_gateway", gateway4), net4)
        elif gateway4:
            raise validate.bad("ip4_gateway", "no value unless ip4_network is given", gateway4)
        out["ip4_network"] = str(net4) if net4 else schema.NONE
        out["ip4_gateway"] = gateway4 if net4 else schema.NONE

        dhcp4 = bool(fields.get("dhcp4"))
        bounds = {}
        for name in ("dhcp4_start", "dhcp4_end"):
            value = fields.get(name)
            if dhcp4 and not value:
                raise validate.bad(name, f"an IPv4 address inside {net4 or 'ip4_network'} when dhcp4 is enabled "
                                         "(DHCPv4 start and end addresses are required)", value)
            if value:
                if net4 is None:
                    raise validate.bad(name, "no value unless ip4_network is given", value)
                address = validate.ip4_address(name, value)
                validate.inside(name, address, net4)
                bounds[name] = address
        if len(bounds) == 2 and bounds["dhcp4_start"] > bounds["dhcp4_end"]:
            raise validate.bad("dhcp4_end", f"an address not below dhcp4_start {bounds['dhcp4_start']}",
                               str(bounds["dhcp4_end"]))
        out["dhcp4_flag"] = schema.flag(dhcp4)
        out["dhcp4_start"] = fields.get("dhcp4_start") or schema.NONE
        out["dhcp4_end"] = fields.get("dhcp4_end") or schema.NONE

        net6 = validate.ip6_network(fields["ip6_network"]) if fields.get("ip6_network") else None
        gateway6 = fields.get("ip6_gateway")
        if net6 is not None:
            if gateway6:
                validate.inside("ip6_gateway", validate.ip6_address("ip6_gateway", gateway6), net6)
            else:
                gateway6 = str(net6.network_address + 1)  # DECISIONS: <ip6_network>::1
        elif gateway6:
            raise validate.bad("ip6_gateway", "no value unless ip6_network is given", gateway6)
        out["ip6_network"] = str(net6) if net6 else schema.NONE
        out["ip6_gateway"] = gateway6 if net6 else schema.NONE
        out["dhcp6_flag"] = schema.flag(net6 is not None)

        if nettype == "managed" and net4 is None and net6 is None:
            raise validate.bad("ip4_network", "an IPv4 or IPv6 network: a managed network needs "
                                              "ip4_network or ip6_network (or both)", None)
        return out

    # -- networks --------------------------------------------------------------------------

    def add(self, vni_text: str, description: str, nettype: str, fields: dict[str, Any],
            if_match: etags.Precondition | None = None) -> str:
        """``if_match`` (POST /network/<vni>): only while that network is as read; it then exists, so the
        creation is refused as any duplicate."""
        vni = validate.vni(vni_text, nettype)
        validate.network_description(description)
        values = self.compose(nettype, description, fields)

        def attempt() -> None:
            guard = self._guard(str(vni), vni_text, if_match)
            _, version = self.zk.get_versioned([schema.ROOT])[schema.ROOT]
            if version < 0:
                raise BadRequest("ERROR: The cluster is not initialized (no /networks key); "
                                 "POST /api/v1/initialize first")
            if self.zk.exists(schema.network(vni)):
                raise BadRequest(quoted(f'ERROR: A network with VNI "{vni}" already exists!'))
            if description in self._descriptions_direct().values():
                raise BadRequest(quoted(f'ERROR: A network with description "{description}" already exists!'))
            transaction = self.zk.transaction()
            guard.add_to(transaction)
            for path, value in sorted(schema.new_network_keys(vni, description, values).items()):
                transaction.create(path, value.encode())
            transaction.set_data(schema.ROOT, b"", version=version)
            self.zk.commit(transaction, f"creation of network {vni}")

        self.zk.optimistic(attempt)
        return quoted(f'Network "{description}" added successfully!')

    def modify(self, ident: str, changes: dict[str, Any], if_match: etags.Precondition | None = None) -> str:
        vni = self.resolve(ident)

        def attempt() -> None:
            guard = self._guard(vni, ident, if_match)
            _, root_version = self.zk.get_versioned([schema.ROOT])[schema.ROOT]
            net = self._read_direct(vni)
            if net is None:
                raise not_found(ident)
            description = changes.get("description") or net["description"]
            if changes.get("description"):
                validate.network_description(description)
                others = {v: d for v, d in self._descriptions_direct().items() if v != vni}
                if description in others.values():
                    raise BadRequest(quoted(f'ERROR: A network with description "{description}" already exists!'))

            def pick(name: str, stored: str) -> Any:
                value = changes.get(name)
                if value not in (None, ""):
                    return value
                return None if stored == schema.NONE else stored

            merged = {
                "domain": pick("domain", net["domain"]),
                "name_servers": changes["name_servers"] or [s for s in net["name_servers"] if s],
                "ip4_network": pick("ip4_network", net["ip4"]["network"]),
                "ip4_gateway": pick("ip4_gateway", net["ip4"]["gateway"]),
                "ip6_network": pick("ip6_network", net["ip6"]["network"]),
                "ip6_gateway": pick("ip6_gateway", net["ip6"]["gateway"]),
                "dhcp4": net["ip4"]["dhcp_flag"] == "True" if changes.get("dhcp4") is None else changes["dhcp4"],
                "dhcp4_start": pick("dhcp4_start", net["ip4"]["dhcp_start"]),
                "dhcp4_end": pick("dhcp4_end", net["ip4"]["dhcp_end"]),
            }
            if changes.get("ip6_network") and not changes.get("ip6_gateway"):
                merged["ip6_gateway"] = None  # re-derived from the new network (v0.6)
            values = self.compose(net["type"], description, merged)
            transaction = self.zk.transaction()
            guard.add_to(transaction)
            transaction.set_data(schema.network(vni), description.encode())
            for name, value in values.items():
                transaction.set_data(schema.key(vni, name), value.encode())
            transaction.set_data(schema.ROOT, b"", version=root_version)
            self.zk.commit(transaction, f"modification of network {vni}")

        self.zk.optimistic(attempt)
        return quoted(f'Network "{ident}" modified successfully!')

    def remove(self, ident: str, if_match: etags.Precondition | None = None) -> str:
        vni = self.resolve(ident)
        description = self.zk.get(schema.network(vni))
        vm = self.runtime.service("vm", required=False)
        if vm is not None and hasattr(vm, "vms_using_network"):
            users = vm.vms_using_network(int(vni))
            if users:
                raise Conflict(quoted(f'ERROR: Network "{description}" is still used by VM(s) '
                                      f'{", ".join(sorted(users))}; remove their interfaces on vmbr{vni} first'))
        if if_match is None:
            self.zk.delete([schema.network(vni)])
        else:
            self.zk.optimistic(lambda: self.zk.delete([schema.network(vni)], self._guard(vni, ident, if_match)))
        return quoted(f'Network "{description}" removed successfully!')

    # -- DHCP leases and reservations ------------------------------------------------------

    def _reserved_macs(self, vni: str) -> list[str]:
        kids = self.zk.children_many(schema.key(vni, container) for container in schema.RESERVATION_KEYS)
        return sorted({mac for found in kids.values() for mac in (found or [])})

    @staticmethod
    def _encode_lease(mac: str, entry: Entry) -> bytes:
        return encode_json(lease_object(mac, entry))

    def leases_encoded(self, ident: str, limit: str | None, static: bool) -> Encoded | EncodedArray:
        """Live leases, or (``static``) the reserved MACs, each as its live lease if it has one
        (v0.9.0); never collapsed. Node daemons record leases: read after ``sync``, so a lease
        recorded before the request is in the answer."""
        self._sync()
        vni = self.resolve(ident, mutation=False)
        pattern = matching.fuzzy(limit) if limit else None
        live = self._lease_view(vni)
        if static:
            reservations = [view.snapshot() for view in self._reservation_views(vni)]
            macs = sorted({mac for found in reservations for mac, entry in found.items() if present(entry)})
            if pattern is not None:
                macs = [mac for mac in macs if pattern.match(mac)]
            leases = live.entries(macs) if macs else {}
            found = []
            for mac in macs:
                if present(leases.get(mac)):
                    found.append(lease_object(mac, leases[mac]))
                    continue
                reservation = reservation_object(mac, (entries.get(mac) for entries in reservations))
                if reservation is not None:
                    found.append(reservation)
            if not found:
                raise NotFound("Lease not found.")
            return Encoded(encode_json(found))
        macs = sorted(live.names())
        if pattern is not None:
            macs = [mac for mac in macs if pattern.match(mac)]
        parts = live.encoded(macs, self._encode_lease) if macs else []
        if not parts:
            raise NotFound("Lease not found.")
        return EncodedArray(parts)

    def lease_mac(self, address: str) -> str | None:
        """The MAC whose dynamic DHCPv4 lease on a managed network holds ``address``, or None.

        Static reservations do not count (v0.6's metadata API); when several
        leases hold the address the last one found wins (networks by VNI,
        leases by MAC). From the views of the managed networks' leases, after
        ``sync``: the VM asking got its lease a moment ago.
        """
        self._sync()
        networks = self._networks().snapshot()
        found = None
        for vni in self._numeric(networks):
            if not present(networks[vni]) or networks[vni].get("nettype") != "managed":
                continue
            leases = self._lease_view(vni).snapshot()
            for mac in sorted(leases):
                if present(leases[mac]) and leases[mac].get("ipaddr") == address:
                    found = mac
        return found

    def lease(self, ident: str, mac: str) -> list[dict]:
        """One MAC's live lease or reservation, exactly matched; always a list (v0.6 shape)."""
        self._sync()
        vni = self.resolve(ident, mutation=False)
        mac = validate.mac("mac", mac)  # a key of its own ('.', '..' are none: 400, not ZooKeeper's 500)
        live = self._lease_view(vni).one(mac)
        if present(live):
            return [lease_object(mac, live)]
        found = reservation_object(mac, (view.one(mac) for view in self._reservation_views(vni)))
        if found is None:
            raise NotFound("Lease not found.")
        return [found]

    def add_reservation(self, ident: str, mac: str, ipaddress: str, hostname: str | None) -> str:
        vni = self.resolve(ident)
        mac = validate.mac("macaddress", mac)
        address = validate.ip4_address("ipaddress", ipaddress)
        network = self.zk.get(schema.key(vni, "ip4_network"))
        if not network or network == schema.NONE:
            raise BadRequest(quoted(f'ERROR: Network "{ident}" has no IPv4 network for reservations'))
        validate.inside("ipaddress", address, validate.ip4_network(network), "an IPv4 address")
        if hostname is not None and hostname != "":
            validate.name("hostname", hostname)
        if mac in self._reserved_macs(vni):
            raise BadRequest(quoted(f'ERROR: A reservation with MAC "{mac}" already exists!'))
        containers = self.zk.exists_many(schema.key(vni, container) for container in schema.RESERVATION_KEYS)
        transaction = self.zk.transaction()
        for path, exists in sorted(containers.items()):
            if not exists:  # networks made by v0.6 have no dhcp_reservations container
                transaction.create(path, b"")
        for path, value in sorted(schema.reservation_keys(vni, mac, str(address), hostname or "None").items()):
            transaction.create(path, value.encode())
        self.zk.commit(transaction, f"reservation of {mac} in network {vni}")
        return quoted(f'DHCP reservation "{mac}" added successfully!')

    def remove_lease(self, ident: str, value: str) -> str:
        """The value may be a MAC, a hostname or an address (v0.6); it must name one MAC.

        v0.6 compared literally and removed the last hit, so a MAC in upper case (which the
        element GET finds) matched nothing, the hostname placeholder ``None`` of reservations made
        without one matched them all, and an address or hostname shared by several entries
        removed one of them at random. Here a MAC is compared in lower case (how reservations are
        stored and GET looks them up) and, when it matches, nothing else is considered, so removal
        by MAC always works; the placeholder (``None``, empty) is no hostname; a value that
        matches entries of more than one MAC is a 409 naming them, and nothing is removed. When a
        MAC has both a reservation and a live lease, the lease is removed (v0.6).

        Matched against the views after ``sync`` (one round trip): reading every lease's and
        reservation's keys for each removal took 208 ms at the median with 1,000 leases under load.
        """
        self._sync()
        vni = self.resolve(ident)
        reservations = [view.snapshot() for view in self._reservation_views(vni)]
        reserved = sorted({mac for found in reservations for mac, entry in found.items() if present(entry)})
        static = [reservation_object(mac, (entries.get(mac) for entries in reservations)) for mac in reserved]
        live = self._lease_view(vni).snapshot()
        dynamic = [lease_object(mac, live[mac]) for mac in sorted(live) if present(live[mac])]
        entries = [(kind, entry) for kind, found in (("static", static), ("dynamic", dynamic))
                   for entry in found if entry is not None]
        lowered = value.lower()
        matches = [(kind, entry) for kind, entry in entries if entry["mac_address"].lower() == lowered]
        if not matches:
            matches = [(kind, entry) for kind, entry in entries if value == entry["ip4_address"]
                       or (value == entry["hostname"] and entry["hostname"] not in ("", schema.NONE))]
        if not matches:
            raise NotFound(quoted(f'ERROR: No DHCP reservation or lease exists matching "{value}"!'))
        macs = sorted({entry["mac_address"].lower() for _, entry in matches})
        if len(macs) > 1:
            raise Conflict(quoted(f'ERROR: "{value}" matches the DHCP reservations or leases of more than one MAC '
                                  f'({", ".join(macs)}); nothing was removed. Remove one by its MAC address.'))
        kind, mac = matches[-1][0], matches[-1][1]["mac_address"]  # dynamic after static: the lease wins (v0.6)
        if kind == "static":
            self.zk.delete(schema.reservation(vni, mac, container) for container in schema.RESERVATION_KEYS)
            return quoted(f'DHCP static reservation "{mac}" removed successfully!')
        self.zk.delete([schema.lease(vni, mac)])
        return quoted(f'DHCP dynamic lease "{mac}" removed successfully!')

    # -- firewall ACLs ---------------------------------------------------------------------

    def _rules(self, vni: str, directions: tuple[str, ...] = schema.DIRECTIONS) -> list[dict]:
        """ACL objects per direction, in numeric order, read now (for a change's decisions)."""
        names = self.zk.children_many(schema.rules(vni, direction) for direction in directions)
        paths = []
        for direction in directions:
            for description in names[schema.rules(vni, direction)] or []:
                base = schema.rule(vni, direction, description)
                paths += [f"{base}/order", f"{base}/rule"]
        values = self.zk.get_many(paths)
        out = []
        for direction in directions:
            chain = {}
            for description in names[schema.rules(vni, direction)] or []:
                base = schema.rule(vni, direction, description)
                chain[description] = {"order": values[f"{base}/order"], "rule": values[f"{base}/rule"]}
            out.extend(rule_objects(direction, chain))
        return out

    def _rules_viewed(self, vni: str, directions: tuple[str, ...] = schema.DIRECTIONS) -> list[dict]:
        """``_rules`` from the views of the chains."""
        out = []
        for direction in directions:
            chain = self._rule_view(vni, direction).snapshot()
            out.extend(rule_objects(direction, {description: entry for description, entry in chain.items()
                                                if present(entry)}))
        return out

    def acls(self, ident: str, limit: str | None, direction: str | None) -> list[dict]:
        vni = self.resolve(ident, mutation=False)
        found = self._rules_viewed(vni, (direction,) if direction else schema.DIRECTIONS)
        if limit:
            pattern = matching.fuzzy(limit)
            found = [entry for entry in found if pattern.match(entry["description"])]
        if not found:
            raise NotFound("ACL not found.")
        return found

    @staticmethod
    def _encode_rule(direction: str, description: str, entry: Entry) -> bytes:
        return encode_json(rule_objects(direction, {description: entry})[0])

    def acl(self, ident: str, description: str) -> tuple[Encoded, str]:
        """One ACL (its chain ``in`` first, as the list) and its ETag (of the mzxids of its keys)."""
        vni = self.resolve(ident, mutation=False)
        if is_name(description):  # else no key can hold it (and reading one would be ZooKeeper's error)
            for direction in schema.DIRECTIONS:
                found = self._rule_view(vni, direction).answer(
                    description, lambda child, entry, direction=direction: self._encode_rule(direction, child, entry))
                if found is not None:
                    return Encoded(found[0]), found[1]
        raise NotFound("ACL not found.")

    def _acl_guard(self, vni: str, ident: str, description: str, if_match: etags.Precondition | None) -> etags.Guard:
        """``_guard`` of an ACL (the ETag of GET /network/<vni>/acl/<description>), in whichever chain holds it."""
        if if_match is None:
            return etags.Guard(None)
        for direction in schema.DIRECTIONS:
            found = etags.read(self.zk, schema.rule_answer(vni, direction, description))
            if found.etag is not None:
                break
        if_match.require(found.etag, f'Firewall rule "{description}" of network "{ident}"',
                         f"{API_PREFIX}/network/{ident}/acl/{description}")
        return found

    @staticmethod
    def _bump(transaction: Any, versions: dict[str, tuple[str | None, int]]) -> None:
        """Rewrite each chain's own znode at the version read: concurrent changes of a chain serialise."""
        for path, (_, version) in versions.items():
            transaction.set_data(path, b"", version=version)

    def add_acl(self, ident: str, description: str, rule: str, direction: str, order: int | None,
                if_match: etags.Precondition | None = None) -> str:
        """``if_match`` (POST /network/<vni>/acl/<description>): only while that rule is as read; it then
        exists, so the addition is refused as any duplicate."""
        vni = self.resolve(ident)
        validate.name("description", description)
        validate.order(order)
        if not rule.strip():
            raise validate.bad("rule", "an nftables rule fragment", rule)

        def attempt() -> None:
            guard = self._acl_guard(vni, ident, description, if_match)
            guards = self.zk.get_versioned(schema.rules(vni, d) for d in schema.DIRECTIONS)
            if any(version < 0 for _, version in guards.values()):
                raise BadRequest(quoted(f'ERROR: Network "{ident}" has no firewall_rules/{direction} key'))
            existing = self._rules(vni)
            if any(entry["description"] == description for entry in existing):
                raise BadRequest(quoted(f'ERROR: A rule with description "{description}" already exists!'))
            chain = [entry for entry in existing if entry["direction"] == direction]
            position = len(chain) if order is None or order > len(chain) else order
            names = [entry["description"] for entry in chain]
            names.insert(position, description)
            current = {entry["description"]: entry["order"] for entry in chain}
            transaction = self.zk.transaction()
            guard.add_to(transaction)
            for index, name in enumerate(names):
                if name != description and current[name] != index:
                    transaction.set_data(f"{schema.rule(vni, direction, name)}/order", str(index).encode())
            base = schema.rule(vni, direction, description)
            transaction.create(base, b"")
            transaction.create(f"{base}/order", str(position).encode())
            transaction.create(f"{base}/rule", rule.encode())
            self._bump(transaction, guards)
            self.zk.commit(transaction, f"addition of rule {description} to network {vni}")

        with self.zk.in_turn(self._acl_changes, "ACL changes"):
            self.zk.optimistic(attempt)
        return quoted(f'Firewall rule "{description}" added successfully!')

    def remove_acl(self, ident: str, description: str, direction: str | None,
                   if_match: etags.Precondition | None = None) -> str:
        vni = self.resolve(ident)

        def attempt() -> None:
            guards = self.zk.get_versioned(schema.rules(vni, d) for d in schema.DIRECTIONS)
            existing = self._rules(vni)
            match = [entry for entry in existing if entry["description"] == description]
            if not match or (direction and match[0]["direction"] != direction):
                where = f" in direction {direction}" if direction else ""
                raise NotFound(quoted(f'ERROR: No firewall rule exists matching description "{description}"{where}!'))
            guard = self._acl_guard(vni, ident, description, if_match)  # after the 404 it answers without If-Match
            chain_direction = match[0]["direction"]
            remaining = [entry for entry in existing if entry["direction"] == chain_direction
                         and entry["description"] != description]
            base = schema.rule(vni, chain_direction, description)
            transaction = self.zk.transaction()
            guard.add_to(transaction)
            for child in self.zk.children(base) or []:
                transaction.delete(f"{base}/{child}")
            transaction.delete(base)
            for index, entry in enumerate(remaining):
                if entry["order"] != index:
                    transaction.set_data(f"{schema.rule(vni, chain_direction, entry['description'])}/order",
                                         str(index).encode())
            # its own chain only: descriptions are unique across both, but a removal adds none
            self._bump(transaction, {path: version for path, version in guards.items()
                                     if path == schema.rules(vni, chain_direction)})
            self.zk.commit(transaction, f"removal of rule {description} from network {vni}")

        with self.zk.in_turn(self._acl_changes, "ACL changes"):
            self.zk.optimistic(attempt)
        return quoted(f'Firewall rule "{description}" removed successfully!')
