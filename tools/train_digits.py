"""Train the zoo's small digits CNN on scikit-learn's bundled digits and export it to ONNX.

No download and no deep-learning framework: the network is trained here in numpy (im2col
convolutions, hand-written backward pass, Adam), then written to ONNX with the very same weights and
checked through onnxruntime on the held-out split.

    python tools/train_digits.py            # writes core/edgecore/zoo/data/digits_cnn.onnx and
                                            # core/edgecore/zoo/data/digits_test.npz

Network (input ``[batch, 1, 8, 8]``, pixels / 16 so that they lie in [0, 1]):
Conv 3x3 (1 -> 16) - Relu - Conv 3x3 (16 -> 32) - Relu - MaxPool 2x2 - Flatten -
Gemm (512 -> 64) - Relu - Gemm (64 -> 10) -> ``logits`` ``[batch, 10]``.

The split is stratified, 25 % held out, seed 0. The test split is saved as float32 images
``[N, 1, 8, 8]`` scaled as in training and int64 labels.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger("train_digits")

DATA_DIR = Path(__file__).resolve().parents[1] / "core" / "edgecore" / "zoo" / "data"
SEED = 0
PIXEL_SCALE = 16.0
OPSET = 17


# -- layers (forward returns a cache for backward) ------------------------------------------------------


def im2col(x: np.ndarray) -> np.ndarray:
    """3x3, stride 1, pad 1 patches of NCHW ``x`` as rows ``[N*H*W, C*9]``."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.empty((n, c, 3, 3, h, w), x.dtype)
    for i in range(3):
        for j in range(3):
            cols[:, :, i, j] = xp[:, :, i : i + h, j : j + w]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * h * w, c * 9)


