"""Window operators: time_window and aggregate.

Tumbling windows of ``size`` seconds aligned to multiples of ``size`` since the
epoch, per device. A device has at most one open window; it is emitted when a
record of a later window arrives for that device, and at end of input (open
windows then go out by window start, ties by the arrival of their first record).
A record of a window that was already emitted is *late*: it becomes a dead letter.

time_window hands on :class:`Windows`: the rows of each window kept contiguous,
so that ``aggregate`` reduces them with array operations. Followed by anything
else, windows become records whose values are lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..records import Batch, Column
from .base import Operator, SpecError, grow, parse_duration, register
from .reductions import AGGREGATES, NUMERIC, as_numbers, int_origin, ints_of, reduce_windows
from .state import batch_from_state, batch_state, by_code, by_device

__all__ = ["Windows", "TimeWindow", "Aggregate", "AGGREGATES"]

_NO_WIN = np.iinfo(np.int64).min


@dataclass
class Windows:
    """Closed windows: ``rows`` grouped so that window k is rows[starts[k]:ends[k]]."""

    rows: Batch
    starts: NDArray[Any]
    codes: NDArray[Any]  # device code per window
    product: NDArray[Any]
    window_start: NDArray[Any]
    window_end: NDArray[Any]

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def ends(self) -> NDArray[Any]:
        return np.append(self.starts[1:], len(self.rows)).astype(np.int64)

    def to_batch(self) -> Batch:
        """One record per window: values are the lists of the window's values."""
        n = len(self)
        bounds = list(zip(self.starts.tolist(), self.ends.tolist()))
        cols: dict[str, Column] = {}
        for name, col in self.rows.cols.items():
            data = col.data.tolist()
            if col.ints is not None:
                data = [int(v) if i else v for v, i in zip(data, col.ints.tolist())]
            present = None if col.present is None else col.present.tolist()
            lists = np.empty(n, dtype=object)
            lists[:] = [[v for j, v in enumerate(data[a:b]) if present is None or present[a + j]]
                        for a, b in bounds]
            # a field no record of the window has is left out (as aggregate does), not an empty
            # list: whether the column exists at all depends on which records shared a micro-batch
            has = np.fromiter((len(v) > 0 for v in lists.tolist()), dtype=bool, count=n)
            if not has.any():
                continue
            cols[name] = Column(lists, None if has.all() else has)
        counts = np.diff(np.append(self.starts, len(self.rows)))
        cols["count"] = Column(counts.astype(np.int64))
        cols["window_start"] = Column(self.window_start.astype(np.float64))
        return Batch(self.codes, self.product, self.window_end.astype(np.float64), cols)


