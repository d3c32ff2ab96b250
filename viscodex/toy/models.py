"""A tiny trio with the real architectures, built locally from a seed: base `Qwen2ForCausalLM`,
a coder fine-tuned from it, and a `Qwen2_5_VLForConditionalGeneration` whose backbone starts from
the base. With the real tokenizer class, chat template and Qwen2.5-VL processor, every command
(merge, train, publish, app) runs on it unchanged, with no downloads.

`build_trio` perturbs weights (fast, for tests of the plumbing); the trained trio is
`viscodex.toy.demo.train_trio` (a few minutes on CPU; `viscodex demo` caches it).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# Qwen2.5's special tokens, in Qwen's order (ids follow the learned vocabulary here).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

from .world import COLORS, RGB, SHAPES, SIZES  # noqa: F401  (re-exported: the toy world)


@dataclass(frozen=True)
class TinyConfig:
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_hidden_size: int = 32
    vision_depth: int = 2
    bpe_vocab: int = 600
    image_size: int = 56  # pixels a side; 56 / 14 patches / merge 2 = 4 image tokens
    tie_word_embeddings: bool = False
    shard_size: str = "200KB"  # small shards so every test exercises sharded checkpoints
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True) + f"|v{TRIO_VERSION}"
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


TRIO_VERSION = 2


def corpus(seed: int = 0) -> list[str]:
    """Synthetic text the tokenizer learns from: every toy task's strings, the base's corpus, chat words."""
    from .world import pretraining_docs, text_corpus

    out = text_corpus(seed)
    for d in pretraining_docs(seed, 1000):
        out.extend(d if isinstance(d, tuple) else (d,))
    out += ["system\nYou are a helpful assistant.", "user\n", "assistant\n"] * 50
    return out


def build_tokenizer(cfg: TinyConfig):
    """A byte-level BPE (the `tokenizers` library) with Qwen2.5's special tokens, as the real
    transformers Qwen2 tokenizer class with a Qwen-style chat template.

    The BPE is trained behind Qwen2's own normaliser and pre-tokeniser (digits one by one), and the
    result is saved and reloaded once: transformers re-creates those on load, so the tokenizer
    returned here tokenises exactly as the one written next to the weights."""
    import tempfile

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AutoTokenizer, Qwen2TokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.bpe_vocab, special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(corpus(cfg.seed), trainer=trainer)
    hf = Qwen2TokenizerFast(tokenizer_object=tok, unk_token=None, bos_token=None,
                            eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf.add_special_tokens({"additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")]})
    hf.chat_template = CHAT_TEMPLATE
    hf.model_max_length = 4096
    with tempfile.TemporaryDirectory(prefix="viscodex-tok-") as d:
        hf.save_pretrained(d)
        return AutoTokenizer.from_pretrained(d)


def build_processor(tokenizer, cfg: TinyConfig):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    px = cfg.image_size * cfg.image_size
    ip = Qwen2VLImageProcessor(min_pixels=px // 4, max_pixels=px * 4, patch_size=14, merge_size=2, temporal_patch_size=2)
    vp = Qwen2VLVideoProcessor(min_pixels=px // 4, max_pixels=px * 4, patch_size=14, merge_size=2, temporal_patch_size=2)
    return Qwen2_5_VLProcessor(image_processor=ip, tokenizer=tokenizer, video_processor=vp, chat_template=CHAT_TEMPLATE)


def _vocab_rows(tokenizer) -> int:
    n = len(tokenizer)
    return (n + 63) // 64 * 64 + 64  # padded like Qwen's 152064 rows for 151665 tokens


def text_config(cfg: TinyConfig, tokenizer) -> dict:
    return dict(
        vocab_size=_vocab_rows(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=4096, rms_norm_eps=1e-6,
        tie_word_embeddings=cfg.tie_word_embeddings, bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    )


def new_base(cfg: TinyConfig, tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(cfg.seed)
    return Qwen2ForCausalLM(Qwen2Config(**text_config(cfg, tokenizer))).eval()


def new_vlm_from(base, cfg: TinyConfig, tokenizer):
    """A Qwen2.5-VL whose language backbone is a copy of `base` and whose vision tower is fresh."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    tc = text_config(cfg, tokenizer)
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    q = head_dim // 2 // 4
    tc["rope_parameters"] = dict(tc["rope_parameters"], mrope_section=[head_dim // 2 - 2 * q, q, q])
    conf = Qwen2_5_VLConfig(
        text_config=tc,
        vision_config=dict(depth=cfg.vision_depth, hidden_size=cfg.vision_hidden_size,
                           intermediate_size=cfg.vision_hidden_size * 2, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=cfg.hidden_size,
                           window_size=56, fullatt_block_indexes=[cfg.vision_depth - 1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=cfg.tie_word_embeddings,
    )
    torch.manual_seed(cfg.seed + 1)
    vlm = Qwen2_5_VLForConditionalGeneration(conf).eval()
    copy_backbone(base, vlm)
    return vlm


@torch.no_grad()
def copy_backbone(llm, vlm) -> None:
    """Copy every tensor of the LLM into the VLM's tensor of the same canonical name (the language
    backbone, embedding and head); the key layouts are the merge engine's (engine.arch)."""
    from ..engine.arch import canonical_name

    target = {canonical_name(k): v for k, v in vlm.state_dict().items()}
    for k, v in llm.state_dict().items():
        name = canonical_name(k)
        if name not in target or target[name].shape != v.shape:
            raise ValueError(f"{k}: no VLM tensor of that name and shape {tuple(v.shape)} to copy it into")
        target[name].copy_(v)


@torch.no_grad()
def perturb(model, seed: int, scale: float = 0.02) -> None:
    """Distinct, seeded weight changes (a stand-in for fine-tuning) on every non-vision tensor."""
    from ..engine.arch import param_role

    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if param_role(name) == "vision":
            continue
        p.add_(torch.randn(p.shape, generator=g) * scale)


def save(model, tokenizer, path: Path, cfg: TinyConfig, processor=None) -> None:
    model.save_pretrained(path, max_shard_size=cfg.shard_size)
    tokenizer.save_pretrained(path)
    if processor is not None:
        processor.save_pretrained(path)
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        gc.save_pretrained(path)


def build_trio(out: str | os.PathLike, cfg: TinyConfig = TinyConfig()) -> dict[str, Path]:
    """Write base/, coder/, vlm/ under `out` and return their paths. Deterministic in cfg.seed.
    Untrained (perturbed) weights; the trained trio is `viscodex.toy.demo.train_trio`."""
    from transformers.utils import logging as hf_logging

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tok = build_tokenizer(cfg)
        proc = build_processor(tok, cfg)
        base = new_base(cfg, tok)
        vlm = new_vlm_from(base, cfg, tok)
        perturb(vlm, cfg.seed + 100)
        coder = new_base(cfg, tok)
        coder.load_state_dict(base.state_dict())
        perturb(coder, cfg.seed + 200)
        return save_trio(out, base, coder, vlm, tok, proc, cfg)
    finally:
        hf_logging.set_verbosity(verbosity)


def save_trio(out: Path, base, coder, vlm, tokenizer, processor, cfg: TinyConfig) -> dict[str, Path]:
    """Write base/, coder/ and vlm/ under `out` (replacing those three folders: `out` is the
    caller's own, fresh folder) and return their paths."""
    paths = {"base": out / "base", "coder": out / "coder", "vlm": out / "vlm"}
    for p in paths.values():
        if p.exists():
            shutil.rmtree(p)
    save(base, tokenizer, paths["base"], cfg)
    save(coder, tokenizer, paths["coder"], cfg)
    save(vlm, tokenizer, paths["vlm"], cfg, processor=processor)
    return paths


logging.getLogger(__name__).addHandler(logging.NullHandler())
