"""Offline replay: run a pipeline over Record lines in event time.

``edgeloop pipeline run PIPELINE.yaml --input records.jsonl --output out.jsonl``
reads one Record a line (``{"device","product","ts","values"}``), runs them in
file order through one instance of the pipeline (windows and samples follow the
records' own ``ts``), flushes at end of input, and writes each record that
leaves the last step as one JSON line, in order. Bad lines are counted and kept
as dead letters with their line number; they never stop the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Iterator

from . import jsonio
from .instance import DeadLetterList, Instance, MemorySinks
from .pipeline import Plan
from .records import Batch, RecordError, validate_record

__all__ = ["ReplayResult", "replay", "replay_records"]


@dataclass
class ReplayResult:
    lines: int = 0
    records: int = 0
    bad_lines: int = 0
    outputs: int = 0
    dead_letters: DeadLetterList = field(default_factory=DeadLetterList)
    sinks: MemorySinks = field(default_factory=MemorySinks)
    stats: dict[str, Any] = field(default_factory=dict)


def _parse(lines: Iterable[bytes | str], result: ReplayResult, max_bytes: int) -> Iterator[dict[str, Any]]:
    for lineno, line in enumerate(lines, 1):
        result.lines = lineno
        if isinstance(line, str):
            line = line.encode()
        if not line.strip():
            continue
        if len(line) > max_bytes:
            result.bad_lines += 1
            result.dead_letters.add(source=f"input:{lineno}", reason=f"line is {len(line)} bytes, "
                                    f"more than the limit {max_bytes}", raw=line[:200].decode(errors="replace"))
            continue
        try:
            rec = validate_record(jsonio.loads(line))
        except jsonio.DecodeError as exc:
            result.bad_lines += 1
            result.dead_letters.add(source=f"input:{lineno}", reason=f"malformed JSON: {exc}",
                                    raw=line[:1000].decode(errors="replace"))
            continue
        except RecordError as exc:
            result.bad_lines += 1
            result.dead_letters.add(source=f"input:{lineno}", reason=exc.reason,
                                    raw=line[:1000].decode(errors="replace"))
            continue
        yield rec


def replay_records(plan: Plan, records: Iterable[dict[str, Any]], *, batch_size: int = 4096,
                   models: Any = None, result: ReplayResult | None = None) -> tuple[list[dict[str, Any]], ReplayResult]:
    """Replay already decoded, valid records; returns (output records, result)."""
    result = result or ReplayResult()
    out: list[dict[str, Any]] = []
    for batch in _replay_batches(plan, records, batch_size, models, result):
        out.extend(batch.to_records())
    return out, result


def _replay_batches(plan: Plan, records: Iterable[dict[str, Any]], batch_size: int, models: Any,
                    result: ReplayResult) -> Iterator[Batch]:
    inst = Instance("replay", plan, sinks=result.sinks, models=models, dead_letters=result.dead_letters)
    buf: list[dict[str, Any]] = []
    for rec in records:
        buf.append(rec)
        if len(buf) >= batch_size:
            result.records += len(buf)
            yield inst.push(Batch.from_records(buf))
            buf = []
    if buf:
        result.records += len(buf)
        yield inst.push(Batch.from_records(buf))
    yield inst.flush()
    result.stats = inst.stats()


def replay(plan: Plan, source: IO[bytes], sink: IO[bytes], *, batch_size: int = 4096,
           max_bytes: int = 1 << 20, models: Any = None) -> ReplayResult:
    """Replay JSON lines from ``source`` into ``sink``."""
    result = ReplayResult()
    for batch in _replay_batches(plan, _parse(source, result, max_bytes), batch_size, models, result):
        for rec in batch.to_records():
            sink.write(jsonio.dumps(rec) + b"\n")
            result.outputs += 1
    return result