@register
class TimeWindow(Operator):
    """Group each device's records into tumbling event-time windows of ``size``."""

    name = "time_window"
    params = {"size": "window length: 500ms, 10s, 5m, 1h", "idle_flush":
              "live nodes: emit a window when its device sent nothing for this long (wall clock)"}
    required = ("size",)
    shorthand = "size"

    def configure(self, size: Any, idle_flush: Any = None) -> None:
        self.size = parse_duration(size, "size")
        self.idle_flush = parse_duration(idle_flush, "idle_flush") if idle_flush is not None else None
        self._reset()

    def _reset(self) -> None:
        self.pending = Batch.empty()  # rows of open windows, arrival order
        self.pending_seq: NDArray[np.int64] = np.empty(0, np.int64)  # arrival sequence of pending rows
        self.last_win = np.full(64, _NO_WIN, dtype=np.int64)  # per device: newest window seen
        self.seq = 0
        self.last_seen: dict[int, float] = {}

    def _win(self, ts: NDArray[Any]) -> NDArray[Any]:
        return np.floor(ts / self.size).astype(np.int64)

    def process(self, batch: Batch) -> Windows | None:
        n = len(batch)
        if n == 0:
            return None
        seq = np.arange(self.seq, self.seq + n, dtype=np.int64)
        self.seq += n
        win = self._win(batch.ts)
        codes = batch.codes
        self.last_win = grow(self.last_win, int(codes.max()) + 1, _NO_WIN)
        late = self._late(codes, win)
        if late is not None:
            self.ctx.dead_letter(batch.take(late), [
                f"late record: window starting {w * self.size:g} of this device was already emitted"
                for w in win[late].tolist()])
            keep = ~late
            batch, win, seq, codes = batch.take(keep), win[keep], seq[keep], codes[keep]
            if not len(batch):
                return None
        np.maximum.at(self.last_win, codes, win)
        if self.idle_flush is not None:
            import time
            now = time.monotonic()
            for c in np.unique(codes).tolist():
                self.last_seen[c] = now
        rows = Batch.concat([self.pending, batch])
        all_seq = np.concatenate([self.pending_seq, seq])
        all_win = np.concatenate([self._win(self.pending.ts), win]) if len(self.pending) else win
        order = np.argsort(rows.codes, kind="stable")
        dev_s, win_s = rows.codes[order], all_win[order]
        m = len(order)
        boundary = np.empty(m, dtype=bool)
        boundary[0] = True
        np.not_equal(dev_s[1:], dev_s[:-1], out=boundary[1:])
        dev_change = boundary.copy()
        boundary[1:] |= win_s[1:] != win_s[:-1]
        run_starts = np.flatnonzero(boundary)
        # a run is closed when the next run belongs to the same device
        nxt_same_dev = np.zeros(len(run_starts), dtype=bool)
        nxt_same_dev[:-1] = ~dev_change[run_starts[1:]]
        closed = np.flatnonzero(nxt_same_dev)
        # keep the open runs (one per device) as pending, in arrival order
        run_ends = np.append(run_starts[1:], m)
        run_id = np.cumsum(boundary) - 1
        keep_idx = np.sort(order[~nxt_same_dev[run_id]])
        self.pending = rows.take(keep_idx)
        self.pending_seq = all_seq[keep_idx]
        if not len(closed):
            return None
        # emission order: by the arrival of the record that closed each window
        trigger = all_seq[order[run_starts[closed + 1]]]
        closed = closed[np.argsort(trigger, kind="stable")]
        return self._windows(rows, order, run_starts, run_ends, closed, win_s)

    def _late(self, codes: NDArray[Any], win: NDArray[Any]) -> NDArray[Any] | None:
        prior = self.last_win[codes]
        order = np.argsort(codes, kind="stable")
        dev_s, win_s, prior_s = codes[order], win[order], prior[order]
        first = np.empty(len(order), dtype=bool)
        first[0] = True
        np.not_equal(dev_s[1:], dev_s[:-1], out=first[1:])
        monotone = np.all(first[1:] | (win_s[1:] >= win_s[:-1]))
        if monotone and np.all(win_s >= prior_s):
            return None
        late_s = np.zeros(len(order), dtype=bool)
        running = _NO_WIN
        for i in range(len(order)):  # rare path: out-of-order input
            if first[i]:
                running = prior_s[i]
            if win_s[i] < running:
                late_s[i] = True
            else:
                running = win_s[i]
        late = np.empty_like(late_s)
        late[order] = late_s
        return late if late.any() else None

    def _windows(self, rows: Batch, order: NDArray[Any], run_starts: NDArray[Any], run_ends: NDArray[Any],
                 runs: NDArray[Any], win_s: NDArray[Any]) -> Windows:
        lengths = run_ends[runs] - run_starts[runs]
        idx = _gather(order, run_starts[runs], lengths)
        grouped = rows.take(idx)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        w = win_s[run_starts[runs]]
        return Windows(grouped, starts, grouped.codes[starts], grouped.product[starts],
                       w * self.size, (w + 1) * self.size)

    def flush(self) -> Windows | None:
        if not len(self.pending):
            return None
        rows, seq = self.pending, self.pending_seq
        win = self._win(rows.ts)
        order = np.lexsort((seq, rows.codes))
        dev_s = rows.codes[order]
        boundary = np.empty(len(order), dtype=bool)
        boundary[0] = True
        np.not_equal(dev_s[1:], dev_s[:-1], out=boundary[1:])
        run_starts = np.flatnonzero(boundary)
        run_ends = np.append(run_starts[1:], len(order))
        first_seq = seq[order[run_starts]]
        wins = win[order[run_starts]]
        runs = np.lexsort((first_seq, wins))
        self.pending, self.pending_seq = Batch.empty(), np.empty(0, np.int64)
        return self._windows(rows, order, run_starts, run_ends, runs, win[order])

    def tick(self, now: float) -> Windows | None:
        if self.idle_flush is None or not len(self.pending):
            return None
        import time
        mono = time.monotonic()
        idle = [c for c, t in self.last_seen.items() if mono - t >= self.idle_flush]
        if not idle:
            return None
        mask = np.isin(self.pending.codes, idle)
        if not mask.any():
            return None
        keep_rows, keep_seq = self.pending.take(~mask), self.pending_seq[~mask]
        self.pending, self.pending_seq = self.pending.take(mask), self.pending_seq[mask]
        out = self.flush()
        self.pending, self.pending_seq = keep_rows, keep_seq
        for c in idle:
            self.last_seen.pop(c, None)
        return out

    def snapshot(self) -> dict[str, Any]:
        """The rows of the open windows (records, in arrival order, with their arrival numbers), per device id
        the newest window seen (so that a record behind it is late after a restart too), and the next arrival
        number."""
        last = {c: w for c, w in enumerate(self.last_win.tolist()) if w != _NO_WIN}
        return {"pending": batch_state(self.pending), "seq": self.pending_seq.tolist(),
                "last_win": by_device(last), "next_seq": self.seq}

    def restore(self, state: dict[str, Any]) -> None:
        self._reset()
        self.pending = batch_from_state(state["pending"])
        self.pending_seq = np.array(state["seq"], dtype=np.int64)
        last = by_code(state["last_win"])
        if last:
            self.last_win = grow(self.last_win, max(last) + 1, _NO_WIN)
            for c, w in last.items():
                self.last_win[c] = w
        self.seq = int(state["next_seq"])
        if self.idle_flush is not None:  # wall-clock idleness starts again from now
            import time
            now = time.monotonic()
            self.last_seen = {c: now for c in np.unique(self.pending.codes).tolist()}


