"""The app in a real browser (issue 6): headless Debian chromium driven by Playwright.

Set-up: tests/setup_browser.sh (pip playwright + apt chromium; never `playwright install`).
Skips when chromium or playwright is missing, except in CI (CI=true), where that is a failure.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_app import launched_app

from viscodex.app.assets import ASSETS_DIR
from viscodex.app.tasks import TASKS

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = os.environ.get("VISCODEX_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
TIMEOUT_MS = 90_000


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (run tests/setup_browser.sh)"
    if not Path(CHROMIUM).exists():
        return f"chromium not found at {CHROMIUM} (run tests/setup_browser.sh)"
    return None


@pytest.fixture(scope="module")
def browser():
    why = _missing()
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests cannot run in CI: {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory, browser):
    with launched_app(tmp_path_factory, "browser") as (mod, url):
        yield mod, url


@pytest.fixture
def page(browser, app):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(app[1])
    yield pg
    ctx.close()


def upload_and_run(page, path: Path) -> None:
    page.locator("input[type=file]").first.set_input_files(str(path))
    page.locator("img[src*='gradio_api/file']").first.wait_for()  # the uploaded image is shown
    page.get_by_role("button", name="Run", exact=True).click()


def preview_iframe(page, name: str):
    return page.locator(f"#preview-{name} iframe")


def test_upload_run_fills_three_columns_with_sandboxed_previews(page, app):
    names = app[0].names
    assert names == ["vlm", "swapped", "merged"]
    upload_and_run(page, ASSETS_DIR / "landing_page.png")
    for name in names:
        preview_iframe(page, name).wait_for(state="attached")
    for name in names:
        code = page.locator(f"#code-{name} .cm-content").inner_text()
        assert code.strip(), f"column {name} has no code"
        frame = preview_iframe(page, name)
        assert frame.get_attribute("sandbox") == "allow-scripts"
        assert frame.get_attribute("srcdoc")
    assert "**" not in page.locator("#viscodex-status").inner_text()  # rendered markdown
    assert "Input: PNG 640x420 RGB" in page.locator("#viscodex-status").inner_text()


PAYLOAD = """```html
<!DOCTYPE html><html><body><h1>payload</h1>
<img src="x" onerror="document.body.setAttribute('data-img-ran','1');try{parent.document.body.setAttribute('data-pwned','img')}catch(e){};try{top.pwned='img'}catch(e){}">
<script>
document.body.setAttribute('data-script-ran', '1');
try { parent.document.body.setAttribute('data-pwned', 'script') } catch (e) {}
try { window.top.pwned = 'script' } catch (e) {}
try { parent.localStorage.setItem('pwned', '1') } catch (e) {}
try { localStorage.setItem('pwned', '1') } catch (e) {}
</script></body></html>
```"""


def test_generated_script_payload_does_not_run_in_the_app_origin(page, app, monkeypatch):
    """The model's output is replaced by an XSS payload; it goes through the real UI path (gr.Code,
    extract_code, the iframe builder, gr.HTML). It runs inside the sandboxed frame (so the test sees
    scripts do run there) but cannot reach the app page."""
    mod = app[0]
    unfenced = PAYLOAD.removeprefix("```html\n").removesuffix("\n```")

    def fake_generate(image, instruction, max_new_tokens, temperature, lam, lam_b):
        yield ("", "", ""), ""
        yield (PAYLOAD, unfenced, "Sure! " + unfenced), ""

    monkeypatch.setattr(mod, "generate", fake_generate)
    page.evaluate("() => { window.__appOrigin = true; }")
    upload_and_run(page, ASSETS_DIR / "bar_chart.png")
    for name in mod.names:
        preview_iframe(page, name).wait_for(state="attached")
        frame = page.frame_locator(f"#preview-{name} iframe")
        frame.locator("body[data-script-ran='1']").wait_for(state="attached")  # scripts ran, inside the frame
        frame.locator("body[data-img-ran='1']").wait_for(state="attached")
    page.wait_for_timeout(500)
    state = page.evaluate("""() => ({
        pwnedAttr: document.body.getAttribute('data-pwned'),
        pwnedVar: window.pwned === undefined ? null : String(window.pwned),
        storage: window.localStorage.getItem('pwned'),
        marker: window.__appOrigin === true,
        ranHere: document.querySelector('[data-script-ran], [data-img-ran]') !== null,
    })""")
    assert state == {"pwnedAttr": None, "pwnedVar": None, "storage": None, "marker": True, "ranHere": False}
    # the code column shows the payload as text
    assert "onerror" in page.locator("#code-vlm .cm-content").inner_text()
    assert page.locator("#code-vlm img[src='x']").count() == 0


CHART_ANSWER = """Here is the script:
```python
import matplotlib.pyplot as plt
plt.bar(["a", "b", "c"], [3, 1, 2], color="green")
plt.title("reproduced")
plt.show()
```"""


def test_chart_code_is_rendered_next_to_the_input(page, app, monkeypatch):
    """Chart code from the model runs in the sandbox; the PNG shows in each column's chart image."""
    mod = app[0]

    def fake_generate(image, instruction, max_new_tokens, temperature, lam, lam_b):
        yield (CHART_ANSWER, CHART_ANSWER.replace("green", "red"), "no code here"), ""

    monkeypatch.setattr(mod, "generate", fake_generate)
    page.get_by_label("Task").click()
    page.get_by_role("option", name="Matplotlib chart").click()
    from playwright.sync_api import expect

    expect(page.get_by_label("Instruction")).to_have_value(TASKS["Matplotlib chart"].instruction)
    upload_and_run(page, ASSETS_DIR / "bar_chart.png")
    for name in mod.names[:2]:
        page.locator(f"#preview-{name} img[src^='data:image/png;base64,']").wait_for()
        assert "import matplotlib.pyplot as plt" in page.locator(f"#code-{name} .cm-content").inner_text()
    last = page.locator(f"#preview-{mod.names[2]}")
    last.get_by_text("the code raised SyntaxError").wait_for()
    assert last.locator("img").count() == 0


