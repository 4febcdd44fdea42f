"""Signed model bundles: a manifest, its Ed25519 signature, and the check an edge node runs before loading.

A manifest describes one archive (a BentoML ``.bento`` file)::

    {"name", "version", "sha256", "size", "created", "metrics": {...}, "key_id"}

The signature is Ed25519 over the manifest's canonical JSON (sorted keys, no
spaces, UTF-8), base64-encoded. ``key_id`` is the first 16 hex digits of the
sha256 of the signer's raw 32-byte public key: it picks the trusted key to
verify with, but the signature is what proves it.

:func:`verify_bundle` must pass before anything in the archive is unpickled;
it raises :class:`BundleRefused` otherwise. ``cryptography`` is imported inside
the functions that need it, so importing the edge runtime stays light.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Union

if TYPE_CHECKING:  # pragma: no cover
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PathLike = Union[str, "os.PathLike[str]"]

PRIVATE_KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"
CHUNK = 1 << 20
REQUIRED = ("name", "version", "sha256", "size", "created", "metrics", "key_id")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX16 = re.compile(r"[0-9a-f]{16}")

# Reasons a bundle is refused (BundleRefused.reason is one of these).
MALFORMED = "malformed manifest"
UNSIGNED = "unsigned"
UNKNOWN_KEY = "unknown key id"
BAD_SIGNATURE = "bad signature"
NAME_MISMATCH = "name mismatch"
SIZE_MISMATCH = "size mismatch"
SHA256_MISMATCH = "sha256 mismatch"
UNREADABLE = "unreadable archive"


class BundleRefused(ValueError):
    """A model bundle failed verification; ``reason`` is one of the module's reason constants."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"model bundle refused: {reason}" + (f": {detail}" if detail else ""))


