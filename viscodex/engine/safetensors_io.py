"""Streaming safetensors I/O: read one tensor at a time with positioned reads, write shards whose
header is known up front so tensor bytes can be appended as they are computed.

Plain `pread` instead of mmap keeps resident memory bounded by the tensors in flight (mapped file
pages count towards RSS), and the writer never holds a whole shard in memory.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import SourceError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's bytes live on disk."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate a safetensors header. Raises SourceError naming the file on corruption."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SourceError(f"{path}: not a safetensors file (only {len(head)} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or n + 8 > size:
                raise SourceError(f"{path}: corrupt safetensors header (header length {n}, file {size} bytes)")
            raw = f.read(n)
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror})") from e
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"{path}: corrupt safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise SourceError(f"{path}: corrupt safetensors header: the header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    base = 8 + n
    out: dict[str, TensorInfo] = {}
    spans = []
    for name, h in header.items():
        try:
            dtype, shape, (b, e) = h["dtype"], tuple(h["shape"]), h["data_offsets"]
            if not all(_is_int(x) for x in (*shape, b, e)):
                raise TypeError("non-integer shape or offset")
        except (KeyError, TypeError, ValueError) as ex:
            raise SourceError(f"{path}: corrupt header entry for tensor {name!r} ({ex})") from ex
        if any(s < 0 for s in shape):
            raise SourceError(f"{path}: tensor {name!r} has a negative dimension in shape {list(shape)}")
        if dtype not in DTYPES:
            raise SourceError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        info = TensorInfo(path, dtype, shape, base + b, e - b)
        if info.numel * DTYPES[dtype].itemsize != e - b or b < 0 or e < b:
            raise SourceError(f"{path}: tensor {name!r} shape {list(shape)} {dtype} does not match its byte range {b}..{e}")
        if base + e > size:
            raise SourceError(
                f"{path}: truncated: tensor {name!r} ends at byte {base + e} but the file has {size} bytes"
            )
        spans.append((b, e, name))
        out[name] = info
    # as safetensors.safe_open: the tensors tile the data section exactly (no overlap, no gap)
    end = 0
    for b, e, name in sorted(spans):
        if b < end:
            raise SourceError(f"{path}: corrupt safetensors header: tensor {name!r} (bytes {b}..{e}) overlaps another tensor")
        if b > end:
            raise SourceError(f"{path}: corrupt safetensors header: a gap of {b - end} bytes before tensor {name!r}")
        end = e
    return out, meta


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def read_range(path: Path, offset: int, nbytes: int, fd: int | None = None,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """Read bytes [offset, offset + nbytes) with positioned reads (no mmap) into `out` (a uint8
    tensor of nbytes, e.g. from a BufferPool) or a fresh tensor."""
    buf = torch.empty(nbytes, dtype=torch.uint8) if out is None else out
    own = fd is None
    if own:
        fd = os.open(path, os.O_RDONLY)
    try:
        view = memoryview(buf.numpy())
        got = 0
        while got < nbytes:
            n = os.preadv(fd, [view[got:]], offset + got)
            if n <= 0:
                raise SourceError(f"{path}: truncated while reading at byte {offset + got}")
            got += n
    finally:
        if own:
            os.close(fd)
    return buf


class BufferPool:
    """Reusable read buffers. Fresh memory costs a page fault per 4 KiB on first touch, and a merge
    streams the whole model through its buffers: a 14 GB (24-layer 3B-shaped) merge on the 2-core
    dev VM took 3.7M faults, 45 CPU-s and 28.8 s; with the pool 1.6M (the merged outputs), 33.5
    CPU-s and 21.8 s (benchmarks/README.md). A block is lent out as a tensor over it (torch.frombuffer holds a reference to the block),
    and is free again once no tensor or view of it is left: its reference count says so, whichever
    thread (compute, hasher, writer) dropped the last one. Reads too large for a block, too small to
    matter, or made while every block is out get fresh memory as before."""

    def __init__(self, block_bytes: int, max_blocks: int, min_bytes: int = 1 << 20):
        self.block_bytes, self.max_blocks, self.min_bytes = block_bytes, max_blocks, min_bytes
        self.blocks: list[bytearray] = []
        self.free_refs = 0  # a block's reference count when nothing borrows it
        self.lock = threading.Lock()
        self.lent = self.fresh = 0  # counts, for tests and tuning

    def take(self, nbytes: int) -> torch.Tensor:
        """A uint8 tensor of nbytes (contents undefined)."""
        with self.lock:
            if self.min_bytes <= nbytes <= self.block_bytes:
                for i in range(len(self.blocks)):
                    if sys.getrefcount(self.blocks[i]) == self.free_refs:
                        self.lent += 1
                        return torch.frombuffer(self.blocks[i], dtype=torch.uint8, count=nbytes)
                if len(self.blocks) < self.max_blocks:
                    self.blocks.append(bytearray(self.block_bytes))
                    self.free_refs = sys.getrefcount(self.blocks[-1])
                    self.lent += 1
                    return torch.frombuffer(self.blocks[-1], dtype=torch.uint8, count=nbytes)
            self.fresh += 1
        return torch.empty(nbytes, dtype=torch.uint8)


@dataclass
class PlannedTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = DTYPES[self.dtype].itemsize
        for s in self.shape:
            n *= s
        return n


def plan_shards(tensors: list[PlannedTensor], max_shard_bytes: int) -> list[list[PlannedTensor]]:
    """Split tensors, in order, into shards of at most max_shard_bytes (one tensor may exceed it)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return [s for s in shards if s]


