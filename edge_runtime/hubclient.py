"""A small HTTP client for the hub's API (standard library only: the edge stays small).

Keeps one keep-alive connection per thread, sends ``Authorization: Bearer``,
and turns the hub's 4xx ``detail`` messages into :class:`HubError`.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from typing import Any
from urllib.parse import quote, urlsplit

from . import jsonio

__all__ = ["HubClient", "HubError", "HubUnreachable"]


class HubError(Exception):
    """The hub answered with an error status; ``status`` and ``detail`` say which and why."""

    def __init__(self, status: int, detail: str, *, method: str = "", path: str = "") -> None:
        super().__init__(f"{method} {path}: {status} {detail}")
        self.status, self.detail = status, detail


class HubUnreachable(Exception):
    """The hub could not be reached (connection refused, timeout, reset)."""


class HubClient:
    def __init__(self, url: str, token: str | None = None, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"hub url {url!r}: expected http(s)://host[:port]")
        self.url = url.rstrip("/")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            if self.scheme == "https":
                c = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                context=ssl.create_default_context())
            else:
                c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = c
        return c

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None, ok: tuple[int, ...] = ()) -> tuple[int, Any, dict[str, str]]:
        """Send a request; returns (status, decoded JSON or bytes, headers). 4xx/5xx raise HubError."""
        hdrs = {"Accept": "application/json", **(headers or {})}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        data = raw
        if body is not None:
            data = jsonio.dumps(body)
            hdrs["Content-Type"] = "application/json"
        full = self.prefix + path
        for attempt in (0, 1):  # a keep-alive connection the server closed: retry once on a fresh one
            c = self._conn()
            try:
                c.request(method, full, body=data, headers=hdrs)
                resp = c.getresponse()
                payload = resp.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine, BrokenPipeError) as exc:
                self.close()
                if attempt:
                    raise HubUnreachable(f"{self.url}: {exc}") from None
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                self.close()
                raise HubUnreachable(f"{self.url}: {exc}") from None
        rh = {k.lower(): v for k, v in resp.getheaders()}
        value: Any = payload
        if rh.get("content-type", "").startswith("application/json") and payload:
            value = jsonio.loads(payload)
        if resp.status >= 400 and resp.status not in ok:
            detail = value.get("detail") if isinstance(value, dict) else payload[:300].decode(errors="replace")
            raise HubError(resp.status, detail if isinstance(detail, str) else jsonio.dumps(detail).decode(),
                           method=method, path=path)
        return resp.status, value, rh

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)[1]

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body if body is not None else {}, **kw)[1]

    def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("PUT", path, body, **kw)[1]

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)[1]

    def all_uploads(self, **query: Any) -> list[dict[str, Any]]:
        """Every upload the hub stored that matches ``query`` (kind, node, device, ...), in storage order."""
        from urllib.parse import urlencode

        out, after = [], 0
        while True:
            page = self.get("/api/v1/uploads?" + urlencode({**query, "after": after, "limit": 10000}))
            out.extend(page["items"])
            if not page["items"]:
                return out
            after = page["next"]

    def put_media(self, node: str, media_id: str, data: bytes, *, sha256: str,
                  content_type: str = "application/octet-stream", upload_id: str | None = None) -> int | None:
        """Upload a media file; returns the status, or None when the hub is unreachable."""
        headers = {"X-Sha256": sha256, "Content-Type": content_type}
        if upload_id:
            headers["X-Upload-Id"] = upload_id
        try:
            status, _, _ = self.request("PUT", f"/api/v1/nodes/{quote(node)}/media/{quote(media_id)}",
                                        raw=data, headers=headers)
        except HubError as exc:
            return exc.status
        except HubUnreachable:
            return None
        return status
