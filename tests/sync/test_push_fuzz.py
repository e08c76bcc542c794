"""The push parsers against hostile bodies (seeded, a second or two): each either reads a
body or refuses it with PushRefused, never anything else (sync/push.py's webhooks)."""

from __future__ import annotations

import base64
import json
import random

import pytest

from mailboxes.providers import gmail, graph
from mailboxes.providers.base import PushRefused
from tests.servers.fake_google import PUSH_SERVICE_ACCOUNT, FakeGoogle

ROUNDS = 4000


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few random byte edits: flips, cuts, repeats, and bytes JSON finds awkward."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        at = rng.randrange(len(data) + 1)
        if choice < 0.3 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif choice < 0.5:
            del data[at : at + rng.randint(1, 8)]
        elif choice < 0.7:
            data[at:at] = rng.choice([b'"', b"{", b"[", b"null", b"\\u0000", b"1e999", b"\xff"])
        else:
            data[at:at] = data[at : at + rng.randint(1, 16)]
    return bytes(data)


def shapes(rng: random.Random) -> bytes:
    """Well-formed JSON of the wrong shapes."""
    value = rng.choice([None, 1, "x", [], {}, [None], [{}], {"value": None}, {"message": []},
                        {"value": [{"subscriptionId": {"a": 1}}]}, {"message": {"data": 5}},
                        {"value": [{"subscriptionId": "s", "clientState": ["x"]}]}])  # fmt: skip
    return json.dumps(value).encode()


def test_graph_notifications_are_read_or_refused():
    rng = random.Random(1405)
    valid = json.dumps({"value": [{"subscriptionId": "abc", "clientState": "s3cret",
                                   "changeType": "created", "resource": "Users/x/Messages/y"},
                                  {"subscriptionId": "abc", "clientState": "s3cret",
                                   "lifecycleEvent": "missed"}]}).encode()  # fmt: skip
    assert [n.event for n in graph.read_notifications(valid)] == ["created", "missed"]
    outcomes = {"read": 0, "refused": 0}
    for _ in range(ROUNDS):
        body = mutate(rng, valid) if rng.random() < 0.8 else shapes(rng)
        try:
            items = graph.read_notifications(body)
        except PushRefused:
            outcomes["refused"] += 1
            continue
        assert all(isinstance(i.subscription_id, str) and isinstance(i.client_state, str)
                   for i in items)  # fmt: skip
        outcomes["read"] += 1
    assert outcomes["read"] and outcomes["refused"]


@pytest.fixture(scope="module")
def signer():
    fake = FakeGoogle()
    fake.push_audience = "https://crm.example/push/gmail/"
    return fake


def test_gmail_pushes_are_read_or_refused(signer):
    rng = random.Random(2177)
    certs = {signer.key_id: signer._cert}
    token = signer.push_token()
    valid = signer.push_body()

    def read(authorization: str, body: bytes) -> tuple[str, str]:
        return gmail.read_push(authorization, body, certs=certs, audience=signer.push_audience,
                               service_account=PUSH_SERVICE_ACCOUNT)  # fmt: skip

    assert read(f"Bearer {token}", valid)[0] == signer.email
    outcomes = {"read": 0, "refused": 0}
    for _ in range(ROUNDS):
        authorization, body = f"Bearer {token}", valid
        pick = rng.random()
        if pick < 0.4:
            body = mutate(rng, valid)
        elif pick < 0.6:
            data = {"emailAddress": "a@b.example", "historyId": 7}
            inner = mutate(rng, json.dumps(data).encode())
            body = json.dumps({"message": {"data": base64.b64encode(inner).decode()}}).encode()
        elif pick < 0.8:
            authorization = "Bearer " + mutate(rng, token.encode()).decode("latin-1")
        else:
            body = shapes(rng)
        try:
            address, history = read(authorization, body)
        except PushRefused:
            outcomes["refused"] += 1
            continue
        assert isinstance(address, str) and isinstance(history, str)
        outcomes["read"] += 1
    assert outcomes["read"] and outcomes["refused"]
