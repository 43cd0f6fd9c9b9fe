"""Abuse limits under attack (canonical keys, GCRA, bounded memory) and what the store keeps
of a code (the dedupe key): the service over real HTTP, or the counters themselves."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from otp_service.http.app import SERVICES
from otp_service.store.counters import Counters
from otp_service.text.limit_keys import canonical_email, canonical_ip

from .support.service import ClientFactory

FAST = {"wait_seconds": 0.3, "retry_delay_seconds": 0.05, "backoff_max_seconds": 0.3,
        "poll_seconds": 0.05, "timeout_seconds": 5}  # fmt: skip


def limited(**limits: Any) -> dict[str, Any]:
    """Capture inbox, only the given limits on."""
    base: dict[str, Any] = {"enabled": True, "per_recipient": None, "per_ip": None,
                            "per_sms_prefix": None}  # fmt: skip
    return {"delivery": FAST, "limits": base | limits}


async def send(
    client: Any, to: str, code: str, ip: str | None = None, path: str = "/v1/email"
) -> int:
    body: dict[str, Any] = {"to": to, "type": "SignIn", "payload": {"code": code}}
    if ip is not None:
        body["ip"] = ip
    response = await client.post(path, json=body)
    return response.status


# 4. Canonical keys


@pytest.mark.parametrize(
    "forms",
    [
        ["203.0.113.7", "::ffff:203.0.113.7", "::ffff:cb00:7107", " 203.000.113.007 ",
         "::FFFF:203.0.113.7"],
        ["2001:db8:1:2::1", "2001:DB8:1:2:0:0:0:2", "2001:0db8:0001:0002:ffff:ffff:ffff:ffff",
         "[2001:db8:1:2::99]", "2001:db8:1:2::5%eth0"],
    ],
    ids=["ipv4-spellings", "ipv6-same-64"],
)  # fmt: skip
async def test_per_ip_limit_counts_every_spelling_of_one_address_once(
    service: ClientFactory, forms: list[str]
) -> None:
    """IPv4-mapped IPv6 (dotted or hex), leading zeros, spaces, upper case, expanded IPv6 and
    any address of one IPv6 /64 share one per-IP counter."""
    client = await service(limited(per_ip={"count": len(forms) - 1, "window_seconds": 600}))
    statuses = [
        await send(client, f"u{n}@example.com", f"{n:06d}", ip=ip) for n, ip in enumerate(forms)
    ]
    assert statuses == [200] * (len(forms) - 1) + [429]


async def test_limit_refusal_is_logged_and_counted_with_the_refusing_rule(
    service: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator's log line of a refused send names the limit that refused it, with the
    masked recipient, and the refusal is counted under that rule."""
    client = await service(limited(per_ip={"count": 1, "window_seconds": 600}))
    assert await send(client, "ana@example.com", "111111", ip="198.51.100.7") == 200
    with caplog.at_level(logging.INFO, logger="otp_service.web"):
        assert await send(client, "bob@example.com", "222222", ip="198.51.100.7") == 429
    [line] = [r for r in caplog.records if r.getMessage() == "request refused"]
    fields = line.otp_fields  # type: ignore[attr-defined]
    assert fields["rule"] == "per_ip" and fields["code"] == "rate_limited"
    assert fields["to"] == "b***@example.com" and fields["http_status"] == 429
    assert fields["outcome"] == "refused" and fields["type"] == "SignIn"
    metrics = await (await client.get("/metrics")).text()
    assert 'otp_limit_refusals_total{rule="per_ip"} 1.0' in metrics


async def test_unparseable_ips_share_one_per_ip_counter(service: ClientFactory) -> None:
    """An ``ip`` that is no address is no way around the per-IP limit: with a count of N, N+1
    requests each with a different piece of junk (blank, leading-zero octet, octet over 255, bad
    hex, a name) are refused at the N+1st, and a real address keeps its own allowance."""
    junk = ["0203.0.113.7", "999.1.1.1", "::ffff:zz", "", "   ", "localhost", "1.2.3", "::1::2"]
    client = await service(limited(per_ip={"count": len(junk) - 1, "window_seconds": 600}))
    statuses = [
        await send(client, f"u{n}@example.com", f"{n:06d}", ip=ip) for n, ip in enumerate(junk)
    ]
    assert statuses == [200] * (len(junk) - 1) + [429]
    assert await send(client, "real@example.com", "999999", ip="198.51.100.9") == 200
    listing = await (await client.get("/v1/messages")).json()
    assert len(listing["messages"]) == len(junk)  # the refused one was never stored


