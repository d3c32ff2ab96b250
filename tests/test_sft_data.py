"""SFT data: record layouts, validation and skip counting, chat-template prompts, label masking,
exact lengths, truncation, collation. Uses the tiny VLM's real Qwen2.5-VL processor."""
from __future__ import annotations

import json
import zipfile

import pytest
import torch
from hub_server import unique
from PIL import Image

from viscodex.training.data import (
    IGNORE_INDEX,
    DataError,
    Encoder,
    ImageResolver,
    InvalidRecord,
    SFTCollator,
    build_index,
    normalize_record,
    open_data,
)
from viscodex.training.toy_data import write_toy_dataset


@pytest.fixture(scope="module")
def processor(trio):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(trio["vlm"])


@pytest.fixture(scope="module")
def imgs(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    Image.new("RGB", (56, 56), (200, 30, 30)).save(d / "red.png")
    Image.new("RGB", (112, 84), (30, 30, 200)).save(d / "wide.png")
    Image.new("RGB", (3, 700), (0, 0, 0)).save(d / "thin.png")  # aspect ratio > 200
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return d


ANSWER1 = '<svg width="64" height="64"><circle fill="red"/></svg>'
ANSWER2 = "def f(x):\n    return x + 1"


def mcd_record(**kw):
    rec = {"messages": [{"role": "user", "content": "<image>\nWrite the SVG."},
                        {"role": "assistant", "content": ANSWER1},
                        {"role": "user", "content": "Now <image> this one in Python."},
                        {"role": "assistant", "content": ANSWER2}],
           "images": ["red.png", "wide.png"], "category": "html"}
    rec.update(kw)
    return rec


def label_text(processor, item) -> str:
    ids = item["input_ids"][item["labels"] != IGNORE_INDEX]
    return processor.tokenizer.decode(ids)


def test_layouts_normalise_to_the_same_conversation(processor, imgs):
    mcd = mcd_record()
    trl = {"messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\nWrite the SVG."}]},
        {"role": "assistant", "content": [{"type": "text", "text": ANSWER1}]},
        {"role": "user", "content": [{"type": "text", "text": "Now "}, {"type": "image"}, {"type": "text", "text": " this one in Python."}]},
        {"role": "assistant", "content": ANSWER2}], "images": ["red.png", "wide.png"]}
    sharegpt = {"conversations": [{"from": "human", "value": "<image>\nWrite the SVG."}, {"from": "gpt", "value": ANSWER1},
                                  {"from": "human", "value": "Now <image> this one in Python."}, {"from": "gpt", "value": ANSWER2}],
                "images": ["red.png", "wide.png"]}
    enc = Encoder(processor)
    res = ImageResolver(imgs)
    texts = {name: enc.render(normalize_record(r, res)) for name, r in
             {"mcd": mcd, "trl": trl, "sharegpt": sharegpt}.items()}
    assert texts["mcd"] == texts["trl"] == texts["sharegpt"]
    text, spans = texts["mcd"]
    assert text.count("<|image_pad|>") == 2
    assert [text[a:b] for a, b in spans] == [ANSWER1 + "<|im_end|>", ANSWER2 + "<|im_end|>"]
    # images without placeholders go first in the first user turn
    s = normalize_record({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}],
                          "image": "red.png"}, res)
    assert s.messages[0]["content"][0] == {"type": "image"} and s.images == [imgs / "red.png"]


def test_labels_cover_assistant_turns_only(processor, imgs):
    enc = Encoder(processor)
    s = normalize_record(mcd_record(), ImageResolver(imgs))
    item = enc.encode(s)
    assert label_text(processor, item) == ANSWER1 + "<|im_end|>" + ANSWER2 + "<|im_end|>"
    image_id = processor.image_token_id
    is_img = item["input_ids"] == image_id
    assert torch.equal(is_img, item["mm_token_type_ids"] == 1)
    assert (item["labels"][is_img] == IGNORE_INDEX).all()
    # 56x56 -> 4 tokens, 112x84 -> 112x84 px -> (8x6 patches)/4 = 12 tokens
    assert int(is_img.sum()) == 4 + 12
    assert item["image_grid_thw"].tolist() == [[1, 4, 4], [1, 6, 8]]
    assert item["pixel_values"].shape[0] == 16 + 48
    # the prompt (system, user turns, "assistant\n" headers) has no labels
    first = int((item["labels"] != IGNORE_INDEX).nonzero()[0])
    prompt = processor.tokenizer.decode(item["input_ids"][:first])
    assert prompt.endswith("<|im_start|>assistant\n") and "Write the SVG." in prompt


