"""Supervised fine-tuning data: records in, padded model batches out.

Accepted record layouts (one JSON object per record, in a .json list, a .jsonl file, a folder of
those, a Hub dataset repo holding them, or any Hub dataset `datasets` can load):

- MCD / LLaMA-Factory: {"messages": [{"role": "user", "content": "<image>\\n..."}, ...],
  "images": ["rel/path.png", ...], "category": "html"}; each `<image>` marks where an image goes.
- TRL: {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ...}]},
  ...], "images": [...]}.
- ShareGPT / LLaVA: {"conversations": [{"from": "human", "value": "<image>\\n..."},
  {"from": "gpt", "value": ...}], "image": "a.png"} (or "images": [...]).

Images may be paths (relative to --images, or to the data file's folder), PIL images, or
`datasets` image dicts ({"bytes": ..., "path": ...}).

Every record is checked once before training (structure, images readable, token length with the
exact number of image tokens the processor will produce): bad records are skipped and counted
by reason, never fatal. The prompt is rendered with the model's own chat template; the loss
covers the assistant turns only (content and end-of-turn token), never prompts or image tokens.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._util.hubref import HubRef
from ..errors import DataError, ViscodexError
from .flags import arg

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"
# Why a record was skipped (keys of DataIndex.skipped, in this order in reports).
REASONS = (
    "malformed",  # not a conversation we can read (no messages, unknown roles, bad content)
    "no_assistant_turn",  # nothing to learn from
    "image_count_mismatch",  # <image> placeholders and images disagree
    "missing_image",  # an image file does not exist
    "unreadable_image",  # an image file exists but is not an image PIL can open
    "bad_image_size",  # an image the processor refuses (aspect ratio > 200)
    "video",  # has videos (`videos`, `<video>`, video content items): not trained, never as text
    "too_long",  # longer than --max-len after the truncation policy
)
TRUNCATION = ("truncate", "drop")
ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                "model": "assistant", "bot": "assistant", "system": "system"}
DATA_FILE_SUFFIXES = (".json", ".jsonl")


class InvalidRecord(Exception):
    """One record cannot be used; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


# ---------------------------------------------------------------- records -> samples
@dataclass
class Sample:
    """A record normalised to the chat-template form: content lists of text/image items."""

    messages: list[dict]
    images: list[Any]  # resolved Paths, PIL images or raw bytes, in placeholder order
    category: str | None = None


def _split_placeholders(text: str) -> list[dict]:
    items: list[dict] = []
    parts = text.split(IMAGE_PLACEHOLDER)
    for i, part in enumerate(parts):
        if i:
            items.append({"type": "image"})
        if part:
            items.append({"type": "text", "text": part})
    return items


def _content_items(content: Any) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str) and VIDEO_PLACEHOLDER in content:
        raise InvalidRecord("video", "a <video> placeholder")
    if isinstance(content, str):
        return _split_placeholders(content)
    if isinstance(content, list):
        items = []
        for c in content:
            if isinstance(c, dict) and (c.get("type") == "video" or c.get("video") is not None):
                raise InvalidRecord("video", "a video content item")
            if isinstance(c, str) or isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str):
                items.extend(_content_items(c if isinstance(c, str) else c["text"]))
            elif isinstance(c, dict) and (c.get("type") == "image" or "image" in c and c.get("type") in (None, "image")):
                items.append({"type": "image"})
            elif isinstance(c, dict) and c.get("type") == "text" and c.get("text") is None:
                continue  # datasets fills absent fields of a mixed list with None
            else:
                raise InvalidRecord("malformed", f"unsupported content item {str(c)[:80]!r}")
        return items
    raise InvalidRecord("malformed", f"message content of type {type(content).__name__}")


def _record_images(rec: dict) -> list[Any]:
    imgs = rec.get("images")
    if imgs is None:
        imgs = rec.get("image")
    if imgs is None:
        return []
    if isinstance(imgs, (str, bytes, dict)) or hasattr(imgs, "size"):
        return [imgs]
    if isinstance(imgs, (list, tuple)):
        return [i for i in imgs if i is not None]
    raise InvalidRecord("malformed", f"`images` of type {type(imgs).__name__}")


