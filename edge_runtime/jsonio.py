"""Fast JSON (orjson when installed, the standard library otherwise)."""

from __future__ import annotations

from typing import Any

try:
    import orjson as _orjson

    def loads(data: bytes | str) -> Any:
        return _orjson.loads(data)

    def dumps(obj: Any) -> bytes:
        return _orjson.dumps(obj, option=_orjson.OPT_SERIALIZE_NUMPY)

    DecodeError: type[Exception] = _orjson.JSONDecodeError
except ImportError:  # pragma: no cover - orjson is a dependency, this keeps tiny installs working
    import json as _json

    def loads(data: bytes | str) -> Any:
        return _json.loads(data)

    def dumps(obj: Any) -> bytes:
        return _json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()

    DecodeError = ValueError

__all__ = ["loads", "dumps", "DecodeError"]
