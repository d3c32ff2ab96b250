"""ChartMimic (Direct Mimic): chart image -> matplotlib code, scored by the benchmark's low-level metrics.

Data: the Hub dataset `ChartMimic/ChartMimic`. By default the subset the VisCodex paper's table most
likely used: `ori_500` of the first release (archive `dataset-old.tar.gz`); `ChartMimic(subset=
"direct_600")` reads the ICLR release (`dataset-iclr.tar.gz`). A Direct Mimic folder holds one
`<name>.py` (the ground-truth script) per chart, next to its figure; viscodex shows the model
`<name>.png` when present and otherwise renders the ground-truth script in the sandbox (no PDF
tool needed). `--source` takes the archive, the extracted folder or one subset folder; the
result's `split` is the subset folder actually read.

Prompt: the benchmark's DirectAgent instruction, with figsize = the figure's size in inches.

Scoring (chart_programs.py, chart_metrics.py): the answer becomes the script the benchmark builds
from it; that script and the ground truth run in the sandbox under a tracer of the calls the
benchmark's evaluator prefixes wrap; text, layout, chart-type and colour F1 are computed from the
two traces as its evaluators compute them; `score` is their mean (the paper's "Low-Level" score).
The high-level score (the benchmark's GPT-4o judge) is added as `high_level` when a judge is given
(judge.py: any OpenAI-compatible endpoint).

The traces depend on the drawing libraries' versions (what a call draws, its colours); the number
is the benchmark's own (`official`, card metric `low-level`) only when the sandbox imported the
versions the benchmark pinned (PINNED); otherwise the card calls it viscodex's own
(`viscodex/chartmimic/low-level`). docs/eval.md lists what else differs and which of it can change a
score.
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
from . import chart_metrics, chart_programs
from .judge import ChartJudge
from .similarity import to_rgb
from .tasks import SAMPLE_SOURCE, SAMPLES_DIR, EvalError, EvalSample, Task, limited, register, set_on

log = logging.getLogger(__name__)

HUB_ID = "ChartMimic/ChartMimic"
HUB_FILE = "dataset-iclr.tar.gz"  # the ICLR release: direct_600, direct_1800, customized_*
OLD_HUB_FILE = "dataset-old.tar.gz"  # the first release: ori_500 (Direct Mimic), edit_500
DEFAULT_SUBSET = "ori_500"
SAMPLE_DIR = SAMPLES_DIR / "chartmimic"
DPI = 100  # render_chart saves figures at 100 dpi: figsize in inches = pixels / 100
TIMEOUT = 30.0
MEM_MB = 1536
# the drawing libraries at the versions the benchmark's environment.yaml pins (numpy, pandas and
# scipy only prepare data; their versions do not change what is drawn)
PINNED = {"matplotlib": "3.8.4", "networkx": "3.2.1", "squarify": "0.4.3", "matplotlib-venn": "0.11.10",
          "seaborn": "0.13.2"}

# the benchmark's DirectAgent instruction (prompts/DirectAgent/gpt-4-vision-preview.json)
PROMPT = ("You are an expert Python developer who specializes in writing matplotlib code based on a given picture. "
          "I found a very nice picture in a STEM paper, but there is no corresponding source code available. I need "
          "your help to generate the Python code that can reproduce the picture based on the picture I provide.\n"
          "Note that it is necessary to use figsize=({w:g}, {h:g}) to set the image size to match the original size.\n"
          "Now, please give me the matplotlib code that reproduces the picture below.")


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


def installed_libraries() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in PINNED:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def archive_for(subset: str) -> str:
    return OLD_HUB_FILE if subset in ("ori_500", "edit_500") else HUB_FILE


class ChartMimic(Task):
    name = "chartmimic"
    title = "ChartMimic direct mimic (chart image -> matplotlib code)"
    dataset_id = HUB_ID
    dataset_name = "ChartMimic (direct mimic)"
    split = DEFAULT_SUBSET
    metric = "low-level"
    metric_name = "Low-Level (mean of Text, Layout, Type and Color F1)"
    max_new_tokens = 1536
    version = 3

    def __init__(self, subset: str = DEFAULT_SUBSET, timeout: float = TIMEOUT, mem_mb: int = MEM_MB,
                 judge: ChartJudge | None = None):
        self.split, self.timeout, self.mem_mb, self.judge = subset, timeout, mem_mb, judge
        self.read_subset: str | None = None  # the folder the last load read (the result's split)
        self.libraries_seen: set[tuple] = set()  # the library versions the traced runs imported

    def cache_settings(self) -> dict:
        out = {"libraries": installed_libraries()}  # cached scores are per library versions
        return {**out, "judge": [self.judge.url, self.judge.model]} if self.judge is not None else out

    @property
    def official(self) -> bool:
        """The benchmark's own number: the installed drawing libraries are its pinned ones, and every
        traced run this session imported those versions (not another copy on its own path)."""
        installed = installed_libraries()
        return installed == PINNED and all(dict(seen).items() <= installed.items() for seen in self.libraries_seen)

    def describe(self) -> dict:
        return {**super().describe(), "split": self.read_subset or self.split, "libraries": installed_libraries(),
                "pinned_libraries": PINNED}

    def load(self, source: str | None = None, limit: int | None = None) -> list[EvalSample]:
        folder = self._folder(source)
        self.read_subset = None if source == SAMPLE_SOURCE else folder.name
        return load_folder(folder, limit)

    def _folder(self, source: str | None) -> Path:
        if source == SAMPLE_SOURCE:
            return SAMPLE_DIR
        if source:
            path = Path(source).expanduser()
            if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
                return find_subset(extract_archive(path), self.split)
            if not path.is_dir():
                raise EvalError(f"{path}: not a ChartMimic folder or archive")
            return path if any(path.glob("*.py")) else find_subset(path, self.split)
        from huggingface_hub import hf_hub_download

        archive = Path(hf_hub_download(HUB_ID, archive_for(self.split), repo_type="dataset"))
        return find_subset(extract_archive(archive), self.split)

    @contextlib.contextmanager
    def scorer(self):
        sandbox.require()  # refuse before the model loads when generated code cannot be sandboxed
        yield self.score

    def score(self, output: str, sample: EvalSample) -> dict:
        """The four F1s of the answer's script against the ground truth's (chart_metrics), on the
        script the benchmark builds from the answer (chart_programs.generated_program)."""
        graph = sample.id.startswith("graph")  # the layout evaluator's "/graph" in the file's path
        gen = chart_metrics.trace(chart_programs.generated_program(output, sample.id), graph=graph,
                                  timeout=self.timeout, mem_mb=self.mem_mb)
        # nothing traced (the one run failed, or the sandbox killed it): every F1 is 0 whatever the reference
        failed = bool(gen.get("error")) and (gen["runs"] == 1 or bool(gen.get("killed")))
        if not failed and "trace" not in sample.reference:  # the ground truth's trace, once per sample
            ref = chart_metrics.trace(sample.reference["code"], graph=graph, timeout=self.timeout, mem_mb=self.mem_mb)
            if ref.get("error"):
                raise EvalError(f"ChartMimic {sample.id}: the ground-truth script fails under the tracer ({ref['error']})")
            sample.reference["trace"] = ref
        ref = sample.reference.get("trace") or gen  # (a failed answer scores 0 against anything)
        for t in (gen, ref):
            if t.get("libraries"):
                self.libraries_seen.add(tuple(sorted(t["libraries"].items())))
        m = chart_metrics.low_level(gen, ref)
        out = {"score": m.pop("low_level"), "executed": 0.0 if failed else 1.0, **m}
        has_block = chart_programs.answer_code(output) != chart_programs.NO_BLOCK
        if not has_block:
            out["message"] = "no ```python block in the answer (the benchmark then runs an empty figure)"
        elif gen.get("error") or gen.get("caught"):
            out["message"] = gen["error"] or f"the code raised {gen['caught']} (caught, as the benchmark's wrapper does)"
        if self.judge is not None:  # no block: a blank figure, scored 0 without asking the judge
            out.update(self.high_level(chart_programs.generated_program(output, sample.id, report=False), sample)
                       if has_block and out["executed"] else {"high_level": 0.0, "judge_failed": 0.0})
        return out

    def high_level(self, code: str, sample: EvalSample) -> dict:
        """The judge's score of the chart `code` draws against the reference figure (0 when nothing is drawn;
        `judge_failed` when the judge's answer holds no score: then the sample has no high_level)."""
        r = sandbox.render_chart(code, timeout=self.timeout, mem_mb=self.mem_mb)
        if r.png is None:
            return {"high_level": 0.0, "judge_failed": 0.0}
        value, _ = self.judge.judge(sample.reference["image"], r.png)
        return {"judge_failed": 1.0} if value is None else {"high_level": round(value, 6), "judge_failed": 0.0}


def with_judge(tasks: list[Task], url: str | None, model: str | None, key_env: str = "OPENAI_API_KEY") -> list[Task]:
    """The tasks with ChartMimic given the judge (`--judge-url`/`--judge-model`), if any."""
    if url is None and model is None:
        return list(tasks)
    if not url:
        raise EvalError("--judge-model needs --judge-url (the OpenAI-compatible endpoint serving it)")
    return set_on(tasks, ChartMimic, "--judge-url", judge=ChartJudge(url, model or "", key_env))


register(ChartMimic, "chartmimic", "chart_mimic")