def test_canonical_ip_keeps_different_hosts_apart() -> None:
    """Different IPv4 hosts and different IPv6 /64s stay different keys."""
    assert canonical_ip("203.0.113.7") != canonical_ip("203.0.113.8")
    assert canonical_ip("2001:db8:1:2::1") != canonical_ip("2001:db8:1:3::1")
    assert canonical_ip("::ffff:203.0.113.7") == canonical_ip("203.0.113.7")


async def test_per_recipient_limit_counts_plus_tags_as_the_mailbox(
    service: ClientFactory,
) -> None:
    """``victim+tag@example.com`` and ``VICTIM@example.com`` count as ``victim@example.com``."""
    client = await service(limited(per_recipient={"count": 3, "window_seconds": 600}))
    forms = ["victim@example.com", "victim+a@example.com", "VICTIM+b@Example.com",
             "victim+c@example.com"]  # fmt: skip
    statuses = [await send(client, to, f"{n:06d}") for n, to in enumerate(forms)]
    assert statuses == [200, 200, 200, 429]
    assert canonical_email("victim+x@example.com") == canonical_email("Victim@EXAMPLE.com")


async def test_requests_refused_by_the_client_ip_limit_do_not_use_up_the_victims_allowance(
    service: ClientFactory,
) -> None:
    """A client over its per-IP limit that keeps asking for codes to someone else's address
    does not spend that person's per-recipient allowance: their own sign-in still gets a
    code."""
    client = await service(limited(per_ip={"count": 2, "window_seconds": 600},
                                   per_recipient={"count": 3, "window_seconds": 600}))  # fmt: skip
    attacker = [await send(client, "victim@example.com", f"{n:06d}", ip="198.51.100.66")
                for n in range(8)]  # fmt: skip
    assert attacker == [200, 200] + [429] * 6
    assert await send(client, "victim@example.com", "777777", ip="203.0.113.10") == 200


# 4. GCRA: no boundary burst, O(1), bounded memory, windows independent


def test_gcra_allows_no_burst_of_twice_the_limit_across_a_window_boundary() -> None:
    """5 per 100 s: 5 at once pass, a 6th right after (where a new fixed window would begin)
    is refused; the allowance comes back one by one at 20 s intervals."""
    counters = Counters()
    assert [counters.count("k", 5, 100, 99.9)[0] for _ in range(5)] == [None] * 5
    refused = counters.count("k", 5, 100, 100.1)[0]
    assert refused is not None and refused > 19
    assert counters.count("k", 5, 100, 99.9 + 20)[0] is None
    assert counters.count("k", 5, 100, 99.9 + 20)[0] is not None


def test_counters_stay_bounded_under_a_flood_of_distinct_keys() -> None:
    """A million distinct keys in one window never hold more than max_keys entries."""
    counters = Counters(max_keys=10_000)
    for n in range(200_000):
        counters.count(f"to:email:user{n}@example.com", 10, 600, 1000.0)
    assert len(counters) <= 10_001 and counters.evicted > 0


def test_many_keys_never_reset_a_counter_of_another_window() -> None:
    """A per-prefix limit of 5 a day stays exhausted while 150,000 other keys of a 10-minute
    window come and go (the old table rebuild dropped it and let 3 more SMS through)."""
    counters = Counters()
    assert [counters.count("prefix:+86138", 5, 86400, 0.0)[0] for _ in range(5)] == [None] * 5
    for n in range(150_000):
        counters.count(f"ip:ip4:10.0.{n // 256 % 256}.{n % 256}-{n}", 60, 600, n / 100)
    assert counters.count("prefix:+86138", 5, 86400, 1500.0)[0] is not None


# 7. Nothing derived from a code outlives its message


def _dump(path: Path, into: Path) -> tuple[str, list[tuple[Any, ...]]]:
    """SQL text of a copy of the store, and its (id, dedupe_key) rows."""
    into.mkdir()
    for name in (path.name, f"{path.name}-wal"):
        if (path.parent / name).exists():
            shutil.copyfile(path.parent / name, into / name)
    connection = sqlite3.connect(into / path.name)
    try:
        rows = connection.execute("SELECT id, dedupe_key FROM messages").fetchall()
        return "\n".join(connection.iterdump()), rows
    finally:
        connection.close()


