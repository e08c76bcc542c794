"""Mail servers on non-public addresses are refused (providers/network.py, STYLE 4b): the
connect form must not probe the deployment's own network."""

import random
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address

import pytest
from django.urls import reverse

from mailboxes.models import Mailbox
from mailboxes.providers import network
from mailboxes.providers.base import PrivateHost, ProviderConfig, WrongProtocol
from mailboxes.services import ConnectError, connect_mailbox
from tests.mailboxes.helpers import connect_imap
from tests.mailboxes.test_imap_provider import check, check_smtp

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC_ONLY = "Threadline only connects to mail servers on the public internet."


@pytest.fixture(autouse=True)
def _private_hosts_refused(settings):
    settings.CRM_ALLOW_PRIVATE_MAIL_HOSTS = False  # the default, whatever .env says


def form(host, port, **overrides):
    data = {
        "email_address": "owner@example.com",
        "imap_host": host,
        "imap_port": port,
        "imap_security": "ssl",
        "smtp_host": "smtp.example.com",
        "smtp_port": 587,
        "smtp_security": "starttls",
        "username": "owner@example.com",
        "password": "secret",
    }
    return {**data, **overrides}


def post(client, data):
    return client.post(reverse("mailboxes:mailbox_connect"), data)


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "10.0.0.1", "169.254.169.254", "[::1]", "::1", "0.0.0.0", "::ffff:127.0.0.1",
     "localhost", "LocalHost", "imap.localhost"],
)  # fmt: skip
def test_connect_form_refuses_a_non_public_imap_server_without_connecting(
    client_for, owner, listener, host
):
    port = listener.port6 if host in {"[::1]", "::1"} else listener.port

    response = post(client_for(owner), form(host, port))

    assert response.status_code == 400
    assert response.context["form"].errors["imap_host"] == [
        f"{host} is a private or local address; {PUBLIC_ONLY}"
    ]
    assert listener.connections == 0
    assert not Mailbox.objects.exists()


def test_connect_form_refuses_a_non_public_smtp_server(client_for, owner):
    response = post(client_for(owner), form("imap.example.com", 993, smtp_host="192.168.1.1"))

    assert response.status_code == 400
    assert response.context["form"].errors["smtp_host"] == [
        f"192.168.1.1 is a private or local address; {PUBLIC_ONLY}"
    ]


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1"])
def test_a_name_for_a_loopback_address_is_refused_once_resolved(client_for, owner, listener, host):
    response = post(client_for(owner), form(host, listener.port))

    assert response.status_code == 400
    assert f"{host} resolves to a private or local address (127.0.0.1); {PUBLIC_ONLY}" in (
        response.content.decode()
    )
    assert listener.connections == 0
    assert not Mailbox.objects.exists()


def test_localhost_is_refused_by_the_service_after_resolving_it(team, owner, listener):
    local = {
        "imap_host": "localhost", "imap_port": listener.port, "imap_security": "ssl",
        "smtp_host": "localhost", "smtp_port": listener.port, "smtp_security": "ssl",
        "username": "owner",
    }  # fmt: skip

    with pytest.raises(ConnectError, match=r"localhost resolves to a private or local address"):
        connect_mailbox(
            team=team, owner=owner, kind="imap", email_address="owner@example.com",
            provider_settings=local, credentials={"password": "secret"},
        )  # fmt: skip

    assert listener.connections == 0


def provider_config(listener, *, allow_private_hosts=False, **overrides):
    settings = {
        "imap_host": "127.0.0.1", "imap_port": listener.port, "imap_security": "ssl",
        "smtp_host": "127.0.0.1", "smtp_port": listener.port, "smtp_security": "ssl",
        "username": "owner",
    }  # fmt: skip
    return ProviderConfig(
        email_address="owner@example.com",
        settings={**settings, **overrides},
        credentials={"password": "secret"},
        allow_private_hosts=allow_private_hosts,
        timeout=5,
    )


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_imap_connection_to_a_loopback_server_is_refused_before_connecting(listener, security):
    config = provider_config(listener, imap_security=security)

    with pytest.raises(PrivateHost, match="127.0.0.1 is a private or local address"):
        check(config)

    assert listener.connections == 0


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_smtp_connection_to_a_loopback_server_is_refused_before_connecting(listener, security):
    config = provider_config(listener, smtp_security=security)

    with pytest.raises(PrivateHost, match="127.0.0.1 is a private or local address"):
        check_smtp(config)

    assert listener.connections == 0


