"""What the schemathesis run of issue 18 (chaos/api_fuzz.py) found, each fixed and kept fixed.

- A POST whose ``Content-Type`` names a form the body is not (``multipart/form-data`` without
  a boundary, a part with an unknown transfer encoding or charset) was a 500 on the card
  service's REST gateway, the SMS hook and the console's forms: it is the channel's
  documented refusal (``edge.read_form``).
- The answer to a malformed request (an over-long request line, a control character in a
  header) quoted the request's bytes back — a LICENSEKEY or the SMS secret included: it is
  the bare status phrase now (``server_log.safe_answers``).
- ``/mpay/v1``'s 405 had no ``Allow`` header (RFC 9110).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.kkt_world import World, make_world
from tests.test_http_hostile_input import raw_request

pytestmark = pytest.mark.usefixtures("audited")
BROKEN_FORMS = [
    (b"multipart/form-data", b"CARDNO=1"),  # no boundary
    (b"multipart/form-data; boundary=XX", b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n"
     b"Content-Transfer-Encoding: rot13\r\n\r\nb\r\n--XX--\r\n"),
    (b"multipart/form-data; boundary=XX", b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n"
     b"Content-Type: text/plain; charset=no-such-charset\r\n\r\nb\r\n--XX--\r\n"),
    (b"multipart/form-data; boundary=XX", b"garbage with no boundary at all"),
    (b"application/x-www-form-urlencoded; charset=no-such-charset", b"a=b"),
    (b"application/x-www-form-urlencoded", b"a=\xff\xfe"),
]


@pytest.fixture(scope="module")
async def world(platform: Any, pool: Any, test_keys: Any) -> World:
    return await make_world(pool, test_keys[0], platform.http_port)


@pytest.mark.parametrize(("content_type", "body"), BROKEN_FORMS)
async def test_a_body_that_is_not_its_form_is_refused_on_the_card_service(world: World, content_type: bytes,
                                                                         body: bytes) -> None:
    target = f"/s/get?method=cTRequest&LICENSEKEY={world.license_key}".encode()
    status, answer = await raw_request(world.http_port, "POST", target, [(b"Content-Type", content_type)], body)
    assert status in (200, 400), (status, answer)
    if status == 400:
        assert b"<PayInForm>00</PayInForm>" in answer, answer


@pytest.mark.parametrize(("content_type", "body"), BROKEN_FORMS)
async def test_a_body_that_is_not_its_form_is_refused_on_the_sms_hook(platform: Any, content_type: bytes,
                                                                     body: bytes) -> None:
    status, answer = await raw_request(platform.http_port, "POST", b"/sms/inbound?from=13800000000",
                                       [(b"Content-Type", content_type), (b"X-SMS-Secret", b"test-sms-secret")], body)
    assert status in (200, 400), (status, answer)


async def test_a_multipart_body_without_boundary_is_a_bad_request_not_an_error(world: World, platform: Any) -> None:
    """The finding itself, exactly as schemathesis sent it."""
    no_boundary = [(b"Content-Type", b"multipart/form-data")]
    status, answer = await raw_request(world.http_port, "POST", b"/s/get?method=aCRequest", no_boundary, b"POSCODE=")
    assert status == 400 and b"<PayInForm>00</PayInForm>" in answer, (status, answer)
    status, answer = await raw_request(platform.http_port, "POST", b"/sms/inbound?from=13800000000",
                                       [*no_boundary, (b"X-SMS-Secret", b"test-sms-secret")], b"text=HELP")
    assert status == 400 and b"not the form" in answer, (status, answer)
    status, answer = await raw_request(platform.http_port, "POST", b"/sms/inbound?from=13800000000", no_boundary,
                                       b"secret=test-sms-secret")
    assert status == 403, (status, answer)  # the secret was in the form it could not read
    for path in (b"/console/login", b"/console/kkt/batches"):
        status, answer = await raw_request(platform.http_port, "POST", path, no_boundary, b"a=b")
        assert status < 500, (path, status, answer[:200])


@pytest.mark.parametrize("request_line", [
    b"/s/get?method=cTRequest&LICENSEKEY=SECRETLICENSEKEY0123" + b"A" * 9000,
    b"/sms/inbound?secret=SECRETSMSSECRET0123&from=" + b"1" * 9000,
])
async def test_a_request_line_too_long_is_answered_without_quoting_it(platform: Any, request_line: bytes) -> None:
    status, answer = await raw_request(platform.http_port, "GET", request_line)
    assert status == 400 and answer == b"400 Bad Request\n", answer[:300]


async def test_a_bad_header_is_answered_without_quoting_it(platform: Any) -> None:
    status, answer = await raw_request(platform.http_port, "GET", b"/sms/inbound?from=13800000000",
                                       [(b"X-SMS-Secret", b"SECRET\x01SMS")])
    assert status == 400 and b"SECRET" not in answer and answer == b"400 Bad Request\n", answer


async def test_mpay_405_names_the_allowed_methods(platform: Any) -> None:
    reader_status, answer = await raw_request(platform.http_port, "TRACE", b"/mpay/v1/auth/login")
    assert reader_status == 405 and b'"code": "1001"' in answer
    import aiohttp

    async with aiohttp.ClientSession() as http, http.request(
            "TRACE", f"http://127.0.0.1:{platform.http_port}/mpay/v1/auth/login") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST", dict(resp.headers)
