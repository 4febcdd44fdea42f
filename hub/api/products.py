"""Shared products (admin): the same YAML mapping a node's products file holds, checked by the node's loader."""

import time
from typing import Any

import sqlalchemy as sa
from fastapi import Body, HTTPException

from ..db import Product, bump_revision
from ..specs import check_product
from .deps import Admin, Db, hub_router

__all__ = ["router"]

router = hub_router(tags=["products"])


@router.put("/api/v1/products/{name}")
def put_product(name: str, s: Db, _: Admin, spec: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """Create or update a product (the same YAML mapping a node's products file holds)."""
    checked = check_product(spec)
    if checked != name:
        raise HTTPException(422, f"the path says product {name!r}, the spec's name is {checked!r}")
    p = s.get(Product, name)
    if p is None:
        s.add(p := Product(name=name, spec=spec, version=1))
    elif p.spec != spec:
        p.spec, p.version, p.updated_at = spec, p.version + 1, time.time()
    bump_revision(s)
    s.commit()
    return {"name": name, "version": p.version}


@router.get("/api/v1/products")
def list_products(s: Db, _: Admin) -> list[dict[str, Any]]:
    return [{"name": p.name, "version": p.version, "spec": p.spec}
            for p in s.scalars(sa.select(Product).order_by(Product.name))]
