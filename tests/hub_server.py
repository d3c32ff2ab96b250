"""A local stand-in for the Hugging Face Hub, spoken to by the real huggingface_hub 2.x client.

It serves the HTTP API that `create_repo`, `upload_folder` (plain LFS, Xet disabled),
`snapshot_download`, `hf_hub_download`, `get_safetensors_metadata`, `ModelCard.validate`,
`whoami` and the Space-variables calls use, so tests exercise the client end to end with no
network: repos with commits and branches, preupload (regular vs LFS), the LFS batch API with basic
PUT transfers, NDJSON commits checked against `parentCommit`, `resolve` downloads with the Hub's
headers (LFS files redirect to a "CDN" on another host name, with HTTP Range support), tree
listings with Link-header pagination, YAML validation, fault injection and a request log.

Use the session fixture `hub` (conftest.py registers this module with `pytest_plugins`).
"""
from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import yaml

# The Hub's default .gitattributes for new repos (which paths are stored with LFS).
LFS_PATTERNS = [
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
    "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
]
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)
REGULAR_MAX = 10 * 1024 * 1024  # larger files must go through LFS
REPO_NAME = re.compile(r"^(?![.-])[A-Za-z0-9._-]{1,96}(?<![.-])$")

# Subsets of the Hub's accepted values, enough to validate what viscodex writes.
LICENSES = {
    "apache-2.0", "mit", "openrail", "openrail++", "bigscience-openrail-m", "creativeml-openrail-m",
    "bigscience-bloom-rail-1.0", "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0",
    "bsd", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0",
    "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0",
    "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0",
    "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cdla-sharing-1.0",
    "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1",
    "lgpl-3.0", "isc", "lppl-1.3c", "ms-pl", "mpl-2.0", "odc-by", "odbl", "openrail", "osl-3.0",
    "postgresql", "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license",
    "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "gemma", "unknown", "other",
}
PIPELINE_TAGS = {
    "text-generation", "text2text-generation", "image-text-to-text", "visual-question-answering",
    "image-to-text", "feature-extraction", "text-classification", "any-to-any", "image-classification",
}
RELATIONS = {"adapter", "merge", "quantized", "finetune"}
SPACE_SDKS = {"gradio", "streamlit", "docker", "static"}
SPACE_COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
SPACE_HARDWARE = {
    "cpu-basic", "cpu-upgrade", "zero-a10g", "t4-small", "t4-medium", "l4x1", "l4x4", "l40sx1",
    "l40sx4", "l40sx8", "a10g-small", "a10g-large", "a10g-largex2", "a10g-largex4", "a100-large",
    "a100x4", "a100x8", "rtx-pro-6000", "rtx-pro-6000x2", "rtx-pro-6000x4", "rtx-pro-6000x8",
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Entry:
    """One file of a commit: a regular git blob or an LFS object (content kept by sha256)."""

    size: int
    oid: str  # git blob oid (of the pointer file for LFS)
    sha256: str | None = None  # set for LFS files

    @property
    def lfs(self) -> bool:
        return self.sha256 is not None


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    description: str
    date: str
    files: dict[str, Entry]


@dataclass
class Repo:
    type: str
    id: str
    private: bool
    sdk: str | None
    created: str
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    variables: dict[str, dict] = field(default_factory=dict)
    lfs_objects: set[str] = field(default_factory=set)  # LFS oids uploaded to this repo (storage is per repo)

    def resolve(self, rev: str) -> Commit | None:
        if rev in self.refs:
            return self.commits[self.refs[rev]]
        if re.fullmatch(r"[0-9a-f]{7,40}", rev):
            hits = [c for oid, c in self.commits.items() if oid.startswith(rev)]
            if len(hits) == 1:
                return hits[0]
        return None

    def history(self, rev: str = "main") -> list[Commit]:
        out, c = [], self.resolve(rev)
        while c is not None:
            out.append(c)
            c = self.commits.get(c.parent) if c.parent else None
        return out


@dataclass
class Request:
    method: str
    path: str  # raw path with query
    kind: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int = 0


@dataclass
class Fault:
    kind: str
    status: int
    remaining: int
    apply: bool  # run the request, then answer the fault (a commit whose response is lost)
    retry_after: str | None
    message: str | None = None  # the Hub's error text (JSON `error` and X-Error-Message)
    delay: float = 0.0  # seconds of silence before answering (a stalled connection); status 0: then answer normally


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class FakeHub:
    """In-memory Hub. Thread-safe; one instance per test session (see the `hub` fixture)."""

    def __init__(self, user: str = "tester", orgs: tuple[str, ...] = ("viscodex-org",)):
        self.token = "hf_" + secrets.token_hex(20)
        self.user = user
        self.orgs = list(orgs)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.blobs: dict[str, bytes] = {}  # git oid -> content of regular files
        self.lfs: dict[str, bytes] = {}  # sha256 -> content of LFS objects
        self.log: list[Request] = []
        self.faults: list[Fault] = []
        self.page_size = 1000
        self.lock = threading.RLock()
        self._ticket = secrets.token_hex(8)
        self._server: ThreadingHTTPServer | None = None
        self._counter = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn_url(self) -> str:
        # Another host name for the same server: the client treats it as a foreign (CDN) origin.
        return f"http://localhost:{self.port}"

    # ------------------------------------------------------------------ test helpers
    def fail(self, kind: str, status: int = 500, times: int = 1, *, apply: bool = False,
             retry_after: str | None = None, message: str | None = None) -> None:
        """Answer the next `times` requests of `kind` with `status` (after running them if `apply`)."""
        with self.lock:
            self.faults.append(Fault(kind, status, times, apply, retry_after, message))

    def stall(self, kind: str, seconds: float, times: int = 1) -> None:
        """Keep the next `times` requests of `kind` waiting `seconds` before answering them normally."""
        with self.lock:
            self.faults.append(Fault(kind, 0, times, False, None, delay=seconds))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def mark(self) -> int:
        with self.lock:
            return len(self.log)

    def requests(self, since: int = 0, kind: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.log[since:] if kind is None or r.kind == kind]

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def file_bytes(self, repo_id: str, path: str, rev: str = "main", repo_type: str = "model") -> bytes:
        e = self.repo(repo_id, repo_type).resolve(rev).files[path]
        return self.lfs[e.sha256] if e.lfs else self.blobs[e.oid]

    def stored_bytes(self) -> list[bytes]:
        """Every file content the server holds (regular blobs and LFS objects)."""
        with self.lock:
            return list(self.blobs.values()) + list(self.lfs.values())

    # ------------------------------------------------------------------ repo model
    def _new_oid(self, *parts: str) -> str:
        self._counter += 1
        return hashlib.sha1("\0".join((*parts, str(self._counter), secrets.token_hex(4))).encode()).hexdigest()

    def _put_regular(self, data: bytes) -> Entry:
        oid = git_blob_oid(data)
        self.blobs[oid] = data
        return Entry(len(data), oid)

    def _lfs_entry(self, sha256: str, size: int) -> Entry:
        return Entry(size, git_blob_oid(lfs_pointer(sha256, size)), sha256)

    def create(self, repo_type: str, repo_id: str, private: bool = False, sdk: str | None = None) -> Repo:
        files = {".gitattributes": self._put_regular(GITATTRIBUTES.encode())}
        if repo_type == "space":
            readme = f"---\ntitle: {repo_id.split('/')[1]}\nsdk: {sdk}\n---\n"
            files["README.md"] = self._put_regular(readme.encode())
        repo = Repo(repo_type, repo_id, private, sdk, _now())
        c = Commit(self._new_oid(repo_id), None, "initial commit", "", _now(), files)
        repo.commits[c.oid] = c
        repo.refs["main"] = c.oid
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def _upload_mode(self, head: Commit | None, path: str, size: int, sample: bytes) -> str:
        attrs = ""
        if head is not None and ".gitattributes" in head.files:
            attrs = self.blobs.get(head.files[".gitattributes"].oid, b"").decode(errors="replace")
        patterns = [ln.split()[0] for ln in attrs.splitlines() if "filter=lfs" in ln and ln.split()]
        name = path.rsplit("/", 1)[-1]
        if any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in patterns):
            return "lfs"
        if size > REGULAR_MAX or b"\0" in sample:
            return "lfs"
        return "regular"

    # ------------------------------------------------------------------ request dispatch
    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes):
        """-> (status, headers, body, kind)."""
        parts = urlsplit(raw_path)
        path, query = parts.path, parse_qs(parts.query, keep_blank_values=True)
        kind, fn, args = self._route(method, path)
        req = Request(method, raw_path, kind, headers, body)
        with self.lock:
            self.log.append(req)
            fault = next((f for f in self.faults if f.kind == kind and f.remaining > 0), None)
            if fault is not None:
                fault.remaining -= 1
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
            if not fault.status:
                fault = None
        if fault is not None and not fault.apply:
            status, h, b = self._fault_response(fault)
        else:
            try:
                if fn is None:
                    raise HubError(404, f"no route for {method} {path}")
                with self.lock:
                    status, h, b = fn(method, query, headers, body, *args)
            except HubError as e:
                h = dict(e.headers)
                if e.code:
                    h["X-Error-Code"] = e.code
                h["X-Error-Message"] = e.message
                status, b = e.status, json.dumps({"error": e.message}).encode()
                h["Content-Type"] = "application/json"
            if fault is not None:  # applied, but the client never learns
                status, h, b = self._fault_response(fault)
        req.status = status
        return status, h, b

    @staticmethod
    def _fault_response(f: Fault):
        h = {"Content-Type": "application/json"}
        if f.retry_after is not None:
            h["Retry-After"] = f.retry_after
        if f.message:
            h["X-Error-Message"] = f.message
        return f.status, h, json.dumps({"error": f.message or f"injected {f.status}"}).encode()

    _TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}

    def _route(self, method: str, path: str):
        R = r"(models|datasets|spaces)/([^/]+)/([^/]+)"
        table = [
            ("whoami", r"/api/whoami-v2", self.h_whoami),
            ("create", r"/api/repos/create", self.h_create),
            ("delete", r"/api/repos/delete", self.h_delete),
            ("validate", r"/api/validate-yaml", self.h_validate),
            ("info", rf"/api/{R}", self.h_info),
            ("info", rf"/api/{R}/revision/([^/]+)", self.h_info),
            ("tree", rf"/api/{R}/tree/([^/]+)(/.*)?", self.h_tree),
            ("paths-info", rf"/api/{R}/paths-info/([^/]+)", self.h_paths_info),
            ("preupload", rf"/api/{R}/preupload/([^/]+)", self.h_preupload),
            ("commit", rf"/api/{R}/commit/([^/]+)", self.h_commit),
            ("branch", rf"/api/{R}/branch/([^/]+)", self.h_branch),
            ("variables", rf"/api/{R}/variables", self.h_variables),
            ("settings", rf"/api/{R}/settings", self.h_settings),
            ("lfs-batch", r"/(?:(datasets|spaces)/)?([^/]+)/([^/]+)\.git/info/lfs/objects/batch", self.h_lfs_batch),
            ("lfs-verify", r"/(?:(datasets|spaces)/)?([^/]+)/([^/]+)\.git/info/lfs/objects/verify", self.h_lfs_verify),
            ("lfs-put", r"/lfs-upload/([0-9a-f]{64})", self.h_lfs_put),
            ("cdn", r"/lfs-cdn/([0-9a-f]{64})", self.h_cdn),
            ("resolve", r"/(datasets|spaces)/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)", self.h_resolve),
            ("resolve", r"/()([^/]+)/([^/]+)/resolve/([^/]+)/(.+)", self.h_resolve),
        ]
        for kind, rx, fn in table:
            m = re.fullmatch(rx, path)
            if m:
                return kind, fn, m.groups()
        return "unknown", None, ()

    # ------------------------------------------------------------------ helpers
    def _user(self, headers: dict[str, str]) -> str | None:
        auth = headers.get("authorization")
        if not auth:
            return None
        if auth != f"Bearer {self.token}":
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.user

    def _write_user(self, headers, namespace: str) -> str:
        user = self._user(headers)
        if user is None:
            raise HubError(401, "You must be authenticated to access this resource")
        if namespace not in (user, *self.orgs):
            raise HubError(403, f"You don't have the rights to create or write to {namespace}")
        return user

    def _get_repo(self, t: str, ns: str, name: str, headers, write: bool = False) -> Repo:
        repo_type = self._TYPES.get(t, t or "model")
        repo = self.repos.get((repo_type, f"{ns}/{name}"))
        user = self._write_user(headers, ns) if write else self._user(headers)
        if repo is None or (repo.private and user is None):
            raise HubError(404 if user else 401, "Repository not found", "RepoNotFound")
        return repo

    @staticmethod
    def _rev(repo: Repo, rev: str) -> Commit:
        c = repo.resolve(unquote(rev))
        if c is None:
            raise HubError(404, f"Invalid rev id: {unquote(rev)}", "RevisionNotFound")
        return c

    @staticmethod
    def _json(obj, status: int = 200, headers: dict | None = None):
        return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode()

    def _repo_url(self, repo: Repo) -> str:
        prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo.type]
        return f"{self.url}/{prefix}{repo.id}"

    def _entry_json(self, path: str, e: Entry) -> dict:
        d = {"type": "file", "oid": e.oid, "size": e.size, "path": path}
        if e.lfs:
            d["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": len(lfs_pointer(e.sha256, e.size))}
        return d

    @staticmethod
    def _dirs(files: dict[str, Entry]) -> set[str]:
        out = set()
        for p in files:
            parts = p.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                out.add("/".join(parts[:i]))
        return out

    def _card_data(self, c: Commit) -> dict | None:
        e = c.files.get("README.md")
        if e is None or e.lfs:
            return None
        text = self.blobs[e.oid].decode(errors="replace")
        m = re.match(r"^---\n(.*?)\n---", text, re.S)
        try:
            data = yaml.safe_load(m.group(1)) if m else None
        except yaml.YAMLError:  # the Hub shows no card metadata for a card it cannot parse
            data = None
        return data if isinstance(data, dict) else None

    # ------------------------------------------------------------------ endpoints
    def h_whoami(self, method, query, headers, body):
        user = self._user(headers)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self._json({
            "type": "user", "id": "0" * 24, "name": user, "fullname": "Test User",
            "orgs": [{"type": "org", "name": o} for o in self.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}},
        })

    def h_create(self, method, query, headers, body):
        if method != "POST":
            raise HubError(405, "method not allowed")
        p = json.loads(body or b"{}")
        name, ns = p.get("name"), p.get("organization") or self.user
        repo_type = p.get("type") or "model"
        self._write_user(headers, ns)
        if not isinstance(name, str) or not REPO_NAME.match(name) or "--" in name:
            raise HubError(400, f"Invalid repo name {name!r}")
        if repo_type not in ("model", "dataset", "space"):
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        repo_id = f"{ns}/{name}"
        existing = self.repos.get((repo_type, repo_id))
        if existing is not None:
            return self._json({"error": f"You already created this {repo_type} repo",
                               "url": self._repo_url(existing)}, 409)
        sdk = p.get("sdk")
        if repo_type == "space" and sdk not in SPACE_SDKS:
            raise HubError(400, f"Invalid space sdk {sdk!r}")
        private = p.get("visibility") == "private" or bool(p.get("private"))
        repo = self.create(repo_type, repo_id, private=private, sdk=sdk)
        for v in p.get("variables") or []:
            repo.variables[v["key"]] = {"value": v["value"], "updatedAt": _now()}
        return self._json({"url": self._repo_url(repo), "name": repo_id, "id": secrets.token_hex(12)})

    def h_settings(self, method, query, headers, body, t, ns, name):
        if method != "PUT":
            raise HubError(405, "method not allowed")
        repo = self._get_repo(t, ns, name, headers, write=True)
        p = json.loads(body or b"{}")
        if "private" in p:
            repo.private = bool(p["private"])
        if p.get("visibility") in ("private", "public"):  # huggingface_hub 2.x sends this
            repo.private = p["visibility"] == "private"
        return self._json({"private": repo.private})

    def h_delete(self, method, query, headers, body):
        if method != "DELETE":
            raise HubError(405, "method not allowed")
        p = json.loads(body or b"{}")
        ns = p.get("organization") or self.user
        self._write_user(headers, ns)
        key = (p.get("type") or "model", f"{ns}/{p.get('name')}")
        if self.repos.pop(key, None) is None:
            raise HubError(404, f"{key[1]}: repository not found")
        return self._json({})

    def h_info(self, method, query, headers, body, t, ns, name, rev="main"):
        repo = self._get_repo(t, ns, name, headers)
        c = self._rev(repo, rev)
        blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for p, e in sorted(c.files.items()):
            s = {"rfilename": p}
            if blobs:
                s.update(size=e.size, blobId=e.oid)
                if e.lfs:
                    s["lfs"] = {"sha256": e.sha256, "size": e.size, "pointerSize": len(lfs_pointer(e.sha256, e.size))}
            siblings.append(s)
        card = self._card_data(c) or {}
        d = {"_id": hashlib.md5(repo.id.encode()).hexdigest()[:24], "id": repo.id, "author": ns, "sha": c.oid,
             "lastModified": c.date, "createdAt": repo.created, "private": repo.private, "gated": False,
             "disabled": False, "likes": 0, "tags": list(card.get("tags") or []), "cardData": card or None,
             "siblings": siblings}
        if repo.type == "model":
            d.update(modelId=repo.id, downloads=0, pipeline_tag=card.get("pipeline_tag"),
                     library_name=card.get("library_name"))
        if repo.type == "space":
            d.update(sdk=repo.sdk, runtime={"stage": "BUILDING", "hardware": {
                "current": None, "requested": card.get("suggested_hardware")}})
        return self._json(d)

    def h_tree(self, method, query, headers, body, t, ns, name, rev, sub):
        repo = self._get_repo(t, ns, name, headers)
        c = self._rev(repo, rev)
        base = unquote(sub or "").strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        if base and base not in self._dirs(c.files):
            raise HubError(404, f"{base} does not exist on {rev}", "EntryNotFound",
                           {"X-Repo-Commit": c.oid})
        items = []
        prefix = base + "/" if base else ""
        for d in sorted(self._dirs(c.files)):
            if d.startswith(prefix) and (recursive or "/" not in d[len(prefix):]):
                items.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d})
        for p, e in sorted(c.files.items()):
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix):]):
                items.append(self._entry_json(p, e))
        start = int(query.get("cursor", ["0"])[0])
        page = items[start:start + self.page_size]
        extra = {}
        if start + self.page_size < len(items):
            q = f"recursive={str(recursive).lower()}&cursor={start + self.page_size}"
            sub_q = "/" + quote(base, safe="") if base else ""
            extra["Link"] = f'<{self.url}/api/{t}/{ns}/{name}/tree/{rev}{sub_q}?{q}>; rel="next"'
        return self._json(page, headers=extra)

    def h_paths_info(self, method, query, headers, body, t, ns, name, rev):
        repo = self._get_repo(t, ns, name, headers)
        c = self._rev(repo, rev)
        form = parse_qs(body.decode(), keep_blank_values=True)
        out, dirs = [], self._dirs(c.files)
        for p in form.get("paths", []):
            p = p.strip("/")
            if p in c.files:
                out.append(self._entry_json(p, c.files[p]))
            elif p in dirs:
                out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p})
        return self._json(out)

    def h_preupload(self, method, query, headers, body, t, ns, name, rev):
        repo = self._get_repo(t, ns, name, headers, write=True)
        c = self._rev(repo, rev)
        out = []
        for f in json.loads(body).get("files", []):
            sample = base64.b64decode(f.get("sample", ""))
            mode = self._upload_mode(c, f["path"], int(f["size"]), sample)
            d = {"path": f["path"], "uploadMode": mode, "shouldIgnore": False}
            e = c.files.get(f["path"])
            if e is not None:
                d["oid"] = e.sha256 if e.lfs else e.oid
            out.append(d)
        return self._json({"files": out, "commitOid": c.oid})

    def h_lfs_batch(self, method, query, headers, body, t, ns, name):
        repo = self._get_repo(t or "models", ns, name, headers, write=True)
        p = json.loads(body)
        if p.get("operation") != "upload":
            raise HubError(400, "only uploads are supported")
        if "basic" not in (p.get("transfers") or ["basic"]):
            raise HubError(400, "this server only speaks the basic transfer")
        objs = []
        prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo.type]
        for o in p.get("objects", []):
            oid, size = o["oid"], int(o["size"])
            d = {"oid": oid, "size": size, "authenticated": True}
            if oid not in repo.lfs_objects:
                target = quote(f"{repo.type}:{repo.id}", safe="")
                d["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-upload/{oid}?size={size}&repo={target}&ticket={self._ticket}",
                               "header": {}},
                    "verify": {"href": f"{self.url}/{prefix}{repo.id}.git/info/lfs/objects/verify", "header": {}},
                }
            objs.append(d)
        return self._json({"transfer": "basic", "objects": objs, "hash_algo": "sha256"},
                          headers={"Content-Type": "application/vnd.git-lfs+json"})

    def h_lfs_put(self, method, query, headers, body, oid):
        if method != "PUT":
            raise HubError(405, "method not allowed")
        if query.get("ticket", [""])[0] != self._ticket:
            raise HubError(403, "bad upload ticket")
        size = int(query.get("size", ["-1"])[0])
        if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"uploaded object does not match oid {oid} / size {size}")
        repo_type, _, repo_id = unquote(query.get("repo", [""])[0]).partition(":")
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(400, "upload for an unknown repo")
        self.lfs[oid] = body
        repo.lfs_objects.add(oid)
        return 200, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}, b""

    def h_lfs_verify(self, method, query, headers, body, t, ns, name):
        repo = self._get_repo(t or "models", ns, name, headers, write=True)
        p = json.loads(body)
        if p["oid"] not in repo.lfs_objects or len(self.lfs[p["oid"]]) != int(p["size"]):
            raise HubError(404, "object not uploaded")
        return self._json({"ok": True})

    def h_commit(self, method, query, headers, body, t, ns, name, rev):
        repo = self._get_repo(t, ns, name, headers, write=True)
        branch = unquote(rev)
        if query.get("create_pr"):
            raise HubError(400, "pull requests are not supported by the test Hub")
        if branch not in repo.refs:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        lines = [json.loads(ln) for ln in body.decode().splitlines() if ln.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first line must be the commit header")
        hdr = lines[0]["value"]
        head = repo.commits[repo.refs[branch]]
        parent = hdr.get("parentCommit")
        if parent is not None and not head.oid.startswith(parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        for ln in lines[1:]:
            key, v = ln["key"], ln["value"]
            path = v["path"]
            if path.startswith("/") or ".." in path.split("/"):
                raise HubError(400, f"invalid path {path!r}")
            if key == "file":
                data = base64.b64decode(v["content"])
                if len(data) > REGULAR_MAX:
                    raise HubError(400, f"{path}: files over 10 MB must be stored with LFS")
                files[path] = self._put_regular(data)
            elif key == "lfsFile":
                oid = v["oid"]
                if oid not in repo.lfs_objects:
                    raise HubError(400, f"{path}: LFS object {oid} was never uploaded")
                files[path] = self._lfs_entry(oid, len(self.lfs[oid]))
            elif key == "deletedFile":
                if path not in files:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                files = {p: e for p, e in files.items() if not p.startswith(path.rstrip("/") + "/")}
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        c = Commit(self._new_oid(repo.id, hdr.get("summary", "")), head.oid, hdr.get("summary", ""),
                   hdr.get("description", ""), _now(), files)
        repo.commits[c.oid] = c
        repo.refs[branch] = c.oid
        return self._json({"success": True, "commitOid": c.oid, "commitUrl": f"{self._repo_url(repo)}/commit/{c.oid}",
                           "hookOutput": "", "pullRequestUrl": None})

    def h_branch(self, method, query, headers, body, t, ns, name, branch):
        repo = self._get_repo(t, ns, name, headers, write=True)
        branch = unquote(branch)
        if method != "POST":
            raise HubError(405, "method not allowed")
        if branch in repo.refs:
            raise HubError(409, f"Reference already exists: {branch}")
        start = (json.loads(body or b"{}") or {}).get("startingPoint") or "main"
        repo.refs[branch] = self._rev(repo, start).oid
        return self._json({})

    def h_variables(self, method, query, headers, body, t, ns, name):
        write = method != "GET"
        repo = self._get_repo(t, ns, name, headers, write=True)
        if repo.type != "space":
            raise HubError(400, "variables exist only for Spaces")
        if write:
            p = json.loads(body or b"{}")
            if method == "POST":
                repo.variables[p["key"]] = {"value": p["value"], "description": p.get("description"), "updatedAt": _now()}
            elif method == "DELETE":
                repo.variables.pop(p["key"], None)
        return self._json(repo.variables)

    def h_resolve(self, method, query, headers, body, t, ns, name, rev, path):
        repo = self._get_repo(t, ns, name, headers)
        c = self._rev(repo, rev)
        path = unquote(path)
        e = c.files.get(path)
        if e is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": c.oid})
        h = {"X-Repo-Commit": c.oid, "ETag": f'"{e.oid}"', "Accept-Ranges": "bytes"}
        if e.lfs:
            h.update({"X-Linked-Etag": f'"{e.sha256}"', "X-Linked-Size": str(e.size),
                      "Location": f"{self.cdn_url}/lfs-cdn/{e.sha256}?expires={int(time.time()) + 3600}"})
            return 302, h, b""
        return self._ranged(self.blobs[e.oid], headers, h)

    def h_cdn(self, method, query, headers, body, sha256):
        data = self.lfs.get(sha256)
        if data is None:
            raise HubError(404, "no such object")
        return self._ranged(data, headers, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"})

    @staticmethod
    def _ranged(data: bytes, req_headers: dict, h: dict):
        h = {"Content-Type": "application/octet-stream", **h}
        rng = req_headers.get("range")
        if not rng:
            return 200, h, data
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
        n = len(data)
        if not m or (m.group(1) == "" and m.group(2) == ""):
            raise HubError(416, f"bad range {rng}", headers={"Content-Range": f"bytes */{n}"})
        if m.group(1) == "":
            start, end = max(0, n - int(m.group(2))), n - 1
        else:
            start = int(m.group(1))
            end = min(int(m.group(2)), n - 1) if m.group(2) else n - 1
        if start >= n or start > end:
            raise HubError(416, f"range {rng} not satisfiable", headers={"Content-Range": f"bytes */{n}"})
        h["Content-Range"] = f"bytes {start}-{end}/{n}"
        return 206, h, data[start:end + 1]

    def h_validate(self, method, query, headers, body):
        p = json.loads(body or b"{}")
        errors = validate_metadata(p.get("content", ""), p.get("repoType") or "model")
        if errors:
            return self._json({"errors": [{"message": m} for m in errors], "warnings": []}, 400)
        return self._json({"errors": [], "warnings": []})


def validate_metadata(content: str, repo_type: str) -> list[str]:
    """A subset of the Hub's README metadata rules (the ones viscodex's cards and Space READMEs touch)."""
    m = re.match(r"^---\r?\n(.*?)\r?\n---\r?\n", content, re.S)
    if not m:
        return []  # no metadata: the Hub only warns
    try:
        meta = yaml.safe_load(m.group(1))
    except yaml.YAMLError as e:
        return [f"invalid YAML: {e}"]
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return ["metadata must be a YAML mapping"]
    err = []

    def str_list(key, check=None):
        v = meta.get(key)
        if v is None:
            return
        vals = [v] if isinstance(v, str) else v
        if not isinstance(vals, list) or not all(isinstance(x, str) for x in vals):
            err.append(f'"{key}" must be a string or a list of strings')
        elif check:
            for x in vals:
                if not check(x):
                    err.append(f'"{key}": invalid value {x!r}')

    lic = meta.get("license")
    if lic is not None and lic not in LICENSES:
        err.append(f'"license" must be one of the Hub licence ids, got {lic!r}')
    if lic == "other" and repo_type == "model" and not meta.get("license_name"):
        err.append('"license_name" is required when "license" is "other"')
    str_list("tags")
    str_list("datasets", HUB_ID.match)
    if repo_type == "model":
        str_list("base_model", HUB_ID.match)
        rel = meta.get("base_model_relation")
        if rel is not None:
            if rel not in RELATIONS:
                err.append(f'"base_model_relation" must be one of {sorted(RELATIONS)}, got {rel!r}')
            if not meta.get("base_model"):
                err.append('"base_model_relation" needs "base_model"')
        pt = meta.get("pipeline_tag")
        if pt is not None and pt not in PIPELINE_TAGS:
            err.append(f'"pipeline_tag" is not a valid task: {pt!r}')
        if "model-index" in meta:
            err += _check_model_index(meta["model-index"])
    if repo_type == "space":
        if meta.get("sdk") not in SPACE_SDKS:
            err.append(f'"sdk" must be one of {sorted(SPACE_SDKS)}')
        for k in ("sdk_version", "python_version", "app_file", "title", "emoji"):
            if k in meta and not isinstance(meta[k], str):
                err.append(f'"{k}" must be a string')
        for k in ("colorFrom", "colorTo"):
            if k in meta and meta[k] not in SPACE_COLORS:
                err.append(f'"{k}" must be one of {sorted(SPACE_COLORS)}')
        sd = meta.get("short_description")
        if sd is not None and (not isinstance(sd, str) or len(sd) > 60):
            err.append('"short_description" must be a string of at most 60 characters')
        hw = meta.get("suggested_hardware")
        if hw is not None and hw not in SPACE_HARDWARE:
            err.append(f'"suggested_hardware" is not a hardware flavor: {hw!r}')
        str_list("models", HUB_ID.match)
        str_list("preload_from_hub", lambda x: bool(HUB_ID.match(x.split()[0])))
    return err


def _check_model_index(mi) -> list[str]:
    if not isinstance(mi, list) or not mi:
        return ['"model-index" must be a non-empty list']
    err = []
    for model in mi:
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            err.append('"model-index" items need a "name"')
            continue
        for res in model.get("results") or []:
            task, ds, metrics = res.get("task"), res.get("dataset"), res.get("metrics")
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                err.append('"model-index" results need task.type')
            if not isinstance(ds, dict) or not isinstance(ds.get("type"), str) or not isinstance(ds.get("name"), str):
                err.append('"model-index" results need dataset.type and dataset.name')
            if not isinstance(metrics, list) or not metrics:
                err.append('"model-index" results need metrics')
                continue
            for mt in metrics:
                if not isinstance(mt, dict) or "type" not in mt or "value" not in mt:
                    err.append('"model-index" metrics need type and value')
    return err


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, fmt, *args):  # keep test output clean
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _serve(self):
        body = self._body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, h, data = self.hub.handle(self.command, self.path, headers, body)
        self.send_response(status)
        for k, v in h.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve


def _patch_client(mp: pytest.MonkeyPatch, hub: FakeHub, home) -> None:
    """Point huggingface_hub (already imported or not) at the fake Hub, with a private cache.

    huggingface_hub 2.4 reads HF_ENDPOINT into `constants.ENDPOINT` and the resolve-URL template
    at import, binds module-level helpers (`get_safetensors_metadata`, ...) to an `HfApi` made at
    import, and imports `HF_HUB_CACHE` by name into the cache manager: patch each of those, plus
    the environment for subprocesses. Xet is disabled (it cannot talk to a local server) and
    offline mode forced off (it blocks localhost too).
    """
    from huggingface_hub import constants, hf_api
    from huggingface_hub.utils import _cache_manager

    env = {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(home),
           "HF_HUB_CACHE": str(home / "hub"), "HF_TOKEN": hub.token, "HF_HUB_OFFLINE": "0",
           "TRANSFORMERS_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
           "HF_TOKEN_PATH": str(home / "token")}
    for k, v in env.items():
        mp.setenv(k, v)
    mp.setattr(constants, "ENDPOINT", hub.url)
    mp.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    mp.setattr(constants, "HF_HUB_DISABLE_XET", True)
    mp.setattr(constants, "HF_HUB_OFFLINE", False)
    mp.setattr(constants, "HF_HOME", str(home))
    mp.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    mp.setattr(constants, "HUGGINGFACE_HUB_CACHE", str(home / "hub"))
    mp.setattr(constants, "HF_ASSETS_CACHE", str(home / "assets"))
    mp.setattr(constants, "HF_XET_CACHE", str(home / "xet"))
    mp.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    mp.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    mp.setattr(_cache_manager, "HF_HUB_CACHE", str(home / "hub"))
    mp.setattr(hf_api.api, "endpoint", hub.url)
    with contextlib.suppress(ImportError):  # transformers keeps its own copy of the cache path
        import transformers.utils.hub as th

        if hasattr(th, "HF_HUB_CACHE"):
            mp.setattr(th, "HF_HUB_CACHE", str(home / "hub"))
        # transformers keeps one HfApi, made with the endpoint of its day: one made before this patch
        # (an earlier test loading a missing path, say) would send list_repo_tree to huggingface.co
        # and retry for ~90 s
        if hasattr(th, "_hf_api"):
            mp.setattr(th, "_hf_api", None)


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """The fake Hub, running for the whole session, with huggingface_hub pointed at it and a
    logged-in user (`hub.user`, token `hub.token` in HF_TOKEN). Repos persist across tests: use
    unique names. Environment and client patches are undone at the end of the session."""
    home = tmp_path_factory.mktemp("hf_home")
    server = FakeHub().start()
    mp = pytest.MonkeyPatch()
    try:
        _patch_client(mp, server, home)
        yield server
    finally:
        mp.undo()
        server.stop()


@pytest.fixture(autouse=True)
def _hub_faults_end_with_the_test(request):
    """A test's injected faults and stalls that were not consumed must not leak into the next test
    (the server lives for the session): cleared after every test that used the fake Hub."""
    yield
    if "hub" in request.fixturenames:
        request.getfixturevalue("hub").clear_faults()


def unique(name: str) -> str:
    """A repo name no other test uses."""
    return f"{name}-{secrets.token_hex(3)}"




LICENSE_README = "---\nlicense: {license}\n---\n# {name}\n\nA tiny test model.\n"


def push_folder(folder, repo_id: str, *, license: str | None = "apache-2.0", message: str = "upload") -> str:
    """Create `repo_id` on the fake Hub and commit `folder` (plus a README declaring `license`)
    with the real client; returns the commit sha."""
    from pathlib import Path

    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    ops = [CommitOperationAdd(p.relative_to(folder).as_posix(), str(p))
           for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != "README.md"]
    if license:
        ops.append(CommitOperationAdd("README.md", LICENSE_README.format(license=license, name=repo_id).encode()))
    return api.create_commit(repo_id, operations=ops, commit_message=message).oid


@pytest.fixture(scope="session")
def hub_trio(hub, trio):
    """The tiny trio on the fake Hub: {"base"|"coder"|"vlm": repo id}, each apache-2.0, plus
    "revisions": {role: commit sha}."""
    out, revs = {}, {}
    for role in ("base", "coder", "vlm"):
        rid = f"{hub.user}/{unique('tiny-' + role)}"
        revs[role] = push_folder(trio[role], rid)
        out[role] = rid
    out["revisions"] = revs
    return out


__all__ = ["FakeHub", "hub", "hub_trio", "push_folder", "unique", "validate_metadata", "git_blob_oid"]
