"""The rating page in a real browser: uvicorn on a free port, Debian's headless Chromium driven by
Playwright (sync API). Needs the apt package ``chromium`` and the PyPI package ``playwright``
(only the Python package: the browser is /usr/bin/chromium, nothing is downloaded)."""
from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time

import numpy as np
import pytest

from tests.conftest import import_or_skip, skip_unless_required

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not os.path.exists(CHROMIUM):
    skip_unless_required("browser", f"{CHROMIUM} is missing (apt-get install chromium)", module_level=True)
sync_api = import_or_skip("playwright.sync_api", "browser", "the playwright Python package is missing "
                                                            "(pip install playwright)")
import uvicorn  # noqa: E402

from vqvp_core.human_eval.analysis import analyze, format_table  # noqa: E402
from vqvp_core.human_eval.package import build_package, load_key  # noqa: E402
from vqvp_core.human_eval.server import create_app  # noqa: E402
from vqvp_core.human_eval.store import invite, judgments_path  # noqa: E402

N_PAIRS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "study"
    rng = np.random.default_rng(0)
    given = rng.integers(0, 256, (N_PAIRS, 4, 64, 64, 3), dtype=np.uint8)
    moving = np.stack([np.roll(given[:, -1], 4 * t, axis=2) for t in range(12)], axis=1)
    static = np.repeat(given[:, -1:], 12, axis=1)
    build_package(out, given, moving, static, names=("vqvp", "copy-last-frame"), seed=0,
                  min_judgments=1, min_view_seconds=0.3)
    return out


@pytest.fixture(scope="module")
def server(study):
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(study), host="127.0.0.1", port=port,
                                        log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def db_rows(study):
    conn = sqlite3.connect(judgments_path(study))
    try:
        return conn.execute("SELECT rater, pair_id, choice FROM judgments ORDER BY id").fetchall()
    finally:
        conn.close()


def media_state(page, side):
    return page.evaluate("""(side) => {
        const m = document.getElementById('video-' + side);
        if (!m) return null;
        return {tag: m.tagName, src: m.currentSrc || m.src, readyState: m.readyState,
                paused: m.paused, time: m.currentTime, width: m.videoWidth || m.naturalWidth,
                rendered: m.getBoundingClientRect().width};
    }""", side)


def test_rate_pairs_in_chromium(study, server, browser, tmp_path):
    expect = sync_api.expect
    context = browser.new_context(viewport={"width": 900, "height": 700})
    page = context.new_page()
    problems = []
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    # a video whose element moves on to the next pair before it has loaded is cancelled by the
    # browser (net::ERR_ABORTED, seen on a loaded machine): not a failure of the server
    page.on("requestfailed", lambda r: None if ("/videos/" in r.url and "ERR_ABORTED" in (r.failure or ""))
            else problems.append(f"{r.url} {r.failure}"))
    page.goto(server + "/")  # without an invitation: no pair, an explanation
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login")).to_contain_text("invitation")
    expect(page.locator("#study")).to_be_hidden()
    page.goto(server + "/#token=" + "x" * 43)  # a made-up token: refused by the server
    expect(page.locator("#message")).to_contain_text("not valid")
    expect(page.locator("#study")).to_be_hidden()
    problems.clear()  # the console's note of that 401 was expected

    [(alice, token)] = invite(judgments_path(study), 1)
    page.goto(server + "/#token=" + token)
    expect(page.locator("#study")).to_be_visible()
    expect(page.locator("#rater-name")).to_have_text(alice)
    assert page.evaluate("localStorage.getItem('vqvp_human_eval_token')") == token
    assert "token" not in page.url  # the fragment is removed from the address bar (and history)

    choices = ["left", "cant_tell", "right"]
    buttons = {"left": "#btn-left", "cant_tell": "#btn-cant", "right": "#btn-right"}
    shown = []
    for i, choice in enumerate(choices):
        expect(page.locator("#pair-number")).to_have_text(str(i + 1))
        expect(page.locator("#pair-total")).to_have_text(str(N_PAIRS))
        expect(page.locator(buttons[choice])).to_be_enabled(timeout=15_000)
        # both sides are WebM <video>s that really play, enlarged to 256 px
        for side in ("left", "right"):
            page.wait_for_function(
                "(s) => { const v = document.getElementById('video-' + s);"
                " return v && v.tagName === 'VIDEO' && v.readyState >= 3 && !v.paused && v.currentTime > 0; }",
                arg=side, timeout=10_000)
            st = media_state(page, side)
            assert st["src"].endswith(".webm") and st["width"] == 64 and st["rendered"] == 256, st
        shown.append(page.evaluate("document.getElementById('video-left').currentSrc"))
        if i == 0:
            page.screenshot(path=str(tmp_path / "pair.png"))
        page.click(buttons[choice])
        page.wait_for_function("(n) => document.getElementById('pair-number').textContent === String(n)",
                               arg=i + 2, timeout=10_000)

    rows = db_rows(study)
    assert [r[0] for r in rows] == [alice] * 3 and [r[2] for r in rows] == choices
    assert len({r[1] for r in rows}) == 3 and len(set(shown)) == 3

    # a reload remembers the rater and continues with the last pair; a key press answers it
    page.reload()
    expect(page.locator("#study")).to_be_visible()
    expect(page.locator("#rater-name")).to_have_text(alice)
    expect(page.locator("#pair-number")).to_have_text(str(N_PAIRS))
    expect(page.locator("#btn-left")).to_be_enabled(timeout=15_000)
    # the videos loop: both played to the end and are playing again from the start, in step
    page.wait_for_function(
        "() => ['left', 'right'].every((s) => { const v = document.getElementById('video-' + s);"
        " return v.played.length > 0 && v.played.end(v.played.length - 1) >= v.duration - 0.1"
        " && !v.paused && v.currentTime < v.duration / 2; })", timeout=10_000)
    times = page.evaluate("['left', 'right'].map((s) => document.getElementById('video-' + s).currentTime)")
    assert abs(times[0] - times[1]) < 0.25, times
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#done")).to_be_visible(timeout=10_000)
    expect(page.locator("#done")).to_contain_text("Thank you")
    expect(page.locator("#study")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "done.png"))

    rows = db_rows(study)
    assert len(rows) == N_PAIRS and rows[-1][2] == "left" and len({r[1] for r in rows}) == N_PAIRS
    assert problems == []

    # someone else's link opened in alice's browser: it asks first (declined here), and stays alice
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    [(_, other)] = invite(judgments_path(study), 1)
    page.evaluate("(t) => { location.hash = 'token=' + t; }", other)
    page.wait_for_function("() => location.hash === ''", timeout=5_000)
    assert asked and "another invitation" in asked[0]
    assert page.evaluate("localStorage.getItem('vqvp_human_eval_token')") == token

    for shot in ("pair.png", "done.png"):
        data = (tmp_path / shot).read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"

    df = analyze(study)
    assert df.loc["Total judgements", "count"] == N_PAIRS
    key = load_key(study)["pairs"]
    expected = {"vqvp": 0, "copy-last-frame": 0, "cant_tell": 0}
    for _, pid, choice in rows:
        expected[key[pid][choice] if choice != "cant_tell" else "cant_tell"] += 1
    assert df.loc["Prefer vqvp", "count"] == expected["vqvp"]
    assert df.loc["Prefer copy-last-frame", "count"] == expected["copy-last-frame"]
    assert df.loc["Indifferent", "count"] == expected["cant_tell"] == 1
    assert df.attrs["complete"]
    assert "Total judgements" in format_table(df)
    context.close()


