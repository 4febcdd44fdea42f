"""BentoML packaging of the reference models, and the signed upload to the hub's model warehouse.

``package(name, version)`` (what ``edgeloop model package NAME --version V`` runs):

1. resolves ``V`` (a registry version, or an alias such as ``champion``) in MLflow and downloads the
   version's artifact directory (the same files the edge loads: :mod:`edge_runtime.modelkit`);
2. health-checks it, saves it to the BentoML model store as ``<name>:<version>`` and builds the Bento
   from ``models/services/<name>.py`` (requirements written as pinned here, not locked against the
   package index, so it builds offline);
3. exports ``<name>-<version>.bento`` (tar.xz), writes its manifest (name, version, sha256, size,
   metrics of the run) and signs it with the Ed25519 key from ``edgeloop keys init``;
4. uploads archive, manifest and signature to ``PUT /api/v1/models/<name>/versions/<version>/bundle``.

``bentoml containerize <name>:<version>`` turns the same Bento into an OCI image where a Docker (or
BuildKit) engine exists; these machines have none (see README).

The BentoML home is ``BENTOML_HOME`` when set, else ``~/.local/share/edgeloop/bentoml``: outside the
build context, or BentoML copies its tmp/ into the Bento.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: what a Bento's environment needs, by the kind of its model artifact (edge_runtime.modelkit.KINDS)
REQUIREMENTS = {"sklearn": ("numpy", "scikit-learn", "joblib"), "torch-cnn": ("numpy", "torch"),
                "onnx": ("numpy", "onnxruntime")}
Step = Callable[[str], None]


def bentoml_home() -> Path:
    return Path(os.environ.get("BENTOML_HOME") or Path("~/.local/share/edgeloop/bentoml").expanduser())


def _bentoml() -> Any:
    os.environ.setdefault("BENTOML_HOME", str(bentoml_home()))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    import bentoml
    import bentoml._internal.configuration as config

    # BentoML 1.4 asks for `uv` on every build, even when it will not lock requirements (we do not: the
    # requirements are pinned from this environment and builds must work offline).
    config.get_uv_command = lambda: ["uv-not-needed"]
    return bentoml


def _pins(packages: tuple[str, ...]) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for p in packages:
        try:
            v = version(p).split("+")[0]  # torch 2.13.0+cpu -> torch==2.13.0
            out.append(f"{p}=={v}")
        except PackageNotFoundError:
            out.append(p)
    return out


def build(name: str, version: str, artifact: Path, *, labels: dict[str, str] | None = None,
          metadata: dict[str, Any] | None = None) -> Any:
    """Save ``artifact`` as BentoML model ``name:version`` and build the Bento ``name:version``."""
    from edge_runtime.modelkit import Predictor

    predictor = Predictor(artifact, version=version)
    predictor.health_check()
    bentoml = _bentoml()
    tag = f"{name}:{version}"
    for store_delete in (bentoml.bentos.delete, bentoml.models.delete):  # rebuilding a version replaces it
        try:
            store_delete(tag)
        except bentoml.exceptions.NotFound:
            pass
    with bentoml.models.create(tag, labels=labels or {}, metadata=metadata or {}) as bm:
        for f in artifact.iterdir():
            if f.is_file():
                shutil.copy2(f, Path(bm.path) / f.name)
    old = os.environ.get("EDGELOOP_BENTO_MODEL")
    os.environ["EDGELOOP_BENTO_MODEL"] = tag  # the service's BentoModel is resolved from this at build time
    from bentoml._internal.bento.build_config import BentoEnvSchema  # bentoml.bentos.build's own type for envs

    sys.modules.pop("models.services.generic", None)  # so a second build in one process re-resolves it
    from models import plugins

    try:
        origin = f"plugin {plugins.get(name).source}"  # a model the loop trains (and can retrain)
    except KeyError:
        origin = "imported"  # trained elsewhere: the loop can monitor and replace it, not retrain it
    try:
        return bentoml.bentos.build(
            service="models.services.generic:Model", build_ctx=str(ROOT),
            include=["models/__init__.py", "models/services/__init__.py", "models/services/base.py",
                     "models/services/generic.py", "edge_runtime/__init__.py", "edge_runtime/modelkit.py"],
            python={"packages": _pins(REQUIREMENTS[predictor.kind]), "lock_packages": False},
            envs=[BentoEnvSchema(name="EDGELOOP_BENTO_MODEL", value=tag)],
            labels={"edgeloop-origin": origin, **(labels or {})},
            version=version)
    finally:
        if old is None:
            os.environ.pop("EDGELOOP_BENTO_MODEL", None)
        else:
            os.environ["EDGELOOP_BENTO_MODEL"] = old


def export(name: str, version: str, out_dir: Path) -> Path:
    bentoml = _bentoml()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = (out_dir / f"{name}-{version}.bento").resolve()
    path.unlink(missing_ok=True)
    return Path(bentoml.export_bento(f"{name}:{version}", str(path)))


def sign(archive: Path, name: str, version: str, metrics: dict[str, Any], keys_dir: Path) -> tuple[dict, str]:
    from edge_runtime.signing import PRIVATE_KEY_FILE, build_manifest, load_private_key, sign_manifest

    key = load_private_key(keys_dir / PRIVATE_KEY_FILE)
    manifest = build_manifest(archive, name, version, key, metrics=metrics)
    return manifest, sign_manifest(manifest, key)


def upload(client: Any, archive: Path, manifest: dict[str, Any], signature: str) -> dict[str, Any]:
    """PUT the bundle into the warehouse (``client``: an admin :class:`edge_runtime.hubclient.HubClient`)."""
    import base64
    from urllib.parse import quote

    from edge_runtime.signing import canonical

    headers = {"X-Sha256": manifest["sha256"], "X-Signature": signature,
               "X-Manifest": base64.urlsafe_b64encode(canonical(manifest)).decode(),
               "Content-Type": "application/octet-stream"}
    path = f"/api/v1/models/{quote(manifest['name'])}/versions/{quote(manifest['version'])}/bundle"
    _, body, _ = client.request("PUT", path, raw=archive.read_bytes(), headers=headers)
    return body


def ship_metrics(info: dict[str, Any]) -> dict[str, Any]:
    """The run's evaluation metrics worth carrying in the manifest (clean/drifted f1, auc, accuracy...)."""
    keep = ("f1", "precision", "recall", "roc_auc", "accuracy")
    return {k: round(float(v), 6) for k, v in sorted(info.get("metrics", {}).items())
            if k.split(".")[0] in ("clean", "drifted") and k.split(".")[-1] in keep}


