"""engine/arch.py is the one place that knows key names: the helpers other modules ask instead of
writing "visual." or "lm_head.weight" themselves, checked on both key layouts and under wrappers."""
from __future__ import annotations

import re

from viscodex.engine import arch


def test_canonical_name_either_layout():
    assert arch.canonical_name("model.language_model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"
    assert arch.canonical_name("model.visual.merger.mlp.0.weight") == "visual.merger.mlp.0.weight"
    assert arch.canonical_name("model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"
    assert arch.canonical_name(arch.LM_HEAD_KEY) == arch.LM_HEAD_KEY


def test_roles_from_the_named_keys():
    assert arch.role_of(arch.EMBED_KEY).role == arch.role_of(arch.LM_HEAD_KEY).role == "embedding"
    assert arch.TIED_ALIAS == {arch.LM_HEAD_KEY: arch.EMBED_KEY}
    assert arch.is_vision_key("visual.blocks.0.attn.qkv.weight") and arch.role_of("visual.patch_embed.proj.weight").role == "vision"
    assert not arch.is_vision_key("model.layers.0.self_attn.q_proj.weight")
    assert arch.param_role("model.language_model.norm.weight") == "backbone"


def test_projector_under_any_layout_or_wrapper():
    assert arch.is_projector("visual.merger.mlp.0.weight")
    assert arch.is_projector("model.visual.merger.ln_q.weight")
    assert arch.is_projector("base_model.model.model.visual.merger.mlp.2.bias")  # a PEFT wrapper's prefix
    assert not arch.is_projector("model.visual.blocks.0.mlp.fc1.weight")
    assert not arch.is_projector("visual.mergers.0.weight")  # a whole module name, not a prefix of one


def test_embedding_patterns_match_embeddings_only():
    def hit(name):
        return any(re.search(p, name) for p in arch.EMBEDDING_PATTERNS)

    assert hit(arch.EMBED_KEY) and hit(arch.LM_HEAD_KEY) and hit("model.language_model.embed_tokens.weight")
    assert not hit("model.layers.0.mlp.down_proj.weight") and not hit("visual.merger.mlp.0.weight")
    assert set(arch.UNQUANTISED_MODULES) == {"visual", "lm_head"}
