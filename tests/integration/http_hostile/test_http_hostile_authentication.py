"""``radtrace api``'s failed authentications under attack: an address throttled with one audit event, not one per
wrong token; behind a trusted proxy, the forwarded client throttled, not the proxy; console sign-ins counted and
checked two at a time.

Most tests share one real ``radtrace api`` process (conftest.py: ``served``); each attacker connects from its own
loopback address (127.0.0.x) so that one test's refusals do not throttle another's, and the innocent client is
127.0.0.1.

Before: every wrong token wrote one audit row (about 100 a second from one client).
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from http_hostile_support import Served, connect, detail_of, exchange, status_of
from http_support import throttled_behind

pytestmark = pytest.mark.integration


def test_behind_a_trusted_proxy_the_throttle_counts_the_forwarded_client(served: Served) -> None:
    """Through a proxy on 127.0.0.1 (trusted by default), one client's failures throttle that client, not the proxy
    and every other client behind it."""
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}") as client:
        assert throttled_behind(client) == (429, 401)
    assert served.innocent() == 200
    assert len(served.auth_failures("10.9.9.9")) == 21


def test_failed_authentications_throttle_an_address_with_one_audit_event_not_one_per_attempt(served: Served) -> None:
    """Before: every wrong token was answered 401 and recorded: about 100 audit rows a second from one client, for
    as long as it liked (the audit log is append-only)."""
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{served.port}", transport=httpx.HTTPTransport(local_address="127.0.0.20")
    )
    with client:
        statuses = [
            client.get("/v1/events", headers={"Authorization": f"Bearer wrong-{n}"}).status_code for n in range(60)
        ]
        refused = client.get("/v1/events", headers={"Authorization": "Bearer wrong"})
        assert client.get("/healthz").status_code == 200  # needs no credentials: still served
    assert statuses[:20] == [401] * 20
    assert statuses[20:] == [429] * 40
    assert refused.json()["detail"].startswith("too many failed authentications from your address; try again in")
    assert 55 <= int(refused.headers["retry-after"]) <= 60
    failures = served.auth_failures("127.0.0.20")
    assert len(failures) == 21
    assert failures[-1]["outcome"] == "serious_failure"
    assert failures[-1]["failures"] == 20
    assert str(failures[-1]["reason"]).startswith("throttled: 20 failed authentications")
    assert served.innocent() == 200  # another address is not affected


def test_failed_console_sign_ins_count_and_are_checked_two_at_a_time(served: Served) -> None:
    """A failed sign-in (the console's redirect to ?failed=1) counts as a failed authentication; a third sign-in
    in flight from one address is 429 at once (each costs an argon2 hash; before, any number ran at once and an
    innocent API request waited 3.4 s instead of 0.03 s behind eight attackers)."""
    base = f"http://127.0.0.1:{served.port}"
    client = httpx.Client(base_url=base, transport=httpx.HTTPTransport(local_address="127.0.0.21"))
    with client:
        form = client.get("/console/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        failed = client.post("/console/login", data={"username": "nobody", "password": "x" * 12, "csrf_token": csrf})
        assert failed.status_code == 303
        assert "failed=1" in failed.headers["location"]
    assert len(served.auth_failures("127.0.0.21")) == 0  # recorded as console_login_failed
    held = []
    try:
        for _ in range(2):
            peer = connect(served.port, "127.0.0.22")
            peer.sendall(b"POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nusername=")
            held.append(peer)
        time.sleep(0.3)
        third = exchange(served.port, b"POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\na=b",
                          source="127.0.0.22")  # fmt: skip
    finally:
        for peer in held:
            peer.close()
    assert status_of(third) == 429
    assert detail_of(third) == "2 sign-ins from your address are being checked; wait for them"
