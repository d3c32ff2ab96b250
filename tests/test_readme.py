"""The README's examples run as written: the console session on the tiny trio (every line checked,
so it cannot drift) and the "Use it from Python" block."""
from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
DEEPSPEED_LOG = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\] \[[A-Z]+\] \[\w+\.py:\d+:\w+\]")


def fenced(lang: str, after: str) -> str:
    """The first ```lang block after the line `after`."""
    text = README.read_text()
    start = text.index(after)
    m = re.compile(rf"^```{lang}\n(.*?)^```$", re.S | re.M).search(text, start)
    assert m, f"no ```{lang} block after {after!r} in README.md"
    return m.group(1)


def session(block: str) -> list[tuple[str, list[str]]]:
    """[(command, expected output lines)] of a pasted console session."""
    out: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        else:
            out[-1][1].append(line)
    return out


def normalise(line: str) -> str:
    return re.sub(r"in \d+(\.\d+)?s$", "in <seconds>s", line.rstrip())


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line; a line `...` (any indentation) stands for any number of lines."""
    exp, act = [normalise(x) for x in expected], [normalise(x) for x in actual]

    def go(i: int, j: int) -> bool:
        if i == len(exp):
            return j == len(act)
        if exp[i].strip() == "...":
            return any(go(i + 1, k) for k in range(j, len(act) + 1))
        return j < len(act) and exp[i] == act[j] and go(i + 1, j + 1)

    return go(0, 0)


def test_matcher_elides_and_ignores_timings():
    assert matches(["a", "  ...", "d in 1.0s"], ["a", "b", "c", "d in 22.4s"])
    assert not matches(["a", "c"], ["a", "b", "c"])
    assert not matches(["a"], ["a", "b"])


def test_console_session_is_what_the_commands_print(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from viscodex.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    steps = session(fenced("console", "A session on the tiny trio"))
    assert [c.split()[:2] for c, _ in steps][:3] == [["viscodex", "tiny"], ["viscodex", "inspect"], ["viscodex", "merge"]]
    for command, expected in steps:
        args = shlex.split(command)[1:]
        r = CliRunner().invoke(app, [*args])
        # what the command prints, and its error line; not the progress bars and library chatter on stderr
        lines = r.stdout.splitlines() + [x for x in r.stderr.splitlines() if x.startswith("error: ")]
        # DeepSpeed, when installed, logs its accelerator choice to stdout once per process
        lines = [x.replace(str(tmp_path), ".") for x in lines if not DEEPSPEED_LOG.match(x)]
        assert matches(expected, lines), f"$ {command}\nREADME:\n" + "\n".join(expected) + "\nactual:\n" + "\n".join(lines)


def test_use_it_from_python_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = fenced("python", "### Use it from Python")
    assert "import viscodex" in code and "viscodex.merge(" in code and "viscodex.train(" in code
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    printed = [x for x in buf.getvalue().splitlines() if not x.startswith("{")]  # not the Trainer's log dicts
    assert printed == ["merged 1 shard(s)", "2 optimizer steps", "your-name/tiny-viscodex True"]
    assert (tmp_path / "merged-sft" / "viscodex_recipe.yaml").is_file()


def test_import_viscodex_is_light_and_merge_is_the_function():
    """`import viscodex` loads no torch, and viscodex.merge is the callable front door (no
    subpackage named merge shadows it)."""
    import subprocess
    import sys

    code = ("import sys, viscodex; assert 'torch' not in sys.modules, 'torch loaded'; "
            "import viscodex.engine.merge; assert callable(viscodex.merge) and viscodex.merge.__module__ == 'viscodex.api'; "
            "assert set(viscodex.__all__) <= set(dir(viscodex)); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=README.parent)
    assert r.stdout.strip() == "ok", r.stderr
    import viscodex

    with pytest.raises(AttributeError, match="module 'viscodex' has no attribute 'nope'"):
        viscodex.nope  # noqa: B018


def test_front_door_names_a_wrong_option():
    import viscodex

    with pytest.raises(viscodex.RecipeError, match=r"viscodex.train\(\): unknown option epoch= \(nor is there a "
                                                   r"--epoch flag\); valid: .*epochs"):
        viscodex.train("m", "d", "o", epoch=2)
    with pytest.raises(viscodex.RecipeError, match=r"viscodex.merge\(\): unknown option shards= "):
        viscodex.merge({"vlm": "a/b", "coder": "c/d"}, "o", shards="1GB")