def test_measured_length_equals_encoded_length(processor, imgs):
    res = ImageResolver(imgs)
    for mx in (None, 56 * 56):  # max_pixels changes the image token count; both paths must agree
        enc = Encoder(processor, max_pixels=mx)
        for rec in (mcd_record(), mcd_record(images=["wide.png", "wide.png"]),
                    {"messages": [{"role": "user", "content": "no image"}, {"role": "assistant", "content": ANSWER2}]}):
            s = normalize_record(rec, res)
            text, spans = enc.render(s)
            m = enc.measure(s, text, spans)
            item = enc.encode(s)
            assert m.length == len(item["input_ids"])
            assert m.n_label == int((item["labels"] != IGNORE_INDEX).sum())
    small = Encoder(processor, max_pixels=56 * 56).encode(normalize_record(mcd_record(), res))
    assert int((small["input_ids"] == processor.image_token_id).sum()) == 4 + 2  # 112x84 -> 56x28 px


def test_bad_records_are_skipped_and_counted(processor, imgs):
    good = mcd_record()
    records = [
        good,
        "not a record",
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "<image> hi"}], "images": ["red.png"]},
        mcd_record(images=["red.png"]),  # two placeholders, one image
        mcd_record(images=["red.png", "nope.png"]),
        mcd_record(images=["red.png", "broken.png"]),
        mcd_record(images=["red.png", "thin.png"]),
        mcd_record(messages=[{"role": "user", "content": "<image><image>" + "word " * 400},
                             {"role": "assistant", "content": "ok"}]),
        good,
    ]
    d = imgs / "bad.json"
    d.write_text(json.dumps(records))
    src = open_data(str(d))
    idx = build_index(src, Encoder(processor, max_len=512), progress=False)
    assert idx.valid == [0, 10]
    assert dict(idx.skipped) == {"malformed": 3, "no_assistant_turn": 1, "image_count_mismatch": 1,
                                 "missing_image": 1, "unreadable_image": 1, "bad_image_size": 1, "too_long": 1}
    rep = idx.report()
    assert rep["records"] == 11 and rep["used"] == 2 and rep["categories"] == {"html": 2}
    assert "nope.png" in idx.examples["missing_image"]


def test_jsonl_bad_line_counts_as_malformed(processor, tmp_path):
    path = write_toy_dataset(tmp_path / "toy", n=8, layout="jsonl")
    with path.open("a") as f:
        f.write("{not json\n")
    idx = build_index(open_data(str(path)), Encoder(processor), progress=False)
    assert len(idx.valid) == 8 and dict(idx.skipped) == {"malformed": 1}
    assert idx.report()["categories"] == {"coding": 2, "grounding": 2, "image_code": 4}
    # the reason names the file and line, not "record is a NoneType" (issue 16)
    assert idx.examples["malformed"].startswith(f"record 8: {path.name} line 9 is not valid JSON (Expecting property name")


def test_truncation_policy(processor, imgs):
    long_answer = "x = 1\n" * 200
    rec = {"messages": [{"role": "user", "content": "<image> code"}, {"role": "assistant", "content": long_answer}],
           "images": ["red.png"]}
    res = ImageResolver(imgs)
    s = normalize_record(rec, res)
    enc = Encoder(processor, max_len=64, truncation="truncate")
    text, spans = enc.render(s)
    m = enc.measure(s, text, spans)
    assert m.length > 64 and enc.check(m) is True
    item = enc.encode(s)
    assert len(item["input_ids"]) == 64 and (item["labels"] != IGNORE_INDEX).any()
    assert int((item["input_ids"] == processor.image_token_id).sum()) == 4  # image kept whole
    drop = Encoder(processor, max_len=64, truncation="drop")
    with pytest.raises(InvalidRecord) as e:
        drop.check(m)
    assert e.value.reason == "too_long"
    # an image that would be cut is never truncated into
    tight = Encoder(processor, max_len=20, truncation="truncate")
    with pytest.raises(InvalidRecord, match="too_long"):
        tight.check(m)


