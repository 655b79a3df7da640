"""The reference verifier of ``Rapport-Signature``: whatever a sender puts in the header, an answer."""

from __future__ import annotations

import pytest

from services.webhooks.signature import sign, verify

NOW = 1_700_000_000
BODY = b'{"change_id":"ch-1"}'


def test_a_signature_made_now_verifies_and_an_old_or_other_one_does_not() -> None:
    assert verify("s3cret", BODY, sign("s3cret", BODY, NOW), NOW)
    assert not verify("s3cret", BODY, sign("s3cret", BODY, NOW - 301), NOW)
    assert not verify("other", BODY, sign("s3cret", BODY, NOW), NOW)
    assert not verify("s3cret", BODY + b" ", sign("s3cret", BODY, NOW), NOW)


@pytest.mark.parametrize(
    "header",
    [
        f"t={NOW},v1=é",  # before 2026-12-06: TypeError from hmac.compare_digest
        f"t={NOW},v1={sign('s3cret', BODY, NOW)[len(f't={NOW},v1=') :]}é",
        "t=" + "".join(chr(0x660 + int(d)) for d in str(NOW)) + ",v1=00",  # int() reads Arabic-Indic digits
        f"t={NOW},v1=\udcff",  # a lone surrogate, as surrogateescape decodes a stray byte
        "",
        "v1=00",
        "t=soon,v1=00",
        "garbage",
    ],
)
def test_a_malformed_header_is_refused_without_raising(header: str) -> None:
    assert verify("s3cret", BODY, header, NOW) is False
