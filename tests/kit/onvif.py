"""An ONVIF camera for the tests, as no camera exists on these machines: a SOAP 1.2 server over HTTP that
answers the ONVIF operations EdgeLoop uses (GetServices, GetCapabilities, GetProfiles, GetStreamUri, PTZ
ContinuousMove/RelativeMove/AbsoluteMove/Stop/GotoHomePosition/GotoPreset) in the ONVIF schemas' shape,
checks WS-Security UsernameToken password digests when it has an account, and answers WS-Discovery
probes sent to its UDP port. The real client library (onvif-zeep-async) talks to it; its stream URI
points at a real RTSP server. What it got is kept in ``calls``."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import xml.etree.ElementTree as ET  # noqa: S405 - test traffic from our own client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NS = {"s": "http://www.w3.org/2003/05/soap-envelope", "tt": "http://www.onvif.org/ver10/schema",
      "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
      "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
      "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing", "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery"}
ENVELOPE = ('<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
            'xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:tds="http://www.onvif.org/ver10/device/wsdl" '
            'xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:tptz="http://www.onvif.org/ver20/ptz/wsdl" xmlns:ter="http://www.onvif.org/ver10/error">'
            '<s:Body>{body}</s:Body></s:Envelope>')
FAULT = ('<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>ter:NotAuthorized</s:Value></s:Subcode>'
         '</s:Code><s:Reason><s:Text xml:lang="en">Sender not Authorized</s:Text></s:Reason></s:Fault>')


class OnvifCamera:
    def __init__(self, stream: str, users: dict[str, str] | None = None) -> None:
        self.stream = stream
        self.users = users or {}
        self.port = 0  # both ports are taken by binding port 0 in start(): no race with other tests
        self.discovery_port = 0
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.http: ThreadingHTTPServer | None = None
        self.udp: socket.socket | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/onvif"

    def start(self) -> OnvifCamera:
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = cam.answer(body)
                data = ENVELOPE.replace("{body}", answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.http.server_address[1]
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.discovery_port))
        self.discovery_port = self.udp.getsockname()[1]
        threading.Thread(target=self._discovery, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
            self.http = None
        if self.udp is not None:
            self.udp.close()
            self.udp = None

    # -- SOAP ---------------------------------------------------------------------------------------------
    def _authorised(self, root: ET.Element) -> bool:
        if not self.users:
            return True
        token = root.find("s:Header/wsse:Security/wsse:UsernameToken", NS)
        if token is None:
            return False
        user = token.findtext("wsse:Username", "", NS)
        password = token.find("wsse:Password", NS)
        nonce = token.findtext("wsse:Nonce", "", NS)
        created = token.findtext("wsu:Created", "", NS)
        if user not in self.users or password is None:
            return False
        digest = base64.b64encode(hashlib.sha1(base64.b64decode(nonce) + created.encode()  # noqa: S324 - WS-Security
                                               + self.users[user].encode()).digest()).decode()
        return digest == (password.text or "").strip()

    def answer(self, body: bytes) -> tuple[int, str]:
        root = ET.fromstring(body)  # noqa: S314
        op = next(iter(root.find("s:Body", NS)))
        name = op.tag.split("}")[1]
        args = {el.tag.split("}")[1]: (el.text or "").strip() or {k: v for k, v in el.attrib.items()}
                for el in op.iter() if el is not op}
        if name != "GetSystemDateAndTime" and not self._authorised(root):
            return 400, FAULT
        self.calls.append((name, args))
        base = self.base
        if name == "GetServices":
            return 200, "<tds:GetServicesResponse>" + "".join(
                f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{base}/{path}</tds:XAddr>"
                f"<tds:Version><tt:Major>2</tt:Major><tt:Minor>0</tt:Minor></tds:Version></tds:Service>"
                for ns, path in (("http://www.onvif.org/ver10/device/wsdl", "device_service"),
                                 ("http://www.onvif.org/ver10/media/wsdl", "media"),
                                 ("http://www.onvif.org/ver20/ptz/wsdl", "ptz"))) + "</tds:GetServicesResponse>"
        if name == "GetCapabilities":
            return 200, (f"<tds:GetCapabilitiesResponse><tds:Capabilities><tt:Device><tt:XAddr>{base}/device_service"
                         f"</tt:XAddr></tt:Device><tt:Media><tt:XAddr>{base}/media</tt:XAddr></tt:Media><tt:PTZ>"
                         f"<tt:XAddr>{base}/ptz</tt:XAddr></tt:PTZ></tds:Capabilities></tds:GetCapabilitiesResponse>")
        if name == "GetProfiles":
            return 200, ("<trt:GetProfilesResponse>"
                         '<trt:Profiles token="sub" fixed="true"><tt:Name>sub</tt:Name></trt:Profiles>'
                         '<trt:Profiles token="main" fixed="true"><tt:Name>main</tt:Name></trt:Profiles>'
                         "</trt:GetProfilesResponse>")
        if name == "GetStreamUri":
            return 200, (f"<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>{self.stream}</tt:Uri>"
                         "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false"
                         "</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri>"
                         "</trt:GetStreamUriResponse>")
        if name in ("ContinuousMove", "RelativeMove", "AbsoluteMove", "Stop", "GotoHomePosition", "GotoPreset"):
            return 200, f"<tptz:{name}Response/>"
        return 400, FAULT.replace("ter:NotAuthorized", "ter:ActionNotSupported")

    # -- WS-Discovery -------------------------------------------------------------------------------------
    def _discovery(self) -> None:
        sock = self.udp
        while sock is not None and self.udp is not None:
            try:
                data, addr = sock.recvfrom(65536)
            except OSError:
                return
            root = ET.fromstring(data)  # noqa: S314
            message_id = root.findtext("s:Header/a:MessageID", "", NS)
            if root.find("s:Body/d:Probe", NS) is None:
                continue
            answer = (
                '<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
                'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
                'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" '
                'xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><s:Header>'
                '<a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</a:Action>'
                f"<a:RelatesTo>{message_id}</a:RelatesTo></s:Header><s:Body><d:ProbeMatches><d:ProbeMatch>"
                "<a:EndpointReference><a:Address>urn:uuid:edgeloop-test-camera</a:Address></a:EndpointReference>"
                "<d:Types>dn:NetworkVideoTransmitter</d:Types>"
                "<d:Scopes>onvif://www.onvif.org/name/TestCam onvif://www.onvif.org/location/street-4</d:Scopes>"
                f"<d:XAddrs>{self.base}/device_service</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion>"
                "</d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>")
            sock.sendto(answer.encode(), addr)
