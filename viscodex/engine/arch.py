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


def detect_layout(keys) -> str:
    """Name of the key layout a checkpoint uses (see LAYOUT_RULES)."""
    for k in keys:
        if k.startswith("model.language_model.") or k.startswith("model.visual."):
            return "language_model"
    return "legacy"


def to_canonical(key: str, layout: str) -> str:
    for old, new in LAYOUT_RULES[layout]:
        if key.startswith(old):
            return new + key[len(old):]
    return key


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

# What happens to a role's tensors, per variant. A policy is one of:
#   merge - the recipe's method over base/vlm/coder;  vlm / coder / base - copy that source's tensor.
POLICIES = ("merge", "vlm", "coder", "base")
VARIANT_POLICIES: dict[str, dict[str, str]] = {
    "merged": {"backbone": "merge", "embedding": "merge", "vision": "vlm"},
    "swapped": {"backbone": "coder", "embedding": "coder", "vision": "vlm"},
}
VARIANTS = tuple(VARIANT_POLICIES)

EMBEDDING_KEYS = ("model.embed_tokens.weight", "lm_head.weight")
TIED_ALIAS = {"lm_head.weight": "model.embed_tokens.weight"}

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
    m = role_of(to_canonical(name, detect_layout([name])))
    return m.role if m else None
