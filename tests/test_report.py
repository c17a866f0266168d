"""The run report: a real tiny run (stages 1-3 through their drivers, fusion outputs by contract)
rendered to HTML and Markdown, checked as files and in headless Chromium (Debian's chromium and
chromium-driver, driven by selenium). The browser test keeps a full-page screenshot under
$ITH_TEST_ARTIFACTS (default: the test's tmp dir) and prints its path."""

from __future__ import annotations

import functools
import http.server
import os
import posixpath
import re
import shutil
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.report_fixtures import (HOSTILE_PREDICTION, HOSTILE_SENTENCE, HOSTILE_SPAN,  # noqa: E402
                                     build_hostile_run, build_tiny_run)

from ith_core.report import write_report  # noqa: E402
from storage.layout import RunLayout  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TABLES = ["table-run", "table-stages", "table-accuracy", "table-accuracy-seeds", "table-span-metrics",
          "table-span-counts", "table-imagine", "table-acceptance", "table-clap-quantiles", "table-training",
          "table-compute"]
CHARTS = ["chart-accuracy", "chart-clap", "chart-acceptance", "chart-training"]


class PageIndex(HTMLParser):
    """Ids of elements, audio sources, and whether a chart id holds an <svg>."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.audio: list[str] = []
        self.links: list[str] = []  # every src / href / xlink:href
        self.scripts = 0
        self.charts_with_svg: set[str] = set()
        self._figure: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        self.links += [v for k, v in attrs.items() if k in ("src", "href", "xlink:href") and v is not None]
        if tag == "figure":
            self._figure = attrs.get("id")
        if tag == "svg" and self._figure:
            self.charts_with_svg.add(self._figure)
        if tag == "audio":
            self.audio.append(attrs["src"])
        if tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None


def index(html_path: str) -> PageIndex:
    page = PageIndex()
    page.feed(Path(html_path).read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_models, bench_dir):
    root = str(tmp_path_factory.mktemp("report_runs"))
    started = time.perf_counter()
    reports = build_tiny_run(root, "tiny-report", {k: str(v) for k, v in tiny_models.items()}, bench_dir)
    built = time.perf_counter()
    paths = write_report(root, "tiny-report")
    print(f"\nreport test run: stages {built - started:.1f} s, report {time.perf_counter() - built:.1f} s")
    return {"root": root, "reports": reports, "paths": paths}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("report_hostile"))
    build_hostile_run(root, "hostile")
    return {"root": root, "paths": write_report(root, "hostile")}


def test_report_has_every_table_chart_and_playable_audio(tiny_run):
    html_path, md_path = tiny_run["paths"]["html"], tiny_run["paths"]["markdown"]
    assert Path(html_path).is_file() and Path(md_path).is_file()
    assert Path(html_path).parent == Path(tiny_run["root"]) / "tiny-report" / "report"
    page = index(html_path)
    assert set(TABLES) <= page.ids, set(TABLES) - page.ids
    assert set(CHARTS) <= page.charts_with_svg, set(CHARTS) - page.charts_with_svg
    assert page.scripts == 0
    text = Path(html_path).read_text(encoding="utf-8")
    # Every stage ran or was written by contract, except the ones the fixture leaves out (each is
    # listed twice: stages of the overview, compute per stage).
    absent = ("fusion_examples", "fusion_features", "audiobert_retrieval", "audiobert_features")
    assert text.count("not run") == 2 * len(absent)
    assert all(text.count(f"<td>{stage}</td><td>not run</td>") == 2 for stage in absent)
    # Self-contained: every link is an in-page fragment, an inline data: URL or a relative audio file.
    assert page.links and all(link.startswith(("#", "data:")) or link.startswith("../../_imagine/audio/")
                              for link in page.links), [l for l in page.links if "://" in l][:5]
    assert not re.findall(r"url\((?!#)", text) and "@import" not in text  # only clip-path="url(#...)"
    # The table: every system of the published table, ours beside the published numbers.
    for label in ("BERT, zero-shot", "BERT, fine-tuned text-only", "RoBERTa, zero-shot", "RoBERTa, fine-tuned text-only",
                  "AudioBERT (retrieved audio)", "ITH (imagined audio)", "ITH − text-only", "ITH − AudioBERT"):
        assert f"<td>{label}</td>" in text, label
    for published in ("41.55", "78.96", "36.63", "74.83", "13.46", "60.41", "14.04", "55.84"):
        assert published in text, published
    assert 'id="table-paired"' in text
    # Case studies: every candidate of every shown span is a player whose file exists.
    assert page.audio, "no audio elements in the case studies"
    k = tiny_run["reports"]["imagine"]["candidates"] // tiny_run["reports"]["imagine"]["unique_prompts"]
    assert len(page.audio) % k == 0
    for src in page.audio:
        assert not src.startswith(("/", "file:", "http")), src
        target = (Path(html_path).parent / unquote(src)).resolve()
        assert target.is_file(), src
        assert target.is_relative_to(Path(tiny_run["root"]) / "_imagine" / "audio")
    # The Markdown has the same tables.
    md = Path(md_path).read_text(encoding="utf-8")
    for heading in ("| system | source | animal dev |", "| task | split | variant | metric | seed |",
                    "| dev | token P |", "| task | threshold | accepted |", "| stage | this run | device |"):
        assert heading in md, heading
    md_links = [line for line in md.splitlines() if "[wav](<../../_imagine/audio/" in line]
    assert len(md_links) == len(page.audio)


def test_report_escapes_untrusted_text_and_degrades_without_stages(hostile_run, tiny_run):
    html_path = hostile_run["paths"]["html"]
    text = Path(html_path).read_text(encoding="utf-8")
    page = index(html_path)
    assert page.scripts == 0 and "<script" not in text and "<img src=x" not in text and "<b>cat" not in text
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in text
    assert "<mark>&lt;script&gt;" in text  # the span is highlighted inside the escaped sentence
    assert "not run: the run folder has no outputs of stage &#x27;fusion&#x27;" in text
    assert "not run: the run folder has no outputs of stage &#x27;span_detector&#x27;" in text
    assert {"table-accuracy", "table-compute"} <= page.ids and "chart-clap" in page.charts_with_svg
    assert len(page.audio) == 2
    md = Path(hostile_run["paths"]["markdown"]).read_text(encoding="utf-8")
    assert "<script" not in md and "<img" not in md and "&lt;script&gt;" in md
    # A prediction is data too.
    tiny_html = Path(tiny_run["paths"]["html"]).read_text(encoding="utf-8")
    assert HOSTILE_PREDICTION not in tiny_html and "&lt;/td&gt;&lt;script&gt;alert(1)" in tiny_html
    assert HOSTILE_SENTENCE and HOSTILE_SPAN  # used by the fixture


def test_report_of_bare_and_remote_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run 'absent'"):
        write_report(str(tmp_path), "absent")
    RunLayout(str(tmp_path), "bare").write_json({"profile": "tiny"}, "config.json")
    page = index(write_report(str(tmp_path), "bare")["html"])
    assert {"table-stages", "table-accuracy", "table-compute"} <= page.ids and not page.audio
    root = f"memory://report-{os.getpid()}-{time.time_ns()}"
    build_hostile_run(root, "remote")
    paths = write_report(root, "remote")
    layout = RunLayout(root, "remote")
    with layout.fs.open(layout.path("report", "report.html"), "rb") as handle:
        text = handle.read().decode()
    assert paths["html"].startswith("memory://") and "play only from a local copy" in text


# -- the browser -----------------------------------------------------------------------------------

def _browser(tmp_path):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: the report's browser test needs Debian's chromium and "
                    "chromium-driver; install them with `apt-get install -y chromium chromium-driver` "
                    "(CI installs them)", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: `pip install selenium` (it is in the project's test extra)",
                    pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--mute-audio", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium never looks a driver up or downloads one.
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def served_root(tiny_run, hostile_run):
    """Both run roots behind one loopback HTTP server (the page as a colleague would open it)."""
    site = Path(tiny_run["root"]).parent / "report_site"
    site.mkdir(exist_ok=True)
    for name, run in (("tiny", tiny_run), ("hostile", hostile_run)):
        link = site / name
        if not link.exists():
            link.symlink_to(run["root"], target_is_directory=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _artifact_dir(tmp_path) -> Path:
    out = Path(os.environ.get("ITH_TEST_ARTIFACTS") or tmp_path) / "report"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _wait_for_audio(driver, timeout_s: float = 30.0) -> list[dict]:
    script = ("return Array.from(document.querySelectorAll('audio')).map(a => ({src: a.currentSrc, "
              "ready: a.readyState, error: a.error ? a.error.code : null, duration: a.duration}));")
    deadline = time.monotonic() + timeout_s
    while True:
        states = driver.execute_script(script)
        if all(s["ready"] >= 1 or s["error"] for s in states) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def test_report_in_headless_chromium(tiny_run, served_root, tmp_path):
    driver = _browser(tmp_path)
    try:
        driver.get(f"{served_root}/tiny/tiny-report/report/report.html")
        assert driver.title.startswith("Imagine to Hear: run tiny-report")
        found = driver.execute_script(
            "return {tables: Array.from(document.querySelectorAll('div[id^=table-] > table')).map(t => "
            "t.parentElement.id), charts: Array.from(document.querySelectorAll('figure.chart svg')).map(s => "
            "[s.closest('figure').id, s.getBoundingClientRect().width, s.getBoundingClientRect().height]), "
            "audio: document.querySelectorAll('audio').length, scripts: document.scripts.length};")
        assert set(TABLES) <= set(found["tables"])
        assert {c[0] for c in found["charts"]} >= set(CHARTS)
        assert all(w > 100 and h > 100 for _, w, h in found["charts"]), found["charts"]
        assert found["audio"] > 0 and found["scripts"] == 0
        states = _wait_for_audio(driver)
        bad = [s for s in states if s["error"] or s["ready"] < 1 or not s["duration"] > 0]
        assert not bad, f"audio that did not load: {bad[:5]}"
        # Full-page screenshot: the window grows to the page's height.
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 40, 16000))
        shot = _artifact_dir(tmp_path) / "report-tiny.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        print(f"\nreport screenshot: {shot}")
        logs = driver.get_log("browser")
        errors = [e for e in logs if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, f"console errors: {errors}"

        driver.get(f"{served_root}/hostile/hostile/report/report.html")
        assert driver.title.startswith("Imagine to Hear: run hostile")  # the payload would set "pwned" / "1"
        assert driver.execute_script("return document.scripts.length + document.querySelectorAll('img').length") == 0
        marked = driver.execute_script("return document.querySelector('p.sentence mark').textContent")
        assert marked == HOSTILE_SPAN
        assert not [s for s in _wait_for_audio(driver) if s["error"] or s["ready"] < 1]
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, f"console errors: {errors}"
    finally:
        driver.quit()
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def test_report_opens_from_disk(tiny_run, tmp_path):
    """file:// as a researcher double-clicking the report in the run folder: audio still resolves."""
    driver = _browser(tmp_path)
    try:
        driver.get(Path(tiny_run["paths"]["html"]).as_uri())
        states = _wait_for_audio(driver)
        assert states and not [s for s in states if s["error"] or s["ready"] < 1]
        assert all(posixpath.dirname(s["src"]).startswith(Path(tiny_run["root"]).as_uri()) for s in states)
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, f"console errors: {errors}"
    finally:
        driver.quit()
