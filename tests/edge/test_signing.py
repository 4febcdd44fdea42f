"""Signed model bundles: nodes refuse a tampered, unsigned or untrusted bundle before loading it."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from edge_runtime import signing
from edge_runtime.signing import BundleRefused, verify_bundle
from tests.kit.cli import edgeloop

ARCHIVE = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB: more than one read chunk for the streamed hash


@pytest.fixture
def keys(tmp_path: Path) -> dict:
    priv_path, pub_path = signing.init_keys(tmp_path / "keys")
    return {"private": signing.load_private_key(priv_path), "trusted": signing.load_public_keys(pub_path),
            "priv_path": priv_path, "pub_path": pub_path}


@pytest.fixture
def bundle(tmp_path: Path, keys: dict) -> tuple[Path, dict, str]:
    path = tmp_path / "pump-anomaly.bento"
    path.write_bytes(ARCHIVE)
    manifest = signing.build_manifest(path, "pump-anomaly", "1.4.0", keys["private"],
                                      metrics={"f1": 0.93, "auc": 0.971, "n_eval": 1200})
    return path, manifest, signing.sign_manifest(manifest, keys["private"])


def refused(reason: str, *args, **kwargs) -> BundleRefused:
    with pytest.raises(BundleRefused) as info:
        verify_bundle(*args, **kwargs)
    assert info.value.reason == reason, str(info.value)
    assert isinstance(info.value, ValueError) and reason in str(info.value)
    return info.value


def test_round_trip_file_and_bytes(bundle, keys):
    path, manifest, sig = bundle
    assert manifest["sha256"] and manifest["size"] == len(ARCHIVE)
    assert manifest["key_id"] == next(iter(keys["trusted"])) and len(manifest["key_id"]) == 16
    verify_bundle(path, manifest, sig, keys["trusted"], expected_name="pump-anomaly")
    verify_bundle(str(path), manifest, sig, keys["trusted"])
    verify_bundle(ARCHIVE, manifest, sig, keys["trusted"], expected_name="pump-anomaly")
    # The manifest travels as JSON: it verifies after a round trip through any JSON encoder.
    shipped = json.loads(json.dumps(manifest, indent=2))
    verify_bundle(path, shipped, sig, keys["trusted"])


def test_canonical_json_is_sorted_and_compact():
    assert signing.canonical({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == '{"a":{"c":"é","d":[1,2]},"b":1}'.encode()


def test_tampered_archive_is_refused_by_checksum(bundle, keys, tmp_path):
    path, manifest, sig = bundle
    data = bytearray(ARCHIVE)
    data[len(data) // 2] ^= 0x01
    path.write_bytes(data)
    e = refused(signing.SHA256_MISMATCH, path, manifest, sig, keys["trusted"])
    assert "sha256" in str(e)
    refused(signing.SHA256_MISMATCH, bytes(data), manifest, sig, keys["trusted"])


def test_truncated_or_grown_archive_is_refused_by_size(bundle, keys):
    path, manifest, sig = bundle
    path.write_bytes(ARCHIVE[:-1])
    refused(signing.SIZE_MISMATCH, path, manifest, sig, keys["trusted"])
    refused(signing.SIZE_MISMATCH, ARCHIVE + b"x", manifest, sig, keys["trusted"])


@pytest.mark.parametrize("change", [
    {"metrics": {"f1": 0.99, "auc": 0.971, "n_eval": 1200}},
    {"version": "1.5.0"},
    {"created": "2020-01-01T00:00:00+00:00"},
])
def test_tampered_manifest_is_a_bad_signature(bundle, keys, change):
    path, manifest, sig = bundle
    refused(signing.BAD_SIGNATURE, path, {**manifest, **change}, sig, keys["trusted"])


def test_manifest_pointing_at_another_archive_is_a_bad_signature(bundle, keys):
    """Swap archive and rewrite sha256/size to match it: the signature no longer covers the manifest."""
    path, manifest, sig = bundle
    other = b"a different model"
    forged = {**manifest, "sha256": signing._digest(other)[0], "size": len(other)}
    refused(signing.BAD_SIGNATURE, other, forged, sig, keys["trusted"])


def test_signature_from_another_key(bundle, keys, tmp_path):
    path, manifest, _ = bundle
    other_priv = signing.load_private_key(signing.init_keys(tmp_path / "other")[0])
    theirs = {**manifest, "key_id": signing.key_id(other_priv.public_key())}
    refused(signing.UNKNOWN_KEY, path, theirs, signing.sign_manifest(theirs, other_priv), keys["trusted"])
    # Claiming the trusted key's id does not help: the signature does not verify with it.
    sig = base64.b64encode(other_priv.sign(signing.canonical(manifest))).decode()
    refused(signing.BAD_SIGNATURE, path, manifest, sig, keys["trusted"])


def test_sign_manifest_refuses_a_key_id_of_another_key(bundle, tmp_path):
    _, manifest, _ = bundle
    other_priv = signing.load_private_key(signing.init_keys(tmp_path / "other")[0])
    with pytest.raises(ValueError, match="key_id"):
        signing.sign_manifest(manifest, other_priv)


@pytest.mark.parametrize("sig", [None, ""])
def test_unsigned_bundle_is_refused(bundle, keys, sig):
    path, manifest, _ = bundle
    refused(signing.UNSIGNED, path, manifest, sig, keys["trusted"])


@pytest.mark.parametrize("sig", ["not base64!", base64.b64encode(b"short").decode(), base64.b64encode(bytes(64)).decode()])
def test_garbage_signature_is_refused(bundle, keys, sig):
    path, manifest, _ = bundle
    refused(signing.BAD_SIGNATURE, path, manifest, sig, keys["trusted"])


def test_wrong_name_is_refused(bundle, keys):
    path, manifest, sig = bundle
    e = refused(signing.NAME_MISMATCH, path, manifest, sig, keys["trusted"], expected_name="valve-leak")
    assert "valve-leak" in str(e) and "pump-anomaly" in str(e)


@pytest.mark.parametrize("mutate", [
    lambda m: "not a dict",
    lambda m: {k: v for k, v in m.items() if k != "sha256"},
    lambda m: {**m, "size": "1024"},
    lambda m: {**m, "size": True},
    lambda m: {**m, "size": -1},
    lambda m: {**m, "sha256": "ABC"},
    lambda m: {**m, "key_id": "zz"},
    lambda m: {**m, "metrics": [1, 2]},
    lambda m: {**m, "metrics": {"f1": float("nan")}},
    lambda m: {**m, "name": ""},
])
def test_malformed_manifest_is_refused(bundle, keys, mutate):
    path, manifest, sig = bundle
    refused(signing.MALFORMED, path, mutate(dict(manifest)), sig, keys["trusted"])


def test_missing_archive_is_refused(bundle, keys, tmp_path):
    _, manifest, sig = bundle
    refused(signing.UNREADABLE, tmp_path / "gone.bento", manifest, sig, keys["trusted"])


def test_key_files(keys, tmp_path):
    assert stat.S_IMODE(os.stat(keys["priv_path"]).st_mode) == 0o600
    assert keys["priv_path"].read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS8
    assert keys["pub_path"].read_text().startswith("-----BEGIN PUBLIC KEY-----")  # SubjectPublicKeyInfo
    with pytest.raises(FileExistsError):
        signing.init_keys(keys["priv_path"].parent)
    before = keys["priv_path"].read_bytes()
    signing.init_keys(keys["priv_path"].parent, force=True)
    assert keys["priv_path"].read_bytes() != before
    assert stat.S_IMODE(os.stat(keys["priv_path"]).st_mode) == 0o600


def test_load_public_keys_from_a_directory_and_a_list(keys, tmp_path):
    other_pub = signing.init_keys(tmp_path / "other")[1]
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "hub.pub").write_bytes(keys["pub_path"].read_bytes())
    (tmp_path / "trusted" / "lab.pem").write_bytes(other_pub.read_bytes())
    (tmp_path / "trusted" / "README").write_text("not a key")
    from_dir = signing.load_public_keys(tmp_path / "trusted")
    from_list = signing.load_public_keys([keys["pub_path"], str(other_pub)])
    assert set(from_dir) == set(from_list) and len(from_dir) == 2
    assert signing.load_public_keys(keys["pub_path"].parent).keys() == keys["trusted"].keys()  # skips signing.key
    with pytest.raises(ValueError, match="not a PEM public key"):
        signing.load_public_keys(keys["priv_path"])


def test_cli_keys_init_and_show(tmp_path):
    d = tmp_path / "k"
    out = edgeloop("keys", "init", "--dir", str(d))
    assert out.returncode == 0, out.stderr
    assert (d / "signing.key").is_file() and (d / "signing.pub").is_file()
    assert stat.S_IMODE(os.stat(d / "signing.key").st_mode) == 0o600
    kid = next(iter(signing.load_public_keys(d / "signing.pub")))
    assert kid in out.stdout and str(d / "signing.key") in out.stdout

    key = (d / "signing.key").read_bytes()
    again = edgeloop("keys", "init", "--dir", str(d))
    assert again.returncode == 2 and "exists" in again.stderr and "--force" in again.stderr
    assert (d / "signing.key").read_bytes() == key

    show = edgeloop("keys", "show", "--dir", str(d))
    assert show.returncode == 0 and kid in show.stdout and "warning" not in show.stdout

    forced = edgeloop("keys", "init", "--force", env={"EDGELOOP_KEYS_DIR": str(d)})
    assert forced.returncode == 0, forced.stderr
    assert (d / "signing.key").read_bytes() != key and kid not in forced.stdout

    missing = edgeloop("keys", "show", env={"EDGELOOP_KEYS_DIR": str(tmp_path / "none")})
    assert missing.returncode == 2 and "keys init" in missing.stderr
