"""A node's configuration written from Python data: products.yaml, devices.yaml, one file per pipeline
instance and the node.yaml naming them, for the tests, the scenarios and the benchmarks.

    cfg = write_node(tmp, "edge-h", broker_port=broker.port,
                     products=[{"name": "meter", "properties": {"power": {"type": "number"}}}],
                     devices=[{"id": "m1", "product": "meter", "connector": "http"}],
                     pipelines={"all": {"name": "all", "product": "meter", "steps": [{"device_input": {}}]}},
                     http={"port": 0})
    node = Node(load_node_config(cfg))

Mappings are written in the order they are given, as a person would write them, and in full where a dict is
shared (no YAML anchors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

__all__ = ["Spec", "write_catalog", "write_node"]

#: one product, device binding or pipeline spec, as its YAML file holds it
Spec = Mapping[str, Any]


class _Dumper(yaml.SafeDumper):
    """Safe YAML, each mapping written out where it is used (no ``&id001`` anchors for shared dicts)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(path: Path, data: Any) -> Path:
    path.write_text(yaml.dump(data, Dumper=_Dumper, sort_keys=False))
    return path


def write_catalog(folder: Path, products: Sequence[Spec], devices: Sequence[Spec] = ()) -> tuple[Path, Path]:
    """``products.yaml`` and ``devices.yaml`` in ``folder`` (made if missing); their paths, for
    ``load_catalog([products], [devices])``."""
    folder.mkdir(parents=True, exist_ok=True)
    return (_dump(folder / "products.yaml", {"products": list(products)}),
            _dump(folder / "devices.yaml", {"devices": list(devices)}))


def write_node(folder: Path, node: str, *, broker_port: int, products: Sequence[Spec], devices: Sequence[Spec],
               pipelines: Mapping[str, Spec] | None = None, publish_telemetry: bool = False,
               **sections: Any) -> Path:
    """Write a node's configuration into ``folder`` (made if missing) and return node.yaml's path.

    ``products`` and ``devices`` go to products.yaml and devices.yaml (:func:`write_catalog`); each of
    ``pipelines`` (instance name -> pipeline spec) to ``pipelines/<instance>.yaml``, run as that instance.
    node.yaml names them, with the broker on 127.0.0.1:``broker_port``, the store in ``node.db`` and
    ``publish_telemetry`` off (a node under test is listened to on its pipelines' outputs; pass True for the
    per-device telemetry topics). ``sections`` are further node.yaml sections (``hub={...}``,
    ``outbox={...}``, ``http={...}``, ``store={...}`` to replace the store, ...); a ``broker`` section adds
    its settings to the broker's address (``broker={"keepalive": 5}``).
    """
    write_catalog(folder, products, devices)
    instances = []
    for instance, spec in (pipelines or {}).items():
        (folder / "pipelines").mkdir(exist_ok=True)
        _dump(folder / "pipelines" / f"{instance}.yaml", dict(spec))
        instances.append({"instance": instance, "pipeline": f"pipelines/{instance}.yaml"})
    config: dict[str, Any] = {
        "node": node, "broker": {"host": "127.0.0.1", "port": broker_port, **sections.pop("broker", {})},
        "store": {"path": "node.db"}, "products": ["products.yaml"], "devices": ["devices.yaml"],
        **({"pipelines": instances} if instances else {}), "publish_telemetry": publish_telemetry, **sections}
    return _dump(folder / "node.yaml", config)
