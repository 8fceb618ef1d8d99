"""The HTTP fuzzing's own checks (chaos/api_fuzz_hooks.py) fail when they must: a refused
request that moved the books, a protected operation answering a request without credentials,
and each channel's refusal told apart from its success."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from chaos import api_fuzz
from chaos import api_fuzz_hooks as hooks


def case(path: str, raw: dict[str, Any] | None = None, case_id: str = "c1") -> Any:
    return SimpleNamespace(id=case_id, operation=SimpleNamespace(path=path, definition=SimpleNamespace(raw=raw or {})))


def answer(status: int, body: Any, content_type: str = "application/json") -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return SimpleNamespace(status_code=status, content=content, headers={"content-type": [content_type]})


NO_CTX: Any = None  # the checks do not read their context
XML_OK = b"<?xml version='1.0'?><TradeResult><Record><PayInForm>11</PayInForm></Record></TradeResult>"
XML_REFUSED = b"<?xml version='1.0'?><TradeResult><Record><PayInForm>07</PayInForm></Record></TradeResult>"


@pytest.mark.parametrize(("path", "reply", "expected"), [
    ("/CreateAutoLoadOrder", answer(200, {"status": 0, "errmsg": "x"}), True),
    ("/CreateAutoLoadOrder", answer(200, {"status": 1, "data": "ab"}), False),
    ("/mpay/v1/me/hf", answer(200, {"code": "1003"}), True),
    ("/mpay/v1/me/hf", answer(200, {"code": "0000"}), False),
    ("/s/get", answer(200, b"1", "text/plain; charset=utf-8"), True),
    ("/s/get", answer(200, XML_REFUSED, "text/xml"), True),
    ("/s/get", answer(200, XML_OK, "text/xml"), False),
    ("/admin/kkt/cards/{card_no}", answer(403, {"error": "forbidden"}), True),
    ("/admin/kkt/cards/{card_no}", answer(200, {"card_no": "1"}), False),
    ("/sms/inbound", answer(200, b"ok", "text/plain"), None),
])
def test_each_channels_refusal_is_told_apart(path: str, reply: Any, expected: bool | None) -> None:
    assert hooks.refused(case(path), reply) is expected


def test_a_refused_request_that_moved_the_books_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    books = iter([{"transfers": 1}, {"transfers": 2}])
    reader = SimpleNamespace(read=lambda: next(books))
    monkeypatch.setattr(hooks, "BOOKS", reader)
    refused = case("/mpay/v1/me/hf")
    hooks.BEFORE[refused.id] = reader.read()
    with pytest.raises(AssertionError, match="changed the books"):
        hooks.refused_changes_nothing(NO_CTX, answer(200, {"code": "4001"}), refused)
    still = iter([{"transfers": 1}, {"transfers": 1}])
    reader = SimpleNamespace(read=lambda: next(still))
    monkeypatch.setattr(hooks, "BOOKS", reader)
    hooks.BEFORE[refused.id] = reader.read()
    assert hooks.refused_changes_nothing(NO_CTX, answer(200, {"code": "4001"}), refused) is True


def test_an_unsigned_request_accepted_by_a_protected_operation_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks, "SIGNED", False)
    protected = case("/admin/kkt/cards/{card_no}", {"security": [{"adminBearer": []}]})
    with pytest.raises(AssertionError, match="accepted without credentials"):
        hooks.unsigned_is_refused(NO_CTX, answer(200, {"card_no": "1"}), protected)
    assert hooks.unsigned_is_refused(NO_CTX, answer(403, {"error": "forbidden"}), protected) is True
    order = case("/APPLLogin", {"security": [], "x-signed": "body"})
    with pytest.raises(AssertionError):
        hooks.unsigned_is_refused(NO_CTX, answer(200, {"status": 1}), order)
    public = case("/mpay/v1/auth/login", {"security": []})
    assert hooks.unsigned_is_refused(NO_CTX, answer(200, {"code": "0000"}), public) is None


def test_the_signed_document_generates_the_order_apis_encrypted_fields() -> None:
    doc: dict[str, Any] = {"paths": {"/APPLLogin": {"post": {"x-signed": "body", "requestBody": {"content": {"application/json": {
        "schema": {"properties": {"Sign": {}}, "x-encrypted": {"properties": {"platform": {}}}}}}}}}}}
    signed = api_fuzz.signed_document(doc)
    assert signed["paths"]["/APPLLogin"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "properties": {"platform": {}}}
    assert "Sign" in doc["paths"]["/APPLLogin"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "properties"], "the published document is left as it is"


def test_a_generated_body_ending_in_nul_still_travels_in_the_envelope(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Any) -> None:
    """make chaos, seed 1497972983: schemathesis generated a text body ending in NUL for /APPLLogin;
    the signed pass's envelope refused it (zero padding) and the run failed with a hook error."""
    from http_api.order_envelope import open_envelope
    from recharge.orders import platforms

    pem = platforms.generate_key_pair(tmp_path / "p.pem", bits=1024)
    assert pem
    monkeypatch.setitem(hooks.CONFIG, "order", {"raw": 7, "crt": 1, "key_pem": (tmp_path / "p.pem").read_text()})
    generated: Any = SimpleNamespace(body="{\"a\":1}\x00\x00")
    envelope = json.loads(hooks._order_envelope(generated))
    assert open_envelope(envelope) == '{"a":1}'