async def test_dedupe_key_is_keyed_and_erased_when_the_message_expires(
    service: ClientFactory, tmp_path: Path
) -> None:
    """While a message lives its dedupe key is not a bare SHA-256 of (channel, to, type, code)
    (so the code cannot be brute-forced from the file), and once it expires no dedupe key is
    left in the store."""
    store = tmp_path / "outbox.sqlite3"
    client = await service({"delivery": FAST | {"dedupe": True}, "limits": {"enabled": False},
                            "store": {"path": str(store)}})  # fmt: skip
    code = "384756"
    response = await client.post("/v1/email", json={"to": "ana@example.com", "type": "SignIn",
                                                     "payload": {"code": code}, "ttl": 1})  # fmt: skip
    assert response.status == 200
    bare = hashlib.sha256("\0".join(("email", "ana@example.com", "SignIn", code)).encode())
    text, rows = _dump(store, tmp_path / "live")
    assert rows[0][1] is not None and rows[0][1] != bare.hexdigest()
    assert bare.hexdigest() not in text

    # A repeat while it lives is still recognised (the key still works)...
    again = await client.post("/v1/email", json={"to": "ana@example.com", "type": "SignIn",
                                                  "payload": {"code": code}})  # fmt: skip
    assert (await again.json()).get("duplicate") is True
    await asyncio.sleep(1.3)  # ...then the message expires and the worker erases its key
    deadline = time.monotonic() + 5
    while True:
        _, rows = _dump(store, tmp_path / f"after-{time.monotonic_ns()}")
        if all(key is None for _, key in rows) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert [key for _, key in rows] == [None]


# 5. The capture inbox is bounded in bytes, and so is one answer


async def test_capture_inbox_and_one_listing_are_bounded_in_bytes(service: ClientFactory) -> None:
    """Captures with 60 KB payload values drop the oldest once the inbox holds
    capture.max_bytes, and one GET /v1/messages?limit=1000 answers a bounded size (newest
    first, at least one message)."""
    max_bytes = 4 * 1024 * 1024
    client = await service({"delivery": FAST, "limits": {"enabled": False},
                            "capture": {"max_bytes": max_bytes}})  # fmt: skip
    big = "N" * 60_000
    ids = []
    for n in range(80):
        response = await client.post("/v1/email", json={
            "to": f"u{n}@example.com", "type": "SignIn",
            "payload": {"code": f"{n:06d}", "application": {"name": big}}})  # fmt: skip
        assert response.status == 200
        ids.append((await response.json())["id"])
    inbox = client.app[SERVICES].inbox
    assert inbox.bytes <= max_bytes
    response = await client.get("/v1/messages", params={"limit": "1000"})
    raw = await response.read()
    listed = (await response.json())["messages"]
    assert 1 <= len(listed) < 80 and listed[0]["id"] == ids[-1]
    assert len(raw) <= max_bytes // 2
    oldest = await (await client.get(f"/v1/messages/{ids[0]}")).json()
    assert oldest["status"] == "captured" and "text" not in oldest  # dropped from the inbox


async def test_idempotency_key_repeats_at_once_never_count_nor_get_429(
    service: ClientFactory,
) -> None:
    """Six requests with one Idempotency-Key at once, with a recipient limit of 3: all answer
    with the one stored id, and the limit still has room for two new messages."""
    client = await service(limited(per_recipient={"count": 3, "window_seconds": 600}))
    body = {"to": "kim@example.com", "type": "SignIn", "payload": {"code": "123456"}}
    headers = {"Idempotency-Key": "signin-kim"}

    async def one() -> tuple[int, dict[str, Any]]:
        response = await client.post("/v1/email", json=body, headers=headers)
        return response.status, await response.json()

    answers = await asyncio.gather(*(one() for _ in range(6)))
    assert {status for status, _ in answers} <= {200, 202}, answers
    assert len({answer["id"] for _, answer in answers}) == 1, answers
    statuses = [await send(client, "kim@example.com", f"22222{n}") for n in range(3)]
    assert statuses == [200, 200, 429]


@pytest.mark.slow
async def test_idempotency_key_held_by_a_request_still_deciding_is_409_then_taken_over(
    service: ClientFactory,
) -> None:
    """A key held by a request that neither stores nor lets go: a repeat waits 5 s, then 409
    idempotency_key_in_use with Retry-After; once the hold is older than
    delivery.lease_seconds (its process died), the next request takes the key over."""
    client = await service({"delivery": FAST | {"lease_seconds": 8}})
    store = client.app[SERVICES].store
    now = time.time()
    assert await store.hold_key("email:stuck", "a-request-that-died", now, now - 8)
    body = {"to": "lee@example.com", "type": "SignIn", "payload": {"code": "123456"}}
    headers = {"Idempotency-Key": "stuck"}
    response = await client.post("/v1/email", json=body, headers=headers)
    answer = await response.json()
    assert (response.status, answer["error"]["code"]) == (409, "idempotency_key_in_use")
    assert response.headers["Retry-After"] == "1"
    await store.release_key("email:stuck", "a-request-that-died")
    old = time.time() - 60
    assert await store.hold_key("email:stuck", "a-request-that-died", old, old - 8)
    response = await client.post("/v1/email", json=body, headers=headers)
    assert response.status == 200, await response.text()
    again = await client.post("/v1/email", json=body, headers=headers)
    assert (await again.json())["id"] == (await response.json())["id"]
