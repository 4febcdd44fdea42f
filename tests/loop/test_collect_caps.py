"""The collection caps of the label step (at most N tasks per model in any minute, hour, day), counted from the loop
state so that they hold across runs: a real LoopState (SQLite) on disk, reopened between runs as each run does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.collect import within_caps
from flows.config import LoopConfig, LoopError
from flows.state import LoopState

T0 = 1_732_272_000.0
MODEL = "pump_anomaly"


def items(run: int, hard: int = 4, random: int = 4) -> list[dict[str, Any]]:
    """What collect hands the label step: the edge's hard examples (least confident first), then the random share."""
    return ([{"id": f"r{run}-h{i}", "reason": "low_confidence", "values": {"x": i}} for i in range(hard)]
            + [{"id": f"r{run}-r{i}", "reason": "random", "values": {"x": i}} for i in range(random)])


def run(cfg: LoopConfig, path: Path, batch: list[dict[str, Any]], now: float,
        model: str = MODEL) -> tuple[list[str], dict[str, Any]]:
    """One label step's cap decision, recorded as the step records what it sent (its own connection, as a run)."""
    with LoopState(path) as state:
        kept, report = within_caps(cfg, state, model, batch, now=now)
        state.mark_sent(model, 1, kept, at=now)
    return [p["id"] for p in kept], report


def test_no_caps_keeps_everything(tmp_path: Path) -> None:
    kept, report = run(LoopConfig(workspace=str(tmp_path)), tmp_path / "state.db", items(0), T0)
    assert len(kept) == 8 and report == {"caps": {}, "room": {}, "held_back": {}}


def test_caps_hold_across_runs_and_windows(tmp_path: Path) -> None:
    cfg = LoopConfig(workspace=str(tmp_path), label_cap_minute=3, label_cap_day=5, random_share=0.5)
    db = tmp_path / "state.db"

    kept, report = run(cfg, db, items(1), T0)
    # 3 of 8 in the first minute: the random share keeps its half (rounded), hard examples in collect's order
    assert kept == ["r1-h0", "r1-r0", "r1-r1"]
    assert report == {"caps": {"minute": 3, "day": 5}, "room": {"minute": 3, "day": 5}, "held_back": {"minute": 5}}

    kept, report = run(cfg, db, items(2), T0 + 30)  # the next run, in the same minute: nothing more
    assert kept == [] and report["held_back"] == {"minute": 8} and report["room"] == {"minute": 0, "day": 2}

    kept, report = run(cfg, db, items(3), T0 + 61)  # a minute later: the day's cap is the tighter one
    assert len(kept) == 2 and report["held_back"] == {"day": 6}

    kept, report = run(cfg, db, items(4), T0 + 3600)
    assert kept == [] and report["held_back"] == {"day": 8}

    kept, report = run(cfg, db, items(5), T0 + 86_400 + 1)  # a day after the first: its 3 no longer count
    assert len(kept) == 3 and report["room"] == {"minute": 3, "day": 3}

    # another model has caps of its own
    kept, report = run(cfg, db, items(6), T0 + 86_400 + 2, model="other")
    assert len(kept) == 3 and report["room"] == {"minute": 3, "day": 5}


def test_an_hour_cap_and_a_short_share(tmp_path: Path) -> None:
    cfg = LoopConfig(workspace=str(tmp_path), label_cap_hour=4, random_share=0.5)
    kept, report = run(cfg, tmp_path / "state.db", items(1, hard=1, random=6), T0)
    # one hard example only: the random share fills the rest of the room
    assert kept == ["r1-h0", "r1-r0", "r1-r1", "r1-r2"] and report["held_back"] == {"hour": 3}
    kept, report = run(cfg, tmp_path / "state.db", items(2, hard=6, random=0), T0 + 3599)
    assert kept == [] and report["held_back"] == {"hour": 6}
    kept, _ = run(cfg, tmp_path / "state.db", items(3, hard=6, random=0), T0 + 3601)
    assert kept == ["r3-h0", "r3-h1", "r3-h2", "r3-h3"]


@pytest.mark.parametrize("value", [-1, 2.5, "3", True], ids=["negative", "fraction", "text", "bool"])
def test_a_bad_cap_is_a_clear_error(tmp_path: Path, value: Any) -> None:
    cfg = LoopConfig(workspace=str(tmp_path), label_cap_hour=value)
    with LoopState(tmp_path / "state.db") as state, pytest.raises(LoopError, match="label_cap_hour") as e:
        within_caps(cfg, state, MODEL, items(0), now=T0)
    assert "EDGELOOP_LABEL_CAP_HOUR" in str(e.value) and "0: no cap" in str(e.value)


def test_caps_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGELOOP_LABEL_CAP_MINUTE", "7")
    monkeypatch.setenv("EDGELOOP_LABEL_CAP_DAY", "200")
    cfg = LoopConfig.from_env()
    assert (cfg.label_cap_minute, cfg.label_cap_hour, cfg.label_cap_day) == (7, 0, 200)
