#!/usr/bin/env python3
"""Write the PyTorch parity fixtures that `tests/suite/parity.rs` checks finegrain against.

For each case below, this script builds the finegrain network (a ResNet backbone from a
finegrain `ModelConfig`, the 1x1 class-map head, the diversification block and the
gradient-boosting cross-entropy of METHOD.md) in PyTorch, with random weights and
non-trivial batch-norm statistics, and writes one safetensors file holding:

  * the weights as a torchvision state dict (`conv1.weight`, `layer1.0.bn1.running_var`,
    ..., the head as `fc.weight` (C, D) and `fc.bias`), so the Rust test loads them through
    `finegrain::checkpoint::load_torchvision`, the path a PyTorch user's weights take;
  * `input` (N, Cin, S, S) float32 and `labels` (N) int32;
  * `expected.eval_scores` (N, C): evaluation mode (running statistics, plain average);
  * one training-mode forward and backward (batch statistics, diversification block with
    the masks of the given seed and step, GCE with the given k):
    `expected.maps` (N, C, h, w), `expected.mask` (N, C, h, w, 1 = suppressed),
    `expected.scores` (N, C), `expected.loss` (1), `expected.maps_grad` (N, C, h, w),
    `grad.NAME` for every parameter (PyTorch layout; the head as `grad.head.weight`
    (C, D, 1, 1) and `grad.head.bias`), and `expected.NAME.running_mean` / `running_var`
    after the batch-norm momentum update;
  * metadata: `finegrain.model` (the ModelConfig JSON), `parity.method` (loss, k, the
    diversification block's settings, the step counter), `parity.torch` (torch version).

The diversification block's random draws use finegrain's counter-based hash (lowbias32
chained over seed, step, image, class, patch, kind; see src/method/diversify.rs), written
here again from its specification, so the fixture checks our mask generation too.

Inputs are redrawn until every class map's peak and every GCE top-k boundary is separated
by a clear margin, so rounding differences between devices cannot flip a discrete choice.

Usage (needs torch, numpy and safetensors):
    python3 scripts/torch_parity.py --out tests/fixtures
"""

import argparse
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

M32 = 0xFFFFFFFF

CASES = {
    # Basic blocks, 3x3/s1 stem without max pool (the `tiny` preset's topology) on RGB
    # 36x36: maps 5x5 with G = 2, so the last row and column of patches are ragged.
    "basic": dict(
        model=dict(
            name="parity-basic",
            in_channels=3,
            input_size=36,
            stem=dict(kernel=3, stride=1, pad=1, channels=8, maxpool=False),
            block="basic",
            layers=[1, 2, 1],
            widths=[8, 12, 16],
            strides=[2, 2, 2],
            num_classes=10,
            bn_eps=1e-5,
            bn_momentum=0.1,
        ),
        batch=5,
        k=3,
        grid=2,
        seed=11,
        data_seed=0,
    ),
    # Bottlenecks with torchvision's 7x7/s2 stem and 3x3/s2 max pool on 45x45: strided 3x3
    # in the bottleneck, strided 1x1 downsample, maps 6x6 with G = 4.
    "bottleneck": dict(
        model=dict(
            name="parity-bottleneck",
            in_channels=3,
            input_size=45,
            stem=dict(kernel=7, stride=2, pad=3, channels=8, maxpool=True),
            block="bottleneck",
            layers=[1, 2],
            widths=[4, 6],
            strides=[1, 2],
            num_classes=7,
            bn_eps=1e-5,
            bn_momentum=0.1,
        ),
        batch=3,
        k=3,
        grid=4,
        seed=5,
        data_seed=100,
    ),
}

# Shared by every case: the paper's block settings and a step counter above 2^32, so the
# high word of the step reaches the hash.
P_PEAK, P_PATCH, ALPHA = 0.5, 0.5, 0.1
STEP = (1 << 32) + 7


def lowbias32(x):
    x &= M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    x ^= x >> 16
    return x


def draw(seed, step, b, c, patch, kind):
    h = lowbias32(seed ^ 0x9E3779B9)
    for v in (step & M32, step >> 32, b, c, patch, kind):
        h = lowbias32(h ^ v)
    return h


def bernoulli(h, p):
    # top 24 bits as a uniform in [0, 1), compared with p in float32 (exact in double)
    return (h >> 8) / 16777216.0 < float(np.float32(p))


