"""Publishing a merged folder to the Hugging Face Hub.

The folder is checked first (config, every indexed shard present and whole, no NaN marker in the
recipe), its model card regenerated from the recipe, then uploaded with `HfApi.upload_folder`.
The client retries its own preupload/LFS calls; `create_repo`, `repo_info` and the commit POST
are retried here on 408/429/5xx and network errors. Each commit attempt re-reads the branch head
and passes it as `parent_commit`, and files already on the Hub with the same content are skipped,
so a retried commit whose first response was lost cannot land twice, and a re-run after a failure
resumes: LFS objects already uploaded are not sent again.

The token comes from the usual places (HF_TOKEN, `hf auth login`) and is only ever handed to the
client: it is never printed, logged, or written into the card, the recipe or any other file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from .._util.sizes import human_size
from ..errors import PublishError, SourceError
from ..engine.recipe import RECIPE_FILE
from .._util.hubref import HUB_ID

log = logging.getLogger(__name__)
T = TypeVar("T")

INDEX_FILE = "model.safetensors.index.json"
# Never uploaded: viscodex's temporary files, partial downloads, caches, OS litter
# (huggingface_hub adds .git/ and .cache/huggingface/ itself).
IGNORE_PATTERNS = [".viscodex-output", ".viscodex-owner", "*.viscodex-lock", "*.viscodex-tmp-*", "*.viscodex-old-*", "*.incomplete", "*__pycache__*", "*.DS_Store"]
# Remote weight files that are not in the folder are removed, so the Hub never mixes two shardings.
DELETE_PATTERNS = ["*.safetensors", INDEX_FILE]
TRANSIENT_STATUS = {408, 412, 429, 500, 502, 503, 504}  # 412: the branch moved; re-read it
PROCESSOR_HINTS = ("tokenizer.json", "tokenizer_config.json")


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter for calls huggingface_hub does not retry itself.

    One budget: `attempts - 1` retries in all, for every call of one publish together (issue 16:
    nested loops sent one always-failing shard 30 times). Use `fresh()` per publish."""

    attempts: int = 5
    base: float = 2.0  # seconds before the first retry
    cap: float = 60.0
    used: int = 0  # retries spent so far

    def fresh(self) -> "RetryPolicy":
        return dataclasses.replace(self, used=0)

    def take(self) -> bool:
        """Spend one retry; False when the budget is gone."""
        if self.used >= self.attempts - 1:
            return False
        self.used += 1
        return True

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(self.cap, max(0.0, retry_after))
        return min(self.cap, self.base * 2 ** (attempt - 1)) * (0.75 + 0.5 * random.random())


@dataclass
class UploadFile:
    path: str  # path in the repo
    size: int


@dataclass
class PublishResult:
    repo_id: str
    revision: str
    files: list[UploadFile]
    card: str
    commit_message: str
    dry_run: bool
    url: str | None = None
    commit: str | None = None
    warnings: list[str] = field(default_factory=list)
    changed: bool = True  # False when the Hub already held exactly these files (no new commit)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


# ---------------------------------------------------------------- loadability
@dataclass
class LoadCheck:
    weight_files: list[str]
    total_bytes: int
    warnings: list[str]


