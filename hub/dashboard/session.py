"""The dashboard's sessions: sign-in with the admin token into an HttpOnly, SameSite=Strict cookie (or a bearer
header), a CSRF value derived from the token on every form, and redirects only within the dashboard."""

import hashlib
import hmac
from typing import Annotated, Mapping
from urllib.parse import parse_qs, quote

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from ..api.deps import HubDep

__all__ = ["COOKIE", "Token", "add_error_handlers", "check_csrf", "csrf_value", "form", "safe_next", "session_token"]

COOKIE = "edgeloop_session"


def csrf_value(token: str) -> str:
    """The CSRF value a form must carry: bound to the signed-in token, useless to another site."""
    return hmac.new(token.encode(), b"edgeloop-ui-csrf", hashlib.sha256).hexdigest()[:32]


class _SignIn(Exception):
    """No valid session: the page at ``path`` needs a sign-in first."""

    def __init__(self, path: str) -> None:
        self.path = path


def session_token(request: Request, hub: HubDep, authorization: Annotated[str | None, Header()] = None) -> str:
    """The signed-in admin token (the cookie, or a bearer header); to the sign-in page without one."""
    token = request.cookies.get(COOKIE) or ""
    if not token and authorization and authorization.startswith("Bearer "):
        token = authorization[7:].strip()
    p = hub.principal_for(token) if token and len(token) <= 200 else None
    if p is None:
        raise _SignIn(request.url.path)
    if not p.admin:
        raise HTTPException(403, f"the dashboard needs the admin token; this is a {p.kind} token")
    return token


Token = Annotated[str, Depends(session_token)]


async def _sign_in(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, _SignIn)
    return RedirectResponse(f"/ui/login?next={quote(exc.path)}", status_code=303)


def add_error_handlers(app: FastAPI) -> None:
    """A page asked for without a valid session goes to the sign-in page, then back."""
    app.add_exception_handler(_SignIn, _sign_in)


async def form(request: Request) -> dict[str, str]:
    """A posted form's fields (the first value of each); 413 over 4 KiB."""
    raw = await request.body()
    if len(raw) > 4096:
        raise HTTPException(413, "form too large")
    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}


def check_csrf(token: str, fields: Mapping[str, str]) -> None:
    """403 unless the form carries the CSRF value of the signed-in token."""
    if not hmac.compare_digest(fields.get("csrf", ""), csrf_value(token)):
        raise HTTPException(403, "the form's CSRF value is missing or stale: reload the page and try again")


def safe_next(nxt: str) -> str:
    """Only a path of this dashboard: never an open redirect to another site."""
    return nxt if nxt.startswith("/ui/") and not nxt.startswith("//") and "\\" not in nxt else "/ui/"
