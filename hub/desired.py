"""A node's desired state: the pipeline instances (with their resolved specs and products) and the model
versions the hub wants it to run, computed from its own assignments and deployments over its group's.

The ``etag`` is a digest of the document: a node's heartbeat carries the one it has, and only fetches the
document again when the hub's differs (:meth:`hub.core.Hub.desired_etag` caches it per desired-state
revision)."""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .db import Assignment, ModelDeployment, Node, Product
from .specs import canonical, pipeline_version

__all__ = ["desired_state", "pinned_models"]


def desired_state(s: Session, node: Node) -> dict[str, Any]:
    """What ``node`` should run: its own assignments over its group's, with resolved pipeline specs."""
    targets = [f"node:{node.name}", f"group:{node.group}"]
    rows = s.scalars(sa.select(Assignment).where(Assignment.target.in_(targets))).all()
    chosen: dict[str, Assignment] = {}
    for a in sorted(rows, key=lambda a: a.target.startswith("node:")):  # node-specific wins
        chosen[a.instance] = a
    instances = []
    products: set[str] = set()
    for name in sorted(chosen):
        a = chosen[name]
        pv = pipeline_version(s, a.pipeline, a.version)
        if pv is None:
            continue
        if pv.spec.get("product"):
            products.add(pv.spec["product"])
        instances.append({"instance": name, "pipeline": pv.name, "version": pv.version, "spec": pv.spec,
                          "devices": a.devices, **({"params": a.params} if a.params else {})})
    prods = [{"name": p.name, "version": p.version, "spec": p.spec}
             for p in s.scalars(sa.select(Product).where(Product.name.in_(sorted(products)))).all()]
    deployed: dict[str, ModelDeployment] = {}
    for d in sorted(s.scalars(sa.select(ModelDeployment).where(ModelDeployment.target.in_(targets))).all(),
                    key=lambda d: d.target.startswith("node:")):  # node-specific wins
        deployed[d.name] = d
    doc: dict[str, Any] = {"node": node.name, "instances": instances, "products": prods}
    if deployed:  # absent when none, so desired states (and their etags) without models stay as they were
        doc["models"] = {n: {"version": d.version} for n, d in sorted(deployed.items())}
    doc["etag"] = hashlib.sha256(canonical(doc)).hexdigest()[:32]
    return doc


def pinned_models(s: Session, node: Node) -> set[tuple[str, str]]:
    """The model versions ``node``'s instances pin: what it may download beside the version it serves."""
    from edge_runtime.operators.base import SpecError
    from edge_runtime.pipeline import parse_pipeline
    from edge_runtime.pipeline import pinned_models as pins

    out: set[tuple[str, str]] = set()
    for inst in desired_state(s, node)["instances"]:
        try:
            out.update(pins(parse_pipeline(inst["spec"], file="<pipeline>", params=inst.get("params"))))
        except SpecError:  # refused by the node too; it pins nothing
            continue
    return out
