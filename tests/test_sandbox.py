"""Sandbox for generated code (issue 6): charts render; loops, huge allocations, network and
process creation are stopped with a message; nothing leaks in or out. The attacks of issue 13
(a hostile program going around these messages) are in test_sandbox_attacks.py."""
from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
from PIL import Image

from viscodex.sandbox import render_chart, run_python

pytestmark = pytest.mark.usefixtures("requires_sandbox")

CHART = """
import matplotlib.pyplot as plt
import numpy as np
x = np.arange(5)
plt.bar(x, [3, 1, 4, 1, 5], color="red")
plt.title("t")
plt.show()
"""
ISOLATIONS = ["auto", "hook"]


def test_chart_renders_a_png():
    r = render_chart(CHART, timeout=60)
    assert r.message == "" and r.png is not None
    im = Image.open(io.BytesIO(r.png)).convert("RGB")
    assert im.size == (640, 480)  # matplotlib's default 6.4x4.8 in at dpi 100
    a = np.asarray(im).astype(int)
    reds = int(((a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] < 60)).sum())
    assert reds > 1000  # the bars are drawn


def test_chart_saved_and_closed_by_the_script_is_still_found():
    code = CHART.replace("plt.show()", "plt.savefig('out.png')\nplt.close('all')")
    r = render_chart(code, timeout=60)
    assert r.png is not None and r.png.startswith(b"\x89PNG")


def test_chart_messages_for_no_figure_and_errors():
    assert render_chart("x = 1", timeout=60).message == "the code ran but drew no matplotlib figure"
    r = render_chart("import matplotlib.pyplot as plt\nplt.plot([1,2],[3])", timeout=60)
    assert r.png is None and r.message.startswith("the code raised ValueError")
    assert render_chart("   ").message == "there is no code to run"


def test_infinite_loop_is_stopped():
    t = time.monotonic()
    r = run_python("while True:\n    pass\n", timeout=2)
    assert time.monotonic() - t < 10
    assert r.kind == "timeout" and r.message == "the code ran longer than 2 s and was stopped"


def test_infinite_loop_in_chart_code_is_stopped():
    r = render_chart("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nwhile True: pass", timeout=4)
    assert r.png is None and "ran longer than 4 s" in r.message


@pytest.mark.parametrize("code", ["x = bytearray(10 * 1024**3)", "import numpy as np\na = np.ones((10 * 1024**3) // 8)"])
def test_ten_gigabyte_allocation_is_stopped(code):
    r = run_python(code, timeout=20, mem_mb=512)
    assert r.kind == "memory"
    assert r.message == "the code tried to use more than 512 MB of memory and was stopped"


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("code", [
    "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/', timeout=2)",
    "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=2)",
    "import socket\ns = socket.socket()",
])
def test_network_calls_are_stopped(isolation, code):
    r = run_python(code, timeout=20, network_isolation=isolation)
    assert r.kind == "blocked", r.stderr
    assert r.message.startswith("the code was stopped:") and "network access is blocked" in r.message


@pytest.mark.parametrize("code", ["import os\nos.system('true')", "import subprocess\nsubprocess.run(['true'])",
                                  "import os\nos.fork()"])
def test_starting_processes_is_stopped(code):
    r = run_python(code, timeout=20)
    assert r.kind == "blocked" and "starting processes is blocked" in r.message


def test_environment_does_not_leak(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:1")
    r = run_python("import os, json\nprint(json.dumps(dict(os.environ)))", timeout=20)
    assert r.ok
    assert "hf_secret_value" not in r.stdout and "HTTPS_PROXY" not in r.stdout and '"MPLBACKEND": "Agg"' in r.stdout


def test_working_dir_is_fresh_and_removed():
    r = run_python("import os\nprint(os.getcwd())\nprint(sorted(os.listdir('.')))\nopen('f.txt', 'w').write('x')",
                   outputs=["f.txt"], timeout=20)
    cwd, listing = r.stdout.splitlines()
    assert listing == "[]" and r.outputs == {"f.txt": b"x"}
    assert "viscodex-sandbox-" in cwd and not os.path.exists(cwd)


def test_outputs_must_be_regular_files_within_limits():
    r = run_python("import os\nos.symlink('/etc/hostname', 'chart.png')", outputs=["chart.png"], timeout=20)
    assert r.kind == "missing_output" and "outputs must be regular files" in r.message and r.outputs == {}
    r = run_python("open('a.bin', 'wb').write(b'x' * 5000)", outputs=["a.bin"], timeout=20, max_output_bytes=1000)
    assert r.kind == "missing_output" and "the limit is" in r.message
    r = run_python("pass", outputs=["nothing.png"], timeout=20)
    assert r.message == "the code ran but produced no nothing.png"


def test_errors_and_exit_codes_are_reported():
    r = run_python("raise KeyError('k')", timeout=20)
    assert r.kind == "error" and r.message.startswith("the code raised KeyError") and "KeyError: 'k'" in r.message
    r = run_python("import sys\nsys.exit(3)", timeout=20)
    assert r.kind == "exit" and r.returncode == 3 and r.message == "the code exited with status 3"
    r = run_python("import sys\nprint('hi')\nsys.exit(0)", timeout=20)
    assert r.ok and r.stdout == "hi\n"


def test_input_files_cannot_escape():
    with pytest.raises(ValueError, match="escapes the working directory"):
        run_python("pass", files={"../x.txt": b"x"})
    r = run_python("print(open('data/in.txt').read())", files={"data/in.txt": b"hello"}, timeout=20)
    assert r.stdout == "hello\n"