def check_loadable(folder: str | os.PathLike) -> LoadCheck:
    """Refuse folders transformers could not load: config.json, every shard the index lists (whole,
    with the tensors it promises), and a recipe free of NaN/Inf markers. Reads only headers."""
    import json

    from .card import find_nan_markers
    from ..engine.safetensors_io import read_header

    folder = Path(folder)
    problems: list[str] = []
    warnings: list[str] = []
    if not folder.is_dir():
        raise PublishError(f"{folder}: not a folder")
    cfg = folder / "config.json"
    try:
        config = json.loads(cfg.read_text())
        if not isinstance(config, dict) or not config.get("model_type"):
            problems.append("config.json has no model_type")
    except FileNotFoundError:
        problems.append("config.json is missing")
    except json.JSONDecodeError as e:
        problems.append(f"config.json is not valid JSON ({e})")

    weight_files: list[str] = []
    total = 0
    index = folder / INDEX_FILE
    try:
        if index.exists():
            try:
                wm = json.loads(index.read_text()).get("weight_map")
            except json.JSONDecodeError as e:
                wm = None
                problems.append(f"{INDEX_FILE} is not valid JSON ({e})")
            if not isinstance(wm, dict) or not wm:
                problems.append(f"{INDEX_FILE} has no weight_map")
                wm = {}
            by_file: dict[str, list[str]] = {}
            for k, f in wm.items():
                by_file.setdefault(f, []).append(k)
            for f, keys in sorted(by_file.items()):
                fp = folder / f
                if not fp.is_file():
                    problems.append(f"shard {f} listed in {INDEX_FILE} is missing")
                    continue
                hdr, _ = read_header(fp)
                missing = [k for k in keys if k not in hdr]
                if missing:
                    problems.append(f"shard {f} lacks {len(missing)} tensor(s) the index puts there (e.g. {missing[0]})")
                weight_files.append(f)
                total += sum(t.nbytes for t in hdr.values())
        else:
            for fp in sorted(folder.glob("*.safetensors")):
                hdr, _ = read_header(fp)
                weight_files.append(fp.name)
                total += sum(t.nbytes for t in hdr.values())
            if len(weight_files) > 1:
                problems.append(f"{len(weight_files)} safetensors files but no {INDEX_FILE}")
    except SourceError as e:
        problems.append(str(e).replace(str(folder) + os.sep, ""))
    if not weight_files and not any("shard" in p for p in problems):
        problems.append("no safetensors weights")

    recipe = folder / RECIPE_FILE
    if not recipe.is_file():
        problems.append(f"{RECIPE_FILE} is missing (publish folders written by `viscodex merge`)")
    else:
        import yaml

        try:
            data = yaml.safe_load(recipe.read_text()) or {}
        except yaml.YAMLError as e:
            data = {}
            problems.append(f"{RECIPE_FILE} is not valid YAML ({e})")
        nan = find_nan_markers(data)
        if nan:
            problems.append(f"{RECIPE_FILE} records NaN/Inf at {', '.join(nan)}")
        listed = ((data.get("output") or {}).get("files") or {}) if isinstance(data, dict) else {}
        for f in listed:
            if not (folder / f).is_file():
                problems.append(f"{f} (listed in the recipe's output) is missing")
    for f in PROCESSOR_HINTS:
        if not (folder / f).exists():
            warnings.append(f"{f} is missing: users will not be able to load a tokenizer from the repo")
    if problems:
        raise PublishError(f"{folder.name}: not loadable, refusing to publish:\n" + "\n".join(f"  - {p}" for p in problems))
    return LoadCheck(weight_files, total, warnings)


# ---------------------------------------------------------------- retries
def _status(e: BaseException) -> int | None:
    resp = getattr(e, "response", None)
    return getattr(resp, "status_code", None)


def transient(e: BaseException) -> tuple[bool, float | None]:
    """(whether `e` is worth retrying, the server's Retry-After in seconds if any), looking
    through wrapped causes (upload_folder wraps LFS failures in RuntimeError)."""
    try:
        import httpx2

        network = (httpx2.TransportError,)
    except ImportError:  # pragma: no cover - older huggingface_hub used requests/httpx
        network = ()
    seen = 0
    while e is not None and seen < 8:
        seen += 1
        status = _status(e)
        if status is not None:
            if status in TRANSIENT_STATUS:
                ra = getattr(e.response, "headers", {}).get("Retry-After")
                try:
                    return True, float(ra) if ra is not None else None
                except ValueError:
                    return True, None
            return False, None
        if network and isinstance(e, network):
            return True, None
        e = e.__cause__ or e.__context__
    return False, None


