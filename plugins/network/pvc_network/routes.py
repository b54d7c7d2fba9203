"""The /network routes (network.md §7) and their thin handlers."""

from __future__ import annotations

from typing import Any

from pvc_core import etags
from pvc_core.params import BOOLEAN, INTEGER, STRING, Param
from pvc_core.routes import CONFLICT, NO_MATCH, Encoded, EncodedArray, Route, collapse
from pvc_core.shapes import INT, MESSAGE, STR, array, named, obj, one_or_many

from .service import NetworkService

NETTYPE = Param("nettype", STRING, required=True, choices=("managed", "bridged"),
                help="A valid nettype must be specified")
DESCRIPTION = Param("description", STRING, required=True, help="network name, unique, no whitespace")
OPTIONS = (
    Param("domain", STRING, help="DNS domain (managed default: <description>.local)"),
    Param("name_servers", STRING, repeated=True, help="DNS servers; repeat the argument or comma-separate"),
    Param("ip4_network", STRING, help="IPv4 network in CIDR form"),
    Param("ip4_gateway", STRING, help="IPv4 gateway inside ip4_network (required with it)"),
    Param("ip6_network", STRING, help="IPv6 network in CIDR form"),
    Param("ip6_gateway", STRING, help="IPv6 gateway inside ip6_network (default <ip6_network>::1)"),
    Param("dhcp4", BOOLEAN, default=False, aliases=("dhcp4_flag",), help="enable DHCPv4"),
    Param("dhcp4_start", STRING, help="first DHCPv4 address (required with dhcp4)"),
    Param("dhcp4_end", STRING, help="last DHCPv4 address (required with dhcp4)"),
)
MODIFY_OPTIONS = (
    Param("description", STRING, help="new network name"),
    *(param for param in OPTIONS if param.name != "dhcp4"),
    Param("dhcp4", BOOLEAN, aliases=("dhcp4_flag",), help="enable or disable DHCPv4 (absent: unchanged)"),
)
LIMIT = Param("limit", STRING, help="regular expression")
DIRECTION = Param("direction", STRING, choices=("in", "out"), help="rule direction")

# network.md §3: unset values are the string "None", the DHCP flags the strings "True"/"False".
NETWORK = named("Network", obj({
    "vni": INT, "description": STR, "type": STR, "domain": STR, "name_servers": array(STR),
    "ip6": obj({"network": STR, "gateway": STR, "dhcp_flag": STR}),
    "ip4": obj({"network": STR, "gateway": STR, "dhcp_flag": STR, "dhcp_start": STR, "dhcp_end": STR})}))
LEASE = named("Lease", obj({"hostname": STR, "ip4_address": STR, "mac_address": STR, "timestamp": STR}))
ACL = named("ACL", obj({"direction": {"type": "string", "enum": ["in", "out"]}, "order": INT, "description": STR,
                        "rule": STR}))


def service(ctx: Any) -> NetworkService:
    return ctx.service("network")


def _fields(params: dict) -> dict:
    return {name: params.get(name) for name in
            ("domain", "name_servers", "ip4_network", "ip4_gateway", "ip6_network", "ip6_gateway", "dhcp4",
             "dhcp4_start", "dhcp4_end")}


def list_networks(ctx: Any, params: dict) -> Encoded | EncodedArray:
    return service(ctx).list_encoded(params["limit"])


def add_network(ctx: Any, params: dict, vni: str | None = None) -> dict:
    text = service(ctx).add(vni if vni is not None else params["vni"], params["description"],
                            params["nettype"], _fields(params), ctx.if_match)
    return {"message": text}


def get_network(ctx: Any, params: dict, vni: str) -> Encoded | EncodedArray:
    answer, etag = service(ctx).get_encoded(vni)
    ctx.response_headers[etags.HEADER] = etag
    return answer


def modify_network(ctx: Any, params: dict, vni: str) -> dict:
    changes = _fields(params)
    changes["description"] = params["description"]
    return {"message": service(ctx).modify(vni, changes, ctx.if_match)}


def remove_network(ctx: Any, params: dict, vni: str) -> dict:
    return {"message": service(ctx).remove(vni, ctx.if_match)}


def list_leases(ctx: Any, params: dict, vni: str) -> Encoded | EncodedArray:
    return service(ctx).leases_encoded(vni, params["limit"], params["static"])


def add_reservation(ctx: Any, params: dict, vni: str, mac: str | None = None) -> dict:
    text = service(ctx).add_reservation(vni, mac if mac is not None else params["macaddress"],
                                        params["ipaddress"], params["hostname"])
    return {"message": text}


def get_lease(ctx: Any, params: dict, vni: str, mac: str) -> list:
    return service(ctx).lease(vni, mac)


def remove_lease(ctx: Any, params: dict, vni: str, mac: str) -> dict:
    return {"message": service(ctx).remove_lease(vni, mac)}


def list_acls(ctx: Any, params: dict, vni: str) -> Any:
    return collapse(service(ctx).acls(vni, params["limit"], params["direction"]))


