"""Products and pipelines as the hub keeps them: checked with the node's own loaders (the node's messages in
:class:`SpecRejected`), a pipeline versioned by the digest of its plan, and instances of a pipeline (its params,
the model versions it pins) checked before a node is asked to run them. No HTTP here."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from .db import Assignment, ModelVersion, PipelineVersion, bump_revision
from .uploads import spec_problem

__all__ = ["SpecRejected", "canonical", "check_instance", "check_pipeline", "check_product", "pipeline_version",
           "put_pipeline"]


class SpecRejected(ValueError):
    """A product or pipeline spec that does not validate (the node's own message)."""


def canonical(obj: Any) -> bytes:
    """``obj`` as JSON with sorted keys: the same document always gives the same bytes (digests, ETags)."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def _natural(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


def check_product(spec: Any) -> str:
    """The product's name, if ``spec`` is one product the hub can keep; SpecRejected otherwise."""
    from edge_runtime.devices.catalog import load_catalog
    from edge_runtime.operators.base import SpecError

    if not isinstance(spec, dict):
        raise SpecRejected("a product is a mapping with name and properties")
    try:
        cat = load_catalog([], products_data=[("<product>", spec)])
    except SpecError as exc:
        raise SpecRejected(str(exc)) from None
    if len(cat.products) != 1:  # a {products: [...]} document: the hub stores one product per name
        raise SpecRejected(f"<product>: expected one product, got {len(cat.products)}")
    problem = spec_problem(spec, "<product>")
    if problem:
        raise SpecRejected(problem)
    (name,) = cat.products
    if len(name) > 64:
        raise SpecRejected(f"<product>, field 'name': the hub keeps product names of at most 64 characters, got {len(name)}")
    return name


def check_pipeline(spec: Any) -> Any:
    """The pipeline's validated plan (as a node would load it); SpecRejected otherwise."""
    from edge_runtime.operators.base import SpecError
    from edge_runtime.pipeline import parse_pipeline

    try:
        return parse_pipeline(spec, file="<pipeline>")
    except SpecError as exc:
        raise SpecRejected(str(exc)) from None


def put_pipeline(s: Session, spec: dict[str, Any]) -> tuple[PipelineVersion, bool]:
    """Store ``spec`` as the pipeline's next version unless its newest version has the same plan; returns the
    version and whether it is new (the desired-state revision bumped then). The caller commits."""
    plan = check_pipeline(spec)
    problem = spec_problem(spec, "<pipeline>")
    if problem:
        raise SpecRejected(problem)
    if len(plan.name) > 100:
        raise SpecRejected(f"<pipeline>, field 'name': the hub keeps pipeline names of at most 100 characters, got {len(plan.name)}")
    digest = hashlib.sha256(canonical(plan.to_dict() | {"uplink": spec.get("uplink")})).hexdigest()
    latest = s.scalars(sa.select(PipelineVersion).where(PipelineVersion.name == plan.name)
                       .order_by(PipelineVersion.version.desc()).limit(1)).first()
    if latest is not None and latest.digest == digest:
        return latest, False
    _check_followers(s, plan.name, spec)
    row = PipelineVersion(name=plan.name, version=(latest.version + 1) if latest else 1, spec=spec, digest=digest)
    s.add(row)
    bump_revision(s)
    s.flush()
    return row, True


def _check_followers(s: Session, name: str, spec: dict[str, Any]) -> None:
    """A new version of ``name`` must take the params of every assignment that follows the newest version,
    and the model versions it pins with them must be in the warehouse: those nodes would start it at once
    (SpecRejected naming the assignment otherwise)."""
    for a in s.scalars(sa.select(Assignment).where(Assignment.pipeline == name).order_by(Assignment.id)):
        if a.version is not None:
            continue
        try:
            check_instance(s, spec, a.params, "<pipeline>")
        except SpecRejected as exc:
            raise SpecRejected(f"{exc} - for assignment {a.target}/{a.instance}, which follows the newest "
                               f"version with params {a.params or {}}: pin it (with a version) or change "
                               "it first") from None


def check_instance(s: Session, spec: dict[str, Any], params: dict[str, Any] | None, file: str) -> None:
    """An instance of a pipeline ``spec`` with ``params`` (SpecRejected with the pipeline's own message
    otherwise): values declared, of their defaults' kind, valid in its steps, nothing a desired state could
    not carry; and each model version it pins (``apply_model: {model: name:version}``) in the warehouse
    when the model is. A model the warehouse does not know may be one the nodes register themselves, and
    is left to them."""
    from edge_runtime.operators.base import SpecError
    from edge_runtime.pipeline import parse_pipeline, pinned_models

    problem = spec_problem({"params": params}, "<assignment>") if params else None
    if problem:  # NaN, infinity, integers beyond 64 bits
        raise SpecRejected(problem)
    try:
        plan = parse_pipeline(spec, file=file, params=params)
    except SpecError as exc:
        raise SpecRejected(str(exc)) from None
    for name, version in pinned_models(plan):
        there = s.scalars(sa.select(ModelVersion.version).where(ModelVersion.name == name)).all()
        if there and version not in there:
            raise SpecRejected(f"{file}: apply_model pins model {name!r} version {version!r}, which the "
                               f"warehouse does not have (it has {', '.join(sorted(there, key=_natural))})")


def pipeline_version(s: Session, name: str, version: int | None) -> PipelineVersion | None:
    """Pipeline ``name`` at ``version`` (None: its newest), or None when the hub has no such version."""
    q = sa.select(PipelineVersion).where(PipelineVersion.name == name)
    q = q.where(PipelineVersion.version == version) if version else q.order_by(PipelineVersion.version.desc())
    return s.scalars(q.limit(1)).first()
