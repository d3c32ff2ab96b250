"""Publishing the demo as a Hugging Face Space (Gradio, ZeroGPU by default).

The Space folder is assembled from the checkout (from a wheel install: the template shipped in
viscodex/hub/space_config/): app.py, requirements.txt and packages.txt (copied), the
viscodex package beside them, and a README whose YAML metadata and body are generated from
space_config/ (sdk gradio pinned to the installed version, python_version, app_file, the models
it loads, short_description, license, suggested_hardware). The model ids the app loads are set as
Space variables.

ZeroGPU moves every CUDA tensor created at import onto the GPU for each call, so all variants must
fit the slice. The footprint is computed from the real checkpoints (Hub safetensors headers or
local files), page-aligned as `spaces` packs tensors, with the vision encoder counted once: the
merged, base and coder-swapped models share it. Above the threshold the app needs the `xlarge`
slice.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..engine import arch
from .._util.hubref import HUB_ID, HubRef
from .._util.atomic import OWNER_FILE
from .._util.sizes import human_size
from .._util.zerogpu import XLARGE_THRESHOLD_GIB, zerogpu_slice
from ..errors import SpaceError
from .publish import (PublishError, RetryPolicy, commit_folder, created_or_removed, hub_error, hub_timeouts,
                      resolve_token, upload_files, with_retry)

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# The Space template: space.yaml, README.md.j2, app.py, requirements.txt (the checkout's top-level
# space_config/ and requirements.txt link here; its app.py is the same file, checked by a test).
TEMPLATE_DIR = Path(__file__).resolve().parent / "space_config"
PAGE = 4096  # spaces.zero packs tensors page-aligned
GIB = 1024**3
HARDWARE_ALIASES = {"zerogpu": "zero-a10g", "zero": "zero-a10g", "cpu": "cpu-basic"}


# ---------------------------------------------------------------- configuration
def default_app_dir() -> Path:
    """The folder holding app.py: the checkout (the package's parent, an editable install), else the
    working dir if it holds one, else the Space template shipped in the package (a wheel install)."""
    for d in (PACKAGE_DIR.parent, Path.cwd()):
        if (d / "app.py").is_file():
            return d
    return TEMPLATE_DIR


def config_dir(app_dir: Path) -> Path:
    for d in (app_dir / "space_config", app_dir, TEMPLATE_DIR):
        if (d / "space.yaml").is_file():
            return d
    raise SpaceError(f"no space_config/space.yaml in {app_dir} or the viscodex package")


def load_config(app_dir: Path) -> tuple[dict, Path]:
    d = config_dir(app_dir)
    try:
        cfg = yaml.safe_load((d / "space.yaml").read_text()) or {}
    except yaml.YAMLError as e:
        raise SpaceError(f"{d / 'space.yaml'}: invalid YAML ({e})") from e
    for k in ("title", "short_description", "app_file", "copy", "package", "variables"):
        if k not in cfg:
            raise SpaceError(f"{d / 'space.yaml'}: missing `{k}`")
    if len(cfg["short_description"]) > 60:
        raise SpaceError(f"space.yaml: short_description has {len(cfg['short_description'])} characters; the Hub allows 60")
    return cfg, d


def hardware_flavor(name: str) -> str:
    from huggingface_hub import SpaceHardware

    flavor = HARDWARE_ALIASES.get(name.lower(), name.lower())
    valid = {h.value for h in SpaceHardware}
    if flavor not in valid:
        raise SpaceError(f"--hardware {name!r}: not a Space hardware flavor; use zerogpu or one of {', '.join(sorted(valid))}")
    return flavor


# ---------------------------------------------------------------- footprint
@dataclass
class ModelWeights:
    variant: str
    id: str
    total: int  # bytes on the GPU, page-aligned
    vision: int  # of which the vision encoder + projector


@dataclass
class Footprint:
    models: list[ModelWeights]
    threshold: int
    shared_vision: int = 0
    total: int = 0
    slice: str = "large"
    parts: list[tuple[str, int]] = field(default_factory=list)


def _aligned(n: int) -> int:
    return n + (-n % PAGE)


def tensor_bytes(spec: str) -> dict[str, int]:
    """Canonical tensor name -> bytes, from a local folder's headers or the Hub's safetensors metadata
    (range reads of the headers; nothing is downloaded)."""
    local = Path(spec).expanduser()
    if local.is_dir():
        from ..engine.sources import _local_headers

        raw = {k: v.nbytes for k, v in _local_headers(local).items()}
    else:
        from huggingface_hub import get_safetensors_metadata

        h = HubRef.parse(spec)
        try:
            meta = get_safetensors_metadata(h.ref, revision=h.revision)
        except Exception as e:  # noqa: BLE001
            raise SpaceError(f"{spec}: cannot read its safetensors headers from the Hub ({type(e).__name__}: {e})") from e
        raw = {}
        for fm in meta.files_metadata.values():
            for k, t in fm.tensors.items():
                b, e = t.data_offsets
                raw[k] = e - b
    layout = arch.detect_layout(raw)
    return {arch.to_canonical(k, layout): n for k, n in raw.items()}


def footprint(models: dict[str, str], threshold_gib: float = XLARGE_THRESHOLD_GIB) -> Footprint:
    """GPU bytes of the models the app holds at once, the vision tower counted once."""
    threshold = int(threshold_gib * GIB)
    ws = []
    for variant, spec in models.items():
        sizes = tensor_bytes(spec)
        vision = sum(_aligned(n) for k, n in sizes.items() if (arch.role_of(k) or arch.RoleMatch("", "")).role == "vision")
        ws.append(ModelWeights(variant, spec, sum(_aligned(n) for n in sizes.values()), vision))
    fp = Footprint(ws, threshold)
    fp.shared_vision = max((w.vision for w in ws), default=0)
    fp.parts = [(f"{w.variant} language model (`{w.id}`)", w.total - w.vision) for w in ws]
    fp.parts.append(("vision encoder + projector (shared)", fp.shared_vision))
    fp.total = sum(n for _, n in fp.parts)
    fp.slice = zerogpu_slice(fp.total, threshold_gib)
    return fp


def _gib(n: int) -> str:
    return human_size(n)


# ---------------------------------------------------------------- the Space folder
@dataclass
class SpacePlan:
    repo_id: str
    folder: Path
    readme: str
    variables: dict[str, str]
    hardware: str
    footprint: Footprint
    files: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    url: str | None = None
    commit: str | None = None

    @property
    def app_url(self) -> str:
        """The app itself, outside the Hub's page frame (what a shared result or `?example=` link uses)."""
        return direct_url(self.repo_id)


def direct_url(repo_id: str) -> str:
    """https://<owner>-<name>.hf.space: the Hub's subdomain rule (lower case, runs of anything but
    letters and digits become one '-')."""
    sub = re.sub(r"[^a-z0-9]+", "-", repo_id.lower()).strip("-")
    return f"https://{sub}.hf.space"


def unreachable(e: BaseException) -> bool:
    """Whether a Hub call failed for want of a network (not for a missing file or repo)."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    chain = [e, e.__cause__, e.__context__]
    return any(isinstance(x, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError)) or
               type(x).__name__ in ("ConnectError", "ConnectTimeout") for x in chain if x is not None)


# The Python versions ZeroGPU runs (hub-docs, docs/hub/spaces-zerogpu.md, "Supported Versions"):
# any other python_version builds a Space that ZeroGPU cannot start.
ZEROGPU_PYTHON = ("3.12.12", "3.10.13")


def space_python(wanted: str | None, flavor: str) -> str:
    """python_version for the Space README: the configured one (default: this interpreter's), and
    on ZeroGPU the supported version of the same minor, else the newest supported one."""
    v = str(wanted or f"{sys.version_info[0]}.{sys.version_info[1]}")
    if flavor != "zero-a10g" or v in ZEROGPU_PYTHON:
        return v
    same = [z for z in ZEROGPU_PYTHON if z.rsplit(".", 1)[0] == v.rsplit(".", 1)[0] or z.startswith(v + ".")]
    chosen = same[0] if same else ZEROGPU_PYTHON[0]
    if not same:
        log.warning("space: python_version %s is not one ZeroGPU runs (%s); using %s", v, ", ".join(ZEROGPU_PYTHON),
                    chosen)
    return chosen


def resolve_base_vlm(model: str) -> str:
    """The VLM a published merge was made from, read from its viscodex_recipe.yaml on the Hub."""
    from huggingface_hub import hf_hub_download

    from ..engine.recipe import RECIPE_FILE, Recipe

    h = HubRef.parse(model)
    try:
        path = hf_hub_download(h.ref, RECIPE_FILE, revision=h.revision)
    except Exception as e:  # noqa: BLE001
        if unreachable(e):
            raise SpaceError(f"{model}: the Hub cannot be reached ({type(e).__name__}: no network, or HF_HUB_OFFLINE "
                             f"set); `viscodex space` reads the models' recipes and sizes from the Hub, even with "
                             f"--dry-run: connect and retry") from None
        raise SpaceError(f"{model}: cannot read its {RECIPE_FILE} from the Hub ({type(e).__name__}); pass --base-vlm") from e
    r = Recipe.load(path)
    rec = (r.records.get("sources") or {}).get("vlm") or {}
    vlm = rec.get("repo_id")
    if not vlm and HUB_ID.match(HubRef.parse(r.vlm).ref) and not os.path.isabs(r.vlm):
        vlm = HubRef.parse(r.vlm).ref
    if not vlm:
        raise SpaceError(f"{model} was merged from a local VLM folder; pass --base-vlm with its Hub id")
    return vlm


def build_space(folder: str | os.PathLike, *, model: str, repo_id: str, base_vlm: str | None = None,
                swapped: str | None = None, hardware: str | None = None, app_dir: str | os.PathLike | None = None,
                python_version: str | None = None) -> SpacePlan:
    """Assemble the Space in `folder` (must be empty or absent)."""
    try:
        import gradio
    except ImportError:
        raise SpaceError("`viscodex space` needs gradio (the Space's sdk_version is pinned to it): "
                         "pip install 'viscodex[app]'") from None
    from huggingface_hub import SpaceCardData

    from .card import render_template

    app_dir = Path(app_dir).expanduser().resolve() if app_dir else default_app_dir()
    cfg, cdir = load_config(app_dir)
    for spec, what in ((model, "--model"), (repo_id, "--repo"), (base_vlm, "--base-vlm"), (swapped, "--swapped")):
        if spec is not None and not HUB_ID.match(HubRef.parse(spec).ref):
            raise SpaceError(f"{what} {spec!r}: expected a Hub id namespace/name (the Space downloads it)")
    missing = [f for f in cfg["copy"] if not (app_dir / f).is_file()]
    if missing:
        raise SpaceError(f"{app_dir}: missing {', '.join(missing)}; run from the viscodex checkout or pass --app-dir")
    flavor = hardware_flavor(hardware or cfg.get("hardware") or "zerogpu")
    warnings = []
    base_vlm = base_vlm or resolve_base_vlm(model)
    models = {"merged": model, "base VLM": base_vlm}
    if swapped:
        models["coder-swapped"] = swapped
    else:
        warnings.append("no --swapped model: the app's coder-swapped variant will not be available")
    fp = footprint(models, float(cfg.get("zerogpu_xlarge_threshold_gib", XLARGE_THRESHOLD_GIB)))

    out = Path(folder)
    if out.exists() and any(p.name != OWNER_FILE for p in out.iterdir()):  # OWNER_FILE: an OutputFolder's
        raise SpaceError(f"{out}: not empty")
    out.mkdir(parents=True, exist_ok=True)
    for f in cfg["copy"]:
        shutil.copyfile(app_dir / f, out / f)
    pkg = PACKAGE_DIR if cfg["package"] == "viscodex" else app_dir / cfg["package"]
    shutil.copytree(pkg, out / cfg["package"], ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.viscodex-tmp-*"))

    names = cfg["variables"]
    variables = {names["merged"]: model, names["base_vlm"]: base_vlm}
    if swapped:
        variables[names["swapped"]] = swapped
    if flavor == "zero-a10g" and "gpu_size" in names:
        variables[names["gpu_size"]] = fp.slice

    model_ids = list(dict.fromkeys(HubRef.parse(m).ref for m in models.values()))
    extra = {k: cfg[k] for k in ("emoji", "colorFrom", "colorTo", "pinned") if k in cfg}
    if cfg.get("preload_from_hub"):
        extra["preload_from_hub"] = list(model_ids)  # a copy: a shared list would be dumped as a YAML alias
    data = SpaceCardData(
        title=cfg["title"], sdk="gradio", sdk_version=gradio.__version__,
        python_version=space_python(python_version or cfg.get("python_version"), flavor),
        app_file=cfg["app_file"], license=cfg.get("license"), models=model_ids, tags=cfg.get("tags"),
        short_description=cfg["short_description"], suggested_hardware=flavor, **extra,
    )
    roles = {"merged": "the VisCodex merge: vision from the VLM, backbone merged with the coder",
             "base VLM": "the vision-language model it starts from",
             "coder-swapped": "baseline: the VLM with its backbone replaced by the code LLM"}
    if flavor == "zero-a10g":
        note = (f"{_gib(fp.total)} {'>' if fp.slice == 'xlarge' else '<='} {cfg.get('zerogpu_xlarge_threshold_gib', XLARGE_THRESHOLD_GIB):g} GiB "
                "(the ZeroGPU threshold): "
                f"the app needs the ZeroGPU **{fp.slice}** slice"
                + (" (2x GPU quota per call)." if fp.slice == "xlarge" else " (the default)."))
    else:
        note = f"{_gib(fp.total)} of weights on `{flavor}`."
    ctx = dict(
        card_data=data.to_yaml(), title=cfg["title"], merged=HubRef.parse(model).ref, hardware=flavor,
        models=[{"variant": v, "id": HubRef.parse(m).ref, "role": roles.get(v, v)} for v, m in models.items()],
        footprint={"parts": [{"name": n, "size": _gib(b)} for n, b in fp.parts], "total": _gib(fp.total), "note": note},
        variables=[{"key": k, "value": v} for k, v in variables.items()],
    )
    readme = render_template(cdir / "README.md.j2", **ctx)
    (out / "README.md").write_text(readme, encoding="utf-8")
    plan = SpacePlan(repo_id, out, readme, variables, flavor, fp, warnings=warnings)
    plan.files = upload_files(out)
    for w in warnings:
        log.warning("space: %s", w)
    return plan


def publish_space(*, model: str, repo_id: str, base_vlm: str | None = None, swapped: str | None = None,
                  hardware: str | None = None, app_dir: str | os.PathLike | None = None, private: bool = False,
                  dry_run: bool = False, token: str | None = None, retry: RetryPolicy | None = None,
                  keep: str | os.PathLike | None = None) -> SpacePlan:
    """Build the Space and (unless dry_run) create/update it on the Hub and set its variables."""
    retry = (retry or RetryPolicy()).fresh()
    tmp = Path(tempfile.mkdtemp(prefix="viscodex-space-"))
    try:
        build = dict(model=model, repo_id=repo_id, base_vlm=base_vlm, swapped=swapped, hardware=hardware, app_dir=app_dir)
        if keep:  # the kept folder is written like every output folder: all or nothing
            from .._util.atomic import OutputFolder

            with OutputFolder(keep, flag="--out") as building:
                plan = build_space(building, **build)
            plan.folder = Path(keep).expanduser().absolute()
            plan.files = upload_files(plan.folder)
        else:
            plan = build_space(tmp / "space", **build)
        if dry_run:
            return plan
        from huggingface_hub import HfApi

        api = HfApi(token=resolve_token(token))
        with hub_timeouts(), created_or_removed(api, repo_id, "space", retry, space_sdk="gradio",
                                                private=private) as url:
            # variables first: a Space whose app is committed without them crashes on start
            for k, v in plan.variables.items():
                try:
                    with_retry(lambda k=k, v=v: api.add_space_variable(repo_id, k, v, description="set by viscodex space"),
                               f"set Space variable {k}", retry)
                except Exception as e:  # noqa: BLE001
                    raise hub_error(e, f"setting Space variable {k}", repo_id) from None
            plan.commit = commit_folder(api, plan.folder, repo_id, "main", f"Update demo for {model}", retry,
                                        repo_type="space", description="Generated by viscodex space from space_config/.",
                                        delete_patterns=["viscodex/*"])
        plan.url = str(url)
        return plan
    except PublishError as e:
        raise SpaceError(str(e)) from None
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["build_space", "publish_space", "footprint", "tensor_bytes", "resolve_base_vlm", "SpaceError", "SpacePlan"]
