"""Webhook targets: only public addresses unless private targets are allowed, checked where the deliverer
connects (names resolved, literals as written), and redirects not followed — against a loopback receiver."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from aiohttp import ThreadedResolver
from aiohttp.abc import ResolveResult

from services.settings import WebhookSettings
from services.webhooks.sender import Sender, client_session
from services.webhooks.store import Webhook
from services.webhooks.targets import PublicResolver, TargetRefusedError, literal_refusal, refusal
from tests.http_support import loopback_server

PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:2800:220:1::1", "2001:4860:4860::8888", "64:ff9b::5db8:d822"]
NOT_PUBLIC = [
    "127.0.0.1",  # loopback
    "10.0.0.5",  # private
    "172.16.3.4",
    "192.168.1.1",
    "169.254.169.254",  # link-local: cloud metadata
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "0.0.0.0",
    "::1",
    "fe80::1%eth0",
    "fc00::1",  # unique local
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    # IPv4 inside IPv6 that ipaddress calls global (until session 40 allowed): NAT64 and 6to4 reach it.
    "64:ff9b::a00:1",  # NAT64 (RFC 6052) of 10.0.0.1
    "64:ff9b::a9fe:a9fe",  # of 169.254.169.254
    "64:ff9b:1::5db8:d822",  # local-use NAT64 (RFC 8215): where the IPv4 address sits is the network's choice
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(address) is None


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_other_addresses_are_refused_with_the_reason(address: str) -> None:
    assert refusal(address) == f"{address} is not a public address"


def test_literals_are_judged_as_written_and_names_left_to_the_resolver() -> None:
    assert literal_refusal("[::1]") == "::1 is not a public address"
    assert literal_refusal("localhost.") == "localhost is not a public address"
    assert literal_refusal("10.0.0.5") == "10.0.0.5 is not a public address"
    assert literal_refusal("8.8.8.8") is None
    assert literal_refusal("crm.example") is None


def _result(host: str) -> ResolveResult:
    return {"hostname": "h", "host": host, "port": 443, "family": socket.AF_INET, "proto": 0, "flags": 0}


def test_the_resolver_keeps_only_public_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    async def resolve(self: object, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        return [_result("10.0.0.5"), _result("93.184.216.34"), _result("169.254.169.254")]

    monkeypatch.setattr(ThreadedResolver, "resolve", resolve)

    async def run() -> list[ResolveResult]:
        return await PublicResolver().resolve("crm.example", 443)

    assert [r["host"] for r in asyncio.run(run())] == ["93.184.216.34"]


def test_a_name_with_only_private_addresses_is_refused_by_the_operating_systems_answer() -> None:
    async def run() -> None:
        await PublicResolver().resolve("localhost", 80)

    with pytest.raises(TargetRefusedError, match=r"localhost resolves to no public address \(.*127\.0\.0\.1"):
        asyncio.run(run())


class _Receiver:
    def __init__(self, status: int = 200, location: str | None = None) -> None:
        self.status, self.location = status, location
        self.paths: list[str] = []


@contextmanager
def _serving(receiver: _Receiver) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            receiver.paths.append(self.path)
            self.send_response(receiver.status)
            if receiver.location is not None:
                self.send_header("Location", receiver.location)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    with loopback_server(Handler) as port:
        yield port


def _hook(url: str) -> Webhook:
    return Webhook(webhook_id="wh_0", url=url, segments=[], secret="whsec_x", created_at_ms=0)


def _post(private_targets: bool, url: str) -> tuple[int | None, str | None]:
    settings = WebhookSettings(private_targets=private_targets, timeout_s=5)

    async def run() -> tuple[int | None, str | None]:
        async with client_session(settings) as session:
            answer = await Sender(settings, session)._post(_hook(url), "ch-1", b"{}")
            return answer.status, answer.error

    return asyncio.run(run())


def test_the_deliverer_reaches_a_loopback_receiver_only_when_private_targets_are_allowed() -> None:
    receiver = _Receiver()
    with _serving(receiver) as port:
        assert _post(True, f"http://127.0.0.1:{port}/ok") == (200, None)  # the receiver answers
        for url in (
            f"http://127.0.0.1:{port}/a",
            f"http://[::ffff:127.0.0.1]:{port}/b",
            f"http://localhost:{port}/c",
            f"http://LOCALHOST.:{port}/d",
        ):
            status, error = _post(False, url)
            assert status is None
            assert error is not None
            assert "is not a public address" in error
    assert receiver.paths == ["/ok"]


def test_a_name_answered_with_a_private_address_is_refused_where_the_deliverer_connects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name looked public when it was registered; now it resolves to loopback."""
    real = socket.getaddrinfo

    def rebinding(host: str, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "crm.example" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    receiver = _Receiver()
    with _serving(receiver) as port:
        status, error = _post(False, f"http://crm.example:{port}/hook")
        assert status is None
        assert error is not None
        assert "crm.example resolves to no public address (127.0.0.1)" in error
        assert _post(True, f"http://crm.example:{port}/ok") == (200, None)  # the same name, allowed
    assert receiver.paths == ["/ok"]


def test_a_redirect_is_an_answer_not_followed() -> None:
    receiver = _Receiver(307, location="/elsewhere")
    with _serving(receiver) as port:
        assert _post(True, f"http://127.0.0.1:{port}/hook") == (307, "HTTP 307")
    assert receiver.paths == ["/hook"]
