"""What a network can do: list, create, modify, remove; reservations; firewall ACLs.

Plain Python over the core's ZooKeeper helpers; no HTTP here. Every change of
several keys is one transaction. Changes whose correctness depends on what
was read (unique descriptions, ACL orders) are guarded by bumping the version
of the parent znode in the same transaction, so two concurrent callers cannot
interleave: the loser retries on fresh data (``zk.optimistic``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from pvc_core import matching
from pvc_core.errors import BadRequest, Conflict, NotFound
from pvc_core.routes import quoted

from . import schema, validate

log = logging.getLogger("pvc.network")


def not_found(ident: str, mutation: bool = True) -> NotFound:
    text = f'ERROR: Could not find network "{ident}" in the cluster!'
    return NotFound(quoted(text) if mutation else text)


class NetworkService:
    """Networks, DHCP reservations and ACLs of the cluster."""

    def __init__(self, runtime: Any):
        self.runtime = runtime

    @property
    def zk(self) -> Any:
        return self.runtime.zk

    # -- reading ---------------------------------------------------------------------------

    def vnis(self) -> list[str]:
        children = self.zk.children(schema.ROOT) or []
        valid = [child for child in children if child.isascii() and child.isdigit()]
        if len(valid) != len(children):
            log.warning("ignoring non-numeric keys under %s: %s", schema.ROOT,
                        ", ".join(child for child in children if not (child.isascii() and child.isdigit())))
        return sorted(valid, key=int)

    def count(self) -> int:
        return len(self.vnis())

    def read(self, vnis: list[str]) -> list[dict]:
        """Network objects (network.md §3.1), one pipelined round trip for all of them."""
        paths = []
        for vni in vnis:
            paths.append(schema.network(vni))
            paths.extend(schema.key(vni, name) for name in schema.SCALARS)
        values = self.zk.get_many(paths)
        out = []
        for vni in vnis:
            description = values[schema.network(vni)]
            if description is None:
                continue  # removed meanwhile
            get = {name: values[schema.key(vni, name)] or schema.NONE for name in schema.SCALARS}
            name_servers = values[schema.key(vni, "name_servers")]
            out.append({
                "vni": int(vni),
                "description": description,
                "type": get["nettype"],
                "domain": get["domain"],
                "name_servers": (name_servers or "").split(","),
                "ip6": {"network": get["ip6_network"], "gateway": get["ip6_gateway"],
                        "dhcp_flag": get["dhcp6_flag"]},
                "ip4": {"network": get["ip4_network"], "gateway": get["ip4_gateway"],
                        "dhcp_flag": get["dhcp4_flag"], "dhcp_start": get["dhcp4_start"],
                        "dhcp_end": get["dhcp4_end"]},
            })
        return out

    def descriptions(self) -> dict[str, str]:
        vnis = self.vnis()
        values = self.zk.get_many(schema.network(vni) for vni in vnis)
        return {vni: values[schema.network(vni)] for vni in vnis if values[schema.network(vni)] is not None}

    def resolve(self, ident: str, mutation: bool = True) -> str:
        """v0.6 resolution: digits are a VNI, anything else a description."""
        if ident.isascii() and ident.isdigit():
            if self.zk.exists(schema.network(ident)):
                return ident
            raise not_found(ident, mutation)
        for vni, description in self.descriptions().items():
            if description == ident:
                return vni
        raise not_found(ident, mutation)

    def list(self, limit: str | None) -> list[dict]:
        networks = self.read(self.vnis())
        if limit:
            pattern = matching.regex(limit)
            networks = [net for net in networks
                        if pattern.match(str(net["vni"])) or pattern.match(net["description"])]
        if not networks:
            raise NotFound("Network not found.")
        return networks

    def get(self, ident: str) -> list[dict]:
        networks = [net for net in self.read(self.vnis()) if str(net["vni"]) == ident or net["description"] == ident]
        if not networks:
            raise NotFound("Network not found.")
        return networks

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

    def add(self, vni_text: str, description: str, nettype: str, fields: dict[str, Any]) -> str:
        vni = validate.vni(vni_text, nettype)
        validate.network_description(description)
        values = self.compose(nettype, description, fields)

        def attempt() -> None:
            _, version = self.zk.get_versioned([schema.ROOT])[schema.ROOT]
            if version < 0:
                raise BadRequest("ERROR: The cluster is not initialized (no /networks key); "
                                 "POST /api/v1/initialize first")
            if self.zk.exists(schema.network(vni)):
                raise BadRequest(quoted(f'ERROR: A network with VNI "{vni}" already exists!'))
            if description in self.descriptions().values():
                raise BadRequest(quoted(f'ERROR: A network with description "{description}" already exists!'))
            transaction = self.zk.transaction()
            for path, value in sorted(schema.new_network_keys(vni, description, values).items()):
                transaction.create(path, value.encode())
            transaction.set_data(schema.ROOT, b"", version=version)
            self.zk.commit(transaction, f"creation of network {vni}")

        self.zk.optimistic(attempt)
        return quoted(f'Network "{description}" added successfully!')

    def modify(self, ident: str, changes: dict[str, Any]) -> str:
        vni = self.resolve(ident)

        def attempt() -> None:
            _, root_version = self.zk.get_versioned([schema.ROOT])[schema.ROOT]
            current = self.read([vni])
            if not current:
                raise not_found(ident)
            net = current[0]
            description = changes.get("description") or net["description"]
            if changes.get("description"):
                validate.network_description(description)
                others = {v: d for v, d in self.descriptions().items() if v != vni}
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
            transaction.set_data(schema.network(vni), description.encode())
            for name, value in values.items():
                transaction.set_data(schema.key(vni, name), value.encode())
            transaction.set_data(schema.ROOT, b"", version=root_version)
            self.zk.commit(transaction, f"modification of network {vni}")

        self.zk.optimistic(attempt)
        return quoted(f'Network "{ident}" modified successfully!')

    def remove(self, ident: str) -> str:
        vni = self.resolve(ident)
        description = self.zk.get(schema.network(vni))
        vm = self.runtime.service("vm", required=False)
        if vm is not None and hasattr(vm, "vms_using_network"):
            users = vm.vms_using_network(int(vni))
            if users:
                raise Conflict(quoted(f'ERROR: Network "{description}" is still used by VM(s) '
                                      f'{", ".join(sorted(users))}; remove their interfaces on vmbr{vni} first'))
        self.zk.delete([schema.network(vni)])
        return quoted(f'Network "{description}" removed successfully!')

    # -- DHCP leases and reservations ------------------------------------------------------

    def _lease_objects(self, vni: str, macs: list[str]) -> list[dict]:
        """Per MAC: the live lease if there is one, else the reservation (fixed in v0.9.0)."""
        paths = []
        for mac in macs:
            paths.append(schema.lease(vni, mac))
            paths.extend(f"{schema.lease(vni, mac)}/{name}" for name in ("hostname", "ipaddr", "expiry"))
            for container in schema.RESERVATION_KEYS:
                paths.extend(f"{schema.reservation(vni, mac, container)}/{name}" for name in ("hostname", "ipaddr"))
        values = self.zk.get_many(paths)
        out = []
        for mac in macs:
            base = schema.lease(vni, mac)
            if values[base] is not None:
                out.append({"hostname": values[f"{base}/hostname"] or "", "ip4_address": values[f"{base}/ipaddr"] or "",
                            "mac_address": mac, "timestamp": values[f"{base}/expiry"] or "0"})
                continue
            for container in schema.RESERVATION_KEYS:
                res = schema.reservation(vni, mac, container)
                if values[f"{res}/ipaddr"] is not None:
                    out.append({"hostname": values[f"{res}/hostname"] or "", "ip4_address": values[f"{res}/ipaddr"],
                                "mac_address": mac, "timestamp": "static"})
                    break
        return out

    def _reserved_macs(self, vni: str) -> list[str]:
        kids = self.zk.children_many(schema.key(vni, container) for container in schema.RESERVATION_KEYS)
        return sorted({mac for found in kids.values() for mac in (found or [])})

    def leases(self, ident: str, limit: str | None, static: bool) -> list[dict]:
        vni = self.resolve(ident, mutation=False)
        macs = self._reserved_macs(vni) if static else sorted(self.zk.children(schema.key(vni, schema.LEASES)) or [])
        if limit:
            pattern = matching.fuzzy(limit)
            macs = [mac for mac in macs if pattern.match(mac)]
        found = self._lease_objects(vni, macs)
        if not found:
            raise NotFound("Lease not found.")
        return found

    def lease_mac(self, address: str) -> str | None:
        """The MAC whose dynamic DHCPv4 lease on a managed network holds ``address``, or None.

        Static reservations do not count (v0.6's metadata API); when several
        leases hold the address the last one found wins (networks by VNI,
        leases by MAC). Three pipelined round trips, whatever the counts.
        """
        vnis = self.vnis()
        types = self.zk.get_many(schema.key(vni, "nettype") for vni in vnis)
        managed = [vni for vni in vnis if types[schema.key(vni, "nettype")] == "managed"]
        leases = self.zk.children_many(schema.key(vni, schema.LEASES) for vni in managed)
        owners = {schema.lease_field(vni, mac, "ipaddr"): mac for vni in managed
                  for mac in sorted(leases[schema.key(vni, schema.LEASES)] or [])}
        found = None
        for path, value in self.zk.get_many(owners).items():
            if value == address:
                found = owners[path]
        return found

    def lease(self, ident: str, mac: str) -> list[dict]:
        """One MAC's live lease or reservation, exactly matched; always a list (v0.6 shape)."""
        vni = self.resolve(ident, mutation=False)
        mac = validate.mac("mac", mac)  # a key of its own ('.', '..' are none: 400, not ZooKeeper's 500)
        found = self._lease_objects(vni, [mac])
        if not found:
            raise NotFound("Lease not found.")
        return found

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
        """The value may be a MAC, a hostname or an address; a dynamic lease match wins (v0.6)."""
        vni = self.resolve(ident)
        reserved = self._reserved_macs(vni)
        dynamic = sorted(self.zk.children(schema.key(vni, schema.LEASES)) or [])
        found = None
        for kind, macs in (("static", reserved), ("dynamic", dynamic)):
            for entry in self._lease_objects(vni, macs) if kind == "dynamic" else self._reservations(vni, macs):
                if value in (entry["mac_address"], entry["hostname"], entry["ip4_address"]):
                    found = (kind, entry["mac_address"])
        if found is None:
            raise NotFound(quoted(f'ERROR: No DHCP reservation or lease exists matching "{value}"!'))
        kind, mac = found
        if kind == "static":
            self.zk.delete(schema.reservation(vni, mac, container) for container in schema.RESERVATION_KEYS)
            return quoted(f'DHCP static reservation "{mac}" removed successfully!')
        self.zk.delete([schema.lease(vni, mac)])
        return quoted(f'DHCP dynamic lease "{mac}" removed successfully!')

    def _reservations(self, vni: str, macs: list[str]) -> list[dict]:
        paths = [f"{schema.reservation(vni, mac, container)}/{name}" for mac in macs
                 for container in schema.RESERVATION_KEYS for name in ("hostname", "ipaddr")]
        values = self.zk.get_many(paths)
        out = []
        for mac in macs:
            for container in schema.RESERVATION_KEYS:
                base = schema.reservation(vni, mac, container)
                if values[f"{base}/ipaddr"] is not None:
                    out.append({"mac_address": mac, "hostname": values[f"{base}/hostname"] or "",
                                "ip4_address": values[f"{base}/ipaddr"]})
                    break
        return out

    # -- firewall ACLs ---------------------------------------------------------------------

    def _rules(self, vni: str, directions: tuple[str, ...] = schema.DIRECTIONS) -> list[dict]:
        """ACL objects per direction, in numeric order (v0.6 sorted the text: D10)."""
        names = self.zk.children_many(schema.rules(vni, direction) for direction in directions)
        paths = []
        for direction in directions:
            for description in names[schema.rules(vni, direction)] or []:
                base = schema.rule(vni, direction, description)
                paths += [f"{base}/order", f"{base}/rule"]
        values = self.zk.get_many(paths)
        out = []
        for direction in directions:
            entries = []
            for description in names[schema.rules(vni, direction)] or []:
                base = schema.rule(vni, direction, description)
                order_text = values[f"{base}/order"] or ""
                order = int(order_text) if re.fullmatch(r"-?[0-9]+", order_text) else 1 << 30
                entries.append({"direction": direction, "order": order, "description": description,
                                "rule": values[f"{base}/rule"] or ""})
            entries.sort(key=lambda entry: (entry["order"], entry["description"]))
            out.extend(entries)
        return out

    def acls(self, ident: str, limit: str | None, direction: str | None) -> list[dict]:
        vni = self.resolve(ident, mutation=False)
        found = self._rules(vni, (direction,) if direction else schema.DIRECTIONS)
        if limit:
            pattern = matching.fuzzy(limit)
            found = [entry for entry in found if pattern.match(entry["description"])]
        if not found:
            raise NotFound("ACL not found.")
        return found

    def acl(self, ident: str, description: str) -> dict:
        vni = self.resolve(ident, mutation=False)
        for entry in self._rules(vni):
            if entry["description"] == description:
                return entry
        raise NotFound("ACL not found.")

    def _guard(self, transaction: Any, vni: str, versions: dict[str, tuple[str | None, int]]) -> None:
        for path, (_, version) in versions.items():
            transaction.set_data(path, b"", version=version)

    def add_acl(self, ident: str, description: str, rule: str, direction: str, order: int | None) -> str:
        vni = self.resolve(ident)
        validate.name("description", description)
        validate.order(order)
        if not rule.strip():
            raise validate.bad("rule", "an nftables rule fragment", rule)

        def attempt() -> None:
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
            for index, name in enumerate(names):
                if name != description and current[name] != index:
                    transaction.set_data(f"{schema.rule(vni, direction, name)}/order", str(index).encode())
            base = schema.rule(vni, direction, description)
            transaction.create(base, b"")
            transaction.create(f"{base}/order", str(position).encode())
            transaction.create(f"{base}/rule", rule.encode())
            self._guard(transaction, vni, guards)
            self.zk.commit(transaction, f"addition of rule {description} to network {vni}")

        self.zk.optimistic(attempt)
        return quoted(f'Firewall rule "{description}" added successfully!')

    def remove_acl(self, ident: str, description: str, direction: str | None) -> str:
        vni = self.resolve(ident)

        def attempt() -> None:
            guards = self.zk.get_versioned(schema.rules(vni, d) for d in schema.DIRECTIONS)
            existing = self._rules(vni)
            match = [entry for entry in existing if entry["description"] == description]
            if not match or (direction and match[0]["direction"] != direction):
                where = f" in direction {direction}" if direction else ""
                raise NotFound(quoted(f'ERROR: No firewall rule exists matching description "{description}"{where}!'))
            chain_direction = match[0]["direction"]
            remaining = [entry for entry in existing if entry["direction"] == chain_direction
                         and entry["description"] != description]
            base = schema.rule(vni, chain_direction, description)
            transaction = self.zk.transaction()
            for child in self.zk.children(base) or []:
                transaction.delete(f"{base}/{child}")
            transaction.delete(base)
            for index, entry in enumerate(remaining):
                if entry["order"] != index:
                    transaction.set_data(f"{schema.rule(vni, chain_direction, entry['description'])}/order",
                                         str(index).encode())
            self._guard(transaction, vni, guards)
            self.zk.commit(transaction, f"removal of rule {description} from network {vni}")

        self.zk.optimistic(attempt)
        return quoted(f'Firewall rule "{description}" removed successfully!')
