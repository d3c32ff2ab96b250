"""Design2Code's HTML handling, on strings, with BeautifulSoup's html.parser builder as the
benchmark uses it (NoviScl/Design2Code at 4c213a3):

- `preprocess` (visual_score.pre_process, applied to the generated page only): cut repeated text
  (data_utils/dedup_post_gen.check_repetitive_content), wrap an answer without an <html> tag
  (make_html), parse and drop every element whose exact HTML was already seen 50 times
  (truncate_repeated_html_elements), re-serialise;
- `recolor` (ocr_free_utils.process_html): every element's background made transparent, every text
  element given its own colour from the pool;
- `texts_with_color` (extract_text_with_color + flatten_tree): the body's text nodes with the colour
  their nearest element sets.
Each function re-parses its input string, as the benchmark re-reads each file it wrote.
"""
from __future__ import annotations

import difflib
import re

TEXT_TAGS = ["p", "h1", "h2", "h3", "h4", "h5", "h6", "div", "span", "a", "b", "li", "table", "td", "th", "button",
             "footer", "header", "figcaption"]
MAX_REPEATS = 50  # truncate_repeated_html_elements' max_count
CHUNK, REPEATS, CHUNK_SIMILAR = 100, 5, 0.8  # check_repetitive_content's defaults
_TAG = re.compile(r"<.*?>")  # the benchmark's tag stripper ('.' stops at newlines: multi-line tags stay)


def soup(doc: str):
    from bs4 import BeautifulSoup

    return BeautifulSoup(doc, "html.parser")


# ---------------------------------------------------------------- pre-processing (generated page)
def drop_repetition(doc: str) -> str:
    """check_repetitive_content: split the tag-free text into 100-character chunks; a chunk at least
    0.8 similar (difflib) to one seen before joins its group; once a group has 5 members the page is
    cut where the group's first chunk starts (mapped back into the HTML). Kept as the benchmark
    computes it, including its comparison of an HTML offset with the text's length."""
    clean = _TAG.sub("", doc)
    where, k = [], 0
    for ch in clean:  # map_positions: each text character's offset in the HTML
        while doc[k] != ch:
            k += 1
        where.append(k)
        k += 1
    start = len(clean)
    groups: dict[str, list[int]] = {}
    for i in range(0, len(clean), CHUNK):
        chunk = clean[i:i + CHUNK]
        sm = difflib.SequenceMatcher(None, chunk)
        for seen, members in groups.items():
            sm.set_seq2(seen)  # the bounds first: exact, and most pairs stop there
            if sm.real_quick_ratio() >= CHUNK_SIMILAR and sm.quick_ratio() >= CHUNK_SIMILAR \
                    and sm.ratio() >= CHUNK_SIMILAR:
                members.append(i // CHUNK)
                if len(members) >= REPEATS:
                    at = min(start, members[0] * CHUNK)
                    start = min(start, where[at] if at < len(where) else len(doc))
                break
        else:
            groups[chunk] = [i // CHUNK]
    return doc[:start] if start != len(clean) else doc


def as_page(doc: str) -> str:
    """make_html: an answer without an <html> tag becomes one paragraph of a page."""
    return doc if re.search(r"<html[^>]*>", doc, re.I) else f"<html><body><p>{doc}</p></body></html>"


def truncate_repeats(doc: str, limit: int = MAX_REPEATS) -> str:
    """truncate_repeated_html_elements: in document order, an element whose serialisation was seen
    `limit` times already is removed (with its subtree)."""
    tree = soup(doc)
    seen: dict[str, int] = {}
    for el in tree.find_all(True):
        if el.decomposed:  # inside a removed element (the benchmark's str() fails on it and skips it)
            continue
        key = str(el)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > limit:
            el.decompose()
    return str(tree)


def preprocess(doc: str) -> str:
    return truncate_repeats(as_page(drop_repetition(doc)))


# ---------------------------------------------------------------- re-colouring (both pages)
def color_pool(offset: int) -> list[str]:
    """ColorPool: 16 levels per channel from 10 by 16, shifted by offset (mod 256); popped from the end."""
    levels = range(10, 251, 16)
    return ["%02X%02X%02X" % ((r + offset) % 256, (g + offset) % 256, (b + offset) % 256)
            for r in levels for g in levels for b in levels]


def _set_style(el, prop: str, value) -> None:
    """update_style: drop the declarations starting with `prop`, append `prop: value !important`."""
    kept = [s for s in el.attrs.get("style", "").split(";") if not s.strip().startswith(prop) and s.strip()]
    kept.append(f"{prop}: {value} !important")
    el["style"] = "; ".join(kept).strip()


def recolor(doc: str, offset: int) -> str:
    tree = soup(doc)
    for el in tree.find_all(True):
        _set_style(el, "background-color", "rgba(255, 255, 255, 0.0)")
    pool = color_pool(offset)
    for el in tree.find_all(TEXT_TAGS):
        if not pool:  # ColorPool.pop_color raises NotImplementedError past 4096 text elements
            raise NotImplementedError("Design2Code's colour pool is exhausted (more than 4096 text elements)")
        _set_style(el, "color", f"#{pool.pop()}")
        _set_style(el, "opacity", 1.0)
    return str(tree)


def _css_color(el) -> str | None:
    """get_color: the last declaration mentioning `color` (not background-color), as #hex. The
    benchmark crashes on a declaration without a value; here that is no colour."""
    from PIL import ImageColor

    style = el.attrs.get("style")
    if not isinstance(style, str):
        return None
    decl = [s for s in style.split(";") if "color" in s and "background-color" not in s]
    if not decl:
        return None
    parts = decl[-1].split(":")
    value = parts[1].strip().replace(" !important", "") if len(parts) > 1 else ""
    if not value:
        return None
    if value[0] == "#":
        return value
    try:
        rgb = tuple(map(int, value[4:-1].split(","))) if value.startswith("rgb") else ImageColor.getrgb(value)
        return "#{:02x}{:02x}{:02x}".format(*rgb[:3])
    except (ValueError, IndexError):
        return None


def texts_with_color(doc: str) -> list[tuple[str, str]]:
    """Every non-empty stripped text node under the first <body>, comments excepted, with the colour
    of its nearest element that sets one (#000000 by default)."""
    from bs4 import Comment, NavigableString, Tag

    body = soup(doc).body
    out: list[tuple[str, str]] = []

    def walk(el, color: str) -> None:
        color = _css_color(el) or color
        for child in el.children:
            if isinstance(child, Comment):
                continue
            if isinstance(child, NavigableString):
                if child.strip():
                    out.append((child.strip(), color))
            elif isinstance(child, Tag):
                walk(child, color)

    if body is not None:
        walk(body, "#000000")
    return out


__all__ = ["preprocess", "drop_repetition", "as_page", "truncate_repeats", "recolor", "texts_with_color",
           "color_pool", "TEXT_TAGS"]
