"""The app's tasks (what each instruction asks for, which language, which preview) and how the
code to show is found in an answer, even a partial, streaming one."""
from __future__ import annotations

import re
from dataclasses import dataclass

@dataclass(frozen=True)
class Task:
    instruction: str
    language: str | None  # gr.Code language of the extracted code
    preview: str  # "html", "chart" or "auto" (decided from the code block)


TASKS = {
    "HTML page": Task("Write the HTML for this page. Reply with one complete HTML document in a ```html code block.",
                      "html", "html"),
    "Matplotlib chart": Task("Write matplotlib code that reproduces this chart. Reply with one complete Python "
                             "script in a ```python code block.", "python", "chart"),
    "Free text": Task("Describe this image, then write code that reproduces it.", None, "auto"),
}

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_LANG_ALIASES = {"py": "python", "python3": "python", "htm": "html", "xhtml": "html"}


def extract_code(text: str, prefer: str | None = None) -> tuple[str, str | None]:
    """The code block to show for a model answer: the first fenced block in the `prefer`red
    language, else the first fenced block, else the whole answer. Works on partial (streaming) text."""
    blocks = [(_LANG_ALIASES.get(m.group(1).lower(), m.group(1).lower()) or None, m.group(2))
              for m in _FENCE.finditer(text)]
    if prefer:
        for lang, code in blocks:
            if lang == prefer:
                return code.rstrip("\n"), lang
    if blocks:
        lang, code = blocks[0]
        return code.rstrip("\n"), lang or _guess_language(code)
    return text, _guess_language(text)


def _guess_language(code: str) -> str | None:
    head = code.lstrip()[:200].lower()
    if head.startswith(("<!doctype", "<html", "<head", "<body", "<div", "<svg")):
        return "html"
    if re.search(r"^\s*(import|from)\s+matplotlib|plt\.", code, re.M):
        return "python"
    return None


