"""Every command the dashboard's pages suggest (``<code>edgeloop ...</code>``) exists, with the options it names:
a hint to a command that is not there (``edgeloop hub node create``, ``edgeloop model publish``) sends a new user
nowhere."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import typer

from edgeloop.cli import app

TEMPLATES = Path(__file__).resolve().parents[2] / "hub" / "templates"


def _hints() -> list[tuple[str, str]]:
    out = []
    for f in sorted(TEMPLATES.glob("*.html")):
        for m in re.finditer(r"<code>(edgeloop [^<]+)</code>", f.read_text()):
            out.append((f.name, html.unescape(m.group(1))))
    return out


def _resolve(words: list[str]) -> tuple[Any, list[str]]:
    cmd: Any = typer.main.get_command(app)  # typer's own click (it may vendor one): groups have ``commands``
    rest = list(words)
    while rest and hasattr(cmd, "commands") and rest[0] in cmd.commands:
        cmd = cmd.commands[rest.pop(0)]
    return cmd, rest


def test_dashboard_hints_name_real_commands() -> None:
    hints = _hints()
    assert len(hints) >= 5, hints  # the empty pages' hints are found at all
    wrong = []
    for page, hint in hints:
        words = hint.split()[1:]
        cmd, rest = _resolve(words)
        if hasattr(cmd, "commands"):
            wrong.append(f"{page}: `{hint}`: {' '.join(words[:len(words) - len(rest)]) or 'edgeloop'} has no "
                         f"command {rest[0] if rest else ''!r}")
            continue
        options = {o for p in cmd.params for o in getattr(p, "opts", [])}
        unknown = [w for w in rest if w.startswith("-") and w not in options]
        if unknown:
            wrong.append(f"{page}: `{hint}`: no option {', '.join(unknown)}")
    assert not wrong, "\n".join(wrong)
