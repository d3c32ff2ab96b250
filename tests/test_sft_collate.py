"""Packed (padding-free) batches and the in-batch dummy image, on the tiny VLM in float32: packed
records get exactly the losses they get alone, the dummy image changes neither the loss nor any
gradient, and the dummy path's own gradients are exactly zero."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from viscodex.training.collate import PackedCollator, PaddedCollator, check_packing, make_collator
from viscodex.training.data import IGNORE_INDEX, Encoder, ImageResolver, SFTCollator, normalize_record


@pytest.fixture(scope="module")
def processor(trio):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(trio["vlm"])


@pytest.fixture(scope="module")
def model(trio):
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_pretrained(trio["vlm"], dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def items(processor, tmp_path_factory):
    d = tmp_path_factory.mktemp("pack")
    Image.new("RGB", (56, 56), (200, 30, 30)).save(d / "red.png")
    Image.new("RGB", (112, 84), (30, 30, 200)).save(d / "wide.png")
    recs = [
        {"messages": [{"role": "user", "content": "<image>\nWrite the SVG."},
                      {"role": "assistant", "content": '<svg><circle fill="red"/></svg>'}], "images": ["red.png"]},
        {"messages": [{"role": "user", "content": "Write f(x) = x + 1."},
                      {"role": "assistant", "content": "def f(x):\n    return x + 1"}]},
        {"messages": [{"role": "user", "content": "<image> and <image>: HTML?"},
                      {"role": "assistant", "content": "<html><body>two</body></html>"}], "images": ["wide.png", "red.png"]},
        {"messages": [{"role": "user", "content": "Sort a list."}, {"role": "assistant", "content": "sorted(xs)"}]},
    ]
    enc, res = Encoder(processor), ImageResolver(d)
    return {"image": [enc.encode(normalize_record(r, res)) for r in recs[:1] + recs[2:3]],
            "text": [enc.encode(normalize_record(r, res)) for r in recs[1:2] + recs[3:]],
            "all": [enc.encode(normalize_record(r, res)) for r in recs]}


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy of next-token prediction (0 where the label is ignored)."""
    return torch.nn.functional.cross_entropy(logits[:-1].float(), labels[1:], ignore_index=IGNORE_INDEX,
                                             reduction="none")


def test_packed_records_get_their_own_losses(model, processor, items):
    recs = items["all"]
    packed = make_collator(processor, 0, packing=True)(recs)
    assert isinstance(make_collator(processor, 0, packing=True), PackedCollator)
    assert set(packed) >= {"input_ids", "labels", "position_ids", "pixel_values"} and "attention_mask" not in packed
    assert packed["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in recs))
    assert packed["position_ids"].shape == (4, 1, packed["input_ids"].shape[1])
    with torch.no_grad():
        logits = model(**{k: v for k, v in packed.items() if k != "labels"}).logits[0]
        assert packed["use_cache"] is False  # with a cache, transformers would not separate the records
        start = 0
        for r in recs:
            n = len(r["input_ids"])
            alone = model(**SFTCollator(0)([r])).logits[0]
            # positions: rows 1-3 what the model computes for the record alone, row 0 restarts at 0
            pos_alone = model.model.get_rope_index(r["input_ids"][None], r["mm_token_type_ids"][None],
                                                   image_grid_thw=r.get("image_grid_thw"))[0][:, 0] \
                if "image_grid_thw" in r else torch.arange(n).expand(3, -1)
            assert torch.equal(packed["position_ids"][1:, 0, start:start + n], pos_alone)
            assert torch.equal(packed["position_ids"][0, 0, start:start + n], torch.arange(n))
            got = token_losses(logits[start:start + n], r["labels"])
            want = token_losses(alone, r["labels"])
            assert (r["labels"] != IGNORE_INDEX).sum() > 3
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            start += n
        # the batch loss (mean over label tokens) equals the padded batch's
        padded = model(**SFTCollator(0)(recs)).loss
        torch.testing.assert_close(model(**packed).loss, padded, rtol=1e-5, atol=1e-6)


def test_packed_first_token_of_each_record_is_not_a_target(processor, items):
    recs = items["all"]
    packed = make_collator(processor, 0, packing=True)(recs)
    starts = torch.tensor([0] + [len(r["input_ids"]) for r in recs]).cumsum(0)[:-1]
    assert (packed["labels"][0, starts] == IGNORE_INDEX).all()
    # every label token is where the record had it
    assert torch.equal(packed["labels"][0] != IGNORE_INDEX, torch.cat([r["labels"] != IGNORE_INDEX for r in recs]))


@pytest.mark.parametrize("packing", [False, True])
def test_dummy_image_changes_no_loss_or_gradient(model, processor, items, packing):
    """A text-only batch with the dummy image in it: same loss, same gradients on every parameter
    that has them without it, and exactly zero gradient on the vision tower (the dummy's path)."""
    texts = items["text"]
    with_dummy = make_collator(processor, processor.tokenizer.pad_token_id, packing=packing)(texts)
    without = make_collator(processor, processor.tokenizer.pad_token_id, packing=packing, dummy_image=False)(texts)
    assert "pixel_values" in with_dummy and "pixel_values" not in without
    assert (with_dummy["input_ids"] == processor.image_token_id).sum() == 1
    assert with_dummy["labels"][with_dummy["input_ids"] == processor.image_token_id].eq(IGNORE_INDEX).all()
    grads = []
    for batch in (with_dummy, without):
        model.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.requires_grad_(True)
        loss = model(**batch).loss
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() if p.grad is not None else None for n, p in model.named_parameters()}))
    (l1, g1), (l0, g0) = grads
    torch.testing.assert_close(l1, l0, rtol=1e-6, atol=1e-6)
    visual = [n for n in g1 if ".visual." in n or n.startswith("visual.")]
    assert visual and all(g1[n] is not None and torch.count_nonzero(g1[n]) == 0 for n in visual)
    assert all(g0[n] is None for n in visual)
    for n, g in g0.items():
        if g is not None:
            torch.testing.assert_close(g1[n], g, rtol=1e-5, atol=1e-7, msg=n)
    model.zero_grad(set_to_none=True)


def test_batches_with_images_get_no_dummy(processor, items):
    for packing in (False, True):
        batch = make_collator(processor, 0, packing=packing)(items["image"])
        real = torch.cat([r["image_grid_thw"] for r in items["image"]])
        assert torch.equal(batch["image_grid_thw"], real)
    assert isinstance(make_collator(processor, 0), PaddedCollator)


def test_dummy_widens_a_full_row(processor, items):
    text = items["text"][:1]
    batch = make_collator(processor, 7)(text)
    n = len(text[0]["input_ids"])
    assert batch["input_ids"].shape == (1, n + 1)
    assert batch["input_ids"][0, n] == processor.image_token_id and batch["attention_mask"][0, n] == 0
    assert batch["attention_mask"][0, :n].all() and batch["labels"][0, n] == IGNORE_INDEX


def test_packing_refuses_unknown_attention():
    from viscodex.training.collate import packing_note

    assert packing_note("flash_attention_2") is None and "whole packed row" in packing_note(None)
    check_packing(None)
    check_packing("flash_attention_2")
    with pytest.raises(Exception, match=r"--packing \(packing=\) needs an attention implementation .* got --attn-implementation \(attn_implementation=\) 'paged'"):
        check_packing("paged")
