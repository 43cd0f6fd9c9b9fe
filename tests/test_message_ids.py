"""Message ids: 32 hex digits like before, in creation order, and still unguessable."""

from __future__ import annotations

import re

from otp_service.text.ids import new_message_id

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def test_an_id_is_32_lowercase_hex_digits() -> None:
    assert HEX32.match(new_message_id())


def test_ids_sort_in_creation_order_across_milliseconds() -> None:
    times = [1_700_000_000.0 + i * 0.001 for i in range(2000)]
    ids = [new_message_id(t) for t in times]
    assert ids == sorted(ids)
    assert new_message_id(1_800_000_000.0) > new_message_id(1_700_000_000.0)


def test_the_time_prefix_is_the_creation_millisecond() -> None:
    assert new_message_id(1_764_000_000.123)[:12] == f"{1_764_000_000_123:012x}"


def test_ids_made_in_one_millisecond_differ_in_80_random_bits() -> None:
    ids = {new_message_id(1_764_000_000.0) for _ in range(10_000)}
    assert len(ids) == 10_000
    tails = [i[12:] for i in ids]
    # Every hex digit of the random part takes many values: not a counter, not a constant.
    for position in range(20):
        assert len({t[position] for t in tails}) == 16


def test_composed_messages_carry_time_ordered_ids() -> None:
    import time

    from otp_service.config import TemplatesConfig
    from otp_service.message.compose import Composer, SendRequest
    from otp_service.message.templates import TemplateLibrary

    composer = Composer(TemplateLibrary(TemplatesConfig()))
    before = int(time.time() * 1000)
    ids = [
        composer.compose("email", SendRequest(to=f"u{i}@example.com", type="SignIn",
                                              payload={"code": "123456"})).id
        for i in range(50)
    ]  # fmt: skip
    after = int(time.time() * 1000)
    assert all(HEX32.match(i) for i in ids)
    stamps = [i[:12] for i in ids]  # within one millisecond the random part decides
    assert stamps == sorted(stamps)
    assert before <= int(ids[0][:12], 16) <= int(ids[-1][:12], 16) <= after