def test_gif_fallback_when_webm_cannot_play(study, server, browser):
    """A browser that cannot play WebM gets the looping GIFs (simulated by overriding canPlayType)."""
    context = browser.new_context()
    [(gif_user, token)] = invite(judgments_path(study), 1)
    context.add_init_script("HTMLMediaElement.prototype.canPlayType = () => '';"
                            f"localStorage.setItem('vqvp_human_eval_token', '{token}');")
    page = context.new_page()
    page.goto(server + "/")
    sync_api.expect(page.locator("#btn-cant")).to_be_enabled(timeout=15_000)
    for side in ("left", "right"):
        st = media_state(page, side)
        assert st["tag"] == "IMG" and st["src"].endswith(".gif") and st["width"] == 64, st
    page.click("#btn-cant")
    sync_api.expect(page.locator("#pair-number")).to_have_text("2")
    assert (gif_user, "cant_tell") in [(r[0], r[2]) for r in db_rows(study)]
    context.close()


def test_another_sites_page_cannot_vote(study, server, browser):
    """A page of another origin (another port is another origin) posts as a rater's browser would:
    a `text/plain` POST (a "simple" request: no CORS preflight, but it cannot carry the token
    header, and the server refuses it as cross-site, 403, before looking for one) and a JSON fetch
    with the token (the browser's preflight finds no CORS, so it is never sent). Neither is stored."""
    [(_, token)] = invite(judgments_path(study), 1)
    before = len(db_rows(study))
    import http.server

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>evil</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        results = page.evaluate("""async ([url, token]) => {
            const out = [];
            const body = JSON.stringify({pair_id: "p0000", choice: "left"});
            try { const r = await fetch(url, {method: "POST", mode: "no-cors", body: body,
                                              headers: {"Content-Type": "text/plain"}});
                  out.push("simple:" + r.type); } catch (e) { out.push("simple:error"); }
            try { const r = await fetch(url, {method: "POST", body: body, headers: {
                      "Content-Type": "application/json", "Authorization": "Bearer " + token}});
                  out.push("json:" + r.status); } catch (e) { out.push("json:blocked"); }
            return out;
        }""", [server + "/api/judgments", token])
        context.close()
    finally:
        evil.shutdown()
    assert results == ["simple:opaque", "json:blocked"], results
    assert len(db_rows(study)) == before  # nothing stored
