"""A person labels in Label Studio's own UI, in headless Chromium: what the loop harvests is what they clicked.

The real Label Studio (the session's ``label_studio`` fixture), a project and a task made as the loop's label step
makes them (``Labelling.ensure_project`` + ``send``: a pump window with the edge's answer as the pre-selected
choice), then a person: signs in with the login form, opens the task, sees the window as a table by channel (not
the model's answer among the numbers) with its pre-selected label, clicks the other label and submits. The loop's
harvest (``Labelling.harvest``) then returns exactly that label for that upload. The browser is Debian's chromium
driven by Playwright's Python client, launched as tests/hub/test_dashboard.py does; `make deps` installs it.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from edgeloop.devkit.labelstudio import LabelStudioServer
from flows.labelstudio import ID_FIELD, Labelling

LABELS = ["normal", "anomalous"]
T_END = 1732272600.0  # 2024-11-22 10:50:00 UTC


def window_item(uid: str) -> dict[str, Any]:
    """A pump window as collect hands it to the label step: the edge said "normal" (0) at 0.61."""
    values = {"temperature_mean": 81.23456, "temperature_std": 1.234567, "temperature_min": 79.0123,
              "temperature_max": 84.98765, "vibration_mean": 2.0123456, "vibration_std": 0.4567891,
              "vibration_min": 1.2345678, "vibration_max": 7.891234, "count": 12, "window_start": T_END - 600,
              "anomaly": 0, "anomaly_confidence": 0.6123456, "anomaly_model": "pump_anomaly:3",
              "select": "low_confidence"}
    return {"id": uid, "device": "pump-2", "ts": T_END, "values": values, "output": "anomaly",
            "units": {"temperature": "degC", "vibration": "mm/s"}, "prediction": "normal", "confidence": 0.6123456,
            "model_version": "3", "reason": "low_confidence"}


@pytest.mark.labelstudio
def _open_task(page: Any, label_studio: LabelStudioServer, project: int, task: int) -> None:
    """Sign in with Label Studio's login form, as a person does, and open the task in its labelling view."""
    page.goto(f"{label_studio.url}/user/login/")
    page.locator('input[name="email"]').fill(label_studio.username)
    page.locator('input[name="password"]').fill(label_studio.password)
    page.locator('button[type="submit"], input[type="submit"]').first.click()
    page.wait_for_url(lambda url: "/user/login" not in url)
    page.goto(f"{label_studio.url}/projects/{project}/data?task={task}")


def test_a_person_changes_the_edge_label_and_harvest_returns_it(label_studio: LabelStudioServer, browser: Any,
                                                                tmp_path: Path) -> None:
    from playwright.sync_api import expect

    labelling: Labelling = label_studio.labelling()
    model = f"browser-{uuid.uuid4().hex[:8]}"
    uid = f"win-{uuid.uuid4().hex[:8]}"
    pid = labelling.ensure_project(model, "table", LABELS)
    assert labelling.send(pid, [window_item(uid)]) == 1
    (task,) = [t for t in labelling.tasks(pid) if t["data"][ID_FIELD] == uid]
    assert labelling.harvest(pid) == ([], [])  # the pre-selection is a prediction, not a label

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    try:
        _open_task(page, label_studio, pid, task["id"])
        table = page.locator("table.edgeloop-window")
        expect(table).to_be_visible()
        # the window by channel, rounded, with units; the edge's answer is not among the numbers
        expect(table.locator("tr", has_text="temperature (degC)")).to_contain_text("81.2")
        expect(table.locator("tr", has_text="vibration (mm/s)")).to_contain_text("7.89")
        expect(table).not_to_contain_text("81.23456")
        for shown_not in ("anomaly", "0.612", "pump_anomaly", "low_confidence"):
            expect(table).not_to_contain_text(shown_not)
        expect(page.get_by_text("pump-2 · 2024-11-22 10:40:00 – 10:50:00 UTC")).to_be_visible()

        # a choice is a checkbox named by its label and its hotkey ("normal[1]")
        normal, anomalous = (page.get_by_role("checkbox", name=re.compile(rf"^{x}\b")) for x in LABELS)
        expect(normal).to_be_checked()  # the edge's answer, pre-selected
        expect(anomalous).not_to_be_checked()
        anomalous.click()
        expect(anomalous).to_be_checked()
        expect(normal).not_to_be_checked()
        with page.expect_response(lambda r: r.request.method == "POST" and "/annotations" in r.url) as posted:
            page.get_by_role("button", name="Submit").click()
        assert posted.value.ok, posted.value.text()
    except Exception:
        page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
        raise
    finally:
        page.close()

    labelled, problems = labelling.harvest(pid)
    assert problems == []
    assert [(x["id"], x["label"]) for x in labelled] == [(uid, "anomalous")]


@pytest.mark.labelstudio
def test_raw_readings_show_as_a_chart(label_studio: LabelStudioServer, browser: Any, tmp_path: Path) -> None:
    """A window with its raw readings: Label Studio's TimeSeries draws a line per channel, the edge's answer
    pre-selected under it."""
    from playwright.sync_api import expect

    labelling = label_studio.labelling()
    pid = labelling.ensure_project(f"chart-{uuid.uuid4().hex[:8]}", "table", LABELS, view="series",
                                   channels={"temperature": "degC", "vibration": "mm/s"})
    n = 60
    item = window_item("chart-1") | {"series": {"ts": [T_END - 600 + 10 * i for i in range(n)],
                                                "temperature": [80 + (i % 7) * 0.5 for i in range(n)],
                                                "vibration": [2 + (i % 5) * 0.3 for i in range(n)]}}
    labelling.send(pid, [item])
    (task,) = labelling.tasks(pid)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    try:
        _open_task(page, label_studio, pid, task["id"])
        expect(page.locator("table.edgeloop-window")).to_be_visible()
        # a line for each channel (Label Studio draws them as svg paths of class channel), and their names
        expect(page.locator("svg path.channel").nth(1)).to_be_visible()
        expect(page.get_by_text("temperature", exact=False).first).to_be_visible()
        expect(page.get_by_role("checkbox", name=re.compile(r"^normal\b"))).to_be_checked()
    except Exception:
        page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
        raise
    finally:
        page.close()