def shard_names(n: int) -> list[str]:
    if n == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


class ShardWriter:
    """Writes one safetensors file whose tensors arrive in header order. Hashes as it writes."""

    def __init__(self, path: Path, tensors: list[PlannedTensor], metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.expected = [t.name for t in tensors]
        self.sizes = {t.name: t.nbytes for t in tensors}
        header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
        off = 0
        for t in tensors:
            header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [off, off + t.nbytes]}
            off += t.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-(len(raw)) % 8)
        self.total = 8 + len(raw) + off
        self._f = open(self.path, "wb", buffering=0)
        self._sha = hashlib.sha256()
        self._write(struct.pack("<Q", len(raw)) + raw)
        self._next = 0
        self._partial = 0

    def _write(self, data) -> None:
        mv = memoryview(data).cast("B")
        self._sha.update(mv)
        while mv:
            n = self._f.write(mv)
            mv = mv[n:]

    def write(self, name: str, data: torch.Tensor | bytes) -> None:
        """Append bytes of tensor `name`: the whole tensor at once or consecutive row chunks."""
        if self._next >= len(self.expected) or self.expected[self._next] != name:
            raise RuntimeError(f"writer for {self.path.name}: got {name!r}, expected {self.expected[self._next:self._next + 1]}")
        if isinstance(data, torch.Tensor):
            data = data.contiguous().view(torch.uint8).reshape(-1).numpy()
        n = memoryview(data).nbytes
        if self._partial + n > self.sizes[name]:
            raise RuntimeError(f"{name}: {self._partial + n} bytes, header says {self.sizes[name]}")
        self._write(data)
        self._partial += n
        if self._partial == self.sizes[name]:
            self._next += 1
            self._partial = 0

    def close(self) -> str:
        """Finish the file; returns its sha256."""
        while self._next < len(self.expected) and self.sizes[self.expected[self._next]] == 0:
            self._next += 1  # empty tensors have no bytes to write
        if self._next != len(self.expected):
            raise RuntimeError(f"{self.path.name}: closed after {self._next} of {len(self.expected)} tensors")
        os.fsync(self._f.fileno())  # durable before the folder is renamed into place
        self._f.close()
        return self._sha.hexdigest()

    def abort(self) -> None:
        self._f.close()