def test_collator_pads_and_concatenates_images(processor, imgs):
    enc = Encoder(processor)
    res = ImageResolver(imgs)
    a = enc.encode(normalize_record(mcd_record(), res))
    b = enc.encode(normalize_record({"messages": [{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": "ok"}]}, res))
    c = enc.encode(normalize_record({"messages": [{"role": "user", "content": "<image>"},
                                                  {"role": "assistant", "content": "ok"}], "images": ["wide.png"]}, res))
    batch = SFTCollator(enc.pad_id)([a, b, c])
    n = len(a["input_ids"])
    assert batch["input_ids"].shape == (3, n) and batch["labels"].shape == (3, n)
    assert batch["attention_mask"].sum(1).tolist() == [n, len(b["input_ids"]), len(c["input_ids"])]
    assert (batch["labels"][1, len(b["input_ids"]):] == IGNORE_INDEX).all()
    assert (batch["input_ids"][1, len(b["input_ids"]):] == enc.pad_id).all()
    assert torch.equal(batch["pixel_values"], torch.cat([a["pixel_values"], c["pixel_values"]]))
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4], [1, 6, 8], [1, 6, 8]]
    # the decoded batch: only assistant answers carry labels
    decoded = [processor.tokenizer.decode(batch["input_ids"][r][batch["labels"][r] != IGNORE_INDEX]) for r in range(3)]
    assert decoded == [ANSWER1 + "<|im_end|>" + ANSWER2 + "<|im_end|>", "ok<|im_end|>", "ok<|im_end|>"]
    text_only = SFTCollator(enc.pad_id)([b])
    assert "pixel_values" not in text_only and "image_grid_thw" not in text_only


def test_folder_with_image_zip(processor, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HOME", str(tmp_path / "hf"))
    src_dir = tmp_path / "src"
    write_toy_dataset(src_dir, n=6)
    mcd = tmp_path / "mcd"
    mcd.mkdir()
    recs = json.loads((src_dir / "data.json").read_text())
    for r in recs:  # MCD-style paths: the archive holds a top folder the JSON paths omit
        r["images"] = [p.replace("images/", "") for p in r["images"]]
    (mcd / "mcd_small.json").write_text(json.dumps(recs))
    with zipfile.ZipFile(mcd / "mcd_images.zip", "w") as z:
        for p in sorted((src_dir / "images").iterdir()):
            z.write(p, f"mcd_images/{p.name}")
    src = open_data(str(mcd))
    assert src.name == "mcd" and src.image_root.is_relative_to(tmp_path / "hf")
    idx = build_index(src, Encoder(processor), progress=False)
    assert len(idx.valid) == 6 and not idx.skipped
    assert open_data(str(mcd)).image_root == src.image_root  # extracted once


def test_data_errors(processor, tmp_path):
    with pytest.raises(DataError, match="no such file"):
        open_data(str(tmp_path / "missing.json"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match=r"\.json or \.jsonl"):
        open_data(str(tmp_path / "x.txt"))
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(DataError, match="not valid JSON"):
        open_data(str(tmp_path / "bad.json"))
    with pytest.raises(DataError, match=r"--images \(images=\) '.*nope': not a folder"):
        open_data(str(tmp_path / "bad.json"), images=str(tmp_path / "nope"))
    import copy

    p2 = copy.deepcopy(processor)
    p2.chat_template = processor.chat_template + "{{ messages | length }}"
    s = normalize_record({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
                         ImageResolver(None))
    with pytest.raises(DataError, match="prefix"):
        Encoder(p2).render(s)


def test_hub_dataset_in_mcd_layout(hub, processor, tmp_path):  # noqa: F811
    """`--data owner/name` with MCD's layout (top-level JSON + one image zip) through the real
    huggingface_hub client against the local fake Hub: downloads both, extracts the zip once."""
    from huggingface_hub import CommitOperationAdd, HfApi

    src_dir = tmp_path / "src"
    write_toy_dataset(src_dir, n=6)
    zpath = tmp_path / "mcd_images.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted((src_dir / "images").iterdir()):
            z.write(p, f"images/{p.name}")
    repo = f"{hub.user}/{unique('mcd')}"
    api = HfApi()
    api.create_repo(repo, repo_type="dataset")
    sha = api.create_commit(repo, repo_type="dataset", commit_message="data", operations=[
        CommitOperationAdd("mcd_small.json", str(src_dir / "data.json")),
        CommitOperationAdd("mcd_images.zip", str(zpath))]).oid
    src = open_data(repo)
    assert (src.name, src.kind, src.revision) == (repo, "hub-files", sha)
    idx = build_index(src, Encoder(processor), progress=False)
    assert len(idx.valid) == 6 and not idx.skipped
    with pytest.raises(DataError, match="not found on the Hub"):
        open_data(f"{hub.user}/no-such-dataset")


def test_video_records_are_refused_and_counted(processor, imgs, tmp_path):
    """LLaMA-Factory / ShareGPT / TRL video records are skipped as `video`, never trained as the
    literal text "<video>"; image records next to them are unaffected."""
    recs = [
        {"messages": [{"role": "user", "content": "<video>What happens?"}, {"role": "assistant", "content": "x"}],
         "videos": ["clip.mp4"]},
        {"messages": [{"role": "user", "content": "<video>What happens?"}, {"role": "assistant", "content": "x"}]},
        {"conversations": [{"from": "human", "value": "Describe."}, {"from": "gpt", "value": "y"}], "video": "a.mp4"},
        {"messages": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe."}]},
                      {"role": "assistant", "content": "z"}]},
        mcd_record(),
    ]
    (tmp_path / "v.json").write_text(json.dumps(recs))
    for r in recs[:4]:
        with pytest.raises(InvalidRecord) as e:
            normalize_record(r, ImageResolver(imgs))
        assert e.value.reason == "video"
    idx = build_index(open_data(str(tmp_path / "v.json"), imgs), Encoder(processor), progress=False)
    assert idx.report()["skipped"] == {"video": 4} and idx.valid == [4]
    assert idx.examples["video"] == "record 0: 1 video(s)"


def test_toy_dataset_is_the_toy_worlds_tasks_as_evaluation_poses_them(processor, tmp_path):
    """write_toy_dataset draws from toy/world.py: each record's prompt renders exactly as the task's
    evaluation prompt (image where the task puts it), its answer is the task's target, its image
    the sample's picture; a bad mix is refused by name."""
    from viscodex.toy import world
    from viscodex.training.toy_data import write_toy_dataset

    path = write_toy_dataset(tmp_path / "toy", n=6, seed=4, mix=("image_code", "grounding", "coding"))
    enc = Encoder(processor, max_len=512)
    expected = {t: world.make_samples(world.TASKS[t], world.all_scenes(), 2, "toy-data-4") for t in ("image_code", "grounding", "coding")}
    seen = {t: 0 for t in expected}
    for rec in json.loads(path.read_text()):
        task = world.TASKS[rec["category"]]
        want = expected[task.name][seen[task.name]]
        seen[task.name] += 1
        sample = normalize_record(rec, ImageResolver(path.parent))
        text, spans = enc.render(sample)
        prompt = processor.apply_chat_template(task.messages(want), tokenize=False, add_generation_prompt=True)
        assert text.startswith(prompt) and text[spans[0][0]:spans[0][1]] == want.target + "<|im_end|>"
        assert len(rec["images"]) == int(task.uses_image)
        if task.uses_image:
            assert Image.open(path.parent / rec["images"][0]).convert("RGB").tobytes() == want.image.tobytes()
    assert seen == {"image_code": 2, "grounding": 2, "coding": 2}
    with pytest.raises(ValueError, match="'drawing'.*tasks are grounding, coding, image_code"):
        write_toy_dataset(tmp_path / "bad", n=2, mix=("drawing",))
