"""Write the first 10 test images of the shipped Fashion-MNIST subset as PNG files
(one per class, the first of each class), for trying `cargo run --example infer`.
Same data and MIT licence as ../fashion-mnist-subset (see its README)."""
import gzip, struct, zlib, os

here = os.path.dirname(os.path.abspath(__file__))
src = os.path.join(here, "..", "fashion-mnist-subset")
names = ["tshirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
imgs = gzip.open(os.path.join(src, "t10k-images-idx3-ubyte.gz")).read()
labs = gzip.open(os.path.join(src, "t10k-labels-idx1-ubyte.gz")).read()
n, rows, cols = struct.unpack(">III", imgs[4:16])
labels = labs[8:]

def png(path, w, h, pixels):
    raw = b"".join(b"\x00" + pixels[y * w:(y + 1) * w] for y in range(h))
    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    open(path, "wb").write(data)

seen = set()
for i in range(n):
    c = labels[i]
    if c in seen:
        continue
    seen.add(c)
    off = 16 + i * rows * cols
    png(os.path.join(here, f"{i:04d}-{names[c]}.png"), cols, rows, imgs[off:off + rows * cols])
    if len(seen) == 10:
        break
