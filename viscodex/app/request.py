"""One Run press: validate the upload, stream the answers, render the previews, and keep the status
line true at every step (the time counts rendering too). Every yield carries a value for every
output, previews included, so the session state a "Share this result" link saves is complete."""
from __future__ import annotations

import io
import re
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import gradio as gr

from . import compare, html_preview, tasks, uploads
from .tasks import TASKS

CHART_MAX_PIXELS = 4_000_000
TICK_S = 0.5  # status updates while previews render


def chart_markup(png: bytes | None, message: str) -> str:
    """The preview slot for chart code: the PNG (checked like an upload, then re-encoded by us) or
    the message saying why there is none."""
    if png is None:
        return html_preview.placeholder(message) if message else ""
    try:
        im = uploads.load_image(png, max_pixels=CHART_MAX_PIXELS).image
    except uploads.UploadError as e:
        return html_preview.placeholder(f"the chart image cannot be shown: {e}")
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return html_preview.png_img(buf.getvalue())


def lam_label(lam: float | None, lam_b: float | None) -> str:
    if lam is None:
        return ""
    return f" · λ {lam:g}" + (f" vs {lam_b:g}" if lam_b is not None else "")


def run(generate, n_columns: int, image, task, instruction, max_new_tokens, temperature, max_pixels,
        lam: float | None = None, lam_b: float | None = None):
    """Yield (codes..., previews..., status) for `n_columns` columns; `generate` is the GPU
    generator yielding (texts, note). Columns it does not fill (compare mode off) stay empty."""
    t = TASKS.get(task) or TASKS["Free text"]
    try:
        img = uploads.load_image(image, max_pixels=int(max_pixels))
    except uploads.UploadError as e:
        raise gr.Error(str(e), title="Unusable image") from None
    instruction = (instruction or "").strip() or t.instruction
    status = f"**Input:** {img.summary()}{lam_label(lam, lam_b)}"
    t0 = time.perf_counter()
    waiting = [html_preview.placeholder("the preview follows the answer")] * n_columns
    codes, texts, note = [""] * n_columns, (), ""
    yield (*codes, *waiting, status + " · starting…")  # clears the previous result
    for texts, note in generate(img.image, instruction, max_new_tokens, temperature, lam, lam_b):
        codes = _pad([tasks.extract_code(x, t.language)[0] for x in texts], n_columns)
        yield (*codes, *waiting, status + note + f" · generating… {time.perf_counter() - t0:.1f} s")
    gen_s = time.perf_counter() - t0
    with ThreadPoolExecutor(1) as ex:  # charts render in sandbox subprocesses: tick the status meanwhile
        job = ex.submit(compare.render_previews, texts, t)
        while True:
            try:  # HTML previews are ready at once: no extra update for them
                previews = job.result(timeout=TICK_S)
                break
            except FutureTimeout:
                yield (*codes, *waiting, status + note + f" · generated in {gen_s:.1f} s · rendering previews… "
                                                         f"{time.perf_counter() - t0:.1f} s")
    htmls = _pad([p.html or chart_markup(p.png, p.message) for p in previews], n_columns)
    total = time.perf_counter() - t0
    yield (*codes, *htmls, status + note + f" · done in {total:.1f} s (generation {gen_s:.1f} s, "
                                           f"previews {total - gen_s:.1f} s)")


def _pad(values: list[str], n: int) -> list[str]:
    return values + [""] * (n - len(values))


_RUNNING = re.compile(r" · (generating… [\d.]+ s|starting…|generated in [\d.]+ s · rendering previews… [\d.]+ s)$")


def stopped(status: str | None) -> str:
    """The status line after Stop: what was running is named as stopped."""
    status = status or ""
    m = _RUNNING.search(status)
    if not m:
        return status
    what = "while rendering previews" if "rendering" in m.group(1) else "during generation"
    return status[:m.start()] + f" · **stopped** {what}"
