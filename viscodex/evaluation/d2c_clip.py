"""Design2Code's CLIP score (visual_score.calculate_clip_similarity_with_blocks), with a CLIP
checkpoint the user gives (transformers).

Each page's normal rendering has its text boxes inpainted with OpenCV's Telea method (radius 3, on
the BGR image, as mask_bounding_boxes_with_inpainting does; no box: left as is), is squeezed to a
square of its shorter side (PIL LANCZOS), then prepared as the `clip` package's ViT-B/32 transform
prepares it: PIL bicubic resize of the shorter side to 224, centre crop 224, /255, normalised with
OpenAI's mean and std. transformers' CLIPImageProcessor (5.x) resizes with torch and differs by up to
one grey level, so it is used only for the checkpoint's size, mean and std. Score = cosine
similarity of the two image embeddings.
"""
from __future__ import annotations

import numpy as np

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
BENCHMARK_CHECKPOINT = "openai/clip-vit-base-patch32"  # clip.load("ViT-B/32"), as transformers names it


def inpaint_boxes(shot: np.ndarray, boxes: list) -> np.ndarray:
    """The page (HxWx3 RGB) with each page-relative (x, y, w, h) box filled by cv2.inpaint (Telea)."""
    import cv2

    img = np.ascontiguousarray(shot.astype(np.uint8))
    if not boxes:
        return img
    h, w = img.shape[:2]
    mask = np.zeros((h, w), dtype=np.uint8)
    for bx, by, bw, bh in boxes:
        x, y = int(bx * w), int(by * h)
        mask[y:y + int(bh * h), x:x + int(bw * w)] = 255
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(cv2.inpaint(bgr, mask, 3, cv2.INPAINT_TELEA), cv2.COLOR_BGR2RGB)


def masked_square(shot: np.ndarray, blocks: list[dict]):
    """rescale_and_mask: text boxes inpainted, then the page resized to a square of its shorter side."""
    from PIL import Image

    img = Image.fromarray(inpaint_boxes(shot, [b["bbox"] for b in blocks]))
    side = min(img.size)
    return img.resize((side, side), Image.LANCZOS)


def clip_pixels(img, size: int = 224, crop: int = 224, mean=OPENAI_MEAN, std=OPENAI_STD) -> np.ndarray:
    """The clip package's transform (torchvision Resize(size, BICUBIC) on a PIL image, CenterCrop,
    ToTensor, Normalize) as a 3 x crop x crop float32 array."""
    from PIL import Image

    img = img.convert("RGB")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)  # torchvision's rounding of the longer side
    img = img.resize((size, new_long) if w <= h else (new_long, size), Image.BICUBIC)
    w, h = img.size
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    arr = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return arr.transpose(2, 0, 1)


class ClipScore:
    """Cosine similarity of the CLIP image embeddings of two masked pages (a folder or Hub id
    loadable by transformers; the benchmark: OpenAI's ViT-B/32)."""

    def __init__(self, checkpoint: str):
        from ..errors import EvalError

        try:
            from transformers import CLIPImageProcessor, CLIPModel

            self.model = CLIPModel.from_pretrained(checkpoint).eval()
            proc = CLIPImageProcessor.from_pretrained(checkpoint)
        except (OSError, ValueError) as e:
            raise EvalError(f"--clip-model {checkpoint}: not a CLIP checkpoint transformers can load "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); e.g. {BENCHMARK_CHECKPOINT}") from None
        self.checkpoint = checkpoint
        size, crop = proc.size, getattr(proc, "crop_size", None) or proc.size
        self.prep = {"size": int(size.shortest_edge or size.height), "crop": int(crop.height or crop.shortest_edge),
                     "mean": tuple(proc.image_mean), "std": tuple(proc.image_std)}

    def __call__(self, shot_a: np.ndarray, blocks_a: list[dict], shot_b: np.ndarray, blocks_b: list[dict]) -> float:
        import torch

        pix = torch.from_numpy(np.stack([clip_pixels(masked_square(shot_a, blocks_a), **self.prep),
                                         clip_pixels(masked_square(shot_b, blocks_b), **self.prep)]))
        with torch.no_grad():
            out = self.model.get_image_features(pixel_values=pix)
        feats = getattr(out, "pooler_output", out)
        feats = feats / feats.norm(dim=-1, keepdim=True)
        return float((feats[0] * feats[1]).sum())


__all__ = ["ClipScore", "masked_square", "inpaint_boxes", "clip_pixels", "BENCHMARK_CHECKPOINT"]
