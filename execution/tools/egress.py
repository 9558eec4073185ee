"""Where tools may connect: the check behind every outgoing request of a tool.

A host on the tenant's allowlist is resolved at call time, and every address it
resolves to is checked: loopback, private, link-local, CGNAT, multicast, unspecified,
reserved and cloud metadata addresses are refused unless the operator listed them in
EGRESS_ALLOW_PRIVATE_NETWORKS; the platform's own listeners on this host (web, OTLP
gRPC, the local Messages API, its datastores) are refused even then. The connection is
made to the address that was checked, not to the name, so a DNS answer that changes
between the check and the connection (rebinding) reaches nothing new; TLS still sends
the name (SNI) and checks the certificate against it, and the Host header is the name.
"""

import ipaddress
import re
import socket
from functools import lru_cache
from urllib.parse import urlsplit

import httpcore
import httpx
from django.conf import settings

from execution.retry import UpstreamError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
ENTRY_FORMS = "api.example.com, *.example.com, 10.0.0.5 or [fd00::5], each with an optional :port"


class BadEntry(ValueError):
    pass


def _entry_name(name: str) -> str:
    if name.startswith("["):
        try:
            return str(ipaddress.IPv6Address(name[1:-1]))
        except ValueError:
            raise BadEntry(f"{name} is not an IPv6 address") from None
    labels = name.split(".")
    if labels[-1].isdigit():  # looks like an IPv4 address: it must be one, dotted quad
        try:
            return str(ipaddress.IPv4Address(name))
        except ValueError:
            raise BadEntry(f"{name!r} is not an IPv4 address") from None
    if labels[0] == "*":
        labels = labels[1:]
    if not labels or len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise BadEntry(f"{name!r} is not a host name (letters, digits, '-' and dots)")
    return name


def host_entry_parse(entry: str) -> tuple[str, int | None]:
    """(name, port or None) of an allowlist entry; BadEntry says what is wrong."""
    if not entry:
        raise BadEntry("it is empty")
    if any(c.isspace() for c in entry):
        raise BadEntry("it contains spaces")
    if "://" in entry or any(c in entry for c in "/?#@"):
        raise BadEntry("it is a URL; give the host alone")
    if entry.startswith("["):
        name, bracket, rest = entry.partition("]")
        name += bracket
        if not bracket:
            raise BadEntry("its '[' is not closed")
    else:
        name, colon, port = entry.partition(":")
        rest = colon + port
        if ":" in port:
            raise BadEntry("it has more than one ':' (an IPv6 address goes in brackets)")
    port = None
    if rest:
        if not re.fullmatch(r":[0-9]{1,5}", rest) or not 0 < int(rest[1:]) < 65536:
            raise BadEntry(f"{rest[1:]!r} is not a port (1 to 65535)")
        port = int(rest[1:])
    return _entry_name(name), port


def host_entry_problem(entry: str) -> str | None:
    """Why `entry` cannot go on a tenant's allowlist, or None."""
    try:
        host_entry_parse(entry)
    except BadEntry as exc:
        return f"{entry!r} is not a host: {exc} (use {ENTRY_FORMS})"
    return None