def test_example_click_runs_and_is_cached_lazily(page, app):
    mod = app[0]
    cache = Path(os.environ.get("GRADIO_EXAMPLES_CACHE", ""))
    before = {p for p in cache.rglob("*") if p.is_file()} if cache.is_dir() else set()
    page.locator("table img[src*='landing_page']").first.click()  # the landing page example, task "HTML page"
    for name in mod.names:
        preview_iframe(page, name).wait_for(state="attached")
        assert page.locator(f"#code-{name} .cm-content").inner_text().strip()
    after = {p for p in cache.rglob("*") if p.is_file()}
    assert after - before, "the example's outputs were not cached"


def set_slider(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def wait_done(page) -> None:
    page.locator("#viscodex-status", has_text="done in").wait_for()


def shown_code(page, name: str) -> str:
    """The code a column shows: its editor's text, or "" when the box is empty (no editor)."""
    box = page.locator(f"#code-{name}")
    box.wait_for()
    editor = box.locator(".cm-content")
    return editor.inner_text() if editor.count() else ""


def test_shared_link_restores_inputs_code_previews_and_lambda(browser, page, app):
    """Issue 19: "Share this result" after a run; the link opened in a fresh browser context shows
    the same inputs, code, all three previews and the λ used."""
    names = app[0].names
    set_slider(page, "viscodex-lambda", 0.3)
    upload_and_run(page, ASSETS_DIR / "landing_page.png")
    wait_done(page)
    assert "λ 0.3" in page.locator("#viscodex-status").inner_text()
    # an answer with no code shows Gradio's empty code box (no editor): the tiny untrained trio may
    # answer nothing at all
    codes = {n: shown_code(page, n) for n in names}
    assert any(codes.values())
    srcdocs = {n: preview_iframe(page, n).get_attribute("srcdoc") if codes[n] else None for n in names}
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Share this result").click()
    link = None
    for _ in range(100):  # the button fetches the link, then writes it to the clipboard
        link = page.evaluate("() => navigator.clipboard.readText()")
        if "deep_link=" in (link or ""):
            break
        page.wait_for_timeout(100)
    assert link and "deep_link=" in link
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    try:
        fresh = ctx.new_page()
        fresh.set_default_timeout(TIMEOUT_MS)
        fresh.goto(link)
        for n in sorted(names, key=lambda n: not codes[n]):  # the columns with code first: loaded
            if codes[n]:
                preview_iframe(fresh, n).wait_for(state="attached")
                assert preview_iframe(fresh, n).get_attribute("srcdoc") == srcdocs[n]
                assert fresh.locator(f"#code-{n} .cm-content").inner_text() == codes[n]
            else:  # as the original page showed it: an empty code box and no preview
                assert shown_code(fresh, n) == "" and preview_iframe(fresh, n).count() == 0
                assert preview_iframe(page, n).count() == 0
        assert fresh.locator("#viscodex-lambda input[type=number]").input_value() == "0.3"
        assert "λ 0.3" in fresh.locator("#viscodex-status").inner_text()
        assert fresh.locator("img[src*='gradio_api/file']").count() >= 1  # the input image
    finally:
        ctx.close()


def test_example_link_preselects_the_example(browser, app):
    ctx = browser.new_context()
    try:
        pg = ctx.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(app[1] + "?example=bar_chart")
        from playwright.sync_api import expect

        expect(pg.get_by_label("Instruction")).to_have_value(TASKS["Matplotlib chart"].instruction)
        pg.locator("img[src*='bar_chart']").first.wait_for()
    finally:
        ctx.close()


def test_untrained_trio_is_labelled_and_compare_lambda_adds_a_column(page, app):
    assert "answers are noise" in page.locator("#viscodex-untrained").inner_text()
    assert not page.locator("#col-merged_b").is_visible()
    page.locator("#viscodex-compare input[type=checkbox]").check()
    page.locator("#col-merged_b").wait_for(state="visible")
    set_slider(page, "viscodex-lambda", 0.2)
    set_slider(page, "viscodex-lambda-b", 0.9)
    upload_and_run(page, ASSETS_DIR / "landing_page.png")
    wait_done(page)
    assert "λ 0.2 vs 0.9" in page.locator("#viscodex-status").inner_text()
    for key in ("merged", "merged_b"):
        preview_iframe(page, key).wait_for(state="attached")
    assert page.locator("#code-merged_b .cm-content").inner_text().strip()
