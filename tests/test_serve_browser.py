"""The page of `merc serve` in a real headless browser: Debian's chromium driven by Playwright (the apt browser:
`playwright install` needs the internet). A uvicorn server runs a toy causal run on a free loopback port; the test
loads the page, labels a pasted conversation (table, timeline, hover), uploads a recording with its transcript
and watches the job, and streams a live conversation with three speakers. Screenshots go to the test's tmp dir
(kept by pytest under /tmp/pytest-of-<user>/); MERC_SCREENSHOTS=DIR saves them there too."""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
from conftest import write_wav  # noqa: E402
from serve_runs import srt, toy_run  # noqa: E402

from merc.inference.predictor import Predictor  # noqa: E402
from merc.serve.app import create_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_BROWSER = ("no chromium on PATH (apt-get install --no-install-recommends chromium chromium-driver; `make test` "
              "does it as root)")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason=NO_BROWSER)]
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
PASTE = "Ann: I feel great.\nBob: I feel furious.\nAnn: ok then.\nBob: sure.\nAnn: right."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    predictor = Predictor.from_pretrained(toy_run(tmp_path_factory, causal=True))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(predictor), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        outside: list[str] = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(server) else None)
        page.goto(server + "/")
        page.errors, page.outside = errors, outside
        yield page
        browser.close()


def shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if os.environ.get("MERC_SCREENSHOTS"):
        Path(os.environ["MERC_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["MERC_SCREENSHOTS"]) / path.name)
    return path


def labels_of(page) -> list[str]:
    return [c.strip() for c in page.locator("#table tbody td.label").all_inner_texts()]


def api_labels(server, text: str) -> list[str]:
    import httpx
    r = httpx.post(server + "/v1/predict", content=text.encode(), headers={"Content-Type": "text/plain"})
    return [u["predicted"] for u in r.json()["utterances"]]


def test_load_and_paste(page, server, tmp_path):
    sync_api.expect(page.locator("#model")).to_contain_text("mamba, causal")
    page.fill("#conversation", PASTE)
    page.click("#predict")
    rows = page.locator("#table tbody tr")
    sync_api.expect(rows).to_have_count(5)
    assert labels_of(page) == api_labels(server, PASTE)
    assert page.locator("#timeline g.utterance").count() == 5
    assert page.locator("#timeline rect").count() == 5 * 3  # one stacked bar of the 3 labels per utterance
    page.locator("#timeline g.utterance").nth(1).hover()
    tip = page.locator("#tooltip")
    sync_api.expect(tip).to_be_visible()
    sync_api.expect(tip).to_contain_text("#1 Bob")
    for label in ("angry", "calm", "happy"):
        sync_api.expect(tip).to_contain_text(label)
    shot(page, tmp_path, "paste")
    page.fill("#conversation", '{"utterances": []}')
    page.click("#predict")
    sync_api.expect(page.locator("#error")).to_contain_text("422")
    sync_api.expect(page.locator("#error")).to_contain_text("non-empty list")
    assert page.errors == ["Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"]
    page.errors.clear()  # that one was asked for
    assert not page.errors and not page.outside, (page.errors, page.outside)


def test_upload_a_recording(page, server, tmp_path):
    wav, sub = tmp_path / "talk.wav", tmp_path / "talk.srt"
    write_wav(wav, seconds=3.0)
    sub.write_text(srt([("Ann", "I feel great."), ("Bob", "I feel furious."), ("Ann", "ok then.")]))
    page.click("button[data-tab=recording]")
    page.set_input_files("#recording-file", str(wav))
    page.set_input_files("#transcript-file", str(sub))
    page.click("#upload")
    sync_api.expect(page.locator("#job-status")).to_contain_text("done: 3 utterances", timeout=60_000)
    sync_api.expect(page.locator("#result-title")).to_have_text("talk.wav")
    sync_api.expect(page.locator("#table tbody tr")).to_have_count(3)
    assert labels_of(page) == api_labels(server, "Ann: I feel great.\nBob: I feel furious.\nAnn: ok then.")
    shot(page, tmp_path, "recording")
    assert not page.errors and not page.outside, (page.errors, page.outside)


def test_live_mode_three_speakers(page, server, tmp_path):
    page.click("button[data-tab=live]")
    sync_api.expect(page.locator("#live-state")).to_have_text("connected")
    sync_api.expect(page.locator("#live-mode")).to_contain_text("one step per utterance")
    page.fill("#new-speaker", "Cat")
    page.click("#add-speaker")
    said = [("Ann", "I feel great."), ("Bob", "I feel furious."), ("Cat", "I feel fine."), ("Ann", "ok then."),
            ("Cat", "sure.")]
    for k, (speaker, text) in enumerate(said):
        page.click(f"button.speaker:text-is('{speaker}')")
        page.fill("#live-text", text)
        page.press("#live-text", "Enter")
        sync_api.expect(page.locator("#table tbody tr")).to_have_count(k + 1)
    speakers = [c.strip() for c in page.locator("#table tbody tr td:nth-child(2)").all_inner_texts()]
    assert speakers == [s for s, _ in said]
    assert labels_of(page) == api_labels(server, "\n".join(f"{s}: {t}" for s, t in said))
    shot(page, tmp_path, "live")
    page.click("#reset")
    sync_api.expect(page.locator("#table tbody tr")).to_have_count(0)
    assert not page.errors and not page.outside, (page.errors, page.outside)
