"""The real app in a real browser: `streamlit run app/main.py` on a free localhost port, driven by Debian's
`chromium` through Playwright (never a downloaded browser), answering with the real packaged LLM (the fast
0.5B variant, to keep it quick).

It uploads a PDF and a DOCX written here with facts no model can know, waits for both to be ready, asks about
one fact, watches the answer stream in and its citation appear, opens the citation and sees the passage in its
page, then adds and deletes a memory. Screenshots of every page go to `tests/artifacts/` (git-ignored).

Run it with `pytest -m browser tests/test_browser.py`. Skipped only when `/usr/bin/chromium` is missing.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from docx import Document as DocxDocument

from tests.conftest import ARTIFACTS
from tests.fixtures_docs import make_pdf

pytestmark = [pytest.mark.browser, pytest.mark.llm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
# DESIGN.md §6; Playwright adds --headless and --user-data-dir itself (a new profile directory per run).
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FAST_MODEL = "qwen2.5-coder-0.5b-instruct"

PDF_PAGES = [
    "Operations handbook\nThis handbook collects the routines of the platform team.",
    "Deploy keys\nThe Zorblax deploy key rotates every 45 days.\n"
    "It is stored in the vault under secret/zorblax/deploy.",
]
DOCX_FACT = "The Quillfeather greenhouse is watered every morning at 6:30 by a robot named Fennick."
QUESTION = "How often does the Zorblax deploy key rotate?"
MEMORY = "I prefer answers that mention the vault path"

# Generous limits: the first start assembles the 0.5B model from its PyPI parts and loads it, on 2 shared cores.
READY_S = 600
ANSWER_S = 600

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); the browser test never downloads a browser",
                allow_module_level=True)

from playwright.sync_api import BrowserContext, Page, expect, sync_playwright  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app, as `scripts/run.sh` starts it, on a free port with its own data directory; yields its URL."""
    root = tmp_path_factory.mktemp("browser")
    data = root / "data"
    (data / "inbox").mkdir(parents=True)
    port = _free_port()
    env = {
        **os.environ, "DATA_DIR": str(data), "LLM_VARIANT": "fast", "LLM_MODEL": FAST_MODEL,
        "LLM_PORT": str(_free_port()), "WATCH_DEBOUNCE_MS": "300", "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT),
    }
    for key in ("QDRANT_URL", "LLM_BASE_URL", "DATABASE_URL"):
        env.pop(key, None)
    log_path = root / "app.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"),
             "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the app did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        # SIGTERM lets Streamlit exit cleanly: atexit stops the LLM server and releases the store.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        print(f"app log: {log_path}")


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A two-page PDF and a DOCX, each with a distinctive fact."""
    folder = tmp_path_factory.mktemp("uploads")
    pdf = make_pdf(folder / "operations-handbook.pdf", PDF_PAGES)
    docx = folder / "greenhouse-notes.docx"
    doc = DocxDocument()
    doc.add_heading("Greenhouse", level=1)
    doc.add_paragraph("Notes about the greenhouse behind the office.")
    doc.add_heading("Watering", level=2)
    doc.add_paragraph(DOCX_FACT)
    doc.save(str(docx))
    return [pdf, docx]


@pytest.fixture
def context(tmp_path: Path) -> Iterator[BrowserContext]:
    """Debian's chromium with the DESIGN.md §6 flags and a fresh profile directory."""
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1360, "height": 900})
        ctx.set_default_timeout(60_000)
        try:
            yield ctx
        finally:
            ctx.close()


def _nav(page: Page, title: str) -> None:
    page.locator('[data-testid="stSidebarNavLink"]', has_text=title).click()
    page.wait_for_url(re.compile(rf"/{title.lower()}$") if title != "Chat" else re.compile(r"/(chat)?$"))


def test_upload_ask_open_citation_and_memory_in_a_real_browser(server: str, documents: list[Path],
                                                                context: BrowserContext) -> None:
    page = context.pages[0] if context.pages else context.new_page()
    try:
        _journey(page, server, documents, context)
    except BaseException:
        _shot(page, "failure.png")  # what the user saw when it went wrong
        raise


