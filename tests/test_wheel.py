"""A wheel built from the repo works outside the checkout: `viscodex space --dry-run` finds the Space
template (app.py, requirements.txt, space.yaml) and `viscodex app` serves the UI, both from package
data. Built and installed (`pip install --target`) into a temporary folder; slow (a build, an app)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port
from hub_server import unique

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """site dir holding viscodex installed from a freshly built wheel (dependencies: this env's)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools' in-tree build/ would otherwise outlive deleted modules
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "tests", "benchmarks"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    wheel, = (tmp / "dist").glob("viscodex-*.whl")
    site = tmp / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                          capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr
    return site


def env_for(site: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PYTHONPATH": str(site), **extra}


def test_the_wheel_holds_the_package_data(installed):
    pkg = installed / "viscodex"
    for f in ("py.typed", "app/ui.py", "hub/space_config/app.py", "hub/space_config/requirements.txt",
              "hub/space_config/space.yaml", "hub/space_config/README.md.j2", "hub/templates/model_card.md.j2",
              "recipes/viscodex-8b.yaml", "app/assets/bar_chart.png"):
        assert (pkg / f).is_file(), f
    assert (installed / "bin" / "viscodex").is_file()


def test_space_dry_run_outside_the_checkout(installed, hub, hub_trio, tmp_path):
    repo = f"{hub.user}/{unique('wheel-space')}"
    r = subprocess.run([sys.executable, "-m", "viscodex", "space", "--model", hub_trio["vlm"], "--base-vlm",
                        hub_trio["vlm"], "--repo", repo, "--dry-run", "--out", str(tmp_path / "space")],
                       capture_output=True, text=True, cwd=tmp_path, env=env_for(installed), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "nothing was uploaded" in r.stdout and f"would publish Space {repo}" in r.stdout
    space = tmp_path / "space"
    assert (space / "app.py").read_bytes() == (ROOT / "app.py").read_bytes()
    assert (space / "requirements.txt").read_bytes() == (ROOT / "requirements.txt").read_bytes()
    assert (space / "viscodex" / "app" / "ui.py").is_file()


def test_app_serves_outside_the_checkout(installed, tmp_path):
    port = free_port()
    env = env_for(installed, HF_HUB_OFFLINE="1", VISCODEX_CACHE=str(tmp_path / "cache"),
                  GRADIO_ANALYTICS_ENABLED="False", VISCODEX_CACHE_EXAMPLES="none")
    probe = subprocess.run([sys.executable, "-c", "import viscodex; print(viscodex.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env=env)
    assert probe.stdout.strip() == str(installed / "viscodex" / "__init__.py")
    proc = subprocess.Popen([sys.executable, "-m", "viscodex", "app", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.monotonic() + 240, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(1)
        assert page is not None, f"the app did not answer (exit {proc.poll()}):\n" + (
            proc.stdout.read() if proc.poll() is not None else "")
        assert "VisCodex" in page
    finally:
        proc.terminate()
        proc.wait(timeout=30)
