#!/usr/bin/env python3
"""Write a torchvision ResNet state dict as safetensors, for `train --init FILE`.

The paper fine-tunes an ImageNet-pretrained ResNet-50; finegrain loads torchvision's tensor
names and layouts directly (`fc` is dropped or becomes the class-map head when the class
count matches). This script only saves what torchvision gives; it needs torch, torchvision
and safetensors, and network access the first time (torchvision downloads the weights).

    python3 scripts/torchvision_weights.py resnet50 resnet50.safetensors
    cargo run --release --example train -- --data CUB_200_2011 --model resnet50 \\
        --input-size 448 --init resnet50.safetensors ...

`--random` saves a randomly initialised model instead (no download): a quick way to check
that a ResNet's names and shapes load.
"""

import argparse

import torch
import torchvision
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=["resnet18", "resnet34", "resnet50"])
    ap.add_argument("out", help="safetensors file to write")
    ap.add_argument(
        "--random", action="store_true", help="random weights instead of ImageNet (no download)"
    )
    args = ap.parse_args()
    build = getattr(torchvision.models, args.model)
    model = build(weights=None if args.random else "DEFAULT")
    state = {
        k: v.detach().contiguous()
        for k, v in model.state_dict().items()
        if v.dtype == torch.float32  # num_batches_tracked (int64) is not needed
    }
    save_file(state, args.out)
    n = sum(v.numel() for v in state.values())
    print(f"{args.out}: {len(state)} tensors, {n} values ({args.model}, torchvision {torchvision.__version__})")


if __name__ == "__main__":
    main()
