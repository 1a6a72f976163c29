"""NonMaxSuppression as ONNX defines it (greedy per batch and class, scores descending, ties to the
lower box index; IoU strictly above the threshold suppresses). The greedy loop runs on the host: the
result's size depends on the data, so a plan holding it is never captured as a CUDA graph."""

from __future__ import annotations

import numpy as np
import torch

from edgecore_torch.ops._registry import OpContext, register


def _corners(boxes: np.ndarray, center_point_box: int) -> np.ndarray:
    if center_point_box:
        x, y, w, h = boxes[..., 0], boxes[..., 1], boxes[..., 2] / 2, boxes[..., 3] / 2
        return np.stack([y - h, x - w, y + h, x + w], axis=-1)
    y1, x1, y2, x2 = (boxes[..., i] for i in range(4))
    return np.stack([np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)], axis=-1)


def _iou(corners: np.ndarray) -> np.ndarray:
    y1, x1, y2, x2 = (corners[:, i] for i in range(4))
    area = (y2 - y1) * (x2 - x1)
    ih = np.clip(np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]), 0, None)
    iw = np.clip(np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]), 0, None)
    inter = ih * iw
    union = area[:, None] + area[None] - inter
    valid = (inter > 0) & (area[:, None] > 0) & (area[None] > 0) & (union > 0)
    return np.where(valid, inter / np.where(union > 0, union, 1), 0.0)


def select(boxes, scores, max_per_class: int, iou_threshold: float, score_threshold: float | None, center: int) -> np.ndarray:
    picked = []
    if max_per_class <= 0:
        return np.zeros((0, 3), np.int64)
    for b in range(boxes.shape[0]):
        iou = _iou(_corners(boxes[b].astype(np.float64), center))
        for c in range(scores.shape[1]):
            s = scores[b, c]
            candidates = np.arange(s.shape[0]) if score_threshold is None else np.nonzero(s > score_threshold)[0]
            order = candidates[np.lexsort((candidates, -s[candidates]))]
            kept: list[int] = []
            for box in order:
                if len(kept) >= max_per_class:
                    break
                if not kept or not np.any(iou[box, kept] > iou_threshold):
                    kept.append(int(box))
                    picked.append((b, c, int(box)))
    return np.array(picked, np.int64).reshape(-1, 3)


@register("NonMaxSuppression", data_dependent=True)
def _nms(ctx: OpContext):
    center = ctx.attr("center_point_box", 0)
    max_per_class = ctx.int(2) if ctx.present(2) and ctx.value(2).numel() else 0
    iou_threshold = float(ctx.scalar(3)) if ctx.present(3) and ctx.value(3).numel() else 0.0
    score_threshold = float(ctx.scalar(4)) if ctx.present(4) and ctx.value(4).numel() else None
    device = ctx.device

    def run(boxes, scores, *_):
        host = select(boxes.float().cpu().numpy(), scores.float().cpu().numpy(), max_per_class, iou_threshold, score_threshold, center)
        return torch.from_numpy(host).to(device)

    return run