def masks(maps, seed, step, grid):
    """Suppression mask (N, C, h, w) bool of the diversification block, from `maps`."""
    m = maps.detach().numpy()
    n, c, h, w = m.shape
    px = -(-w // grid)
    out = np.zeros(m.shape, dtype=bool)
    for b in range(n):
        for k in range(c):
            peak_val = m[b, k].max()
            r_peak = bernoulli(draw(seed, step, b, k, 0, 0), P_PEAK)
            for y in range(h):
                for x in range(w):
                    if m[b, k, y, x] == peak_val:
                        out[b, k, y, x] = r_peak
                    else:
                        q = (y // grid) * px + x // grid
                        out[b, k, y, x] = bernoulli(draw(seed, step, b, k, q, 1), P_PATCH)
    return torch.from_numpy(out)


def conv(cin, cout, k, stride, pad):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False)


class Block(nn.Module):
    def __init__(self, kind, cin, width, stride, cfg):
        super().__init__()
        bn = lambda ch: nn.BatchNorm2d(ch, eps=cfg["bn_eps"], momentum=cfg["bn_momentum"])
        self.kind = kind
        if kind == "basic":
            cout = width
            self.conv1, self.bn1 = conv(cin, width, 3, stride, 1), bn(width)
            self.conv2, self.bn2 = conv(width, width, 3, 1, 1), bn(width)
        else:
            cout = width * 4
            self.conv1, self.bn1 = conv(cin, width, 1, 1, 0), bn(width)
            self.conv2, self.bn2 = conv(width, width, 3, stride, 1), bn(width)
            self.conv3, self.bn3 = conv(width, cout, 1, 1, 0), bn(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv(cin, cout, 1, stride, 0), bn(cout))
        self.cout = cout

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        if self.kind == "basic":
            y = self.bn2(self.conv2(y))
        else:
            y = F.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(y + s)


class Net(nn.Module):
    """The finegrain network: ResNet backbone and the 1x1 class-map head."""

    def __init__(self, cfg):
        super().__init__()
        st = cfg["stem"]
        self.conv1 = conv(cfg["in_channels"], st["channels"], st["kernel"], st["stride"], st["pad"])
        self.bn1 = nn.BatchNorm2d(st["channels"], eps=cfg["bn_eps"], momentum=cfg["bn_momentum"])
        self.maxpool = nn.MaxPool2d(3, 2, 1) if st["maxpool"] else None
        c = st["channels"]
        for si, (nb, width, stride) in enumerate(zip(cfg["layers"], cfg["widths"], cfg["strides"])):
            blocks = []
            for bi in range(nb):
                blk = Block(cfg["block"], c, width, stride if bi == 0 else 1, cfg)
                c = blk.cout
                blocks.append(blk)
            setattr(self, f"layer{si + 1}", nn.Sequential(*blocks))
        self.stages = len(cfg["layers"])
        self.head = nn.Conv2d(c, cfg["num_classes"], 1, bias=True)

    def class_maps(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for si in range(self.stages):
            x = getattr(self, f"layer{si + 1}")(x)
        return self.head(x)


def randomise(net, gen):
    """Kaiming-normal convolutions, and batch-norm parameters and statistics away from
    their defaults, so every term of the batch-norm forward and backward matters."""
    with torch.no_grad():
        for name, mod in net.named_modules():
            if isinstance(mod, nn.Conv2d) and name != "head":
                fan_out = mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1]
                mod.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=gen)
            elif isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5, generator=gen)
                mod.bias.uniform_(-0.2, 0.2, generator=gen)
                mod.running_mean.normal_(0.0, 0.2, generator=gen)
                mod.running_var.uniform_(0.5, 1.5, generator=gen)
        bound = 1.0 / net.head.in_channels ** 0.5
        net.head.weight.uniform_(-bound, bound, generator=gen)
        net.head.bias.uniform_(-bound, bound, generator=gen)


def gce_loss(scores, labels, k):
    """Mean over the batch of -log softmax over {y} and the k highest other classes, at y."""
    neg = scores.detach().clone()
    neg[torch.arange(len(labels)), labels] = -float("inf")
    top = neg.topk(k, dim=1).indices
    keep = torch.cat([labels[:, None], top], dim=1)
    sub = scores.gather(1, keep)
    return (torch.logsumexp(sub, dim=1) - sub[:, 0]).mean()


