"""The platform's one OpenAPI 3.1 document, served at ``GET /openapi.json``: every JSON and form
endpoint — the order API (``order_openapi``), the card service's REST gateway and the SMS hook
(``kkt_openapi``), the admin API (``admin_openapi``), the mobile payment API under ``/mpay/v1``
(``mpay_openapi``, from the running routing table) and the health endpoints.

Left out on purpose: the SOAP endpoints (XML: ``/s/soap``, ``/s/sp.php`` and their WSDLs) and the
operator console (HTML pages and forms behind its session and form tokens). ``/mpay/v1/openapi.json``
stays the mobile payment API's own document (servers ``/mpay/v1``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from http_api import admin_openapi, kkt_openapi, mpay_openapi, order_openapi
from http_api.mpay_gate import PREFIX as MPAY_PREFIX

_STATUS = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"},
                                                                     "error": {"type": "string"}}}


def _health(op_id: str, summary: str, busy: str | None) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "ok", "content": {"application/json": {"schema": _STATUS}}}}
    if busy:
        responses["503"] = {"description": busy, "content": {"application/json": {"schema": _STATUS}}}
    return {"get": {"operationId": op_id, "summary": summary, "security": [], "responses": responses}}


def _health_paths() -> dict[str, Any]:
    return {
        "/healthz": _health("healthz", "Liveness: the process and its loop answer", None),
        "/readyz": _health("readyz", "Readiness: serving, not draining, and the database answers",
                           "starting, draining or the database unavailable"),
        "/readyz/node": _health("readyz_node", "This node takes new connections", "starting or draining"),
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus exposition", "security": [],
                             "responses": {"200": {"description": "text format 0.0.4",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }


def document(routes: Any) -> dict[str, Any]:
    """The merged document; ``routes``: the root application's (the ``/mpay/v1`` ones among them)."""
    order = order_openapi.document()
    mpay = mpay_openapi.document(routes)
    paths: dict[str, Any] = {}
    for path, item in order["paths"].items():
        paths[path] = {method: {**op, "security": [], "x-signed": "the body's Sign, mac and encrypted data"}
                       for method, op in item.items()}
    paths.update(kkt_openapi.paths())
    paths.update(admin_openapi.paths())
    paths.update({MPAY_PREFIX + path: item for path, item in mpay["paths"].items()})
    paths.update(_health_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Recharge platform: order API, card service REST, SMS hook, admin, mobile payment",
            "version": "1",
            "description": "Every JSON and form endpoint of the platform. The order API's envelope: "
                           + order["info"]["description"],
        },
        "paths": paths,
        "components": {
            "schemas": mpay["components"]["schemas"],
            "securitySchemes": {
                **mpay["components"]["securitySchemes"],
                **kkt_openapi.SECURITY_SCHEMES,
                **admin_openapi.SECURITY_SCHEMES,
            },
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document(request.app.router.routes()), dumps=mpay_openapi.dumps)


def setup(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi_json)
