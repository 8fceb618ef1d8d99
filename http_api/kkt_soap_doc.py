"""KaKaTong SOAP, document/literal (wrapped) port for modern toolkits: ``POST /s/soap``.

The seed-compatible port (``http_api.kkt_soap``, rpc/encoded at ``/s/sp.php``) is what PHP's
``SoapClient`` needs, but zeep, .NET WCF and Java JAX-WS handle rpc/encoded and its untyped
``xsd:anyType`` reply badly. This port offers the same operations with a schema: WSDL at
``GET /s/soap?wsdl`` and ``GET /s/soap.wsdl`` (location from ``http_public_base_url``), target namespace
``urn:KaKaTong:doc``, ``elementFormDefault="qualified"``, SOAP 1.1 and 1.2 bindings with
``style="document"`` and ``use="literal"``. Each operation has a wrapper request element named
after it (its parts, plus ``LANG`` and ``REQID``, as optional ``xsd:string`` children) and a
``<operation>Response`` element: ``licenseCode`` (``xsd:int``, 0 when the key was accepted)
and zero or more ``record`` elements of ``field`` (``key``, ``value``) — the keys and values
of the rpc port's Map(s), so no record when the key was refused.

Everything but the schema and the reply envelope is the rpc port's: the operations table,
envelope parsing (defusedxml, no DTD), the size limit, license-key check, handlers, faults
and metrics (``kkt_soap.run_request``). Arguments bind by name only: the wrapper element must
be in ``urn:KaKaTong:doc``; its children may be qualified (that namespace) or unqualified;
any element not in the operation's schema, a repeated one, or a nested one is a fault.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from aiohttp import web
from lxml import etree
from lxml.builder import ElementMaker

from http_api import kkt_soap
from http_api.kkt_soap import OPERATIONS, SOAP12_ENV, Map, Reply, SoapFault

TNS = "urn:KaKaTong:doc"
XSD = "http://www.w3.org/2001/XMLSchema"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP11 = "http://schemas.xmlsoap.org/wsdl/soap/"
WSDL_SOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"
HTTP_TRANSPORT = "http://schemas.xmlsoap.org/soap/http"
PATH = "/s/soap"
LOCATION_PLACEHOLDER = f"http://localhost:8080{PATH}"

COMMON_ELEMENTS = ("LANG", "REQID")
# Arguments a handler reads that are not rpc parts (the rpc port accepts them by name).
HANDLER_EXTRAS: dict[str, tuple[str, ...]] = {"soapActivateCard": ("AMOUNT", "USR_MOBILE_NO")}


def request_elements(operation: str) -> tuple[str, ...]:
    """The children of ``operation``'s wrapper element, in schema order."""
    names = (*OPERATIONS[operation].parts, *HANDLER_EXTRAS.get(operation, ()), *COMMON_ELEMENTS)
    return tuple(dict.fromkeys(names))


# --- requests ------------------------------------------------------------------------------


def decode(body: bytes) -> kkt_soap.Decoded:
    """A doc/literal request: the wrapper names the operation, its children bind by name."""
    version, op_el = kkt_soap.parse_envelope(body)
    wrapper = etree.QName(op_el.tag)
    name = wrapper.localname
    if wrapper.namespace != TNS or name not in OPERATIONS:
        raise SoapFault(f"unknown operation {name[:64]!r} in namespace {(wrapper.namespace or '')[:64]!r}")
    args = kkt_soap.arguments(op_el)  # at most MAX_ARGUMENTS, simple values, xsi:nil
    allowed = request_elements(name)
    seen: set[str] = set()
    for child in op_el:
        qname = etree.QName(child.tag)
        if qname.namespace not in (None, TNS) or qname.localname not in allowed:
            raise SoapFault(f"element {qname.localname[:64]!r} is not in the schema of {name}")
        if qname.localname in seen:
            raise SoapFault(f"element {qname.localname!r} given twice")
        seen.add(qname.localname)
    operation = OPERATIONS[name]
    return version, name, operation, kkt_soap.bind_arguments(operation.parts, args)


# --- replies -------------------------------------------------------------------------------

T = ElementMaker(namespace=TNS, nsmap={"tns": TNS})


def _record(fields: Map) -> etree._Element:
    return T.record(*(T.field(T.key(k), T.value("" if v is None else str(v))) for k, v in fields))


