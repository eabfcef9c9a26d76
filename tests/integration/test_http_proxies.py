"""A real ``radtrace api`` behind a reverse proxy on another address (``api.forwarded_allow_ips``).

Before, the proxies whose X-Forwarded-For counts were uvicorn's FORWARDED_ALLOW_IPS environment variable (not a
setting, not in ``radtrace config``), and trusting one broke the console's trusted user header: the header was
checked against the client the proxy named, so single sign-on through a proxy that also sends X-Forwarded-For
never signed anyone in. Now the setting lists the proxies, each client behind them is counted by its own address,
and the user header is believed only from a proxy in ``console.trusted_proxies`` by the connection's own address.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from console_support import add_user
from http_support import throttled_behind
from radtrace.config import ConfigError, load_settings
from radtrace.http_limits import forwarded_allow_ips
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from tests_support import running_api

pytestmark = pytest.mark.integration

PROXY, STRANGER, OTHER = "127.0.0.2", "127.0.0.3", "127.0.0.4"  # all reach 127.0.0.1's server over loopback


@dataclass(frozen=True)
class Api:
    port: int
    store: Store

    def client(self, source: str) -> httpx.Client:
        """A client whose connections come from ``source``."""
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", transport=transport, timeout=10)

    def rows(self, event_type: str) -> list[tuple[str | None, str | None, dict[str, object]]]:
        with self.store.engine.connect() as connection:
            found = connection.execute(
                sa.text("SELECT actor_host, actor_user, payload FROM audit_events WHERE event_type = :t ORDER BY seq"),
                {"t": event_type},
            )
            return [(host, user, json.loads(payload)) for host, user, payload in found]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir = tmp_path_factory.mktemp("http-proxies")
    store = Store.from_url(f"sqlite:///{data_dir / 'radtrace.db'}")
    upgrade(store)
    add_user(store, "dr.sso", "radiologist")
    env = {
        "RADTRACE_DATA_DIR": str(data_dir),
        "RADTRACE_API__FORWARDED_ALLOW_IPS": json.dumps([PROXY]),
        "RADTRACE_CONSOLE__TRUSTED_USER_HEADER": "X-Remote-User",
        "RADTRACE_CONSOLE__TRUSTED_PROXIES": json.dumps([PROXY]),
    }
    with pytest.MonkeyPatch.context() as patch:  # uvicorn's own variable is the setting's default: not here
        patch.delenv("FORWARDED_ALLOW_IPS", raising=False)
        with running_api(env, data_dir / "api.log") as served:
            try:
                yield Api(served.port, store)
            finally:
                store.dispose()


def test_through_the_listed_proxy_each_client_is_throttled_by_its_own_address(api: Api) -> None:
    with api.client(PROXY) as proxy:
        assert throttled_behind(proxy) == (429, 401)
    hosts = [host for host, _, _ in api.rows("api_authentication_failed")]
    assert hosts.count("10.9.9.9") == 21
    assert PROXY not in hosts


def test_an_address_not_listed_cannot_name_another_client(api: Api) -> None:
    with api.client(STRANGER) as stranger:
        for n in range(20):  # each claims to be someone else: all counted against the stranger itself
            wrong = {"Authorization": f"Bearer wrong-{n}", "X-Forwarded-For": f"10.7.7.{n}"}
            assert stranger.get("/v1/events", headers=wrong).status_code == 401
        last = stranger.get("/v1/events", headers={"Authorization": "Bearer x", "X-Forwarded-For": "10.7.7.99"})
    assert last.status_code == 429
    assert not [host for host, _, _ in api.rows("api_authentication_failed") if str(host).startswith("10.7.7.")]


def test_single_sign_on_through_the_proxy_signs_in_the_user_it_names(api: Api) -> None:
    headers = {"X-Remote-User": "dr.sso", "X-Forwarded-For": "10.1.2.3"}
    with api.client(PROXY) as proxy:
        page = proxy.get("/console/worklist", headers=headers, follow_redirects=False)
    assert page.status_code == 200, page.headers.get("location")  # before: 303 to the sign-in page
    assert "dr.sso (radiologist)" in page.text
    [(host, user, payload)] = api.rows("console_login")
    assert (host, user, payload["method"]) == ("10.1.2.3", "dr.sso", "trusted-header X-Remote-User")


def test_the_user_header_from_anyone_else_signs_no_one_in(api: Api) -> None:
    # The stranger names the proxy in X-Forwarded-For: not believed (not a listed proxy), and the header is
    # checked against the stranger's own connection either way.
    headers = {"X-Remote-User": "dr.sso", "X-Forwarded-For": PROXY}
    with api.client(OTHER) as other:
        page = other.get("/console/worklist", headers=headers, follow_redirects=False)
    assert page.status_code == 303
    with api.client("127.0.0.1") as local:  # 127.0.0.1 is not listed here: its X-Forwarded-For is not believed
        forged = local.get("/console/worklist", headers=headers, follow_redirects=False)
    assert forged.status_code == 303
    assert [user for _, user, _ in api.rows("console_login")] in ([], ["dr.sso"])  # only the test above's


@pytest.mark.unit
def test_the_setting_wins_then_uvicorns_variable_then_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    assert forwarded_allow_ips(None) == ["127.0.0.1", "::1"]
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.9, 10.0.1.0/24")
    assert forwarded_allow_ips(None) == ["10.0.0.9", "10.0.1.0/24"]
    assert forwarded_allow_ips(["192.168.7.7"]) == ["192.168.7.7"]


@pytest.mark.unit
def test_a_proxy_that_is_not_an_address_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api.forwarded_allow_ips.*'10.0.0.300' is not an IP address"):
        load_settings(data_dir=tmp_path, api={"forwarded_allow_ips": ["10.0.0.9", "10.0.0.300"]})