def _journey(page: Page, server: str, documents: list[Path], context: BrowserContext) -> None:
    marks: dict[str, float] = {}  # seconds per step, printed for the record (nothing asserts on them)
    t = time.monotonic()
    page.goto(server)

    # first run: a welcome that says where to drop files, not an empty page
    expect(page.get_by_text("Welcome to Second Brain")).to_be_visible(timeout=180_000)
    expect(page.get_by_text("inbox", exact=False).first).to_be_visible()
    marks["first page"] = time.monotonic() - t
    _shot(page, "01-welcome.png")

    # Library: upload both files at once, watch them become ready
    _nav(page, "Library")
    expect(page.get_by_text("Your library is empty")).to_be_visible()
    t = time.monotonic()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(p) for p in documents])
    expect(page.get_by_text("Added 2 files")).to_be_visible()
    expect(page.get_by_text("ready", exact=True)).to_have_count(2, timeout=READY_S * 1000)
    marks["upload → both ready"] = time.monotonic() - t
    expect(page.get_by_text("operations-handbook.pdf", exact=True)).to_be_visible()
    expect(page.get_by_text("greenhouse-notes.docx", exact=True)).to_be_visible()
    _shot(page, "02-library.png")

    # Chat: the answer streams in, then its checked citation appears
    _nav(page, "Chat")
    box = page.locator('[data-testid="stChatInputTextArea"]')
    box.fill(QUESTION)
    t = time.monotonic()
    box.press("Enter")
    # The live text while the model writes (its container is replaced by the checked answer at the end), or an
    # error notice: waiting on both fails fast, with the app's own message, when the LLM cannot answer.
    streaming = page.locator(".st-key-streaming").filter(has_text=re.compile(r"\w"))
    failed = page.locator('[data-testid="stAlertContentError"]')
    streaming.first.or_(failed.first).wait_for(state="attached", timeout=ANSWER_S * 1000)
    assert not failed.count(), f"answering failed: {failed.first.inner_text()}"
    marks["question → first streamed text"] = time.monotonic() - t
    card = page.locator(".sb-cite").first
    card.wait_for(timeout=ANSWER_S * 1000)
    marks["question → checked answer with citation"] = time.monotonic() - t
    assistant = page.locator('[data-testid="stChatMessage"]').nth(1)
    expect(assistant).to_contain_text("45")
    expect(assistant).to_contain_text(re.compile(r"\[\d+\]"))  # inline marker
    expect(card).to_contain_text("operations-handbook.pdf")
    expect(card).to_contain_text("p. 2")
    expect(card.locator("mark")).to_contain_text("45 days")
    _shot(page, "03-chat-answer.png")
    page.get_by_text("How I answered").first.click()
    expect(page.get_by_text("Searched for:").first).to_be_visible()
    _shot(page, "04-how-i-answered.png")

    # the citation opens its page in the original document, the cited span marked
    with context.expect_page() as opened:
        card.get_by_role("link", name=re.compile("Open at p. 2")).click()
    t = time.monotonic()
    source = opened.value
    source.wait_for_load_state()
    mark = source.locator(".sb-source-text mark")
    expect(mark).to_contain_text("The Zorblax deploy key rotates every 45 days", timeout=120_000)
    expect(source.get_by_text("Page 2 of 2")).to_be_visible()
    marks["open citation → passage shown"] = time.monotonic() - t
    expect(source.get_by_role("button", name=re.compile("Download the original"))).to_be_visible()
    _shot(source, "05-citation-source.png")
    source.close()

    # Memory: add one, see it, delete it
    _nav(page, "Memory")
    page.get_by_label("Something to remember").fill(MEMORY)
    page.get_by_role("button", name="Remember").click()
    item = page.locator('[class*="st-key-memory-"]', has_text=MEMORY)
    expect(page.get_by_text(MEMORY)).to_be_visible()
    _shot(page, "06-memory.png")
    item.get_by_role("button", name="Delete").click()
    expect(page.get_by_text(MEMORY)).to_have_count(0)
    _shot(page, "07-memory-deleted.png")

    # Settings: the LLM in use and the saved-settings file
    _nav(page, "Settings")
    expect(page.get_by_label("Model", exact=True)).to_have_value(FAST_MODEL)
    expect(page.get_by_label("Passages to retrieve (k)")).to_be_visible()
    expect(page.get_by_role("heading", name="Status")).to_be_visible()
    page.set_viewport_size({"width": 1360, "height": 1500})  # the whole form in one picture
    _shot(page, "08-settings.png")
    print("\n".join(f"{k:<42} {v:6.1f} s" for k, v in marks.items()))
