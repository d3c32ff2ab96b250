"""Preview model-generated HTML without letting it touch the app.

gr.HTML inserts its value into the app's own page (innerHTML, not sanitised), so generated HTML
must never go there directly. It is shown only inside `<iframe sandbox="allow-scripts" srcdoc=...>`:
scripts may run (pages often need them) but in an opaque origin, with no access to the app's DOM,
cookies or storage, no forms, popups or top-level navigation. Never add allow-same-origin: together
with allow-scripts it lets the frame remove its own sandbox.
"""
from __future__ import annotations

import html

SANDBOX = "allow-scripts"
# Generated pages may not fetch anything either: a CSP inside the document blocks network loads
# (images/styles inline as data: still work).
CSP = ("default-src 'none'; img-src data: blob:; style-src 'unsafe-inline' data:; font-src data:; "
       "script-src 'unsafe-inline'; media-src data: blob:")
MAX_CHARS = 400_000


def _with_csp(doc: str) -> str:
    """Put the CSP meta first (after a doctype, which must stay first to avoid quirks mode)."""
    meta = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
    head = doc.lstrip()
    if head[:9].lower() == "<!doctype" and ">" in head:
        end = head.index(">") + 1
        return head[:end] + meta + head[end:]
    return meta + doc


def iframe(doc: str, *, title: str = "HTML preview", height: int = 420) -> str:
    """An `<iframe sandbox="allow-scripts" srcdoc=...>` element showing `doc`. The document is
    attribute-escaped, so nothing in it can end the attribute or the element."""
    if len(doc) > MAX_CHARS:
        doc = doc[:MAX_CHARS]
    src = html.escape(_with_csp(doc), quote=True)
    return (f'<iframe sandbox="{SANDBOX}" referrerpolicy="no-referrer" title="{html.escape(title, quote=True)}" '
            f'srcdoc="{src}" style="width:100%;height:{int(height)}px;border:1px solid #ccc;border-radius:6px;'
            f'background:#fff"></iframe>')


def placeholder(text: str) -> str:
    """A plain message in place of a preview (escaped: may quote model output)."""
    return f'<div style="padding:1em;color:#666;overflow-wrap:anywhere;white-space:pre-wrap">{html.escape(text)}</div>'


def png_img(png: bytes, *, alt: str = "rendered chart") -> str:
    """An `<img>` showing PNG bytes as a data: URI (base64 cannot end the attribute). Pass only
    bytes this app encoded itself, e.g. a sandbox PNG re-encoded after checking it as an upload."""
    import base64

    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG")
    data = base64.b64encode(png).decode("ascii")
    return (f'<img alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{data}" '
            f'style="max-width:100%;height:auto;border:1px solid #ccc;border-radius:6px;background:#fff">')
