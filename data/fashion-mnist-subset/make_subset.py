#!/usr/bin/env python3
"""Make the Fashion-MNIST subset shipped in this folder.

Takes the FIRST 10,000 training and the FIRST 2,000 test images (and their labels), in file
order, from the full Fashion-MNIST set installed by Debian's package `dataset-fashion-mnist`
(/usr/share/datasets/fashion-mnist/), and writes them as gzipped IDX files with the same
format and the new counts in their headers. Pixels and labels are copied byte for byte.
The gzip headers carry no file name and mtime 0, so a rerun gives identical files.

Usage: python3 make_subset.py [SOURCE_DIR] [OUT_DIR]
       (defaults: /usr/share/datasets/fashion-mnist and this script's folder)
"""

import gzip
import os
import struct
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(os.path.abspath(__file__))
COUNTS = {"train": 10000, "t10k": 2000}


def read_gz(path):
    with gzip.open(path, "rb") as f:
        return f.read()


def write_gz(path, data):
    with open(path, "wb") as raw:
        # mtime=0 and no file name: reproducible bytes.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as f:
            f.write(data)


def subset_images(data, n, path):
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    assert magic == 0x00000803, f"{path}: bad magic {magic:#010x}"
    assert count >= n, f"{path}: only {count} images"
    assert len(data) == 16 + count * rows * cols, f"{path}: wrong size"
    return struct.pack(">IIII", magic, n, rows, cols) + data[16 : 16 + n * rows * cols]


def subset_labels(data, n, path):
    magic, count = struct.unpack(">II", data[:8])
    assert magic == 0x00000801, f"{path}: bad magic {magic:#010x}"
    assert count >= n, f"{path}: only {count} labels"
    assert len(data) == 8 + count, f"{path}: wrong size"
    return struct.pack(">II", magic, n) + data[8 : 8 + n]


def main():
    for split, n in COUNTS.items():
        name = f"{split}-images-idx3-ubyte.gz"
        src = os.path.join(SRC, name)
        write_gz(os.path.join(OUT, name), subset_images(read_gz(src), n, src))
        name = f"{split}-labels-idx1-ubyte.gz"
        src = os.path.join(SRC, name)
        write_gz(os.path.join(OUT, name), subset_labels(read_gz(src), n, src))
        print(f"{split}: {n} images and labels written to {OUT}")


if __name__ == "__main__":
    main()
