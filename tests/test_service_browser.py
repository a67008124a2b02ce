"""The web page end to end in headless Chromium: sign in, upload with metadata, read the report,
give feedback, find it in the history.

Playwright drives Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` does it). It
never downloads a browser of its own (no ``playwright install``). Skipped when either is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from dermdx.inference import DISCLAIMER, Predictor

CHROMIUM = Path(os.environ.get("DERMDX_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytest.importorskip("fastapi", reason="the service needs the [serve] extra")
pytest.importorskip("uvicorn", reason="the service needs the [serve] extra")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the Python package, [dev] extra) is not installed")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and shutil.which("chromium") is None,
    reason=f"Debian's chromium not found at {CHROMIUM}: apt-get install chromium (or set DERMDX_CHROMIUM)",
)

import uvicorn  # noqa: E402

from dermdx.service.app import create_app  # noqa: E402
from dermdx.service.report import CasePredictor  # noqa: E402
from dermdx.service.settings import ServiceSettings  # noqa: E402

def _red_png() -> str:
    """A small red PNG as a data URL, standing in for a heatmap overlay."""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (220, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Served:
    """The app under uvicorn in a thread on a free loopback port."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start within 20 s")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _served(reporter, data_dir: Path) -> tuple[_Served, str]:  # noqa: ANN001
    app = create_app(reporter, ServiceSettings(data_dir=data_dir))
    storage = app.state.storage
    with storage.session() as session:
        token = storage.create_token(session, "dr-browser", "clinician")
    return _Served(app), token


@pytest.fixture
def browser():
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


def _open_signed_in(browser, base: str, token: str):  # noqa: ANN001, ANN202
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("request", lambda request: None if request.url.startswith((base, "blob:", "data:")) else problems.append(f"external request {request.url}"))
    page.goto(base)
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#app", state="visible")
    return page, problems


def test_clinician_uploads_reads_report_gives_feedback_and_finds_it_in_history(browser, isic_model_file, tmp_path, jpeg) -> None:
    served, token = _served(Predictor.from_checkpoint(isic_model_file, batch_size=1), tmp_path / "data")
    photo = jpeg(tmp_path / "lesion.jpg", size=64, seed=7)
    with served as base:
        page, problems = _open_signed_in(browser, base, token)
        assert DISCLAIMER in page.inner_text("#disclaimer")
        assert page.inner_text("#who") == "dr-browser (clinician)"

        page.set_input_files("#image", str(photo))
        page.fill("#age", "54")
        page.select_option("#sex", "female")
        page.select_option("#site", "back")
        page.click("#analyse")
        page.wait_for_selector("#result", state="visible")
        page.wait_for_function("document.querySelectorAll('#chart .bar-row').length === 7")

        values = [float(v.rstrip("%")) for v in page.locator("#chart .bar-value").all_inner_texts()]
        assert sum(values) == pytest.approx(100, abs=0.5) and values == sorted(values, reverse=True)
        assert "Melanoma" in page.inner_text("#chart")
        assert page.locator("#differential li").count() == 3
        assert page.inner_text("#report-disclaimer") == DISCLAIMER
        assert page.locator("#disclaimer").is_visible()
        assert "age 54 · sex female · site back" in page.inner_text("#result-patient")
        page.wait_for_function("document.querySelector('#result-image').naturalWidth === 64")
        # Grad-CAM over the photo; the untrained fixture model is unsure, so it abstains.
        assert page.locator("#heatmap-overlay").is_visible() and page.locator("#extras .extra-heatmap").count() == 1
        assert page.locator("#abstention").is_visible() and "Refer: uncertain" in page.inner_text("#abstention")

        page.select_option("#final-diagnosis", "mel")
        page.check("input[name=agrees][value=no]")
        page.fill("#comment", "regression structures")
        page.click("#send-feedback")
        page.wait_for_selector("#feedback-ok:has-text('Feedback saved.')")
        assert "final diagnosis: mel" in page.inner_text("#feedback-list")
        assert "disagrees with the model" in page.inner_text("#feedback-list")

        page.click("#tab-history")
        page.wait_for_selector("#history-rows tr[data-case-id]")
        rows = page.locator("#history-rows tr[data-case-id]")
        assert rows.count() == 1
        assert "mel" in rows.first.locator("td.final").inner_text()
        assert page.inner_text("#page-info") == "1–1 of 1"

        page.click("#tab-new")
        screenshot = tmp_path / "service_page.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000
        assert problems == []
        page.close()


class _ReporterWithDecisions(CasePredictor):
    """Adds the sections other modules will provide, with placeholder values (this test's only)."""

    def report(self, image_path, **metadata):  # noqa: ANN001, ANN003, ANN201
        report = super().report(image_path, **metadata)
        report["triage"] = {"level": "test-level", "reason": "placeholder set by the test"}
        report["recommendation"] = "placeholder recommendation text"
        report["abstention"] = {"abstain": True, "reason": "placeholder abstention reason"}
        report["heatmap"] = {"overlay_png": _red_png(), "method": "placeholder"}
        return report


def test_page_shows_triage_recommendation_abstention_and_heatmap_when_present(browser, isic_model_file, tmp_path, jpeg) -> None:
    reporter = _ReporterWithDecisions(Predictor.from_checkpoint(isic_model_file, batch_size=1))
    served, token = _served(reporter, tmp_path / "data")
    with served as base:
        page, problems = _open_signed_in(browser, base, token)
        page.set_input_files("#image", str(jpeg(tmp_path / "lesion.jpg", size=48)))
        page.click("#analyse")
        page.wait_for_selector("#extras .extra-triage")
        assert "test-level" in page.inner_text("#extras .extra-triage")
        assert "placeholder recommendation text" in page.inner_text("#extras .extra-recommendation")
        assert "placeholder abstention reason" in page.inner_text("#abstention")
        assert page.locator("#heatmap-overlay").is_visible()
        page.uncheck("#heatmap-toggle")
        assert not page.locator("#heatmap-overlay").is_visible()
        page.screenshot(path=str(tmp_path / "service_page_sections.png"), full_page=True)
        assert problems == []
        page.close()