def add_acl(ctx: Any, params: dict, vni: str, description: str | None = None) -> dict:
    text = service(ctx).add_acl(vni, description if description is not None else params["description"],
                                params["rule"], params["direction"], params["order"], ctx.if_match)
    return {"message": text}


def get_acl(ctx: Any, params: dict, vni: str, description: str) -> Encoded:
    answer, etag = service(ctx).acl(vni, description)
    ctx.response_headers[etags.HEADER] = etag
    return answer


def remove_acl(ctx: Any, params: dict, vni: str, description: str) -> dict:
    return {"message": service(ctx).remove_acl(vni, description, params["direction"], ctx.if_match)}


RESERVATION = (Param("ipaddress", STRING, required=True, help="IPv4 address inside the network"),
               Param("hostname", STRING, help="host name for the reservation"))
RULE = (Param("rule", STRING, required=True, help="nftables rule fragment"),
        Param("direction", STRING, choices=("in", "out"), default="in", help="rule direction (default in)"),
        Param("order", INTEGER, help="position in its direction, 0-based (default: last)"))


def routes() -> list[Route]:
    tags = ("network",)
    return [
        Route("GET", "/network", list_networks, (LIMIT,), summary="List networks", tags=tags,
              returns=one_or_many(NETWORK), responses=NO_MATCH),
        Route("POST", "/network", add_network,
              (Param("vni", STRING, required=True, help="VXLAN ID (managed) or VLAN ID (bridged)"),
               DESCRIPTION, NETTYPE, *OPTIONS), summary="Create a network", tags=tags, returns=MESSAGE,
              responses=CONFLICT),
        Route("GET", "/network/<vni>", get_network, summary="One network by VNI or description", tags=tags,
              returns=one_or_many(NETWORK), etag=True),
        Route("POST", "/network/<vni>", add_network, (DESCRIPTION, NETTYPE, *OPTIONS),
              summary="Create a network with the VNI in the path", tags=tags, returns=MESSAGE, responses=CONFLICT,
              etag=True),
        Route("PUT", "/network/<vni>", modify_network, MODIFY_OPTIONS, summary="Modify a network", tags=tags,
              returns=MESSAGE, responses=CONFLICT, etag=True),
        Route("DELETE", "/network/<vni>", remove_network, summary="Remove a network", tags=tags, returns=MESSAGE,
              responses={409: "The network is still used by VMs, or a concurrent change"}, etag=True),
        Route("GET", "/network/<vni>/lease", list_leases,
              (LIMIT, Param("static", BOOLEAN, default=False, help="list static reservations instead")),
              summary="List DHCP leases or reservations", aliases=("/network/<vni>/dhcp",), tags=tags,
              returns=array(LEASE)),
        Route("POST", "/network/<vni>/lease", add_reservation,
              (Param("macaddress", STRING, required=True, help="MAC address"), *RESERVATION),
              summary="Add a static DHCP reservation", aliases=("/network/<vni>/dhcp",), tags=tags,
              returns=MESSAGE, responses=CONFLICT),
        Route("GET", "/network/<vni>/lease/<mac>", get_lease, summary="One lease or reservation by MAC",
              aliases=("/network/<vni>/dhcp/<mac>",), tags=tags, returns=array(LEASE)),
        Route("POST", "/network/<vni>/lease/<mac>", add_reservation, RESERVATION,
              summary="Add a static DHCP reservation (MAC in the path)",
              aliases=("/network/<vni>/dhcp/<mac>",), tags=tags, returns=MESSAGE, responses=CONFLICT),
        Route("DELETE", "/network/<vni>/lease/<mac>", remove_lease,
              summary="Remove a reservation or lease by MAC, hostname or address",
              aliases=("/network/<vni>/dhcp/<mac>",), tags=tags, returns=MESSAGE, responses=CONFLICT),
        Route("GET", "/network/<vni>/acl", list_acls, (LIMIT, DIRECTION), summary="List firewall rules",
              tags=tags, returns=one_or_many(ACL)),
        Route("POST", "/network/<vni>/acl", add_acl,
              (Param("description", STRING, required=True, help="rule name, unique in the network"), *RULE),
              summary="Add a firewall rule", tags=tags, returns=MESSAGE, responses=CONFLICT),
        Route("GET", "/network/<vni>/acl/<description>", get_acl, summary="One firewall rule", tags=tags,
              returns=ACL, etag=True),
        Route("POST", "/network/<vni>/acl/<description>", add_acl, RULE,
              summary="Add a firewall rule (description in the path)", tags=tags, returns=MESSAGE,
              responses=CONFLICT, etag=True),
        Route("DELETE", "/network/<vni>/acl/<description>", remove_acl,
              (Param("direction", STRING, choices=("in", "out"), help="when given, must match the rule's"),),
              summary="Remove a firewall rule", tags=tags, returns=MESSAGE, responses=CONFLICT, etag=True),
    ]
