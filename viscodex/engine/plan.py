"""The plan: a role, a policy and the inputs for every output tensor, decided and checked before
a single byte is written. `check_compatibility` collects every problem so one run reports them all.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from . import arch
from ..errors import CompatibilityError, SourceError
from .methods import Method, get_method, method_for
from .recipe import Recipe
from .safetensors_io import DTYPE_NAMES, TensorInfo
from .sources import Source

FLOAT_DTYPES = ("BF16", "F16", "F32", "F64")  # weights that can be merged
TORCH_DTYPE_NAMES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


@dataclass
class PlanItem:
    name: str  # canonical output name
    role: str
    policy: str  # merge / vlm / coder / base
    shape: tuple[int, ...]
    out_dtype: str  # safetensors dtype name
    inputs: dict[str, TensorInfo]  # source role -> tensor location, in the order the method wants
    method: Method | None = None
    params: dict | None = None
    rows_shared: int | None = None  # embeddings: rows merged; the rest come from the VLM
    keep_rows: tuple[int, ...] = ()  # embeddings: rows always taken from the VLM

    @property
    def is_copy(self) -> bool:
        return self.policy != "merge" and not self.keep_rows and self.rows_shared in (None, self.shape[0])

    @property
    def read_bytes(self) -> int:
        return sum(t.nbytes for t in self.inputs.values())


@dataclass
class MergePlan:
    recipe: Recipe
    sources: dict[str, Source]
    items: list[PlanItem]
    out_dtype: str
    vision_token_ids: tuple[int, ...]
    shared_rows: int | None
    notes: list[str] = field(default_factory=list)

    def used_sources(self) -> set[str]:
        return {r for it in self.items for r in it.inputs}

    @property
    def out_bytes(self) -> int:
        n = 0
        for it in self.items:
            k = 1
            for s in it.shape:
                k *= s
            n += k * {"BF16": 2, "F16": 2, "F32": 4}.get(it.out_dtype, 4)
        return n

    def policy_record(self) -> dict:
        roles = arch.VARIANT_POLICIES[self.recipe.variant] | self.recipe.roles
        return {
            "roles": dict(roles),
            "tensor_rules": [{"pattern": r.pattern, "policy": r.policy} for r in self.recipe.tensors],
            "vision_token_rows_from_vlm": list(self.vision_token_ids),
            "shared_vocab_rows": self.shared_rows,
            "rows_past_shared_vocab": "vlm",
            "tied_embeddings": self.sources["vlm"].tied,
            "counts": {p: sum(1 for it in self.items if it.policy == p) for p in arch.POLICIES},
        }


def _cfg(c: dict, key: str):
    if key == "rope_theta" and key not in c:
        rp = c.get("rope_parameters") or c.get("rope_scaling") or {}
        return rp.get("rope_theta") if isinstance(rp, dict) else None
    return c.get(key)


def vision_token_ids(vlm: Source) -> tuple[int, ...]:
    ids = set()
    for f in arch.VISION_TOKEN_ID_FIELDS:
        for c in (vlm.config, vlm.text_config):
            v = c.get(f)
            if isinstance(v, int):
                ids.add(v)
    return tuple(sorted(ids))


def _tokenizer_vocab(src: Source) -> dict[str, int] | None:
    p = src.path / "tokenizer.json"
    if not p.exists():
        return None
    try:
        tj = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise SourceError(f"{p}: invalid JSON ({e})") from e
    vocab = dict((tj.get("model") or {}).get("vocab") or {})
    if isinstance(vocab, list):  # unigram tokenizers store [token, score] pairs
        vocab = {t[0]: i for i, t in enumerate(vocab)}
    for t in tj.get("added_tokens") or []:
        vocab[t["content"]] = t["id"]
    return vocab


def _out_dtype(recipe: Recipe, vlm: Source) -> str:
    if recipe.dtype != "auto":
        return TORCH_DTYPE_NAMES[recipe.dtype]
    for name, info in vlm.tensors.items():
        if (r := arch.role_of(name)) and r.role == "backbone":
            return info.dtype
    return "BF16"


def _policy(recipe: Recipe, name: str, role: str) -> str:
    for rule in recipe.tensors:
        if re.search(rule.pattern, name):
            return rule.policy
    return recipe.roles.get(role) or arch.VARIANT_POLICIES[recipe.variant][role]


def tensor_policy(recipe: Recipe, name: str) -> tuple[str | None, str | None]:
    """(role, policy) of canonical tensor `name` under `recipe`, as `build_plan` decides it
    ((None, None) for a name no role rule knows); the app's live λ asks which tensors are merged."""
    rm = arch.role_of(name)
    if rm is None:
        return None, None
    policy = _policy(recipe, name, rm.role)
    return rm.role, "vlm" if rm.role == "vision" else policy