def package(name: str, version: str, *, workdir: Path, keys_dir: Path, out_dir: Path | None = None,
            client: Any = None, step: Step | None = None) -> dict[str, Any]:
    """Resolve, build, export, sign and (with a client) upload; returns what was shipped."""
    from models import tracking

    say = step or (lambda _m: None)
    resolved = version if version.isdigit() else tracking.alias_version(name, version, workdir)
    if resolved is None:
        raise LookupError(f"model {name!r} has no version or alias {version!r} in the registry")
    info = tracking.version_info(name, resolved, workdir)
    metrics = ship_metrics(info)
    with tempfile.TemporaryDirectory(prefix="edgeloop-package-") as tmp:
        say(f"downloading {name} version {resolved} from MLflow")
        artifact = tracking.download(name, resolved, Path(tmp), workdir)
        say("building the Bento")
        build(name, resolved, artifact, labels={"run_id": info["run_id"]}, metadata={"metrics": metrics})
    say("exporting the .bento archive")
    archive = export(name, resolved, out_dir or workdir / "var" / "bundles")
    manifest, signature = sign(archive, name, resolved, metrics, keys_dir)
    out = {"name": name, "version": resolved, "archive": str(archive), "sha256": manifest["sha256"],
           "size": manifest["size"], "metrics": metrics, "key_id": manifest["key_id"], "uploaded": False}
    if client is not None:
        say(f"uploading {manifest['size']:,} bytes to the warehouse")
        upload(client, archive, manifest, signature)
        out["uploaded"] = True
    return out