def col2im(dcols: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Adjoint of :func:`im2col`: sums the patch gradients back into an NCHW gradient."""
    n, c, h, w = shape
    d = dcols.reshape(n, h, w, c, 3, 3).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2, w + 2), dcols.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, :, i : i + h, j : j + w] += d[:, :, i, j]
    return dxp[:, :, 1:-1, 1:-1]


def conv_forward(x, w, b):
    n, _, h, wd = x.shape
    cols = im2col(x)
    out = (cols @ w.reshape(w.shape[0], -1).T + b).reshape(n, h, wd, -1).transpose(0, 3, 1, 2)
    return out, (x.shape, cols)


def conv_backward(dout, w, cache, need_dx=True):
    shape, cols = cache
    d = dout.transpose(0, 2, 3, 1).reshape(-1, w.shape[0])
    dw = (d.T @ cols).reshape(w.shape)
    db = d.sum(axis=0)
    dx = col2im(d @ w.reshape(w.shape[0], -1), shape) if need_dx else None
    return dx, dw, db


def maxpool_forward(x):
    n, c, h, w = x.shape
    win = x.reshape(n, c, h // 2, 2, w // 2, 2)
    out = win.max(axis=(3, 5))
    mask = (win == out[:, :, :, None, :, None]).astype(x.dtype)
    mask /= mask.sum(axis=(3, 5), keepdims=True)  # ties share the gradient
    return out, mask


def maxpool_backward(dout, mask):
    n, c, h2, _, w2, _ = mask.shape
    return (mask * dout[:, :, :, None, :, None]).reshape(n, c, h2 * 2, w2 * 2)


# -- model ----------------------------------------------------------------------------------------------


def init_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "conv1.weight": he((16, 1, 3, 3), 9), "conv1.bias": np.zeros(16, np.float32),
        "conv2.weight": he((32, 16, 3, 3), 144), "conv2.bias": np.zeros(32, np.float32),
        "fc1.weight": he((64, 512), 512), "fc1.bias": np.zeros(64, np.float32),
        "fc2.weight": he((10, 64), 64) / 2, "fc2.bias": np.zeros(10, np.float32),
    }


def forward(p, x, *, train=False):
    a1, c1 = conv_forward(x, p["conv1.weight"], p["conv1.bias"])
    r1 = np.maximum(a1, 0)
    a2, c2 = conv_forward(r1, p["conv2.weight"], p["conv2.bias"])
    r2 = np.maximum(a2, 0)
    pooled, mask = maxpool_forward(r2)
    flat = pooled.reshape(len(x), -1)
    h = flat @ p["fc1.weight"].T + p["fc1.bias"]
    rh = np.maximum(h, 0)
    logits = rh @ p["fc2.weight"].T + p["fc2.bias"]
    if not train:
        return logits
    return logits, (c1, a1, r1, c2, a2, mask, pooled.shape, flat, h, rh)


def backward(p, dlogits, cache):
    c1, a1, r1, c2, a2, mask, pooled_shape, flat, h, rh = cache
    g = {"fc2.weight": dlogits.T @ rh, "fc2.bias": dlogits.sum(0)}
    dh = (dlogits @ p["fc2.weight"]) * (h > 0)
    g["fc1.weight"], g["fc1.bias"] = dh.T @ flat, dh.sum(0)
    dpool = (dh @ p["fc1.weight"]).reshape(pooled_shape)
    da2 = maxpool_backward(dpool, mask) * (a2 > 0)
    dr1, g["conv2.weight"], g["conv2.bias"] = conv_backward(da2, p["conv2.weight"], c2)
    _, g["conv1.weight"], g["conv1.bias"] = conv_backward(dr1 * (a1 > 0), p["conv1.weight"], c1, need_dx=False)
    return g


def softmax_cross_entropy(logits, labels):
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    loss = -np.log(probs[np.arange(len(labels)), labels] + 1e-12).mean()
    dlogits = probs
    dlogits[np.arange(len(labels)), labels] -= 1
    return loss, dlogits / len(labels)


def train(x, y, *, epochs: int, batch: int, lr: float, weight_decay: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = init_params(rng)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    beta1, beta2, eps, step = 0.9, 0.999, 1e-8, 0
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        rate = lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs))  # cosine schedule
        total = 0.0
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            logits, cache = forward(p, x[idx], train=True)
            loss, dlogits = softmax_cross_entropy(logits, y[idx])
            total += loss * len(idx)
            grads = backward(p, dlogits.astype(np.float32), cache)
            step += 1
            for k in p:
                g = grads[k] + weight_decay * p[k] if k.endswith("weight") else grads[k]
                m[k] = beta1 * m[k] + (1 - beta1) * g
                v[k] = beta2 * v[k] + (1 - beta2) * g * g
                mhat = m[k] / (1 - beta1**step)
                vhat = v[k] / (1 - beta2**step)
                p[k] = (p[k] - rate * mhat / (np.sqrt(vhat) + eps)).astype(np.float32)
        logger.info("epoch %d  loss %.4f", epoch + 1, total / len(x))
    return p


# -- export ---------------------------------------------------------------------------------------------


def to_onnx(p: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The trained network as an opset-17 ONNX model with a dynamic batch dimension."""
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["conv1"], name="conv1", **conv),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("Conv", ["relu1", "conv2.weight", "conv2.bias"], ["conv2"], name="conv2", **conv),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("MaxPool", ["relu2"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["fc1"], name="fc1", transB=1),
        helper.make_node("Relu", ["fc1"], ["relu3"], name="relu3"),
        helper.make_node("Gemm", ["relu3", "fc2.weight", "fc2.bias"], ["logits"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(np.ascontiguousarray(v, np.float32), k) for k, v in p.items()],
    )
    opsets = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="edgecore tools/train_digits.py",
        doc_string="CNN trained on scikit-learn's digits (8x8, pixels / 16); see tools/train_digits.py",
    )
    model.ir_version = helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(model, full_check=True)
    return model


def load_split(seed: int = SEED):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / PIXEL_SCALE).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    return train_test_split(images, labels, test_size=0.25, stratify=labels, random_state=seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="folder for the two data files")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--min-accuracy", type=float, default=0.97, help="fail below this test accuracy")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    x_train, x_test, y_train, y_test = load_split()
    params = train(x_train, y_train, epochs=args.epochs, batch=args.batch, lr=args.lr,
                   weight_decay=args.weight_decay, seed=SEED)
    numpy_acc = float((forward(params, x_test).argmax(1) == y_test).mean())
    model = to_onnx(params)

    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ort_acc = float((session.run(None, {"input": x_test})[0].argmax(1) == y_test).mean())
    logger.info("test top-1: numpy %.4f, onnxruntime %.4f (%d images)", numpy_acc, ort_acc, len(y_test))
    if ort_acc < args.min_accuracy:
        logger.error("accuracy %.4f is below %.2f: nothing written", ort_acc, args.min_accuracy)
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, args.out / "digits_cnn.onnx")
    np.savez_compressed(args.out / "digits_test.npz", images=x_test, labels=y_test)
    logger.info("wrote %s and %s", args.out / "digits_cnn.onnx", args.out / "digits_test.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
