"""Batches for SFT beyond plain padding: the in-batch dummy image and padding-free packing.

Dummy image. Under FSDP / ZeRO-3 every rank must issue the same gathers in the same order. A
rank whose micro-batch holds no image would skip the vision tower, and running it separately
after the language model (the old way) puts its gathers after the decoder layers' on that rank
and before them on the others: a collective mismatch (gloo aborts, NCCL hangs). So a batch with
no image gets one tiny black image (one merged token) *inside* the batch, the way LLaMA-Factory's
collator does it: the vision tower then always runs first, in the model's own forward, on every
rank. Its token is invisible to the real tokens (padded batch: attention mask 0 at the end of a
row, so causal attention never reaches it; packed batch: a record of its own) and has label -100,
so the loss and every gradient are exactly what they would be without it (the tower is frozen).

Packing (padding-free, as TRL's `padding_free`, ms-swift's `--packing`, LLaMA-Factory's
`neat_packing`): the micro-batch's records are concatenated into one row with no padding and no
attention mask. The position ids are `[4, 1, L]`: row 0 the text positions, restarting at 0 for
each record (transformers derives the block-diagonal mask from them for sdpa / eager / flex, and
the cu_seqlens for flash-attention; only without a KV cache, hence `use_cache: False` in the
batch), rows 1-3 Qwen2.5-VL's multimodal RoPE positions computed per
record, so every record sees exactly the positions it would see alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from ..errors import ViscodexError
from .flags import arg
from .data import IGNORE_INDEX, SFTCollator

# Attention implementations that honour packed position ids (block-diagonal mask or cu_seqlens).
PACKING_ATTN = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")


@dataclass
class DummyImage:
    """The smallest image the tower takes: one merge window (merge x merge patches -> 1 token)."""

    pixel_values: torch.Tensor  # (merge**2, channels * temporal_patch * patch**2), zeros
    grid_thw: torch.Tensor  # (1, 3)
    image_token_id: int

    @property
    def tokens(self) -> int:
        return 1

    @classmethod
    def from_processor(cls, processor) -> DummyImage:
        ip = processor.image_processor
        merge, patch, tpatch = int(ip.merge_size), int(ip.patch_size), int(ip.temporal_patch_size)
        return cls(torch.zeros(merge * merge, 3 * tpatch * patch * patch), torch.tensor([[1, merge, merge]]),
                   int(processor.image_token_id))

    def _attach(self, batch: dict) -> None:
        batch["pixel_values"] = self.pixel_values.clone()
        batch["image_grid_thw"] = self.grid_thw.clone()

    def add_padded(self, batch: dict, pad_id: int) -> dict:
        """Put the image token right after row 0's last real token, masked out of attention."""
        m = int(batch["attention_mask"][0].sum())
        n = batch["input_ids"].shape[1]
        if m + self.tokens > n:  # widen the batch by the missing columns
            grow = m + self.tokens - n
            fill = {"input_ids": pad_id, "attention_mask": 0, "labels": IGNORE_INDEX, "mm_token_type_ids": 0}
            for k, v in fill.items():
                batch[k] = torch.cat([batch[k], torch.full((batch[k].shape[0], grow), v, dtype=batch[k].dtype)], 1)
        batch["input_ids"][0, m:m + self.tokens] = self.image_token_id
        batch["mm_token_type_ids"][0, m:m + self.tokens] = 1
        self._attach(batch)
        return batch

    def as_item(self) -> dict[str, torch.Tensor]:
        """The dummy as a record of its own (for packed rows): one image token, no label."""
        return {"input_ids": torch.tensor([self.image_token_id] * self.tokens),
                "labels": torch.full((self.tokens,), IGNORE_INDEX),
                "mm_token_type_ids": torch.ones(self.tokens, dtype=torch.int32),
                "pixel_values": self.pixel_values.clone(), "image_grid_thw": self.grid_thw.clone()}


class PaddedCollator(SFTCollator):
    """SFTCollator plus the in-batch dummy image for batches without one."""

    def __init__(self, pad_id: int, dummy: DummyImage | None, pad_to_multiple_of: int | None = None):
        super().__init__(pad_id, pad_to_multiple_of)
        self.dummy = dummy

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__(items)
        if self.dummy is not None and "pixel_values" not in batch:
            batch = self.dummy.add_padded(batch, self.pad_id)
        return batch


