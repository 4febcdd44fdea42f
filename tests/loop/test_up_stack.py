"""edgeloop.stack.Stack, the part of `edgeloop up` that starts services side by side: one that fails to come up
is named with its log and stopped, the others stay up and recorded, and `down` stops the later stage first."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edge_runtime.ports import free_port
from edge_runtime.testing import wait_for
from edgeloop.stack import Stack, _alive, _listening


def test_services_start_side_by_side_and_one_that_fails_is_named_with_its_log(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    web = free_port()
    calls = []
    with pytest.raises(RuntimeError) as err:
        stack.spawn_all([
            ("web", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(web)], {"port": web}),
            ("broken", [sys.executable, "-c", "import sys; print('no config'); sys.exit(3)"],
             {"port": free_port()}),
        ], also=lambda: calls.append(_alive(stack.state["services"]["web"]["pid"])))
    assert calls == [True], "also() runs while the services start"
    assert "broken exited with code 3" in str(err.value) and "broken.log" in str(err.value)
    assert "no config" in (tmp_path / "var" / "up" / "broken.log").read_text()
    recorded = json.loads((tmp_path / "var" / "up" / "stack.json").read_text())["services"]
    assert set(recorded) == {"web"} and _listening(web), "the one that came up stays up and recorded"
    # the later stage goes first: the worker is gone before the web server is signalled
    stack.spawn("worker", [sys.executable, "-c",
                           "import signal, time, os, sys\n"
                           "def bye(*_):\n"
                           f"    open({str(tmp_path / 'order')!r}, 'a').write('worker\\n'); sys.exit(0)\n"
                           "signal.signal(signal.SIGTERM, bye)\n"
                           f"open({str(tmp_path / 'ready')!r}, 'w').close()\n"
                           "while True: time.sleep(0.05)"], port=None, stage=2)
    wait_for(lambda: (tmp_path / "ready").exists(), 30, "the worker to handle SIGTERM")
    web_pid, worker_pid = stack.state["services"]["web"]["pid"], stack.state["services"]["worker"]["pid"]
    assert Stack(tmp_path).stop_all() == ["worker", "web"]
    assert (tmp_path / "order").read_text() == "worker\n"
    wait_for(lambda: not _alive(web_pid) and not _alive(worker_pid), 10, "both processes to exit")
    assert not _listening(web)
    assert json.loads((tmp_path / "var" / "up" / "stack.json").read_text())["services"] == {}