def with_retry(fn: Callable[[], T], what: str, policy: RetryPolicy) -> T:
    """Call `fn`, retrying transient Hub errors with backoff, out of the policy's one budget."""
    while True:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified below
            ok, retry_after = transient(e)
            if not ok or not policy.take():
                raise
            wait = policy.delay(policy.used, retry_after)
            log.warning("%s: transient Hub error (%s); retry %d/%d in %.1fs", what, _describe(e), policy.used,
                        policy.attempts - 1, wait)
            time.sleep(wait)


def retried_by_client(e: BaseException) -> bool:
    """Whether the failed request was one huggingface_hub already retries itself (http_backoff:
    the LFS batch, upload and verify calls, which go outside /api/): retrying the whole upload
    around it would multiply the attempts."""
    seen = 0
    while e is not None and seen < 8:
        seen += 1
        req = getattr(getattr(e, "response", None), "request", None) or getattr(e, "request", None)
        url = str(getattr(req, "url", "") or "")
        if url:
            return "/api/" not in url
        e = e.__cause__ or e.__context__
    return False


def _describe(e: BaseException) -> str:
    s = _status(e)
    return f"HTTP {s}" if s is not None else type(e).__name__


def hub_timeout() -> float:
    """Seconds a Hub request may stay silent (connect, or between bytes) before it fails."""
    try:
        t = float(os.environ.get("VISCODEX_HUB_TIMEOUT", "120"))
    except ValueError:
        raise PublishError("VISCODEX_HUB_TIMEOUT must be a number of seconds") from None
    if not t > 0 or not math.isfinite(t):
        raise PublishError("VISCODEX_HUB_TIMEOUT must be a positive number of seconds")
    return t


@contextlib.contextmanager
def hub_timeouts():
    """huggingface_hub's client has no timeout (a stalled commit hangs forever): give its shared
    client one while the block runs, keeping everything else of the current factory."""
    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    t = hub_timeout()
    prev = _http._GLOBAL_CLIENT_FACTORY

    def factory():
        client = prev()
        client.timeout = httpx2.Timeout(t, connect=min(t, 30.0))
        return client

    set_client_factory(factory)
    try:
        yield t
    finally:
        set_client_factory(prev)


def _in_chain(e: BaseException | None, pred) -> BaseException | None:
    seen = 0
    while e is not None and seen < 8:
        if pred(e):
            return e
        seen += 1
        e = e.__cause__ or e.__context__
    return None


def hub_error(e: BaseException, what: str, repo_id: str) -> PublishError:
    """A clear message for a Hub failure (never includes the token)."""
    e = _in_chain(e, lambda x: _status(x) is not None) or e  # upload_folder wraps LFS failures
    s = _status(e)
    ns = repo_id.split("/")[0]
    if s == 401:
        msg = "the Hub rejected the token (401): log in again with `hf auth login` or set HF_TOKEN"
    elif s == 403:
        msg = f"no write access to {ns!r} with this token (403)"
    elif s == 404:
        msg = f"{repo_id}: not found (404)"
    elif isinstance(e, ValueError) and "metadata" in str(e).lower():
        msg = f"the Hub rejected the README metadata: {e}"
    elif _in_chain(e, lambda x: type(x).__name__.endswith("Timeout") or "TimeoutException" in
                   [c.__name__ for c in type(x).__mro__]):
        msg = (f"no answer from the Hub within {hub_timeout():g}s (network stalled); set VISCODEX_HUB_TIMEOUT "
               f"to wait longer")
    else:
        server = getattr(_in_chain(e, lambda x: getattr(x, "server_message", None)), "server_message", None)
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        msg = f"{_describe(e)}: {server.strip() if server else detail}"
    return PublishError(f"{what} failed: {msg}")


# ---------------------------------------------------------------- publishing
def resolve_token(token: str | None = None) -> str:
    """The user's Hub token (argument, HF_TOKEN or `hf auth login`); the value is never shown."""
    if token:
        return token
    from huggingface_hub import get_token

    t = get_token()
    if not t:
        raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a write token is needed)")
    return t


