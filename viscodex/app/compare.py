"""Previews of the compared answers: generated HTML as a sandboxed iframe, matplotlib code as a PNG
rendered in the sandbox. (The rest of the comparison lives beside it: tasks.py, sources.py,
variants.py, ui.py.)"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .tasks import Task, extract_code


@dataclass
class Preview:
    html: str | None  # sandboxed iframe markup
    png: bytes | None  # rendered chart
    message: str  # why there is no preview, or ""


def render_preview(text: str, task: Task, *, chart_timeout: float = 20.0, chart_mem_mb: int = 1024) -> Preview:
    """HTML -> sandboxed iframe; matplotlib code -> PNG rendered in the sandbox subprocess."""
    from . import html_preview
    from ..sandbox import render_chart

    code, lang = extract_code(text, task.language)
    kind = task.preview if task.preview != "auto" else {"html": "html", "python": "chart"}.get(lang or "", "")
    if not code.strip():
        return Preview(None, None, "no output to preview")
    if kind == "html":
        return Preview(html_preview.iframe(code), None, "")
    if kind == "chart":
        r = render_chart(code, timeout=chart_timeout, mem_mb=chart_mem_mb)
        return Preview(None, r.png, r.message)
    return Preview(None, None, "no HTML or matplotlib code to preview")


def render_previews(texts: tuple[str, ...] | list[str], task: Task, **kw) -> list[Preview]:
    """Previews for all variants at once (chart subprocesses run in parallel)."""
    with ThreadPoolExecutor(max_workers=max(1, len(texts))) as ex:
        return list(ex.map(lambda t: render_preview(t, task, **kw), texts))
