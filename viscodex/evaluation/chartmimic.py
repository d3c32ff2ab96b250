"""ChartMimic-style chart-to-code (Direct Mimic): chart image -> matplotlib code.

Data: the Hub dataset `ChartMimic/ChartMimic`, archive `dataset-iclr.tar.gz` (the benchmark's v2
release; its README lists the folders direct_600/, direct_1800/, customized_600/, customized_1800/).
A Direct Mimic folder holds one `<name>.py` (the ground-truth matplotlib script) per chart, next to
its figure. The benchmark ships figures as PDF; viscodex uses `<name>.png` when present and otherwise
renders the ground-truth script in the sandbox (the figure the benchmark's PDF was made from), so
no PDF tool is needed. `--source FOLDER` reads such a folder (e.g. the older release's ori_500/).

Scoring: the generated code runs in the sandbox (`viscodex.sandbox.render_chart`, no network, time
and memory limits); code that fails or draws nothing scores 0. The reference image stays in this
process: the child gets only the generated code, and the comparison happens here. Otherwise the
headline `score` is
the visual similarity of the rendered PNG to the reference image (see `similarity.py`). This is
not the benchmark's own metric (its low-level scores compare the traced text, layout, chart type
and colours of both scripts, and its high-level score asks GPT-4o), so numbers are comparable
between viscodex runs, not with the paper's table.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tarfile
from pathlib import Path

from .. import sandbox
from .._util.cache import cache_root
from .similarity import image_similarity, to_rgb
from .tasks import SAMPLE_SOURCE, SAMPLES_DIR, EvalError, EvalSample, Task, extract_code, limited, register

log = logging.getLogger(__name__)

HUB_ID = "ChartMimic/ChartMimic"
HUB_FILE = "dataset-iclr.tar.gz"
DEFAULT_SUBSET = "direct_600"
SAMPLE_DIR = SAMPLES_DIR / "chartmimic"
DPI = 100  # render_chart saves figures at 100 dpi: figsize in inches = pixels / 100
TIMEOUT = 30.0
MEM_MB = 1536

PROMPT = ("You are an expert Python developer who writes matplotlib code from a picture of a chart. "
          "Write the Python code that reproduces this chart as closely as possible: chart type, data, "
          "colours, labels, legend and layout. Use figsize=({w:g}, {h:g}) so the figure has the size of the "
          "original. Reply with one complete Python script in a ```python code block.")


def extract_archive(archive: Path) -> Path:
    """Extract the benchmark archive once (safe extraction: no links, no paths outside the folder)."""
    key = hashlib.sha256(f"{archive.resolve()}|{archive.stat().st_size}".encode()).hexdigest()[:16]
    dest = cache_root() / "eval" / f"chartmimic-{key}"
    if (dest / ".complete").exists():
        return dest
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    log.info("extracting %s into %s (once)", archive.name, dest)
    with tarfile.open(archive) as tf:
        try:
            tf.extractall(tmp, filter="data")
        except TypeError:  # Python without extraction filters: allow plain files and folders inside tmp only
            members = [m for m in tf.getmembers() if (m.isfile() or m.isdir()) and not m.name.startswith(("/", "\\"))
                       and ".." not in Path(m.name).parts]
            tf.extractall(tmp, members=members)
    (tmp / ".complete").write_text("ok\n")
    if dest.exists():
        import shutil

        shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def find_subset(root: Path, subset: str) -> Path:
    for dirpath, dirnames, _ in os.walk(root):
        if subset in dirnames:
            return Path(dirpath) / subset
    found = sorted({p.parent.name for p in root.rglob("*.py")})
    raise EvalError(f"{root}: no folder {subset!r} in the ChartMimic data (folders with scripts: {', '.join(found) or 'none'})")


def reference_png(script: Path, *, timeout: float = TIMEOUT) -> bytes:
    """The reference figure of a ground-truth script: `<name>.png` if present, else the script rendered
    in the sandbox (cached as `<name>.viscodex.png`)."""
    for cand in (script.with_suffix(".png"), script.with_name(script.stem + ".viscodex.png")):
        if cand.is_file():
            return cand.read_bytes()
    r = sandbox.render_chart(script.read_text(encoding="utf-8", errors="replace"), timeout=timeout, mem_mb=MEM_MB)
    if r.png is None:
        raise EvalError(f"{script}: the ground-truth script does not render ({r.message})")
    try:
        script.with_name(script.stem + ".viscodex.png").write_bytes(r.png)
    except OSError:
        pass
    return r.png


def load_folder(folder: Path, limit: int | None) -> list[EvalSample]:
    scripts = sorted(p for p in folder.glob("*.py") if not p.name.startswith("."))
    if not scripts:
        raise EvalError(f"{folder}: no ground-truth .py scripts (expected <name>.py with <name>.png)")
    out = []
    for s in limited(scripts, limit):
        png = reference_png(s)
        img = to_rgb(png)
        prompt = PROMPT.format(w=round(img.width / DPI, 2), h=round(img.height / DPI, 2))
        out.append(EvalSample(id=s.stem, prompt=prompt, images=[img],
                              reference={"image": png, "code": s.read_text(encoding="utf-8", errors="replace")}))
    return out


class ChartMimic(Task):
    name = "chartmimic"
    title = "ChartMimic-style chart to matplotlib code"
    dataset_id = HUB_ID
    dataset_name = "ChartMimic (direct mimic)"
    split = DEFAULT_SUBSET
    metric = "visual_similarity"
    metric_name = "rendered-image similarity"
    max_new_tokens = 1536

    def __init__(self, subset: str = DEFAULT_SUBSET, timeout: float = TIMEOUT, mem_mb: int = MEM_MB):
        self.split, self.timeout, self.mem_mb = subset, timeout, mem_mb

    def load(self, source: str | None = None, limit: int | None = None) -> list[EvalSample]:
        if source == SAMPLE_SOURCE:
            return load_folder(SAMPLE_DIR, limit)
        if source:
            path = Path(source).expanduser()
            if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
                return load_folder(find_subset(extract_archive(path), self.split), limit)
            if not path.is_dir():
                raise EvalError(f"{path}: not a ChartMimic folder or archive")
            if not any(path.glob("*.py")):
                path = find_subset(path, self.split)
            return load_folder(path, limit)
        from huggingface_hub import hf_hub_download

        archive = Path(hf_hub_download(HUB_ID, HUB_FILE, repo_type="dataset"))
        return load_folder(find_subset(extract_archive(archive), self.split), limit)

    @contextlib.contextmanager
    def scorer(self):
        sandbox.require()  # refuse before the model loads when generated code cannot be sandboxed
        yield self.score

    def score(self, output: str, sample: EvalSample) -> dict:
        code = extract_code(output, "python")
        r = sandbox.render_chart(code, timeout=self.timeout, mem_mb=self.mem_mb)
        if r.png is None:
            return {"score": 0.0, "executed": 0.0, "timeout": float(r.run.kind == "timeout"), "message": r.message}
        sim = image_similarity(r.png, sample.reference["image"])
        return {"score": sim["visual"], "executed": 1.0, "timeout": 0.0,
                **{k: v for k, v in sim.items() if k != "visual"}}


register(ChartMimic, "chartmimic", "chart_mimic")
