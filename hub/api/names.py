"""Names and numbers as the API takes them in paths, queries and bodies: the patterns the OpenAPI document
declares and the checks (422 with what is wrong) for those taken by hand."""

import re

from fastapi import HTTPException

__all__ = ["BIGINT", "NAME", "PIPELINE_NAME", "checked_name", "checked_target", "is_name"]

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"  # nodes, groups, models, versions, instances, media ids (a file name)
PIPELINE_NAME = r"^[A-Za-z0-9_. \-]{1,100}$"
BIGINT = 2**63 - 1  # integers in paths and queries go to the database: keep them in its range

_NAME = re.compile(NAME)


def is_name(value: str) -> bool:
    """Whether ``value`` is a name (never ``.`` or ``..``: a name may be a file name)."""
    return _NAME.match(value) is not None


def checked_name(what: str, value: str) -> str:
    """``value`` if it is a name; HTTP 422 naming ``what`` otherwise."""
    if not is_name(value):
        raise HTTPException(422, f"{what} {value!r}: letters, digits and _ . -, starting with a letter or digit "
                                 "(at most 64)")
    return value


def checked_target(target: str) -> tuple[str, str]:
    """``node:<name>`` or ``group:<name>`` as (kind, name); HTTP 422 otherwise."""
    kind, _sep, name = target.partition(":")
    if kind not in ("node", "group") or not is_name(name):
        raise HTTPException(422, f"target {target!r}: expected node:<name> or group:<name>")
    return kind, name