class ImageResolver:
    """Turns an image reference into a Path, PIL image or bytes; relative paths are looked up
    under the image root (and, as archives often add or drop one top folder, one level off)."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root).expanduser() if root is not None else None
        self._subdirs: list[Path] | None = None

    def _candidates(self, rel: Path) -> list[Path]:
        if rel.is_absolute() or self.root is None:
            return [rel]
        out = [self.root / rel]
        if len(rel.parts) > 1:
            out.append(self.root / Path(*rel.parts[1:]))
        if self._subdirs is None:
            try:
                self._subdirs = [d for d in self.root.iterdir() if d.is_dir()][:2]
            except OSError:
                self._subdirs = []
        if len(self._subdirs) == 1:
            out.append(self._subdirs[0] / rel)
        return out

    def __call__(self, ref: Any) -> Any:
        if isinstance(ref, dict):  # datasets Image(decode=False) / TRL {"bytes", "path"}
            if ref.get("bytes"):
                return bytes(ref["bytes"])
            ref = ref.get("path")
            if not ref:
                raise InvalidRecord("missing_image", "image entry with neither bytes nor path")
        if isinstance(ref, bytes):
            return ref
        if hasattr(ref, "size") and hasattr(ref, "convert"):  # PIL image
            return ref
        if not isinstance(ref, (str, os.PathLike)):
            raise InvalidRecord("malformed", f"image reference of type {type(ref).__name__}")
        ref_s = str(ref)
        if ref_s.startswith(("http://", "https://")):
            raise InvalidRecord("missing_image", f"{ref_s}: remote images are not fetched; download them first")
        for p in self._candidates(Path(ref_s).expanduser()):
            if p.is_file():
                return p
        raise InvalidRecord("missing_image", f"{ref_s} not found" + (f" under {self.root}" if self.root else ""))


@dataclass(frozen=True)
class BadLine:
    """A .jsonl line that is not JSON: kept as a record so it is counted and named, not dropped."""

    file: str
    line: int
    error: str


def normalize_record(rec: Any, resolve: ImageResolver) -> Sample:
    """One record in any accepted layout -> Sample, or InvalidRecord with the reason."""
    if isinstance(rec, BadLine):
        raise InvalidRecord("malformed", f"{rec.file} line {rec.line} is not valid JSON ({rec.error}); "
                                         f"write one JSON object per line")
    if not isinstance(rec, dict):
        raise InvalidRecord("malformed", f"record is a {type(rec).__name__}, not an object")
    turns = rec.get("messages")
    if turns is None:
        turns = rec.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise InvalidRecord("malformed", "no `messages` (or `conversations`) list")
    videos = rec.get("videos", rec.get("video"))
    if videos:  # LLaMA-Factory / ShareGPT video records: refused, not trained as the text "<video>"
        raise InvalidRecord("video", f"{len(videos) if isinstance(videos, list) else 1} video(s)")
    messages = []
    for t in turns:
        if not isinstance(t, dict):
            raise InvalidRecord("malformed", "a turn is not an object")
        role = ROLE_ALIASES.get(str(t.get("role", t.get("from", ""))).lower())
        if role is None:
            raise InvalidRecord("malformed", f"unknown role {t.get('role', t.get('from'))!r}")
        content = t["content"] if "content" in t else t.get("value")
        messages.append({"role": role, "content": _content_items(content)})
    if not any(m["role"] == "assistant" for m in messages):
        raise InvalidRecord("no_assistant_turn")
    images = _record_images(rec)
    n_ph = sum(1 for m in messages for c in m["content"] if c["type"] == "image")
    if n_ph == 0 and images:  # no placeholders: images go first in the first user turn
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is None:
            raise InvalidRecord("image_count_mismatch", f"{len(images)} image(s) but no user turn to hold them")
        first_user["content"] = [{"type": "image"} for _ in images] + first_user["content"]
    elif n_ph != len(images):
        raise InvalidRecord("image_count_mismatch", f"{n_ph} image placeholder(s), {len(images)} image(s)")
    if any(c["type"] == "image" for m in messages if m["role"] == "assistant" for c in m["content"]):
        raise InvalidRecord("malformed", "images inside an assistant turn")
    resolved = [resolve(i) for i in images]
    cat = rec.get("category")
    return Sample(messages, resolved, str(cat) if cat is not None else None)


def image_size(img: Any) -> tuple[int, int]:
    """(height, width) from the file header (no pixel decoding)."""
    from PIL import Image, UnidentifiedImageError

    if hasattr(img, "size") and hasattr(img, "convert"):
        w, h = img.size
        return h, w
    try:
        with Image.open(io.BytesIO(img) if isinstance(img, bytes) else img) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise InvalidRecord("unreadable_image", f"{_img_name(img)}: {e}") from None
    return h, w


def load_image(img: Any):
    """Decode to RGB, or InvalidRecord('unreadable_image')."""
    from PIL import Image

    try:
        if hasattr(img, "convert") and hasattr(img, "size"):
            return img.convert("RGB")
        with Image.open(io.BytesIO(img) if isinstance(img, bytes) else img) as im:
            return im.convert("RGB")
    except Exception as e:  # PIL raises many types for damaged files
        raise InvalidRecord("unreadable_image", f"{_img_name(img)}: {e}") from None


def _img_name(img: Any) -> str:
    return str(img) if isinstance(img, (str, Path)) else f"<{type(img).__name__}>"


# ---------------------------------------------------------------- samples -> tokens
@dataclass
class Measure:
    length: int  # tokens after image expansion, before truncation
    n_label: int  # loss tokens before truncation
    image_end: int  # index after the last image token (0 when no image)
    first_label: int


class Encoder:
    """Renders a Sample with the processor's chat template and turns it into model inputs with
    labels on assistant tokens only. `measure` gives exact lengths without decoding pixels."""

    def __init__(self, processor, max_len: int = 8192, min_pixels: int | None = None, max_pixels: int | None = None,
                 truncation: str = "truncate"):
        if truncation not in TRUNCATION:
            raise ViscodexError(f"unknown truncation policy {truncation!r}; choose from {', '.join(TRUNCATION)}")
        if getattr(processor, "chat_template", None) is None and getattr(processor.tokenizer, "chat_template", None) is None:
            raise DataError("the model's processor has no chat template; prompts cannot be built")
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_len = int(max_len)
        self.truncation = truncation
        ip = processor.image_processor
        size = getattr(ip, "size", None) or {}
        get = (lambda k: size.get(k)) if isinstance(size, dict) else (lambda k: getattr(size, k, None))
        self.min_pixels = int(min_pixels or get("shortest_edge") or get("min_pixels") or 56 * 56)
        self.max_pixels = int(max_pixels or get("longest_edge") or get("max_pixels") or 28 * 28 * 1280)
        if self.min_pixels > self.max_pixels:
            raise ViscodexError(f"{arg('min_pixels')} {self.min_pixels} is larger than {arg('max_pixels')} {self.max_pixels}")
        self.merge = int(getattr(ip, "merge_size", 2))
        self.image_token_id = int(processor.image_token_id)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.tokenizer.eos_token_id)

    # -- text
    def _render(self, messages: list[dict], gen: bool = False) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    def render(self, sample: Sample) -> tuple[str, list[tuple[int, int]]]:
        """Full text and the character spans of assistant turns (content + end-of-turn token).

        A span is what the template adds for assistant turn i: render(messages[:i+1]) minus
        render(messages[:i], add_generation_prompt=True), trailing whitespace excluded."""
        msgs = sample.messages
        full = self._render(msgs)
        spans = []
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            pre = self._render(msgs[:i], gen=True) if i else ""
            upto = self._render(msgs[: i + 1])
            if not (upto.startswith(pre) and full.startswith(upto)):
                raise DataError("the chat template does not render a conversation as a prefix of its continuation, "
                                "so assistant turns cannot be located for loss masking")
            end = len(upto.rstrip())
            if end > len(pre):
                spans.append((len(pre), end))
        return full, spans

    def image_tokens(self, hw: tuple[int, int]) -> int:
        try:
            n = self.processor.image_processor.get_number_of_image_patches(
                hw[0], hw[1], {"size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels}})
        except ValueError as e:
            raise InvalidRecord("bad_image_size", f"{hw[1]}x{hw[0]} px: {e}") from None
        return n // (self.merge**2)

    def measure(self, sample: Sample, text: str, spans, enc: dict | None = None) -> Measure:
        """Lengths from the unexpanded text (one image token per image) plus image token counts."""
        if enc is None:
            enc = self.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        ids, offs = enc["input_ids"], enc["offset_mapping"]
        counts = [self.image_tokens(image_size(i)) for i in sample.images]
        pad_pos = [k for k, t in enumerate(ids) if t == self.image_token_id]
        if len(pad_pos) != len(counts):
            raise InvalidRecord("image_count_mismatch",
                                f"the template emitted {len(pad_pos)} image token(s) for {len(counts)} image(s)")
        shift, k, image_end, first, n_label = 0, 0, 0, None, 0
        for pos, (tid, (s, e)) in enumerate(zip(ids, offs)):
            if k < len(pad_pos) and pos == pad_pos[k]:
                image_end = pos + shift + counts[k]
                shift += counts[k] - 1
                k += 1
                continue
            if _in_spans(s, e, spans):
                n_label += 1
                if first is None:
                    first = pos + shift
        return Measure(len(ids) + shift, n_label, image_end, first if first is not None else -1)

    def check(self, m: Measure) -> bool:
        """Raise InvalidRecord when the measured sample cannot be used; True when it will be truncated."""
        if m.n_label == 0:
            raise InvalidRecord("no_assistant_turn", "assistant turns render to no tokens")
        if m.length <= self.max_len:
            return False
        if self.truncation == "drop":
            raise InvalidRecord("too_long", f"{m.length} tokens > --max-len {self.max_len}")
        if m.image_end > self.max_len or m.first_label >= self.max_len:
            raise InvalidRecord("too_long", f"{m.length} tokens; prompt and images alone need "
                                            f"{max(m.image_end, m.first_label + 1)} > --max-len {self.max_len}")
        return True

    def encode(self, sample: Sample) -> dict[str, torch.Tensor]:
        """Model inputs for one sample (unpadded, truncated to max_len per the policy)."""
        text, spans = self.render(sample)
        images = [load_image(i) for i in sample.images]
        kw: dict[str, Any] = dict(return_offsets_mapping=True, return_text_replacement_offsets=True, return_tensors="pt")
        if images:
            kw["images"] = images
            kw["size"] = {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels}
        out = self.processor(text=[text], **kw)
        ids = out["input_ids"][0].tolist()
        offs = out["offset_mapping"][0].tolist()
        reps = (out.get("text_replacement_offsets") or [[]])[0]
        # assistant spans shifted into the expanded text (image placeholders before them grew)
        moved = [(_shift(s, reps), _shift(e, reps)) for s, e in spans]
        labels = [t if _in_spans(s, e, moved) else IGNORE_INDEX for t, (s, e) in zip(ids, offs)]
        mm = out["mm_token_type_ids"][0].tolist() if "mm_token_type_ids" in out else [
            int(t == self.image_token_id) for t in ids]
        labels = [IGNORE_INDEX if m else lab for lab, m in zip(labels, mm)]
        n = len(ids)
        if n > self.max_len:
            if self.truncation == "drop":
                raise InvalidRecord("too_long", f"{n} tokens > --max-len {self.max_len}")
            last_img = max((i for i, m in enumerate(mm) if m), default=-1)
            if last_img >= self.max_len or all(lab == IGNORE_INDEX for lab in labels[: self.max_len]):
                raise InvalidRecord("too_long", f"{n} tokens")
            n = self.max_len
        item = {
            "input_ids": torch.tensor(ids[:n], dtype=torch.long),
            "labels": torch.tensor(labels[:n], dtype=torch.long),
            "mm_token_type_ids": torch.tensor(mm[:n], dtype=torch.int32),
        }
        if images:
            item["pixel_values"] = torch.as_tensor(out["pixel_values"])
            item["image_grid_thw"] = torch.as_tensor(out["image_grid_thw"])
        return item


def _in_spans(s: int, e: int, spans) -> bool:
    return e > s and any(s < b and e > a for a, b in spans)


def _shift(pos: int, reps: list[dict]) -> int:
    d = 0
    for r in reps:
        (a, b), (na, nb) = r["span"], r["new_span"]
        if b <= pos:
            d += (nb - na) - (b - a)
    return pos + d


# ---------------------------------------------------------------- sources
@dataclass
class DataSource:
    """Where records come from: an indexable sequence of raw records plus their image root."""

    records: Sequence[Any]
    image_root: Path | None
    name: str  # for reports and the recipe: a Hub id or a file name, never an absolute path
    kind: str  # local-json, local-folder, hub-files, hub-datasets
    revision: str | None = None


def read_json_records(path: Path) -> list[Any]:
    """A .json list (or {"data": [...]}) or a .jsonl file; a bad JSONL line becomes a BadLine
    record (counted as malformed, its message names the line), a bad .json file is an error."""
    if path.suffix == ".jsonl":
        out = []
        with path.open("rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    out.append(BadLine(path.name, lineno, str(e)))
        return out
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); use one object per line in a .jsonl file") from None
    if isinstance(data, dict):
        for key in ("data", "train", "records"):
            if isinstance(data.get(key), list):
                return data[key]
        raise DataError(f"{path}: expected a JSON list of records (or an object with a `data` list)")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records")
    return data


def _extract_zip(zpath: Path) -> Path:
    """Extract an image archive once into the viscodex cache; return the folder. A file lock makes
    concurrent callers (every rank of a distributed run) wait for one extraction."""
    from filelock import FileLock
    from huggingface_hub import constants

    st = zpath.stat()
    key = hashlib.sha256(f"{zpath.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    dest = Path(constants.HF_HOME) / "viscodex" / "extracted" / f"{zpath.stem}-{key}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if (dest / ".viscodex-complete").exists():
            return dest
        tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log.info("extracting %s into %s (once)", zpath.name, dest)
        try:
            with zipfile.ZipFile(zpath) as z:
                z.extractall(tmp)  # zipfile drops absolute paths and '..' components
        except zipfile.BadZipFile as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(f"{zpath}: not a valid zip archive ({e})") from None
        (tmp / ".viscodex-complete").write_text("ok\n")
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(tmp, dest)
    return dest


def _records_from_files(files: list[Path]) -> list[Any]:
    out: list[Any] = []
    for f in files:
        out.extend(read_json_records(f))
    return out


def open_data(data: str, images: str | os.PathLike | None = None, split: str = "train") -> DataSource:
    """Resolve --data: a .json/.jsonl file, a folder (its top-level .json/.jsonl files, images in
    --images, a sub-folder, or .zip archives there), or a Hub dataset id[@revision]."""
    p = Path(data).expanduser()
    img_root = Path(images).expanduser() if images else None
    if img_root is not None and not img_root.is_dir():
        raise DataError(f"{arg('images')} {str(images)!r}: not a folder")
    if p.is_file():
        if p.suffix not in DATA_FILE_SUFFIXES:
            raise DataError(f"{data}: expected a .json or .jsonl file")
        return DataSource(read_json_records(p), img_root or p.parent, p.name, "local-json")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in DATA_FILE_SUFFIXES)
        if not files:
            raise DataError(f"{data}: no .json or .jsonl files in this folder")
        root = img_root
        if root is None:
            zips = sorted(p.glob("*.zip"))
            root = _extract_zip(zips[0]) if len(zips) == 1 else p
            if len(zips) > 1:
                log.warning("%s holds %d zip files; pass --images with the extracted images", data, len(zips))
        return DataSource(_records_from_files(files), root, p.name, "local-folder")
    if HubRef.parse(data).is_hub_id:
        return _open_hub(data, img_root, split)
    raise DataError(f"{arg('data')} {data!r}: no such file or folder (and not a Hub dataset id like owner/name)")


def _open_hub(spec: str, img_root: Path | None, split: str) -> DataSource:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    ref = HubRef.parse(spec)
    repo, rev = ref.ref, ref.revision
    api = HfApi()
    try:
        info = api.dataset_info(repo, revision=rev)
    except RepositoryNotFoundError:
        raise DataError(f"dataset {repo!r} not found on the Hub (or it is private: log in with `hf auth login`)") from None
    except HfHubHTTPError as e:
        raise DataError(f"cannot reach dataset {repo!r} on the Hub: {e}") from None
    sha = info.sha
    files = [s.rfilename for s in (info.siblings or [])]
    top_json = [f for f in files if "/" not in f and f.endswith(DATA_FILE_SUFFIXES)]
    if top_json:  # MCD layout: JSON records + image archive(s)
        local = [Path(hf_hub_download(repo, f, repo_type="dataset", revision=sha)) for f in top_json]
        root = img_root
        if root is None:
            zips = [f for f in files if "/" not in f and f.endswith(".zip")]
            if len(zips) == 1:
                root = _extract_zip(Path(hf_hub_download(repo, zips[0], repo_type="dataset", revision=sha)))
            else:
                root = local[0].parent
        return DataSource(_records_from_files(local), root, repo, "hub-files", sha)
    try:
        import datasets
    except ImportError:
        raise DataError("loading this Hub dataset needs the `datasets` library: pip install 'viscodex[train]'") from None
    ds = datasets.load_dataset(repo, revision=sha, split=split)
    return DataSource(ds, img_root, repo, "hub-datasets", sha)


# ---------------------------------------------------------------- the validated index
@dataclass
class DataIndex:
    """Result of checking every record once: which are used, their lengths, and the skip report."""

    valid: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    total: int = 0
    truncated: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first example, for the log
    categories: Counter = field(default_factory=Counter)

    def report(self) -> dict:
        return {
            "records": self.total,
            "used": len(self.valid),
            "skipped": {r: self.skipped[r] for r in REASONS if self.skipped.get(r)},
            "truncated": self.truncated,
            "categories": dict(sorted(self.categories.items())),
            "tokens": int(sum(self.lengths)),
        }

    def to_json(self) -> dict:
        return {"valid": self.valid, "lengths": self.lengths, "total": self.total, "truncated": self.truncated,
                "skipped": dict(self.skipped), "examples": self.examples, "categories": dict(self.categories)}

    @classmethod
    def from_json(cls, d: dict) -> DataIndex:
        return cls(list(d["valid"]), list(d["lengths"]), int(d["total"]), int(d["truncated"]), Counter(d["skipped"]),
                   dict(d["examples"]), Counter(d["categories"]))

    @classmethod
    def merge(cls, parts: Sequence[DataIndex]) -> DataIndex:
        """Parts of consecutive record ranges, in order -> the index of the whole range."""
        out = cls()
        for p in parts:
            out.valid += p.valid
            out.lengths += p.lengths
            out.total += p.total
            out.truncated += p.truncated
            out.skipped += p.skipped
            out.categories += p.categories
            for k, v in p.examples.items():
                out.examples.setdefault(k, v)
        return out


def build_index(source: DataSource, encoder: Encoder, max_records: int | None = None,
                progress: bool = True, chunk: int = 256, records: range | None = None) -> DataIndex:
    """Check every record (structure, images, exact length); tokenise in batches for speed.
    `records`: check only these record numbers (one part of a sharded preparation)."""
    from tqdm.auto import tqdm

    resolve = ImageResolver(source.image_root)
    if records is None:
        records = range(len(source.records) if max_records is None else min(max_records, len(source.records)))
    n = len(records)
    idx = DataIndex(total=n)

    def skip(i: int, e: InvalidRecord) -> None:
        idx.skipped[e.reason] += 1
        idx.examples.setdefault(e.reason, f"record {i}: {e.detail or e.reason}")

    bar = tqdm(total=n, desc="checking records", unit="rec", disable=not progress, dynamic_ncols=True)
    pending: list[tuple[int, Sample, str, list]] = []

    def flush():
        if not pending:
            return
        encs = encoder.tokenizer([t for _, _, t, _ in pending], return_offsets_mapping=True, add_special_tokens=False)
        for j, (i, s, t, spans) in enumerate(pending):
            try:
                m = encoder.measure(s, t, spans, {"input_ids": encs["input_ids"][j],
                                                  "offset_mapping": encs["offset_mapping"][j]})
                trunc = encoder.check(m)
            except InvalidRecord as e:
                skip(i, e)
                continue
            idx.valid.append(i)
            idx.lengths.append(min(m.length, encoder.max_len))
            idx.truncated += int(trunc)
            idx.categories[s.category or "none"] += 1
        bar.update(len(pending))
        pending.clear()

    for i in records:
        try:
            s = normalize_record(source.records[i], resolve)
            text, spans = encoder.render(s)
        except InvalidRecord as e:
            skip(i, e)
            bar.update(1)
            continue
        pending.append((i, s, text, spans))
        if len(pending) >= chunk:
            flush()
    flush()
    bar.close()
    return idx


class SFTDataset(torch.utils.data.Dataset):
    """Valid records, encoded lazily (images decoded in the data loader). A record whose image
    fails to decode at this point is replaced by the next valid one and counted."""

    def __init__(self, source: DataSource, index: DataIndex, encoder: Encoder):
        self.source, self.index, self.encoder = source, index, encoder
        self.resolve = ImageResolver(source.image_root)
        self.runtime_skipped: Counter = Counter()

    def __len__(self) -> int:
        return len(self.index.valid)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n = len(self)
        for k in range(min(n, 16)):
            rec_i = self.index.valid[(i + k) % n]
            try:
                return self.encoder.encode(normalize_record(self.source.records[rec_i], self.resolve))
            except InvalidRecord as e:
                self.runtime_skipped[e.reason] += 1
                log.warning("record %d skipped while loading (%s); using the next one", rec_i, e)
        raise DataError("16 records in a row failed while loading; check the images")


class SFTCollator:
    """Right-pads a list of encoded samples into one batch; images are concatenated in order.
    `token_types=False` leaves out mm_token_type_ids (a text-only model takes none)."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None, token_types: bool = True):
        self.pad_id = pad_id
        self.multiple = pad_to_multiple_of
        self.token_types = token_types

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        n = max(len(it["input_ids"]) for it in items)
        if self.multiple:
            n = (n + self.multiple - 1) // self.multiple * self.multiple
        b = len(items)
        batch = {
            "input_ids": torch.full((b, n), self.pad_id, dtype=torch.long),
            "attention_mask": torch.zeros((b, n), dtype=torch.long),
            "labels": torch.full((b, n), IGNORE_INDEX, dtype=torch.long),
            "mm_token_type_ids": torch.zeros((b, n), dtype=torch.int32),
        }
        for r, it in enumerate(items):
            m = len(it["input_ids"])
            batch["input_ids"][r, :m] = it["input_ids"]
            batch["attention_mask"][r, :m] = 1
            batch["labels"][r, :m] = it["labels"]
            batch["mm_token_type_ids"][r, :m] = it["mm_token_type_ids"]
        if not self.token_types:
            del batch["mm_token_type_ids"]
        with_img = [it for it in items if "pixel_values" in it]
        if with_img:
            batch["pixel_values"] = torch.cat([it["pixel_values"] for it in with_img])
            batch["image_grid_thw"] = torch.cat([it["image_grid_thw"] for it in with_img])
        return batch