def check_kinds(sources: dict[str, Source]) -> None:
    problems = []
    vlm = sources["vlm"]
    if not vlm.is_vlm:
        problems.append(
            f"vlm {vlm.name}: model_type {vlm.model_type!r} is not a Qwen2-VL/Qwen2.5-VL model ({', '.join(arch.VLM_MODEL_TYPES)})"
        )
    weights_type = arch.vision_model_type(vlm.tensors)
    if vlm.is_vlm and weights_type and weights_type != vlm.model_type:
        problems.append(f"vlm {vlm.name}: config.json says model_type {vlm.model_type!r} but its vision weights are "
                        f"{weights_type!r} (the model would not load); fix model_type in config.json")
    for role in ("coder", "base"):
        s = sources.get(role)
        if s is not None and s.model_type not in arch.LLM_MODEL_TYPES:
            problems.append(
                f"{role} {s.name}: model_type {s.model_type!r} is not a Qwen2-family causal LM ({', '.join(arch.LLM_MODEL_TYPES)})"
            )
    if problems:
        raise CompatibilityError(problems)


def build_plan(recipe: Recipe, sources: dict[str, Source]) -> MergePlan:
    """Check the trio and decide every output tensor. Raises CompatibilityError listing all problems."""
    check_kinds(sources)
    vlm = sources["vlm"]
    llms = {r: s for r, s in sources.items() if r != "vlm"}
    problems: list[str] = []
    notes: list[str] = []

    # --- configs ---
    for f in arch.COMPAT_CONFIG_FIELDS:
        want = _cfg(vlm.text_config, f)
        for role, s in llms.items():
            got = _cfg(s.config, f)
            if want is not None and got is not None and want != got:
                problems.append(f"config {f}: vlm {vlm.name} has {want}, {role} {s.name} has {got}")

    # --- vocabulary ---
    rows = {r: s.info(arch.EMBED_KEY).shape[0] for r, s in sources.items() if s.has(arch.EMBED_KEY)}
    shared_rows = min(rows.values()) if rows else None
    vocab_vlm = _tokenizer_vocab(vlm)
    for role, s in llms.items():
        voc = _tokenizer_vocab(s)
        if vocab_vlm is None or voc is None:
            continue
        inv_a = {i: t for t, i in vocab_vlm.items()}
        inv_b = {i: t for t, i in voc.items()}
        bad = [i for i in sorted(set(inv_a) & set(inv_b)) if inv_a[i] != inv_b[i]]
        if bad:
            i = bad[0]
            problems.append(
                f"vocab mismatch: token id {i} is {inv_a[i]!r} in vlm {vlm.name} but {inv_b[i]!r} in {role} {s.name} "
                f"({len(bad)} ids differ)"
            )
    if vocab_vlm is not None and shared_rows is not None:
        need = max(vocab_vlm.values()) + 1
        for r, n in rows.items():
            if n < need:
                problems.append(
                    f"vocab mismatch: {r} {sources[r].name} has {n} embedding rows but the vlm tokenizer uses ids up to {need - 1}"
                )
    vis_ids = vision_token_ids(vlm) if recipe.keep_vision_token_rows else ()

    # --- tensors ---
    out_dtype = _out_dtype(recipe, vlm)
    method = get_method(recipe.method)
    items: list[PlanItem] = []
    backbone_names = set()
    for name, info in sorted(vlm.tensors.items(), key=lambda kv: (str(kv[1].file), kv[1].start)):
        rm = arch.role_of(name)
        if rm is None:
            problems.append(f"vlm tensor {name} {list(info.shape)} matches no role rule (unknown architecture part)")
            continue
        role = rm.role
        policy = _policy(recipe, name, role)
        if role != "vision":
            backbone_names.add(name)
        if role == "vision" or policy == "vlm":
            items.append(PlanItem(name, role, policy if role != "vision" or policy != "merge" else "vlm",
                                  info.shape, out_dtype, {"vlm": info}))
            if role == "vision" and policy == "merge":
                problems.append(f"policy: vision tensor {name} cannot be merged (LLMs have no vision tower)")
            continue
        if info.dtype not in FLOAT_DTYPES:
            problems.append(f"vlm tensor {name} has non-float dtype {info.dtype}")
        wanted = ["base", "vlm", "coder"] if policy == "merge" else [policy]
        inputs: dict[str, TensorInfo] = {}
        m, params = None, None
        if policy == "merge":
            m, params = method_for(method, name, info.shape, recipe.params)
            if not m.needs_base(recipe.weights, params if params is not None else recipe.params):
                wanted.remove("base")
        for r in wanted:
            s = sources.get(r)
            if s is None:
                problems.append(f"{name}: policy {policy!r} needs a {r} source, none given")
                continue
            try:
                t = s.info(name)
            except KeyError:
                problems.append(f"{r} {s.name} is missing tensor {name} (vlm shape {list(info.shape)})")
                continue
            if t.dtype not in FLOAT_DTYPES and r != "vlm":
                problems.append(f"{r} tensor {name} in {s.name} has non-float dtype {t.dtype}")
            ok = t.shape == info.shape or (role == "embedding" and t.shape[1:] == info.shape[1:])
            if not ok:
                problems.append(f"shape mismatch for {name}: vlm {list(info.shape)} vs {r} {s.name} {list(t.shape)}")
            inputs[r] = t
        if role == "embedding":
            inputs["vlm"] = info  # rows outside the shared range always come from the VLM
        # every source must at least agree on shape even when its bytes are not read
        for r, s in llms.items():
            if r not in inputs:
                try:
                    t = s.info(name)
                    if t.dtype not in FLOAT_DTYPES:
                        problems.append(f"{r} tensor {name} in {s.name} has non-float dtype {t.dtype}")
                    if not (t.shape == info.shape or (role == "embedding" and t.shape[1:] == info.shape[1:])):
                        problems.append(f"shape mismatch for {name}: vlm {list(info.shape)} vs {r} {s.name} {list(t.shape)}")
                except KeyError:
                    problems.append(f"{r} {s.name} is missing tensor {name} (vlm shape {list(info.shape)})")
        item = PlanItem(name, role, policy, info.shape, out_dtype, inputs, m, params)
        if role == "embedding":
            item.rows_shared = shared_rows
            item.keep_rows = tuple(i for i in vis_ids if i < (shared_rows or 0))
        items.append(item)

    for role, s in llms.items():
        extra = sorted(k for k in s.tensors if k not in backbone_names and not (k in arch.TIED_ALIAS and vlm.tied))
        for k in extra[:20]:
            problems.append(f"{role} {s.name} has extra tensor {k} {list(s.tensors[k].shape)} that the vlm backbone lacks")
        if len(extra) > 20:
            problems.append(f"{role} {s.name}: ... and {len(extra) - 20} more extra tensors")
        if vlm.tied and arch.LM_HEAD_KEY in s.tensors and not s.tied:
            notes.append(f"{role} {s.name} has its own lm_head but the vlm ties embeddings: the output stays tied")
    if shared_rows is not None and any(n != shared_rows for n in rows.values()):
        notes.append(f"embedding rows differ ({rows}); rows past {shared_rows} are kept from the vlm")

    if problems:
        raise CompatibilityError(problems)
    return MergePlan(recipe, sources, items, out_dtype, vis_ids, shared_rows, notes)


def dtype_name(dtype) -> str:
    return DTYPE_NAMES[dtype]
