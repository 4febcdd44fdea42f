"""ONVIF cameras: WS-Discovery, the stream URI of a media profile, and PTZ as product services.

A video binding can name an ONVIF camera instead of a stream URL::

    - id: street-4
      product: street_camera
      connector: video
      onvif: {host: 10.0.0.44, port: 80, profile: main, username_env: CAM_USER, password_env: CAM_PASSWORD}
      services:
        look_left: {ptz: continuous_move, pan: -0.5, timeout: 1s}
        stop_moving: {ptz: stop}
        go_home: {ptz: goto_home}
        go_to: {ptz: goto_preset, preset: $name}

Each time the stream is opened (and after every outage) the node asks the camera's media service for its
profiles (``profile``: a profile token or name; default: the first) and that profile's RTSP URI, adds the
user and password to it, and reads it like any stream. PTZ services call the camera's PTZ service
(``continuous_move`` with pan/tilt/zoom velocities in [-1, 1] and an optional timeout, ``relative_move``,
``absolute_move``, ``stop``, ``goto_home``, ``goto_preset``). Requests carry a WS-Security UsernameToken
(password digest). Client: onvif-zeep-async (python-onvif-zeep-async, kept by the Home Assistant
community), imported only when a node has an ONVIF camera.

``discover()`` sends a WS-Discovery Probe for NetworkVideoTransmitter devices, multicast on the LAN
(239.255.255.250:3702) or to one address (a directed probe: across routed networks, and in tests), and
returns what answered: the device's service addresses (XAddrs), scopes (name, location, hardware) and
types. ``edgeloop onvif discover`` prints them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
import xml.etree.ElementTree as ET  # noqa: S405 - answers are size-capped; expat refuses entity expansion bombs
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from ..records import RecordError

__all__ = ["discover", "stream_uri", "ptz", "PTZ_ACTIONS", "credentials"]

MULTICAST = ("239.255.255.250", 3702)
PTZ_ACTIONS = ("continuous_move", "relative_move", "absolute_move", "stop", "goto_home", "goto_preset")
_NS = {"s": "http://www.w3.org/2003/05/soap-envelope", "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
       "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery"}
PROBE = """<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"
 xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl">
<s:Header><a:Action s:mustUnderstand="1">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action>
<a:MessageID>urn:uuid:{id}</a:MessageID><a:ReplyTo><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>
<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To></s:Header>
<s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body></s:Envelope>"""


def discover(timeout: float = 3.0, to: tuple[str, int] | None = None) -> list[dict[str, Any]]:
    """WS-Discovery: probe (multicast, or ``to`` one host:port) and collect ProbeMatches for ``timeout`` s."""
    message_id = str(uuid.uuid4())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
    sock.settimeout(0.2)
    found: dict[str, dict[str, Any]] = {}
    try:
        sock.sendto(PROBE.replace("{id}", message_id).encode(), to or MULTICAST)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, addr = sock.recvfrom(65536)
            except TimeoutError:
                continue
            for match in _matches(data, message_id):
                found.setdefault(match["address"] or addr[0], {**match, "from": addr[0]})
    finally:
        sock.close()
    return list(found.values())


def _matches(data: bytes, message_id: str) -> list[dict[str, Any]]:
    if len(data) > 65536:
        return []
    try:
        root = ET.fromstring(data)  # noqa: S314 - see the import
    except ET.ParseError:
        return []
    relates = root.find("s:Header/a:RelatesTo", _NS)
    if relates is None or (relates.text or "").strip() != f"urn:uuid:{message_id}":
        return []  # not an answer to our probe
    out = []
    for m in root.iterfind("s:Body/d:ProbeMatches/d:ProbeMatch", _NS):
        def text(path: str, m: Any = m) -> str:
            el = m.find(path, _NS)
            return (el.text or "").strip() if el is not None else ""
        out.append({"address": text("a:EndpointReference/a:Address"), "types": text("d:Types").split(),
                    "scopes": text("d:Scopes").split(), "xaddrs": text("d:XAddrs").split()})
    return out


def credentials(opt: dict[str, Any]) -> tuple[str | None, str | None]:
    user = os.environ.get(str(opt["username_env"])) if opt.get("username_env") else None
    password = os.environ.get(str(opt["password_env"])) if opt.get("password_env") else None
    return user, password


def _camera(opt: dict[str, Any]) -> Any:
    from onvif import ONVIFCamera

    user, password = credentials(opt)
    return ONVIFCamera(str(opt["host"]), int(opt.get("port", 80)), user, password)


async def _stream_uri(opt: dict[str, Any]) -> str:
    cam = _camera(opt)
    try:
        await cam.update_xaddrs()
        media = await cam.create_media_service()
        profiles = await media.GetProfiles()
        if not profiles:
            raise RecordError("the camera has no media profiles")
        want = opt.get("profile")
        chosen = next((p for p in profiles if want in (p.token, getattr(p, "Name", None))), None) if want \
            else profiles[0]
        if chosen is None:
            raise RecordError(f"no media profile {want!r} (the camera has: "
                              + ", ".join(str(p.token) for p in profiles) + ")")
        got = await media.GetStreamUri({"StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
                                        "ProfileToken": chosen.token})
        uri = str(got.Uri)
    finally:
        await cam.close()
    user, password = credentials(opt)
    if user:  # the stream wants the same account; the URI the camera gives has none
        parts = urlsplit(uri)
        host = parts.hostname or ""
        netloc = f"{quote(user, safe='')}:{quote(password or '', safe='')}@{host}" + (
            f":{parts.port}" if parts.port else "")
        uri = urlunsplit(parts._replace(netloc=netloc))
    return uri


def stream_uri(opt: dict[str, Any], timeout: float = 10.0) -> str:
    """The RTSP URI of the binding's media profile (with the account in it); RecordError naming the failure."""
    try:
        return asyncio.run(asyncio.wait_for(_stream_uri(opt), timeout))
    except RecordError:
        raise
    except Exception as exc:  # zeep faults, ONVIFError, network errors: the camera's problem, said plainly
        raise RecordError(f"ONVIF {opt.get('host')}:{opt.get('port', 80)}: {_why(exc)}") from None


