"""The one way to open a connection to a mail server: only to servers on the public internet.

The connect form takes any host and port from a user. Were it to connect anywhere, it would
scan the deployment's own network (loopback services, private ranges, the cloud metadata
address) and tell by its answers what listens there. So every IMAP and SMTP connection is
opened by `connect`, which, unless settings allow non-public servers (local test servers and
demos: CRM_ALLOW_PRIVATE_MAIL_HOSTS):

- resolves the host once and refuses it if any of its addresses is not public;
- connects to those checked addresses only, so no second lookup can be answered with another
  address (DNS rebinding);
- checks the peer the socket actually reached before anything is sent.

A refusal (PrivateHost) says the same whether or not anything listens there.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address
from typing import Any

from .base import PrivateHost

IPAddress = IPv4Address | IPv6Address
AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]

# NAT64's well-known prefix (RFC 6052): 64:ff9b::a.b.c.d reaches the IPv4 address a.b.c.d
# through a gateway; DNS64 resolvers hand such addresses out for IPv4-only servers.
_NAT64 = IPv6Network("64:ff9b::/96")


def is_public(address: IPAddress) -> bool:
    """True for an address on the public internet: not loopback, private, link-local,
    multicast, reserved, unspecified or shared (100.64/10), nor such an IPv4 address wrapped
    in IPv6 (IPv4-mapped, NAT64, 6to4, Teredo)."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)  # the socket reaches the IPv4 address
        if address in _NAT64:
            return is_public(IPv4Address(int(address) & 0xFFFF_FFFF))
        wrapped = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if (wrapped is not None and not is_public(wrapped)) or address.is_site_local:
            return False
    # is_global alone lets IPv4 multicast through on Python 3.11.
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_unspecified
    )


def literal_address(host: str) -> IPAddress | None:
    """The address when `host` is written as one ("10.0.0.1", "::1", "[::1]"), else None.

    Only the standard notations: "127.1" and other shorthands are names here, and are
    refused once resolved."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ip_address(text.split("%", 1)[0])  # without an IPv6 zone ("fe80::1%eth0")
    except ValueError:
        return None


def is_local_name(host: str) -> bool:
    """localhost and its subdomains, which always mean this machine (RFC 6761)."""
    name = host.strip().rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def is_plainly_private(host: str) -> bool:
    """True when `host` is, as written, a non-public address or localhost: no lookup needed."""
    address = literal_address(host)
    return is_local_name(host) if address is None else not is_public(address)


def refusal_message(host: str, address: IPAddress | str | None = None) -> str:
    """Why a server is refused, in plain words; the same whether anything listens there."""
    shown = str(literal_address(host) or host)
    if address is None or str(address) == shown:
        where = f"{host} is a private or local address"
    else:
        where = f"{host} resolves to a private or local address ({address})"
    return f"{where}; Threadline only connects to mail servers on the public internet."


def _address(sockaddr: tuple[Any, ...]) -> IPAddress:
    return ip_address(str(sockaddr[0]).split("%", 1)[0])


def check_peer(sock: socket.socket, host: str, *, allow_private: bool = False) -> None:
    """Raise PrivateHost unless the connected socket's peer is public (or `allow_private`).
    The socket is left to the caller."""
    if allow_private:
        return
    peer = _address(sock.getpeername())
    if not is_public(peer):
        raise PrivateHost(refusal_message(host, peer))


def resolve(host: str, port: int, *, allow_private: bool = False) -> list[AddressInfo]:
    """getaddrinfo's TCP addresses of host:port; raises PrivateHost if one is not public
    (unless `allow_private`), socket.gaierror if the host is unknown."""
    found = socket.getaddrinfo(host.strip().strip("[]"), port, type=socket.SOCK_STREAM)
    if not allow_private:
        for *_, sockaddr in found:
            address = _address(sockaddr)
            if not is_public(address):
                raise PrivateHost(refusal_message(host, address))
    return list(found)


def connect(host: str, port: int, *, timeout: float | None, allow_private: bool) -> socket.socket:
    """A TCP connection to host:port on which nothing was sent yet, to a public address only
    (unless `allow_private`), else PrivateHost before any connection is tried.

    Tries the host's addresses in order, as socket.create_connection does, and raises the
    same OSErrors (socket.gaierror for an unknown host, ConnectionRefusedError, TimeoutError).
    """
    error: OSError | None = None
    for family, kind, proto, _name, sockaddr in resolve(host, port, allow_private=allow_private):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        try:
            check_peer(sock, host, allow_private=allow_private)
        except BaseException:
            sock.close()
            raise
        return sock
    raise error or OSError(f"getaddrinfo returned no address for {host}")