class _RopeIndex:
    """Qwen2.5-VL's own get_rope_index, bound to the two config values it reads, so the collator
    computes exactly the model's multimodal positions without a model instance."""

    def __init__(self, spatial_merge_size: int, tokens_per_second: float = 2):
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

        self.config = SimpleNamespace(vision_config=SimpleNamespace(spatial_merge_size=spatial_merge_size,
                                                                    tokens_per_second=tokens_per_second))
        self._impl = Qwen2_5_VLModel.get_rope_index
        self.get_vision_position_ids = Qwen2_5_VLModel.get_vision_position_ids.__get__(self)

    def __call__(self, input_ids: torch.Tensor, mm_token_type_ids: torch.Tensor, grid: torch.Tensor | None) -> torch.Tensor:
        """(3, L) positions of one record."""
        if grid is None:
            return torch.arange(len(input_ids)).view(1, -1).expand(3, -1)
        pos, _ = self._impl(self, input_ids[None], mm_token_type_ids=mm_token_type_ids[None], image_grid_thw=grid)
        return pos[:, 0]


class PackedCollator:
    """All records of a micro-batch in one row, no padding; see the module docstring."""

    def __init__(self, spatial_merge_size: int, dummy: DummyImage | None):
        self.rope = _RopeIndex(spatial_merge_size)
        self.dummy = dummy

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        items = list(items)
        if self.dummy is not None and not any("pixel_values" in it for it in items):
            items.append(self.dummy.as_item())
        ids, labels, mm, pos, text_pos = [], [], [], [], []
        for it in items:
            lab = it["labels"].clone()
            lab[0] = IGNORE_INDEX  # the previous record's last token must not learn to predict this one
            ids.append(it["input_ids"])
            labels.append(lab)
            mm.append(it["mm_token_type_ids"])
            text_pos.append(torch.arange(len(it["input_ids"])))
            pos.append(self.rope(it["input_ids"], it["mm_token_type_ids"], it.get("image_grid_thw")))
        batch = {
            "input_ids": torch.cat(ids)[None],
            "labels": torch.cat(labels)[None],
            "mm_token_type_ids": torch.cat(mm)[None],
            "position_ids": torch.cat([torch.cat(text_pos)[None], torch.cat(pos, 1)])[:, None],  # (4, 1, L)
            # transformers builds the per-record mask from the positions only when no cache is made:
            # with one, every record would attend to the ones before it
            "use_cache": False,
        }
        with_img = [it for it in items if "pixel_values" in it]
        if with_img:
            batch["pixel_values"] = torch.cat([it["pixel_values"] for it in with_img])
            batch["image_grid_thw"] = torch.cat([it["image_grid_thw"] for it in with_img])
        return batch


def check_packing(attn_implementation: str | None) -> None:
    impl = attn_implementation or "sdpa"
    if impl not in PACKING_ATTN:
        raise ViscodexError(f"{arg('packing')} needs an attention implementation that separates packed records "
                            f"({', '.join(PACKING_ATTN)}); got {arg('attn_implementation')} {impl!r}")


def packing_note(attn_implementation: str | None) -> str | None:
    """Why packing may be slower here: only flash-attention skips the other records' blocks."""
    impl = attn_implementation or "sdpa"
    if impl.startswith("flash_attention"):
        return None
    return (f"--packing with {impl}: exact (block-diagonal mask), but attention still spans the whole packed row, "
            f"(sum of lengths)^2 instead of the sum of squares; use --attn-implementation flash_attention_2 on GPUs "
            f"for padding-free speed")


def make_collator(processor, pad_id: int, packing: bool = False, dummy_image: bool = True):
    """The training collator: padded (default) or packed, with the in-batch dummy image."""
    dummy = DummyImage.from_processor(processor) if dummy_image else None
    if packing:
        return PackedCollator(int(processor.image_processor.merge_size), dummy)
    return PaddedCollator(pad_id, dummy)


__all__ = ["DummyImage", "PackedCollator", "PaddedCollator", "check_packing", "make_collator", "packing_note"]