def upload_files(folder: Path, card_text: str | None = None) -> list[UploadFile]:
    """What upload_folder will send: the folder's files minus ignored ones (README.md sized as the card)."""
    from huggingface_hub.utils import filter_repo_objects
    from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS

    rel = {p.relative_to(folder).as_posix(): p for p in sorted(folder.glob("**/*")) if p.is_file()}
    if card_text is not None:
        rel.setdefault("README.md", folder / "README.md")
    keep = filter_repo_objects(list(rel), ignore_patterns=IGNORE_PATTERNS + DEFAULT_IGNORE_PATTERNS)
    out = []
    for r in keep:
        if r == "README.md" and card_text is not None:
            out.append(UploadFile(r, len(card_text.encode("utf-8"))))
        else:
            out.append(UploadFile(r, rel[r].stat().st_size))
    return out


def _refuse_token_in_files(folder: Path, files: list[UploadFile], token: str, card_text: str) -> None:
    """Never upload a file that contains the token (e.g. pasted into a config by mistake)."""
    needle = token.encode()
    if needle in card_text.encode():
        raise PublishError("the generated model card contains your Hub token; refusing to publish")
    for f in files:
        if f.path == "README.md" or f.path.endswith(".safetensors") or f.size > 64 * 1024 * 1024:
            continue  # README.md is replaced by the card, checked above
        if needle in (folder / f.path).read_bytes():
            raise PublishError(f"{f.path} contains your Hub token; remove it before publishing")


def commit_message(folder: Path) -> str:
    from ..engine.recipe import Recipe

    r = Recipe.load(folder)
    name = r.name or folder.name
    what = "coder-swapped baseline" if r.variant == "swapped" else f"{r.method}, lambda={r.lam:g}"
    sft = ", fine-tuned" if r.records.get("training") else ""
    return f"Upload {name} (viscodex recipe: {what}{sft})"


def publish(folder: str | os.PathLike, repo_id: str, *, private: bool = False, revision: str | None = "main",
            dry_run: bool = False, token: str | None = None, license: str | None = None,
            retry: RetryPolicy | None = None) -> PublishResult:
    """Publish a merged folder as `repo_id` (created if needed). See the module docstring."""
    from .card import build_card

    retry = (retry or RetryPolicy()).fresh()
    folder = Path(folder).expanduser().resolve()
    if not HUB_ID.match(repo_id or ""):
        raise PublishError(f"--repo {repo_id!r}: expected namespace/name, e.g. your-username/VisCodex-8B")
    revision = revision or "main"
    check = check_loadable(folder)
    for w in check.warnings:
        log.warning("publish: %s", w)
    build = build_card(folder, repo_id=repo_id, license=license)
    card_text = str(build.card)
    files = upload_files(folder, card_text)
    message = commit_message(folder)
    result = PublishResult(repo_id, revision, files, card_text, message, dry_run,
                           warnings=check.warnings + build.warnings)
    if dry_run:
        return result

    tok = resolve_token(token)
    _refuse_token_in_files(folder, files, tok, card_text)
    if license:
        from .card import record_license

        record_license(folder, license)  # later cards and publishes keep the choice
    from huggingface_hub import HfApi

    api = HfApi(token=tok)
    (folder / "README.md").write_text(card_text, encoding="utf-8")
    with hub_timeouts(), created_or_removed(api, repo_id, "model", retry, private=private) as url:
        if revision != "main":
            try:
                with_retry(lambda: api.create_branch(repo_id, branch=revision, exist_ok=True), "create branch", retry)
            except Exception as e:  # noqa: BLE001
                raise hub_error(e, f"creating branch {revision!r}", repo_id) from None
        try:
            info = with_retry(lambda: api.repo_info(repo_id, revision=revision), "repo info", retry)
            if private and not info.private:
                result.warnings.append(f"{repo_id} already exists and is public: --private was not applied")
                log.warning("publish: %s", result.warnings[-1])
        except Exception as e:  # noqa: BLE001
            raise hub_error(e, "reading the repo", repo_id) from None
        commit = commit_folder(api, folder, repo_id, revision, message, retry,
                               description="Generated by viscodex publish from viscodex_recipe.yaml.",
                               delete_patterns=DELETE_PATTERNS)
    result.url = str(url)
    result.commit = commit
    result.changed = commit != info.sha
    return result


