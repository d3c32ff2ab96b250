"""Random-weight Qwen2.5-VL models in the real shapes, for the GPU benchmarks (issue 20).

The shapes come from benchmarks/merge_bench.py's SHAPES (the Hub configs of Qwen2.5-VL-3B/7B; a test
checks they give the real parameter counts). The tokenizer and processor are viscodex's tiny ones
(viscodex.toy.models): no download, a real Qwen2.5-VL chat template and image processor. Their special-token
ids are small, so they are valid rows of the 152064-row embedding; only the text is tokenized more
finely than by Qwen's tokenizer, which changes nothing a benchmark measures per token.
"""
from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from merge_bench import SHAPES, Shape  # noqa: E402

# Vision tower of every Qwen2.5-VL size (the Hub's vision_config); tiny shrinks it.
VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14, spatial_merge_size=2,
              temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31], in_chans=3,
              hidden_act="silu")
TINY_VISION = dict(VISION, depth=2, hidden_size=32, intermediate_size=64, num_heads=2, fullatt_block_indexes=[1])


def processor(image_px: int = 448):
    """viscodex's tiny tokenizer + a Qwen2.5-VL processor whose pixel budget admits `image_px`^2 images."""
    from viscodex.toy.models import TinyConfig, build_processor, build_tokenizer

    cfg = TinyConfig()
    proc = build_processor(build_tokenizer(cfg), cfg)
    px = image_px * image_px
    for p in (proc.image_processor, proc.video_processor):
        p.min_pixels, p.max_pixels = 56 * 56, px
        p.size = {"shortest_edge": 56 * 56, "longest_edge": px}
    return proc


def vl_config(shape: str, layers: int | None, proc, attn: str = "sdpa"):
    """A Qwen2_5_VLConfig in the named shape (`layers` None: the real depth)."""
    from transformers import Qwen2_5_VLConfig

    sh: Shape = SHAPES[shape]
    tok = proc.tokenizer
    ids = {f: tok.convert_tokens_to_ids(t) for f, t in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(vocab_size=sh.vocab, hidden_size=sh.hidden, intermediate_size=sh.inter,
                num_hidden_layers=layers or sh.real_layers, num_attention_heads=sh.heads,
                num_key_value_heads=sh.kv, hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6,
                tie_word_embeddings=sh.tied, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                 "mrope_section": list(sh.mrope_section)})
    vision = dict(TINY_VISION if shape == "tiny" else VISION, out_hidden_size=sh.hidden)
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=sh.tied, **ids)
    cfg._attn_implementation = attn
    return cfg


def build_model(shape: str, layers: int | None, proc, device: str, attn: str = "sdpa", seed: int = 0):
    """Random init directly on `device` in bf16 (a 7B model never exists in float32 on the host)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    cfg = vl_config(shape, layers, proc, attn)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(cfg)
    finally:
        torch.set_default_dtype(prev)
    return model


def param_counts(model) -> dict[str, int]:
    """Parameters by viscodex's roles (engine/arch.py): vision (tower + merger), embedding
    (embed_tokens and lm_head), backbone (decoder layers + final norm)."""
    from viscodex.engine.arch import param_role

    out = {"vision": 0, "embedding": 0, "backbone": 0}
    for name, p in model.named_parameters():
        out[param_role(name)] += p.numel()
    return out