def margins_ok(maps, scores, labels, k):
    """Every map's peak and every GCE k-th/k+1-th boundary are clearly separated."""
    m = maps.detach().flatten(2)
    top2 = m.topk(2, dim=2).values
    spread = m.std(dim=2) + 1e-12
    if ((top2[..., 0] - top2[..., 1]) / spread).min() < 1e-3:
        return False
    neg = scores.detach().clone()
    neg[torch.arange(len(labels)), labels] = -float("inf")
    if k < scores.shape[1] - 1:
        v = neg.topk(k + 1, dim=1).values
        if ((v[:, k - 1] - v[:, k]).abs() / (scores.std() + 1e-12)).min() < 1e-3:
            return False
    return True


def make_case(name, case):
    cfg = case["model"]
    gen = torch.Generator().manual_seed(1234 + case["data_seed"])
    net = Net(cfg)
    randomise(net, gen)
    n, s, cin, classes = case["batch"], cfg["input_size"], cfg["in_channels"], cfg["num_classes"]
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}

    for attempt in range(100):
        torch.manual_seed(case["data_seed"] + attempt)
        x = torch.randn(n, cin, s, s)
        labels = torch.randint(0, classes, (n,))
        net.load_state_dict(before)
        net.train()
        maps = net.class_maps(x)
        scores_plain = maps.mean(dim=(2, 3))
        if margins_ok(maps, scores_plain, labels, case["k"]):
            break
    else:
        raise SystemExit(f"{name}: no input with clear margins in 100 draws")

    # Evaluation mode first (running statistics untouched by it).
    net.load_state_dict(before)
    net.eval()
    with torch.no_grad():
        eval_scores = net.class_maps(x).mean(dim=(2, 3))

    # One training-mode forward and backward.
    net.load_state_dict(before)
    net.train()
    net.zero_grad()
    maps = net.class_maps(x)
    maps.retain_grad()
    mask = masks(maps, case["seed"], STEP, case["grid"])
    kept = torch.where(mask, ALPHA * maps, maps)
    scores = kept.mean(dim=(2, 3))
    assert margins_ok(maps, scores, labels, case["k"]), "margins after masking"
    loss = gce_loss(scores, labels, case["k"])
    loss.backward()

    out = {}
    for key, v in before.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key == "head.weight":
            out["fc.weight"] = v.reshape(classes, -1)
        elif key == "head.bias":
            out["fc.bias"] = v
        else:
            out[key] = v
    for key, p in net.named_parameters():
        out[f"grad.{key}"] = p.grad
    for key, v in net.state_dict().items():
        if key.endswith("running_mean") or key.endswith("running_var"):
            out[f"expected.{key}"] = v
    out["input"] = x
    out["labels"] = labels.to(torch.int32)
    out["expected.eval_scores"] = eval_scores
    out["expected.maps"] = maps.detach()
    out["expected.mask"] = mask.to(torch.float32)
    out["expected.scores"] = scores.detach()
    out["expected.loss"] = loss.detach().reshape(1)
    out["expected.maps_grad"] = maps.grad
    out = {k: v.detach().contiguous().clone() for k, v in out.items()}
    method = dict(
        loss="gce",
        k=case["k"],
        p_peak=P_PEAK,
        p_patch=P_PATCH,
        grid=case["grid"],
        alpha=ALPHA,
        seed=case["seed"],
        step=STEP,
        batch=n,
    )
    meta = {
        "finegrain.model": json.dumps(cfg),
        "parity.method": json.dumps(method),
        "parity.torch": torch.__version__,
        "parity.command": "python3 scripts/torch_parity.py --out tests/fixtures",
    }
    return out, meta, float(loss.detach()), tuple(maps.shape), int(mask.sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/fixtures", help="folder for parity-*.safetensors")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    for name, case in CASES.items():
        tensors, meta, loss, shape, suppressed = make_case(name, case)
        path = os.path.join(args.out, f"parity-{name}.safetensors")
        save_file(tensors, path, metadata=meta)
        size = os.path.getsize(path)
        print(f"{path}: maps {shape}, loss {loss:.6f}, {suppressed} suppressed, {size} bytes")


if __name__ == "__main__":
    main()
