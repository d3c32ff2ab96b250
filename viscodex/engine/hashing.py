"""sha256 of input files computed from the bytes the merge reads anyway.

Reads arrive in plan order; as long as a file's ranges arrive contiguously (the usual case: plans
follow the VLM's file order and same-architecture checkpoints share it) the hash costs no extra
I/O. A file read out of order, or only partly, is hashed from disk at the end instead.
"""
from __future__ import annotations

import hashlib
import os
import queue
import re
import threading
from pathlib import Path

import torch

from .sources import Source, sha256_file


class InputHasher:
    """Feeds consecutive byte ranges of input files into per-file sha256 on a background thread."""

    def __init__(self, sources: dict[str, Source], roles: set[str]):
        self.state: dict[Path, list] = {}  # file -> [hasher, next offset, in_order]
        self.files: dict[str, list[Path]] = {}
        self.free: dict[Path, str] = {}
        for role in roles:
            src = sources[role]
            self.files[role] = src.weight_files()
            for f in self.files[role]:
                real = Path(os.path.realpath(f))
                if src.repo_id and re.fullmatch(r"[0-9a-f]{64}", real.name):
                    self.free[f] = real.name  # Hub blobs are stored under their sha256
                elif f not in self.state:
                    self.state[f] = [hashlib.sha256(), 0, True]
        self.q: queue.Queue = queue.Queue(maxsize=4)  # chunks waiting: bounded, each holds a read buffer
        self.t = threading.Thread(target=self._run, name="viscodex-hash", daemon=True)
        self.t.start()

    def feed(self, file: Path, offset: int, data: torch.Tensor) -> None:
        if file in self.state:
            self.q.put((file, offset, data))

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            file, offset, data = item
            st = self.state[file]
            if not st[2]:
                continue
            if st[1] == 0 and offset > 0:  # the header (and anything before the first range read)
                with open(file, "rb") as f:
                    left = offset
                    while left:
                        b = f.read(min(left, 16 << 20))
                        st[0].update(b)
                        left -= len(b)
                st[1] = offset
            if offset != st[1]:
                st[2] = False
                continue
            st[0].update(memoryview(data.numpy()))
            st[1] += data.numel()

    def result(self) -> dict[str, dict[str, str]]:
        """{role: {file name: sha256}}, hashing from disk whatever was not seen in order."""
        self.q.put(None)
        self.t.join()
        out: dict[str, dict[str, str]] = {}
        for role, files in self.files.items():
            out[role] = {}
            for f in files:
                if f in self.free:
                    out[role][f.name] = self.free[f]
                    continue
                h, nxt, ok = self.state[f]
                out[role][f.name] = h.hexdigest() if ok and nxt == f.stat().st_size else sha256_file(f)
        return out

    def abort(self) -> None:
        self.q.put(None)
