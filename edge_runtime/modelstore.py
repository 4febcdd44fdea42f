"""The node's model store: verified installs from the hub's warehouse, active versions, hot swap, rollback.

Installing a version, in order (nothing is unpickled before step 2 has passed):

1. download the bundle (a BentoML ``.bento`` archive) and its signed manifest from the warehouse;
2. verify size, sha256 and the Ed25519 signature against the node's trusted keys, and the model name
   (:func:`edge_runtime.signing.verify_bundle`); a refusal is counted by reason and reported in heartbeats;
3. extract it into the node-local store, laid out as a BentoML home (``models/<name>/<version>/``,
   ``bentos/<name>/<version>/``), so ``BENTOML_HOME=<store> bentoml serve <name>:<version>`` works there too;
4. load the model in-process (:class:`edge_runtime.modelkit.Predictor`) and run its bundled health check;
5. activate: one reference swap. ``apply_model`` takes the active predictor once per batch, so a batch
   is served wholly by the old or wholly by the new version, never by a half-loaded one, and nothing
   waits for a load. The previous version stays installed and loaded for :meth:`ModelStore.rollback`.

A failed step leaves the running version serving. BentoML itself is not needed on the node.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import tarfile
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping

from . import jsonio
from .modelkit import ModelError, Predictor
from .signing import BundleRefused, verify_bundle

__all__ = ["ModelStore", "InstallError"]

log = logging.getLogger("edgeloop.models")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class InstallError(Exception):
    """A version could not be installed or activated: ``stage`` (download, verify, extract, load, health);
    ``retry``: the cause may pass (the hub away or failing), it is not a refusal of the version."""

    def __init__(self, name: str, version: str, stage: str, detail: str, *, retry: bool = False) -> None:
        self.name, self.version, self.stage, self.detail, self.retry = name, version, stage, detail, retry
        super().__init__(f"model {name}:{version} not installed ({stage}): {detail}")


def _extract(archive: Path, dest: Path, name: str, version: str) -> Path:
    """Extract the bento; return the model directory. Only regular files and folders, inside ``dest``."""
    model_prefix = PurePosixPath("models", name, version)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = []
            for m in tar.getmembers():
                p = PurePosixPath(m.name.removeprefix("./"))
                if m.name in (".", "./") or not p.parts or p.parts == (".",):
                    continue
                if p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir()):
                    raise InstallError(name, version, "extract", f"unsafe archive member {m.name!r}")
                m.name = str(p)
                members.append(m)
            if not any(PurePosixPath(m.name).parts[:3] == model_prefix.parts for m in members if m.isfile()):
                raise InstallError(name, version, "extract", f"the bundle holds no {model_prefix}/")
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the stdlib's own guard as well
                tar.extractall(dest, members=members, filter="data")
            else:  # members were checked above: relative, no "..", files and folders only
                tar.extractall(dest, members=members)  # noqa: S202
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InstallError(name, version, "extract", f"corrupt archive: {exc}") from None
    return dest / model_prefix


class ModelStore:
    """Installed models by name: the active predictor, the previous one, refusal counters.

    ``get(name)`` or ``get("name:version")`` is what ``apply_model`` calls; local callables can be added
    with :meth:`register` (tests and embedding). ``trusted_keys`` maps key ids to Ed25519 public keys.
    """

    def __init__(self, root: str | Path, trusted_keys: Mapping[str, Any] | None = None, *,
                 client: Any = None, drift: Mapping[str, Any] | None = None) -> None:
        self.root = Path(root)
        self.drift = dict(drift or {})  # the drift monitors' options (edge_runtime.drift.DriftMonitor)
        self.trusted_keys = dict(trusted_keys or {})
        self.client = client
        self._active: dict[str, Any] = {}
        self._previous: dict[str, Any] = {}
        self._loaded: dict[tuple[str, str], Predictor] = {}
        self._pinned: dict[str, set[str]] = {}  # versions pipeline instances pin, beside the active one
        self._lock = threading.RLock()
        self.refused: Counter[str] = Counter()
        self.installs = 0
        self.swaps = 0
        self.last_error: str | None = None
        self.errors: dict[str, str] = {}
        self.retry = False  # the last reconcile failed for a reason that may pass (hub away, 5xx)
        (self.root / "models").mkdir(parents=True, exist_ok=True)
        self._state_file = self.root / "active.json"

    # -- what apply_model uses ---------------------------------------------------------------------
    def get(self, ref: str) -> Any:
        """The active predictor of ``name``, or the loaded ``name:version``; None when absent."""
        if ":" in ref:
            name, version = ref.split(":", 1)
            active = self._active.get(name)
            if active is not None and getattr(active, "version", None) == version:
                return active
            return self._loaded.get((name, version))
        return self._active.get(ref)

    def __contains__(self, ref: str) -> bool:
        return self.get(ref) is not None

    def register(self, name: str, fn: Callable[..., Any], version: str = "local") -> None:
        """Serve a plain callable as ``name`` (it may set ``.version``)."""
        if not hasattr(fn, "version"):
            try:
                fn.version = version  # type: ignore[attr-defined]
            except AttributeError:
                pass
        self._swap(name, fn)

    def _swap(self, name: str, predictor: Any) -> None:
        with self._lock:
            old = self._active.get(name)
            if old is not None and old is not predictor:
                self._previous[name] = old
            self._active[name] = predictor  # the swap: one reference assignment
            self.swaps += 1

    # -- install --------------------------------------------------------------------------------
    def installed(self, name: str) -> list[str]:
        d = self.root / "models" / name
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def _refuse(self, name: str, version: str, stage: str, detail: str, reason: str | None = None) -> InstallError:
        self.refused[reason or stage] += 1
        err = InstallError(name, version, stage, detail)
        self.last_error = self.errors[name] = str(err)
        log.error("%s", err)
        return err

    def install_archive(self, archive: str | Path, manifest: Any, signature: str | None, *, name: str,
                        version: str, activate: bool = True) -> Predictor:
        """Verify, extract, load, health-check and (by default) activate a bundle on disk."""
        if not _NAME.match(name) or not _NAME.match(version):
            raise self._refuse(name, version, "verify", "bad model name or version", "malformed manifest")
        try:
            verify_bundle(archive, manifest, signature, self.trusted_keys, expected_name=name)
        except BundleRefused as exc:
            raise self._refuse(name, version, "verify", str(exc), exc.reason) from None
        if manifest.get("version") != version:
            raise self._refuse(name, version, "verify", f"manifest is for version {manifest.get('version')!r}",
                               "version mismatch")
        final = self.root / "models" / name / version
        fresh = False
        with self._lock:
            if not final.is_dir():
                fresh = True
                tmp = Path(tempfile.mkdtemp(prefix=f".{name}-{version}-", dir=self.root))
                try:
                    model_dir = _extract(Path(archive), tmp / "bento", name, version)
                    final.parent.mkdir(parents=True, exist_ok=True)
                    bento = self.root / "bentos" / name / version
                    bento.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(model_dir, final)
                    shutil.rmtree(bento, ignore_errors=True)
                    os.replace(tmp / "bento", bento)
                    (final / "edgeloop-manifest.json").write_bytes(jsonio.dumps(
                        {"manifest": manifest, "signature": signature, "installed": time.time()}))
                except InstallError as exc:
                    raise self._refuse(name, version, exc.stage, exc.detail, "corrupt archive") from None
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        try:
            predictor = self.load(name, version)
        except InstallError:
            if fresh:  # a version that does not load is not kept (a later, fixed bundle may reuse the number)
                shutil.rmtree(final, ignore_errors=True)
                shutil.rmtree(self.root / "bentos" / name / version, ignore_errors=True)
            raise
        self.installs += 1
        if activate:
            self.activate(name, version)
        return predictor

    def load(self, name: str, version: str) -> Predictor:
        """Load an installed version (cached) and run its health check."""
        key = (name, version)
        with self._lock:  # one load per version, however many activations race for it
            if key not in self._loaded:
                self._loaded[key] = self._load(name, version)
            return self._loaded[key]

    def _load(self, name: str, version: str) -> Predictor:
        path = self.root / "models" / name / version
        if not path.is_dir():
            raise self._refuse(name, version, "load", "not installed on this node", "not installed")
        try:
            p = Predictor(path, version=version, drift=self.drift)
            if p.name != name:
                raise ModelError(f"the bundle's model is {p.name!r}, not {name!r}")
            p.health = p.health_check()  # type: ignore[attr-defined]
        except ModelError as exc:
            raise self._refuse(name, version, "health", str(exc), "health check failed") from None
        except Exception as exc:  # noqa: BLE001 - a model that cannot load must not take the node down
            raise self._refuse(name, version, "load", repr(exc), "load failed") from None
        return p

    def activate(self, name: str, version: str) -> Predictor:
        p = self.load(name, version)
        current = self._active.get(name)
        if current is not p:
            self._swap(name, p)
            self._save_state()
            log.info("model %s:%s active (was %s)", name, version, getattr(current, "version", None))
        self.errors.pop(name, None)
        return p

    def rollback(self, name: str) -> Any:
        """Make the previous version active again; returns it (KeyError when there is none)."""
        with self._lock:
            prev = self._previous.get(name)
            if prev is None:
                raise KeyError(f"model {name!r} has no previous version on this node")
            self._swap(name, prev)
        self._save_state()
        return prev

    def install_from_hub(self, name: str, version: str, *, activate: bool = True) -> Predictor:
        """Download ``name:version`` from the warehouse (unless installed) and install it."""
        if (self.root / "models" / name / version).is_dir():
            return self.activate(name, version) if activate else self.load(name, version)
        if self.client is None:
            raise self._refuse(name, version, "download", "no hub configured", "download failed")
        from .hubclient import HubError, HubUnreachable

        base = f"/api/v1/models/{name}/versions/{version}"
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}-{version}-", suffix=".bento", dir=self.root)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            try:
                meta = self.client.get(base)
                _, data, _ = self.client.request("GET", base + "/bundle", headers={"Accept": "*/*"})
            except HubUnreachable as exc:
                self.retry = True  # not a refusal: the agent asks again
                raise InstallError(name, version, "download", str(exc), retry=True) from None
            except HubError as exc:
                self.retry = self.retry or exc.status >= 500
                err = self._refuse(name, version, "download", str(exc), "download failed")
                err.retry = exc.status >= 500
                raise err from None
            tmp.write_bytes(data if isinstance(data, (bytes, bytearray)) else jsonio.dumps(data))
            try:
                manifest = jsonio.loads(base64.urlsafe_b64decode(meta["manifest"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise self._refuse(name, version, "verify", f"unreadable manifest: {exc}", "malformed manifest") \
                    from None
            return self.install_archive(tmp, manifest, meta.get("signature"), name=name, version=version,
                                        activate=activate)
        finally:
            tmp.unlink(missing_ok=True)

    def pin(self, name: str, version: str, *, download: bool = True) -> Any:
        """Make ``name:version`` servable beside the active version, for pipeline instances that pin it
        (``apply_model: {model: name:version}``): a version already served or registered on the node as it
        is; else loaded when installed, else (``download``) fetched from the warehouse, verified and installed. It
        does not change the active version. Raises InstallError (the node reports it with the instance); the
        model's ``errors`` stay the served version's, which a rollout watches."""
        served = self.get(f"{name}:{version}")
        if served is None and not download and not (self.root / "models" / name / version).is_dir():
            raise InstallError(name, version, "load", "not installed on this node (yet)")
        if served is None:
            before = self.errors.get(name)
            try:
                served = self.install_from_hub(name, version, activate=False)
            finally:
                if before is None:
                    self.errors.pop(name, None)
                else:
                    self.errors[name] = before
        with self._lock:
            self._pinned.setdefault(name, set()).add(version)
        return served

    def unpin(self, keep: set[tuple[str, str]]) -> None:
        """Forget the pins not in ``keep`` (no instance pins them any more); the active and previous versions
        stay loaded, the rest are dropped from memory (their bundles stay installed)."""
        with self._lock:
            for name in list(self._pinned):
                self._pinned[name] = {v for v in self._pinned[name] if (name, v) in keep}
                if not self._pinned[name]:
                    del self._pinned[name]
            serving = {(n, getattr(p, "version", None)) for d in (self._active, self._previous) for n, p in d.items()}
            for key in list(self._loaded):
                if key not in keep and key not in serving:
                    del self._loaded[key]

    def reconcile(self, desired: Mapping[str, Any]) -> dict[str, str]:
        """Install and activate ``{name: version | {"version": v}}``; returns ``{name: error}`` for failures
        (the running version keeps serving). ``retry`` is set when a failure may pass (the hub away)."""
        errors = {}
        self.retry = False
        for name, want in desired.items():
            version = str(want.get("version") if isinstance(want, Mapping) else want)
            active = self._active.get(name)
            if active is not None and getattr(active, "version", None) == version:
                continue
            try:
                self.install_from_hub(name, version)
            except InstallError as exc:
                errors[name] = str(exc)
                self.last_error = str(exc)
        return errors

    # -- state ----------------------------------------------------------------------------------
    def _save_state(self) -> None:
        state = {n: {"active": getattr(p, "version", None), "previous": getattr(self._previous.get(n), "version", None)}
                 for n, p in self._active.items() if isinstance(p, Predictor)}
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_bytes(jsonio.dumps(state))
        os.replace(tmp, self._state_file)

    def restore(self) -> dict[str, str]:
        """Re-activate what was active before a restart (installed bundles were verified when installed).
        Returns ``{name: error}`` for versions that no longer load."""
        if not self._state_file.exists():
            return {}
        try:
            state = jsonio.loads(self._state_file.read_bytes())
        except (OSError, ValueError) as exc:
            log.error("model state %s is unreadable (%s): starting without models", self._state_file, exc)
            return {}
        errors = {}
        for name, s in state.items():
            for key in ("previous", "active"):  # previous first, so the active swap keeps it for rollback
                if s.get(key):
                    try:
                        self.activate(name, str(s[key]))
                    except InstallError as exc:
                        errors[name] = str(exc)
        return errors

    def status(self) -> dict[str, Any]:
        """For heartbeats: per model the active and previous versions; refusals by reason; last error."""
        with self._lock:  # pin/unpin run in the agent's thread, heartbeats in another
            active, pinned = dict(self._active), {n: sorted(v) for n, v in self._pinned.items()}
            errors = dict(self.errors)
        models = {}
        for name, p in sorted(active.items()):
            prev = self._previous.get(name)
            models[name] = {"active": getattr(p, "version", None), "previous": getattr(prev, "version", None),
                            "installed": self.installed(name), "error": errors.get(name)}
        for name in sorted(set(errors) | set(pinned)):
            models.setdefault(name, {"active": None, "previous": None, "installed": self.installed(name),
                                     "error": errors.get(name)})
        for name, versions in pinned.items():
            models[name]["pinned"] = versions
        with self._lock:
            loaded = [*active.items(), *((n, p) for (n, _), p in self._loaded.items())]
        drift: dict[str, dict[str, Any]] = {}
        for name, p in loaded:
            monitor = getattr(p, "drift", None)
            if monitor is not None and name in models and monitor.seen:
                drift.setdefault(name, {})[str(getattr(p, "version", "local"))] = monitor.summary()
        for name, per in drift.items():
            models[name]["drift"] = per
        return {"models": models, "refused": dict(self.refused), "installs": self.installs, "swaps": self.swaps,
                "last_error": self.last_error}