@contextlib.contextmanager
def created_or_removed(api, repo_id: str, repo_type: str, retry: RetryPolicy, *, private: bool = False, **create):
    """create_repo(exist_ok) for the block. A repo this call creates is created private and made
    public (unless `private`) only once the block succeeded: a failed first publish leaves no
    empty public repo, and keeps what it uploaded so a re-run resumes. Yields the repo URL."""
    kind = "Space" if repo_type == "space" else "repo"
    try:
        existed = with_retry(lambda: api.repo_exists(repo_id, repo_type=repo_type), f"check {kind}", retry)
        url = with_retry(lambda: api.create_repo(repo_id, repo_type=repo_type, exist_ok=True,
                                                 private=private or not existed, **create), f"create {kind}", retry)
        if existed and not private:  # an empty private repo is what an interrupted first publish leaves
            info = with_retry(lambda: api.repo_info(repo_id, repo_type=repo_type), f"read the {kind}", retry)
            unfinished = info.private and {s.rfilename for s in info.siblings or []} <= {".gitattributes"}
            existed = not unfinished
    except Exception as e:  # noqa: BLE001
        raise hub_error(e, f"creating the {kind}", repo_id) from None
    try:
        yield url
    except BaseException:
        if not existed and not private:
            log.warning("publish: the new %s %s stays private until a run completes; re-run to resume", kind, repo_id)
        raise
    if not existed and not private:
        try:
            with_retry(lambda: api.update_repo_settings(repo_id, private=False, repo_type=repo_type),
                       f"make the {kind} public", retry)
        except Exception as e:  # noqa: BLE001
            raise hub_error(e, f"making the new {kind} public (it is complete but private)", repo_id) from None


def commit_folder(api, folder: Path, repo_id: str, revision: str, message: str, retry: RetryPolicy, *,
                  repo_type: str = "model", description: str = "", delete_patterns: list[str] | None = None) -> str:
    """upload_folder against the current head (parent_commit); on a transient failure, re-read the
    head and run again: unchanged files are skipped, so a lost-response commit is not duplicated.
    Returns the commit the branch points to afterwards."""
    while True:
        try:
            head = with_retry(lambda: api.repo_info(repo_id, revision=revision, repo_type=repo_type).sha,
                              "read branch head", retry)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=folder, repo_type=repo_type, revision=revision,
                commit_message=message, commit_description=description, parent_commit=head,
                ignore_patterns=list(IGNORE_PATTERNS), delete_patterns=list(delete_patterns or []) or None,
            )
            return info.oid
        except Exception as e:  # noqa: BLE001
            ok, retry_after = transient(e)
            if not ok or retried_by_client(e) or not retry.take():
                err = hub_error(e, "uploading the folder", repo_id)
                if ok:  # transient: the next run picks up where this one stopped
                    err = PublishError(f"{err}; gave up after {retry.used} retr{'y' if retry.used == 1 else 'ies'}"
                                       f"{' (and huggingface_hub retried that upload itself)' if retried_by_client(e) else ''}"
                                       f": re-run the same command to resume, files already uploaded are not sent again")
                raise err from None
            wait = retry.delay(retry.used, retry_after)
            log.warning("upload: transient Hub error (%s); retry %d/%d in %.1fs (uploaded files are kept)",
                        _describe(e), retry.used, retry.attempts - 1, wait)
            time.sleep(wait)


def format_files(files: list[UploadFile]) -> str:
    w = max((len(f.path) for f in files), default=4)
    lines = [f"  {f.path:<{w}}  {human_size(f.size):>10}" for f in files]
    lines.append(f"  {'total':<{w}}  {human_size(sum(f.size for f in files)):>10}  ({len(files)} files)")
    return "\n".join(lines)


__all__ = ["publish", "check_loadable", "commit_folder", "PublishError", "PublishResult", "RetryPolicy", "with_retry",
           "transient", "resolve_token", "upload_files", "format_files"]
