"""Fixtures that start real services: Mosquitto on a free port, a pymodbus TCP server, an RTSP server, Label
Studio and a Prefect server (each once per session where it is slow to start)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

from edgeloop.devkit.broker import Mosquitto
from edgeloop.devkit.modbus import ModbusServer
from tests.kit.rtsp import SYSTEM_PYTHON, RtspServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's, driven by Playwright) for the browser tests: the dashboard, Label Studio."""
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: `make deps` installs Debian's chromium for the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                    "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(autouse=True, scope="session")
def _own_signing_keys(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Commands that sign with the machine's key (:func:`edge_runtime.signing.default_keys_dir`: EDGELOOP_KEYS_DIR, else
    ~/.config/edgeloop/keys) sign with a key of this session, never the user's own."""
    if "EDGELOOP_KEYS_DIR" not in os.environ:
        os.environ["EDGELOOP_KEYS_DIR"] = str(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A real mosquitto on a free port, stopped after the test (tests may stop/start it)."""
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed: `make deps` (or apt-get install mosquitto) installs it")
    with Mosquitto() as broker:
        yield broker


@pytest.fixture
def modbus_server() -> Iterator[ModbusServer]:
    server = ModbusServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """All three reference models trained on tiny SYNTHETIC data, tracked in MLflow: this session's copy of the
    workspace trained once per parameters and model code (tests/kit/trained.py)."""
    from tests.kit.trained import trained_workspace

    return trained_workspace(tmp_path_factory.mktemp("workspace") / "ws")


@pytest.fixture
def rtsp_server() -> Iterator[RtspServer]:
    """A real RTSP server (live 640x480 H.264 test pattern at 25 fps) on a free port; ``.url``."""
    import subprocess

    check = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('Gst', '1.0'); "
                              "gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"],
        capture_output=True, text=True) if Path(SYSTEM_PYTHON).exists() else None
    if check is None or check.returncode != 0:
        pytest.fail("the GStreamer RTSP server is not installed for /usr/bin/python3: `make deps` installs it "
                    "(apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
                    "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-rtsp)")
    server = RtspServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Label Studio (edgeloop.devkit.labelstudio.LabelStudioServer) started once per test session.

    Its first start on an empty data folder spends most of a minute migrating its database; the migrated, still
    empty data (with the test user and token) is kept in the cache (~/.cache/edgeloop) per installed Label Studio, and later
    sessions start from a copy in about 5 s. ``.url`` and ``.token``; ``.labelling()`` gives a client. Installed
    by `make label-studio`.
    """
    from edgeloop.devkit.cache import copy_of, keep, lookup
    from edgeloop.devkit.labelstudio import LabelStudioServer

    try:
        exe = LabelStudioServer.executable()
    except FileNotFoundError as e:
        pytest.fail(str(e))
    user = {"token": "0123456789abcdef0123456789abcdef01234567", "password": "edgeloop-tests-0123"}  # noqa: S105
    dist = sorted(p.name for p in exe.parents[1].glob("lib/python*/site-packages/label_studio-*.dist-info"))
    key = hashlib.sha256("\n".join([str(exe), *dist, *user.values(), "1"]).encode()).hexdigest()[:16]
    work = tmp_path_factory.mktemp("label-studio") / "ls"
    migrated = lookup("label-studio", key)
    if migrated is not None:
        copy_of(migrated, work)
    server = LabelStudioServer(work, **user)
    server.start()
    if migrated is None:  # keep the freshly migrated, still empty data for the next sessions (a restart: 5 s)
        server.stop()
        keep("label-studio", key, work)
        server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server (``prefect_test_harness``: a temporary server and database) for the whole
    session, its PREFECT_HOME in a temporary folder; the API URL."""
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield str(PREFECT_API_URL.value())


# -- how the suite runs: fast and slow tiers, and several workers (pytest-xdist) ------------------------------
#: fixtures that start a service once per test session: the tests using them share one worker, so each starts once
SESSION_SERVICES = ("label_studio", "prefect_api")
#: fixtures that train models or start heavy services: their tests are slow (not in `make check`)
SLOW_FIXTURES = {*SESSION_SERVICES, "workspace", "ws", "reproduced_ws", "cv_models"}
TESTS = Path(__file__).parent
#: modules whose tests are long and share only a cheap module fixture: each test (all its cases) on a worker
SPLIT_BY_TEST = {"tests/hub/test_hub_fuzz.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that use a slow fixture or live in tests/e2e are marked slow. The modules that use the session
    services come first, then the slow ones, then the rest (a module's tests keep their order): under xdist the
    longest work is handed out first, so the workers end together."""
    e2e = TESTS / "e2e"
    slow: set[Path] = set()
    services: set[Path] = set()
    for item in items:
        if set(item.fixturenames) & SLOW_FIXTURES or e2e in item.path.parents:
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("slow"):
            slow.add(item.path)
        if set(item.fixturenames) & set(SESSION_SERVICES):
            services.add(item.path)
    rank = {path: 0 if path in services else 1 if path in slow else 2 for path in {i.path for i in items}}
    items.sort(key=lambda item: rank[item.path])  # stable
    _unique_node_ids(items)


def _unique_node_ids(items: list[pytest.Item]) -> None:
    """Every test has its own node id, or xdist runs one test per id and drops the rest without a word.
    schemathesis 4 on pytest 9 gives all the cases of one fuzzed test the test's bare id (pytest 9 builds an
    item's id from ``originalname`` and the callspec, and schemathesis has no callspec): 3 of the hub's 114
    fuzz cases ran under xdist. Such ids get their operation back from the item's name, e.g.
    ``test_fuzz_as_admin[GET /api/v1/nodes]``; any id still shared stops the session."""
    seen = Counter(item.nodeid for item in items)
    for item in items:
        base, bracket, params = item.name.partition("[")
        if seen[item.nodeid] > 1 and bracket and item.parent is not None:
            item._id = item.parent.id.child(base).with_params(params.removesuffix("]"))  # type: ignore[attr-defined]
    shared = sorted(i for i, n in Counter(item.nodeid for item in items).items() if n > 1)
    if shared:
        raise pytest.UsageError(f"tests that share a node id (xdist would run one of each): {shared[:5]}")


def _service_modules(root: Path) -> set[str]:
    """The test modules (as in node ids) that use a session service, read from their source."""
    names = "|".join(SESSION_SERVICES)  # as a parameter (annotated, or bare): the fixture, not a word in a string
    pattern = re.compile(rf"\b({names})\s*:\s*[A-Za-z]|[(,]\s*({names})\s*[,)]")
    return {str(p.relative_to(root)) for p in TESTS.rglob("test_*.py") if pattern.search(p.read_text())}


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``-n N --dist loadscope`` with scopes of our own: each test module runs on one worker (its module
    fixtures are set up once), and every module that uses Label Studio or the Prefect server runs on one worker,
    which starts them once. (xdist's ``xdist_group`` marks are not honoured under pytest 9: it rewrites
    ``item._nodeid``, which pytest 9's ``nodeid`` no longer reads.) Scopes are handed out in collection order
    (``--no-loadscope-reorder``): the longest first."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    services = _service_modules(config.rootpath)

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if module in services:
                return "session-services"
            return nodeid.partition("[")[0] if module in SPLIT_BY_TEST else module

    return ModuleScheduling(config, log)


# EDGELOOP_TEST_CPU=FILE: each test's CPU seconds (its process and the children it reaped: hub and node
# processes, DVC stages, servers it stopped) appended to FILE as JSON lines, to see where the suite's time goes.
if os.environ.get("EDGELOOP_TEST_CPU"):
    import json
    import resource
    import time

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        def cpu() -> float:
            s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

        t0, c0 = time.perf_counter(), cpu()
        try:
            return (yield)
        finally:
            with open(os.environ["EDGELOOP_TEST_CPU"], "a") as f:
                f.write(json.dumps({"test": item.nodeid, "wall": round(time.perf_counter() - t0, 2),
                                    "cpu": round(cpu() - c0, 2), "worker": os.environ.get("PYTEST_XDIST_WORKER")})
                        + "\n")