def _why(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "NotAuthorized" in text or "Sender not Authorized" in text or "401" in text:
        return f"the camera refused the account ({text[:120]})"
    return f"{type(exc).__name__}: {text[:200]}"


async def _ptz(opt: dict[str, Any], how: dict[str, Any]) -> None:
    cam = _camera(opt)
    try:
        await cam.update_xaddrs()
        media = await cam.create_media_service()
        profiles = await media.GetProfiles()
        want = opt.get("profile")
        token = next((p.token for p in profiles if want in (p.token, getattr(p, "Name", None))), None) if want \
            else (profiles[0].token if profiles else None)
        if token is None:
            raise RecordError("the camera has no media profile for PTZ")
        ptz_service = await cam.create_ptz_service()
        action = how["ptz"]
        vector = {"PanTilt": {"x": float(how.get("pan", 0.0)), "y": float(how.get("tilt", 0.0))},
                  "Zoom": {"x": float(how.get("zoom", 0.0))}}
        if action == "continuous_move":
            req: dict[str, Any] = {"ProfileToken": token, "Velocity": vector}
            if how.get("timeout"):
                req["Timeout"] = f"PT{float(how['timeout']):g}S"
            await ptz_service.ContinuousMove(req)
        elif action == "relative_move":
            await ptz_service.RelativeMove({"ProfileToken": token, "Translation": vector})
        elif action == "absolute_move":
            await ptz_service.AbsoluteMove({"ProfileToken": token, "Position": vector})
        elif action == "stop":
            await ptz_service.Stop({"ProfileToken": token, "PanTilt": True, "Zoom": True})
        elif action == "goto_home":
            await ptz_service.GotoHomePosition({"ProfileToken": token})
        elif action == "goto_preset":
            await ptz_service.GotoPreset({"ProfileToken": token, "PresetToken": str(how["preset"])})
    finally:
        await cam.close()


def ptz(opt: dict[str, Any], how: dict[str, Any], timeout: float = 10.0) -> None:
    """Carry out one PTZ service (``how`` with ``$args`` already substituted); RecordError on failure."""
    try:
        asyncio.run(asyncio.wait_for(_ptz(opt, how), timeout))
    except RecordError:
        raise
    except Exception as exc:  # zeep faults, ONVIFError, network errors
        raise RecordError(f"ONVIF PTZ {how.get('ptz')} on {opt.get('host')}: {_why(exc)}") from None