# -- manifests ---------------------------------------------------------------------------------
def canonical(manifest: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, UTF-8, no NaN/Infinity."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the sha256 of the raw public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _digest(archive: PathLike | bytes | bytearray | memoryview) -> tuple[str, int]:
    """(sha256 hex, size) of the archive; files are streamed in chunks."""
    if isinstance(archive, (bytes, bytearray, memoryview)):
        data = memoryview(archive)
        return hashlib.sha256(data).hexdigest(), data.nbytes
    h = hashlib.sha256()
    size = 0
    try:
        with open(archive, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise BundleRefused(UNREADABLE, f"{archive}: {exc.strerror or exc}") from None
    return h.hexdigest(), size


def build_manifest(archive: PathLike | bytes, name: str, version: str, private_key: Ed25519PrivateKey,
                   metrics: Mapping[str, Any] | None = None, created: str | None = None) -> dict[str, Any]:
    """A manifest for an archive, with the signer's key id (sign it with :func:`sign_manifest`)."""
    import datetime as dt

    sha, size = _digest(archive)
    return {"name": name, "version": version, "sha256": sha, "size": size,
            "created": created or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "metrics": dict(metrics or {}), "key_id": key_id(private_key.public_key())}


def check_manifest(manifest: Any) -> None:
    """Raise BundleRefused(MALFORMED) unless the manifest has the required fields with sane types."""
    if not isinstance(manifest, Mapping):
        raise BundleRefused(MALFORMED, f"expected an object, got {type(manifest).__name__}")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise BundleRefused(MALFORMED, f"missing {', '.join(missing)}")
    checks = {
        "name": isinstance(manifest["name"], str) and manifest["name"] != "",
        "version": isinstance(manifest["version"], str) and manifest["version"] != "",
        "sha256": isinstance(manifest["sha256"], str) and bool(_HEX64.fullmatch(manifest["sha256"])),
        "size": type(manifest["size"]) is int and manifest["size"] >= 0,
        "created": isinstance(manifest["created"], str),
        "metrics": isinstance(manifest["metrics"], Mapping),
        "key_id": isinstance(manifest["key_id"], str) and bool(_HEX16.fullmatch(manifest["key_id"])),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise BundleRefused(MALFORMED, f"bad field(s) {', '.join(bad)}")
    try:
        canonical(manifest)
    except (TypeError, ValueError) as exc:
        raise BundleRefused(MALFORMED, f"not canonical JSON: {exc}") from None


def sign_manifest(manifest: Mapping[str, Any], private_key: Ed25519PrivateKey) -> str:
    """The base64 Ed25519 signature of the manifest's canonical JSON."""
    check_manifest(manifest)
    if manifest["key_id"] != key_id(private_key.public_key()):
        raise ValueError("manifest key_id does not match the signing key")
    return base64.b64encode(private_key.sign(canonical(manifest))).decode("ascii")


def verify_bundle(archive: PathLike | bytes, manifest: Any, signature_b64: str | None,
                  trusted_keys: Mapping[str, Ed25519PublicKey], expected_name: str | None = None) -> None:
    """Check a bundle before loading it: manifest, signature by a trusted key, name, size, sha256.

    Returns None when the bundle may be loaded; raises BundleRefused otherwise.
    """
    from cryptography.exceptions import InvalidSignature

    check_manifest(manifest)
    if not signature_b64:
        raise BundleRefused(UNSIGNED, "no signature")
    kid = manifest["key_id"]
    public_key = trusted_keys.get(kid)
    if public_key is None:
        raise BundleRefused(UNKNOWN_KEY, f"{kid} is not a trusted key")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise BundleRefused(BAD_SIGNATURE, "signature is not base64") from None
    try:
        public_key.verify(signature, canonical(manifest))
    except InvalidSignature:
        raise BundleRefused(BAD_SIGNATURE, f"manifest not signed by key {kid}") from None
    if expected_name is not None and manifest["name"] != expected_name:
        raise BundleRefused(NAME_MISMATCH, f"expected {expected_name!r}, manifest is for {manifest['name']!r}")
    if not isinstance(archive, (bytes, bytearray, memoryview)):
        try:
            on_disk = os.stat(archive).st_size
        except OSError as exc:
            raise BundleRefused(UNREADABLE, f"{archive}: {exc.strerror or exc}") from None
        if on_disk != manifest["size"]:
            raise BundleRefused(SIZE_MISMATCH, f"archive is {on_disk} bytes, manifest says {manifest['size']}")
    sha, size = _digest(archive)
    if size != manifest["size"]:
        raise BundleRefused(SIZE_MISMATCH, f"archive is {size} bytes, manifest says {manifest['size']}")
    if not hmac.compare_digest(sha, manifest["sha256"]):
        raise BundleRefused(SHA256_MISMATCH, "archive does not match the signed checksum")


# -- keys --------------------------------------------------------------------------------------
def load_private_key(path: PathLike) -> Ed25519PrivateKey:
    """An unencrypted Ed25519 private key from a PEM file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_public_keys(paths_or_dir: PathLike | Iterable[PathLike]) -> dict[str, Ed25519PublicKey]:
    """Trusted Ed25519 public keys by key id, from PEM files or a directory of ``*.pub``/``*.pem`` files."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    items = [paths_or_dir] if isinstance(paths_or_dir, (str, os.PathLike)) else list(paths_or_dir)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.suffix in (".pub", ".pem") and p.is_file())
        else:
            files.append(item)
    keys: dict[str, Ed25519PublicKey] = {}
    for f in files:
        try:
            key = serialization.load_pem_public_key(f.read_bytes())
        except ValueError as exc:
            raise ValueError(f"{f}: not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{f}: not an Ed25519 public key")
        keys[key_id(key)] = key
    return keys


def default_keys_dir() -> Path:
    """Where the signing keys live for every EdgeLoop command on this machine: ``EDGELOOP_KEYS_DIR``, else
    ``~/.config/edgeloop/keys``. ``edgeloop keys init``, ``edgeloop model package``, the agile loop (its
    worker under ``edgeloop up``) and the demo all sign with the key found here; nodes trust its
    ``signing.pub``."""
    return Path(os.environ.get("EDGELOOP_KEYS_DIR") or "~/.config/edgeloop/keys").expanduser()


def init_keys(directory: PathLike, force: bool = False) -> tuple[Path, Path]:
    """Make an Ed25519 key pair: DIR/signing.key (PKCS8 PEM, mode 0600) and DIR/signing.pub.

    Refuses (FileExistsError) to replace an existing private key unless ``force``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = Path(directory).expanduser()
    priv, pub = d / PRIVATE_KEY_FILE, d / PUBLIC_KEY_FILE
    if priv.exists() and not force:
        raise FileExistsError(f"{priv} exists: pass force to replace it")
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    if force:  # write beside and rename: a crash never leaves half a key
        _write_replace(priv, pem, 0o600)
    else:  # O_EXCL: never replaces a key that appeared meanwhile
        fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(pem)
    _write_replace(pub, pub_pem, 0o644)
    return priv, pub


def _write_replace(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