# (network, what it is), most specific first so the message names the narrowest.
REFUSED_NETWORKS = [
    (ipaddress.ip_network(net), what)
    for net, what in (
        ("169.254.169.254/32", "cloud metadata"),
        ("168.63.129.16/32", "cloud metadata"),  # Azure's platform endpoint
        ("100.100.100.200/32", "cloud metadata"),  # Alibaba Cloud
        ("fd00:ec2::254/128", "cloud metadata"),  # AWS over IPv6
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "CGNAT (shared)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved (IETF)"),
        ("192.0.2.0/24", "reserved (documentation)"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved (benchmarking)"),
        ("198.51.100.0/24", "reserved (documentation)"),
        ("203.0.113.0/24", "reserved (documentation)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/8", "reserved"),
        ("100::/64", "reserved (discard)"),
        ("2001::/32", "Teredo"),
        ("2001:db8::/32", "reserved (documentation)"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
]
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (v4-mapped, NAT64, 6to4): where the
    packets end up, so what is checked."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


@lru_cache(maxsize=256)
def _assigned_here(address: str, family: int) -> bool:
    """Whether `address` is one of this host's own: only those can be bound to."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


def _is_this_host(ip: IPAddress) -> bool:
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return _assigned_here(str(ip), family)


def _port_of(address: str | None) -> int | None:
    if not address:
        return None
    try:
        return urlsplit(address if "//" in address else f"//{address}").port
    except ValueError:
        return None


def platform_ports() -> set[int]:
    """The ports the platform listens on or talks to on this host."""
    database = settings.DATABASES["default"]
    ports = {
        settings.WEB_PORT,
        _port_of(settings.OTLP_GRPC_ADDRESS),
        _port_of(settings.EXECUTION_LLM_BASE_URL),
        _port_of(settings.REDIS_URL),
        _port_of(settings.CELERY_BROKER_URL),
        _port_of(settings.BLOB_STORE.get("endpoint_url")),
        int(database["PORT"]) if str(database.get("PORT") or "").isdigit() else None,
    }
    return {p for p in ports if p}


@lru_cache(maxsize=8)
def _allowed_networks(cidrs: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def _allowed(ip: IPAddress) -> bool:
    networks = _allowed_networks(tuple(settings.EGRESS_ALLOW_PRIVATE_NETWORKS))
    return any(ip.version == net.version and ip in net for net in networks)


def address_refusal(ip: IPAddress, port: int) -> str | None:
    """Why a tool may not connect to ip:port, or None. A v4-mapped or NAT64 address is
    judged by the IPv4 address it carries."""
    target = embedded_ipv4(ip) or ip
    if port in platform_ports() and _is_this_host(target):
        return f"port {port} on this host is one of the platform's own listeners"
    for network, what in REFUSED_NETWORKS:
        if target in network and not _allowed(target):
            return (
                f"{target} is in {network}, {what} (tools reach it only if the operator "
                "lists it in EGRESS_ALLOW_PRIVATE_NETWORKS)"
            )
    return None


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def checked_addresses(host: str, port: int, *, resolver=resolve) -> list[str]:
    """The addresses of `host`, each checked. One refused address refuses the host:
    a name that also points inward is not used at all."""
    addresses = resolver(host, port)
    for address in addresses:
        problem = address_refusal(ipaddress.ip_address(address.split("%")[0]), port)
        if problem:
            where = f"{address}:{port}" if host == address else f"{host}:{port} ({address})"
            raise UpstreamError(
                f"refused to connect to {where}: {problem}", retryable=False, kind="tool_error"
            )
    return addresses


class PinnedBackend(httpcore.SyncBackend):
    """Connects to an address that was checked, never to the name itself."""

    def __init__(self, resolver=resolve):
        self.resolver = resolver

    def connect_tcp(self, host: str, port: int, timeout=None, local_address=None, **kwargs):
        last_error = None
        for address in checked_addresses(host, port, resolver=self.resolver):
            try:
                return super().connect_tcp(address, port, timeout, local_address, **kwargs)
            except httpcore.ConnectError as exc:  # try the next address, as browsers do
                last_error = exc
        raise last_error or httpcore.ConnectError(f"{host} has no address")


class PinnedTransport(httpx.HTTPTransport):
    def __init__(self, resolver=resolve):
        super().__init__()
        # XXX(egress): httpx takes no network backend, so its pool is rebuilt with ours
        # (httpcore's public API); remove when httpx accepts `network_backend`.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_keepalive_connections=0,  # every request resolves and is checked afresh
            network_backend=PinnedBackend(resolver),
        )


@lru_cache(maxsize=1)
def egress_client() -> httpx.Client:
    """The one client of tools: no redirects, no proxies from the environment (a proxy
    would connect for us, unchecked), no kept-alive connections."""
    return httpx.Client(transport=PinnedTransport(), follow_redirects=False, trust_env=False)