def test_loopback_servers_are_reached_when_settings_allow_them(listener):
    config = provider_config(listener, allow_private_hosts=True, imap_security="starttls")

    with pytest.raises(WrongProtocol, match="does not answer like an IMAP server"):
        check(config)

    assert listener.connections > 0


def test_the_peer_of_a_connection_is_checked_after_connecting(listener):
    with (
        socket.create_connection(("127.0.0.1", listener.port)) as sock,
        pytest.raises(PrivateHost) as refused,
    ):
        network.check_peer(sock, "mail.example.com")

    assert refused.value.message == (
        f"mail.example.com resolves to a private or local address (127.0.0.1); {PUBLIC_ONLY}"
    )


def test_the_peer_check_lets_a_loopback_peer_through_when_allowed(listener):
    with socket.create_connection(("::1", listener.port6)) as sock:
        network.check_peer(sock, "mail.example.com", allow_private=True)


def test_loopback_dovecot_is_refused_unless_settings_allow_private_hosts(
    settings, dovecot, smtp_server, team, owner
):
    settings.CRM_ALLOW_PLAINTEXT_LOOPBACK = True
    user, password = dovecot.add_user()

    with pytest.raises(ConnectError, match="127.0.0.1 is a private or local address"):
        connect_imap(dovecot, smtp_server, user, password, team, owner)

    assert not Mailbox.objects.exists()


def test_the_test_dovecot_connects_when_settings_allow_private_hosts(
    mail_settings, dovecot, smtp_server, team, owner
):
    user, password = dovecot.add_user()

    mailbox = connect_imap(dovecot, smtp_server, user, password, team, owner)

    assert mailbox.state == Mailbox.State.CONNECTED
    assert mailbox.folders.filter(role="sent").exists()


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.255.0.9", "10.0.0.5", "172.16.0.1", "192.168.1.1", "169.254.169.254",
     "100.64.0.1", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
     "192.0.2.1", "::1", "::", "fe80::1", "fc00::1", "fd12::1", "ff02::1", "fec0::1",
     "2001:db8::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
     "::127.0.0.1", "2002:7f00:1::", "2002:a00:1::1", "64:ff9b::7f00:1",
     "64:ff9b::a9fe:a9fe", "2001:0:4136:e378:8000:63bf:80ff:fffe"],
)  # fmt: skip
def test_non_public_addresses_are_not_public(address):
    assert not network.is_public(ip_address(address))


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:82a::200e",
     "::ffff:8.8.8.8", "64:ff9b::808:808"],
)  # fmt: skip
def test_public_addresses_are_public(address):
    assert network.is_public(ip_address(address))


NON_PUBLIC_V4 = [IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
)]  # fmt: skip


def test_a_non_public_ipv4_address_stays_refused_in_every_ipv6_wrapping():
    rng = random.Random(20261129)
    for _ in range(2000):
        net = rng.choice(NON_PUBLIC_V4)
        inner = IPv4Address(int(net.network_address) + rng.randrange(net.num_addresses))
        wrappings = {
            "mapped": IPv6Address(f"::ffff:{inner}"),
            "nat64": IPv6Address(f"64:ff9b::{inner}"),
            "6to4": IPv6Address((0x2002 << 112) | (int(inner) << 80) | rng.getrandbits(80)),
        }

        assert not network.is_public(inner), inner
        for kind, wrapped in wrappings.items():
            assert not network.is_public(wrapped), (kind, inner, wrapped)