def _gather(order: NDArray[Any], starts: NDArray[Any], lengths: NDArray[Any]) -> NDArray[Any]:
    total = int(lengths.sum())
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    idx: NDArray[Any] = order[np.arange(total) + offsets]
    return idx



@register
class Aggregate(Operator):
    """Reduce each window to one record: ``<field>_<fn>`` values plus ``count`` and ``window_start``."""

    name = "aggregate"
    params = {"*": "field: fn or [fn, ...] with fn in " + ", ".join(AGGREGATES)}
    accepts = "windows"

    @classmethod
    def normalise(cls, spec: Any) -> dict[str, Any]:
        if not isinstance(spec, dict) or not spec:
            raise SpecError("expected a mapping field: function(s), e.g. {temperature: mean}",
                            hint="functions: " + ", ".join(AGGREGATES))
        return dict(spec)

    def configure(self, **fields: Any) -> None:
        self.plan: list[tuple[str, str]] = []
        for name, fns in fields.items():
            if not isinstance(name, str) or not name:
                raise SpecError(f"field name must be a string, got {name!r}")
            fns = [fns] if isinstance(fns, str) else fns
            if not isinstance(fns, list) or not fns:
                raise SpecError("expected a function name or a list of them", field=name)
            for fn in fns:
                if fn not in AGGREGATES:
                    raise SpecError(f"unknown aggregate function {fn!r}", field=name,
                                    hint="one of " + ", ".join(AGGREGATES))
                self.plan.append((name, fn))

    def process(self, windows: Windows) -> Batch | None:
        if windows is None or not len(windows):
            return None
        rows, starts = windows.rows, windows.starts
        k = len(starts)
        counts = np.diff(np.append(starts, len(rows))).astype(np.int64)
        cols: dict[str, Column] = {}
        bad = np.zeros(k, dtype=bool)
        reasons = [""] * k
        for name, fn in self.plan:
            out = f"{name}_{fn}"
            col = rows.cols.get(name)
            if col is None:
                if fn == "count":
                    cols[out] = Column(np.zeros(k, np.int64))
                continue  # absent in every window: no value
            if fn in NUMERIC and col.data.dtype.kind not in "iufb":
                # only the windows that hold a non-number fail, not every window of this batch
                numbers, wrong = as_numbers(col)
                if wrong.any():
                    win_bad = np.add.reduceat(wrong.astype(np.int64), starts) > 0
                    first = np.minimum.reduceat(np.where(wrong, np.arange(len(wrong)), len(wrong)), starts)
                    for i in np.flatnonzero(win_bad & ~bad).tolist():
                        v = col.data[first[i]]
                        reasons[i] = f"aggregate {out}: {fn} needs numbers, got {type(v).__name__} {v!r}"
                    bad |= win_bad
                    col = Column(numbers, ~wrong if col.present is None else col.present & ~wrong,
                                 ints_of(col, numbers))
                else:
                    col = Column(numbers, col.present, ints_of(col, numbers))
            data, present = reduce_windows(col, starts, counts, fn)
            cols[out] = Column(data, None if present is None or present.all() else present,
                               int_origin(col, starts, counts, fn, data))
        cols["count"] = Column(counts)
        cols["window_start"] = Column(windows.window_start.astype(np.float64))
        out_batch = Batch(windows.codes, windows.product, windows.window_end.astype(np.float64), cols)
        if bad.any():
            self.ctx.dead_letter(out_batch.take(bad), [reasons[i] for i in np.flatnonzero(bad)])
            out_batch = out_batch.take(~bad)
        return out_batch


