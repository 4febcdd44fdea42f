"""What every ``edgeloop`` command shares: the hub options, one exit-code policy and its messages.

The commands live beside what they drive (``edge_runtime.cli``, ``hub.cli``, ``models.cli``, ``flows.cli``) and
``edgeloop.cli`` composes them into the one ``edgeloop`` app. This module sits in the edge runtime because
it is the one layer all of them may import; it needs only typer and rich.

Exit codes, everywhere:

- 0: done.
- 1: a service is unreachable, a refusal of who asks (401/403: the token may not), or a failed operation
  (5xx, a rollout rolled back, a wait that timed out).
- 2: bad input: a spec, config or argument that does not validate, a missing token, or a request the hub
  refused as wrong (any other 4xx, with the hub's message naming what).

Every message names where: the file (with its line), or the URL of the service.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Optional, TypeVar

import typer

__all__ = ["OK", "FAILED", "BAD_INPUT", "CLOUD_EXTRA", "HubUrl", "Token", "die", "fail_spec", "hub_client",
           "hub_call", "exit_code", "require", "needs_cloud", "duration", "params", "ParamOpt", "table", "ago", "plain"]

OK, FAILED, BAD_INPUT = 0, 1, 2

HubUrl = typer.Option("http://127.0.0.1:8080", "--hub", envvar="EDGELOOP_HUB_URL", help="the hub's URL")
Token = typer.Option(None, "--token", envvar=["EDGELOOP_TOKEN", "EDGELOOP_HUB_TOKEN"],
                     help="the hub's admin token (or EDGELOOP_TOKEN / EDGELOOP_HUB_TOKEN, as `edgeloop up` prints)")
ParamOpt = typer.Option(None, "--param", "-p", help="NAME=VALUE for one of the pipeline's params (repeat it); "
                                                    "VALUE is read as YAML: 90, WARN, [a, b]")

#: what ``pip install 'edgeloop[cloud]'`` brings: the hub, the loop and model building import these
CLOUD_MODULES = frozenset({
    "alembic", "bentoml", "cv2", "dvc", "fastapi", "httpx", "jinja2", "label_studio_sdk", "mlflow", "prefect",
    "prefect_dask", "psycopg", "sklearn", "sqlalchemy", "starlette", "torch", "uvicorn"})
CLOUD_EXTRA = "pip install 'edgeloop[cloud]'"

F = TypeVar("F", bound=Callable[..., Any])


def die(message: str, code: int = BAD_INPUT) -> NoReturn:
    """``error: message`` on stderr, then exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def fail_spec(exc: Exception) -> NoReturn:
    """A spec, config or argument that does not validate (its message names the file, line and field)."""
    die(str(exc), BAD_INPUT)


def exit_code(status: int) -> int:
    """The exit code of a hub answer: 401/403 and 5xx are 1, any other 4xx is bad input (2)."""
    return FAILED if status in (401, 403) or status >= 500 else BAD_INPUT


def hub_client(hub: str, token: Optional[str], *, timeout: float = 30.0) -> Any:
    """An admin :class:`~edge_runtime.hubclient.HubClient`; exit 2 without a token or with a malformed URL."""
    from .hubclient import HubClient

    if not token:
        die("no admin token: pass --token or set EDGELOOP_TOKEN")
    try:
        return HubClient(hub, token, timeout=timeout)
    except ValueError as exc:
        die(str(exc))


def hub_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a hub call; the hub's refusals and an unreachable hub become a message naming the hub and an exit
    code (:func:`exit_code`; unreachable: 1)."""
    from .hubclient import HubError, HubUnreachable

    try:
        return fn(*args, **kwargs)
    except HubError as exc:
        where = next((getattr(o, "url", None) for o in (getattr(fn, "__self__", None), *args)
                      if isinstance(getattr(o, "url", None), str)), None)
        die(f"{where + ': ' if where else ''}{exc.detail} ({exc.status})", exit_code(exc.status))
    except HubUnreachable as exc:
        die(f"hub unreachable: {exc}", FAILED)


def _cloud_module(exc: ModuleNotFoundError) -> str | None:
    name = (exc.name or "").split(".")[0]
    return name if name in CLOUD_MODULES else None


def require(*modules: str) -> None:
    """Raise ModuleNotFoundError (as importing it would) for the first of ``modules`` that is not installed,
    without importing any: for commands that run the cloud half in child processes (``edgeloop up``)."""
    import importlib.util

    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: sys.modules[name] is None (an import known to fail)
            found = False
        if not found:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def needs_cloud(fn: F) -> F:
    """A command of the cloud half (hub, loop, models): on an install without the cloud extra it exits 2 with
    one line naming the extra, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ModuleNotFoundError as exc:
            missing = _cloud_module(exc)
            if missing is None:
                raise
            die(f"this command needs the cloud extra ({missing} is not installed): {CLOUD_EXTRA}")

    return wrapper  # type: ignore[return-value]


def duration(text: str, option: str, *, zero: bool = False) -> float:
    """A duration option (``500ms``, ``60s``, ``2m``, ``1.5h``, ``1d`` or seconds): the grammar of every spec
    (:func:`edge_runtime.operators.base.parse_duration`); exit 2 naming the option otherwise."""
    from .operators.base import SpecError, parse_duration

    try:
        return parse_duration(text, option, zero=zero)
    except SpecError as exc:
        die(f"{option}: {exc.problem}")


def params(items: Optional[list[str]]) -> Optional[dict[str, Any]]:
    """``--param NAME=VALUE`` options -> values (typed as YAML reads them); exit 2 on a malformed one."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            die(f"--param {item!r}: expected NAME=VALUE")
        try:
            out[name.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            die(f"--param {item!r}: the value is not YAML: {exc}")
    return out or None


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a rich table (None cells empty)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    Console().print(t)


def ago(ts: Optional[float]) -> str:
    """``12s ago``, ``5m ago``, ``3h ago`` or ``never``."""
    if not ts:
        return "never"
    d = time.time() - ts
    return f"{d:.0f}s ago" if d < 120 else f"{d / 60:.0f}m ago" if d < 7200 else f"{d / 3600:.0f}h ago"


def plain(value: Any) -> Any:
    """YAML data as plain JSON data (string keys)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
