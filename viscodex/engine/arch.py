"""Architecture knowledge as data: which model types we accept, how their keys are laid out on
disk, and which role every tensor of a VLM plays in a merge.

Nothing else in the package should hard-code a key name; it asks this module.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# model_type values (config.json) accepted for each slot of a merge.
VLM_MODEL_TYPES = ("qwen2_5_vl", "qwen2_vl")
LLM_MODEL_TYPES = ("qwen2",)

# Key layouts. Canonical = the Hub's legacy layout that `save_pretrained` writes for Qwen2.5-VL and
# that Qwen2 LLM checkpoints share: `model.*` (language model), `lm_head.weight`, `visual.*`.
# Each rule rewrites a prefix of a non-canonical layout into the canonical one.
LAYOUT_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "legacy": (),
    "language_model": (
        ("model.language_model.", "model."),
        ("model.visual.", "visual."),
    ),
}


_LANGUAGE_MODEL_PREFIXES = tuple(old for old, _ in LAYOUT_RULES["language_model"])


def detect_layout(keys) -> str:
    """Name of the key layout a checkpoint uses (see LAYOUT_RULES)."""
    for k in keys:
        if k.startswith(_LANGUAGE_MODEL_PREFIXES):
            return "language_model"
    return "legacy"


def to_canonical(key: str, layout: str) -> str:
    for old, new in LAYOUT_RULES[layout]:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def canonical_name(name: str) -> str:
    """One key (or in-memory parameter name) in the canonical layout, whichever layout it is in."""
    return to_canonical(name, detect_layout([name]))


# Roles: every canonical tensor name of the VLM matches exactly one rule, first match wins.
#   backbone  - language-model weights, merged by the recipe's method
#   embedding - token embedding / output head: merged on the rows shared by all sources, with the
#               vision special tokens' rows and rows past the shared vocabulary kept from the VLM
#   vision    - vision encoder and projector (visual.merger.*): copied byte-for-byte from the VLM
ROLE_RULES: tuple[tuple[str, str], ...] = (
    (r"^visual\.merger\.", "vision"),
    (r"^visual\.", "vision"),
    (r"^model\.embed_tokens\.weight$", "embedding"),
    (r"^lm_head\.weight$", "embedding"),
    (r"^model\.layers\.\d+\.", "backbone"),
    (r"^model\.norm\.weight$", "backbone"),
)
_ROLE_RES = tuple((re.compile(p), r) for p, r in ROLE_RULES)
# The same roles as people read them (model cards): the modules each role covers.
ROLE_KEYS_SHOWN = {
    "backbone": "model.layers.*, model.norm",
    "embedding": "model.embed_tokens, lm_head",
    "vision": "visual.* (incl. visual.merger)",
}

# What happens to a role's tensors, per variant. A policy is one of:
#   merge - the recipe's method over base/vlm/coder;  vlm / coder / base - copy that source's tensor.
POLICIES = ("merge", "vlm", "coder", "base")
VARIANT_POLICIES: dict[str, dict[str, str]] = {
    "merged": {"backbone": "merge", "embedding": "merge", "vision": "vlm"},
    "swapped": {"backbone": "coder", "embedding": "coder", "vision": "vlm"},
}
VARIANTS = tuple(VARIANT_POLICIES)

EMBED_KEY = "model.embed_tokens.weight"  # token embedding (canonical name)
LM_HEAD_KEY = "lm_head.weight"  # output head; absent from checkpoints that tie it to the embedding
EMBEDDING_KEYS = (EMBED_KEY, LM_HEAD_KEY)
TIED_ALIAS = {LM_HEAD_KEY: EMBED_KEY}
# The same two tensors in any layout and under any prefix (a PEFT wrapper's, a sub-model's), as
# regexes for the methods that leave them to a row-wise fallback.
EMBEDDING_PATTERNS = (r"(^|\.)embed_tokens\.", r"(^|\.)lm_head\.")

VISION_PREFIX = "visual."  # canonical prefix of the vision encoder + projector
VISION_MODULE = "visual"  # attribute of the in-memory model that holds the vision tower
PROJECTOR_MODULE = "visual.merger"  # the vision->language projector (Qwen2.5-VL's PatchMerger)
# Modules that 4-bit loading (QLoRA) keeps unquantised: the vision tower and the output head.
UNQUANTISED_MODULES = (VISION_MODULE, LM_HEAD_KEY.rsplit(".", 1)[0])

# Config fields (of the VLM's text_config and the LLMs' config) that must agree for a merge.
COMPAT_CONFIG_FIELDS = (
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "rope_theta",
)
# VLM config fields holding the ids of tokens only the VLM was trained on.
VISION_TOKEN_ID_FIELDS = (
    "vision_start_token_id",
    "vision_end_token_id",
    "vision_token_id",
    "image_token_id",
    "video_token_id",
)

# Files copied from the VLM next to the weights (processor, tokenizer, chat template, ...).
WEIGHT_FILE_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.pt", "*.pth")
SIDECAR_SKIP = {"README.md", ".gitattributes", "viscodex_recipe.yaml", "config.json"}
PROCESSOR_FILES = (
    "preprocessor_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
)


@dataclass(frozen=True)
class RoleMatch:
    role: str
    rule: str


def role_of(key: str) -> RoleMatch | None:
    """Role of a canonical VLM tensor name, or None when no rule knows it."""
    for rx, role in _ROLE_RES:
        if rx.search(key):
            return RoleMatch(role, rx.pattern)
    return None


# Vision-block MLPs tell the two VLM generations apart whatever config.json claims: Qwen2-VL's
# blocks have fc1/fc2 (LayerNorm, GELU), Qwen2.5-VL's gate/up/down projections (RMSNorm, SwiGLU).
_VISION_MLP = re.compile(r"(?:^|\.)visual\.blocks\.\d+\.mlp\.(fc1|gate_proj)\.")


def vision_model_type(tensor_names) -> str | None:
    """'qwen2_vl' or 'qwen2_5_vl' from the vision tower's tensor names; None when undecidable."""
    for name in tensor_names:
        m = _VISION_MLP.search(name)
        if m:
            return "qwen2_vl" if m.group(1) == "fc1" else "qwen2_5_vl"
    return None


def param_role(name: str) -> str | None:
    """Role of an in-memory parameter name of a Qwen2.5-VL model (either key layout)."""
    m = role_of(canonical_name(name))
    return m.role if m else None


def is_vision_key(key: str) -> bool:
    """Whether a canonical tensor name belongs to the vision encoder or projector."""
    return key.startswith(VISION_PREFIX)


def is_projector(name: str) -> bool:
    """Whether a parameter name (any layout, any wrapper prefix) belongs to the projector."""
    return f".{PROJECTOR_MODULE}." in f".{name}"
