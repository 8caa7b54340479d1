#!/usr/bin/env python3
"""Train the train example's Fashion-MNIST recipe in PyTorch on the CPU, as a reference.

Same network as finegrain's `tiny` preset (the PyTorch model of scripts/torch_parity.py,
which tests/suite/parity.rs checks against finegrain), same diversification masks (finegrain's
counter-based hash of seed and step), GCE with k = 3 after one cross-entropy epoch, SGD
momentum 0.9, weight decay 1e-4 on convolution and head weights, lr 0.1 with a 0.2-epoch
linear warm-up and cosine decay, batch 32, no augmentation. Only the data order and the
initial weights differ from a finegrain run. It answers "what does this recipe reach?"
without a GPU, much faster than lavapipe.

    python3 scripts/torch_reference.py /usr/share/datasets/fashion-mnist --epochs 30
    python3 scripts/torch_reference.py data/fashion-mnist-subset --epochs 4

Prints one JSON line per epoch (train loss, test top-1, seconds). Needs torch and numpy.
"""

import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_parity import Net, gce_loss  # noqa: E402

M32 = np.uint64(0xFFFFFFFF)


def lowbias32(x):
    x = np.asarray(x, dtype=np.uint64) & M32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & M32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & M32
    x ^= x >> np.uint64(16)
    return x


def draw(seed, step, b, c, q, kind):
    """finegrain's draw(seed, step, b, c, patch, kind), vectorised over numpy arrays."""
    h = lowbias32(seed ^ 0x9E3779B9)
    for v in (step & 0xFFFFFFFF, step >> 32, b, c, q, kind):
        h = lowbias32(h ^ np.asarray(v, dtype=np.uint64))
    return h


def bernoulli(h, p):
    return ((h >> np.uint64(8)).astype(np.float64) / 16777216.0) < float(np.float32(p))


def masks(maps, seed, step, grid, p_peak=0.5, p_patch=0.5):
    """The diversification block's suppression mask (N, C, H, W) for `maps`."""
    m = maps.detach().numpy()
    n, c, h, w = m.shape
    px = -(-w // grid)
    b = np.arange(n)[:, None, None, None]
    k = np.arange(c)[None, :, None, None]
    y = np.arange(h)[None, None, :, None]
    x = np.arange(w)[None, None, None, :]
    q = (y // grid) * px + x // grid
    r_peak = np.broadcast_to(bernoulli(draw(seed, step, b, k, 0, 0), p_peak), m.shape)
    r_patch = np.broadcast_to(bernoulli(draw(seed, step, b, k, q, 1), p_patch), m.shape)
    peak = m == m.reshape(n, c, -1).max(axis=2)[:, :, None, None]
    return torch.from_numpy(np.where(peak, r_peak, r_patch))


def read_idx(path):
    with gzip.open(path) as f:
        d = f.read()
    nd = d[3]
    dims = [int.from_bytes(d[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(d, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="IDX folder (train-/t10k-images/labels-idx*-ubyte.gz)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loss", choices=["ce", "gce"], default="gce")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--no-db", action="store_true")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    files = {
        name: read_idx(os.path.join(a.data, f"{name}-ubyte.gz"))
        for name in ["train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"]
    }
    mean, std = 0.2860, 0.3530  # finegrain's Fashion-MNIST normalisation

    def prep(x):
        return torch.from_numpy(((x.astype(np.float32) / 255.0 - mean) / std)[:, None])

    xtr, xte = prep(files["train-images-idx3"]), prep(files["t10k-images-idx3"])
    ytr = torch.from_numpy(files["train-labels-idx1"].astype(np.int64))
    yte = torch.from_numpy(files["t10k-labels-idx1"].astype(np.int64))
    cfg = dict(
        name="tiny",
        in_channels=1,
        input_size=28,
        stem=dict(kernel=3, stride=1, pad=1, channels=16, maxpool=False),
        block="basic",
        layers=[1, 1, 1],
        widths=[16, 32, 64],
        strides=[2, 2, 2],
        num_classes=10,
        bn_eps=1e-5,
        bn_momentum=0.1,
    )
    net = Net(cfg)
    for name, mod in net.named_modules():
        if isinstance(mod, torch.nn.Conv2d) and name != "head":
            torch.nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
    named = list(net.named_parameters())
    decay = [p for n, p in named if n.endswith("weight") and p.dim() > 1]
    other = [p for n, p in named if not (n.endswith("weight") and p.dim() > 1)]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": 1e-4}, {"params": other, "weight_decay": 0.0}],
        lr=a.lr,
        momentum=0.9,
    )
    spe = len(xtr) // a.batch
    total, warm = spe * a.epochs, round(0.2 * spe)

    def lr_at(s):
        if s < warm:
            return a.lr * (s + 1) / warm
        t = min((s - warm) / max(total - warm, 1), 1.0)
        return 0.5 * a.lr * (1 + math.cos(math.pi * t))

    grid = 1  # G for 4x4 class maps (finegrain: round(3 * 4 / 14) = 1)
    step = 0
    for epoch in range(a.epochs):
        net.train()
        perm = torch.randperm(len(xtr))
        t0, loss_sum = time.time(), 0.0
        for i in range(spe):
            idx = perm[i * a.batch : (i + 1) * a.batch]
            x, y = xtr[idx], ytr[idx]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            maps = net.class_maps(x)
            if not a.no_db:
                maps = torch.where(masks(maps, a.seed, step, grid), 0.1 * maps, maps)
            scores = maps.mean(dim=(2, 3))
            if a.loss == "gce" and epoch >= 1:
                loss = gce_loss(scores, y, a.k)
            else:
                loss = F.cross_entropy(scores, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.item()
        net.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(xte), 500):
                s = net.class_maps(xte[i : i + 500]).mean(dim=(2, 3))
                correct += (s.argmax(1) == yte[i : i + 500]).sum().item()
        line = dict(
            epoch=epoch + 1,
            train_loss=round(loss_sum / spe, 5),
            test_top1=correct / len(xte),
            seconds=round(time.time() - t0, 1),
        )
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