def response_element(operation: str, reply: Reply) -> etree._Element:
    """``<tns:{operation}Response>``: licenseCode, then one record per Map of the rpc reply."""
    if isinstance(reply, int):
        return T(f"{operation}Response", T.licenseCode(str(reply)))
    maps: Sequence[Map]
    if reply and isinstance(reply[0], list):
        maps = [m for m in reply if isinstance(m, list)]  # soapTradeStance: a list of Maps
    elif reply:
        maps = [reply]  # type: ignore[list-item]
    else:
        maps = []  # soapTradeStance found nothing
    return T(f"{operation}Response", T.licenseCode("0"), *(_record(m) for m in maps))


def envelope(version: str, operation: str, reply: Reply) -> bytes:
    env = etree.Element(f"{{{version}}}Envelope", nsmap={"soap": version, "tns": TNS})
    etree.SubElement(env, f"{{{version}}}Body").append(response_element(operation, reply))
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))


async def handle_post(request: web.Request) -> web.StreamResponse:
    outcome = await kkt_soap.run_request(request, decode)
    if isinstance(outcome, web.Response):
        return outcome
    version, name, reply = outcome
    content_type = "application/soap+xml" if version == SOAP12_ENV else "text/xml"
    return web.Response(body=envelope(version, name, reply), content_type=content_type, charset="utf-8")


# --- the WSDL ------------------------------------------------------------------------------

W = ElementMaker(namespace=WSDL, nsmap={None: WSDL, "tns": TNS, "xsd": XSD, "soap": WSDL_SOAP11,
                                        "soap12": WSDL_SOAP12})
X = ElementMaker(namespace=XSD)
S11 = ElementMaker(namespace=WSDL_SOAP11)
S12 = ElementMaker(namespace=WSDL_SOAP12)


def _schema() -> etree._Element:
    string, optional = {"type": "xsd:string"}, {"minOccurs": "0"}
    types: list[etree._Element] = [
        X.complexType(X.sequence(X.element(name="key", **string), X.element(name="value", **string)), name="Field"),
        X.complexType(X.sequence(X.element(name="field", type="tns:Field", minOccurs="0", maxOccurs="unbounded")),
                      name="Record"),
    ]
    for name in OPERATIONS:
        children = [X.element(name=e, **string, **optional) for e in request_elements(name)]
        types.append(X.element(X.complexType(X.sequence(*children)), name=name))
        types.append(X.element(X.complexType(X.sequence(
            X.element(name="licenseCode", type="xsd:int"),
            X.element(name="record", type="tns:Record", minOccurs="0", maxOccurs="unbounded"),
        )), name=f"{name}Response"))
    return X.schema(*types, targetNamespace=TNS, elementFormDefault="qualified")  # prefixes: the root's


def _binding(name: str, maker: ElementMaker) -> etree._Element:
    ops = [W.operation(maker.operation(soapAction=f"{TNS}#{op}", style="document"),
                       W.input(maker.body(use="literal")), W.output(maker.body(use="literal")), name=op)
           for op in OPERATIONS]
    return W.binding(maker.binding(style="document", transport=HTTP_TRANSPORT), *ops, name=name,
                     type="tns:KaKaTongDocPortType")


def wsdl(location: str = LOCATION_PLACEHOLDER) -> bytes:
    """The service description (document/literal wrapped, SOAP 1.1 and 1.2), ``location`` filled in."""
    messages: list[etree._Element] = []
    port_ops: list[etree._Element] = []
    for name, op in OPERATIONS.items():
        messages.append(W.message(W.part(name="parameters", element=f"tns:{name}"), name=f"{name}Request"))
        messages.append(W.message(W.part(name="parameters", element=f"tns:{name}Response"), name=f"{name}Response"))
        port_ops.append(W.operation(W.documentation(op.doc), W.input(message=f"tns:{name}Request"),
                                    W.output(message=f"tns:{name}Response"), name=name))
    root = W.definitions(
        W.types(_schema()),
        *messages,
        W.portType(*port_ops, name="KaKaTongDocPortType"),
        _binding("KaKaTongDocBinding", S11),
        _binding("KaKaTongDocSoap12Binding", S12),
        W.service(
            W.port(S11.address(location=location), name="KaKaTongDocPort", binding="tns:KaKaTongDocBinding"),
            W.port(S12.address(location=location), name="KaKaTongDocSoap12Port",
                   binding="tns:KaKaTongDocSoap12Binding"),
            name="KaKaTongDocService",
        ),
        name="KaKaTongDoc", targetNamespace=TNS,
    )
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def setup(app: web.Application) -> None:
    kkt_soap.add_port_routes(app, PATH, f"{PATH}.wsdl", handle_post, wsdl)


if __name__ == "__main__":  # print the WSDL (with a placeholder location)
    sys.stdout.write(wsdl().decode("utf-8"))
