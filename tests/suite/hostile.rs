//! An enumerated catalogue of hostile inputs: one named, deterministic case per kind of bad
//! input, for every reader of user data (IDX images and labels, the IDX folder, the four
//! CUB-200-2011 index files, class-folder scanning, image decoding, checkpoints and their
//! tensors, the torchvision / timm state-dict import). Each case builds its input in a
//! temporary folder, runs it through the public reader and checks the exact outcome: an
//! error whose message names the offending file and contains the words that prove it is the
//! intended error, or acceptance where accepting is right (checked against a summary of what
//! was read). A panic, a case slower than 2 s or a wrong outcome fails and is named; a case
//! that hangs for 30 s aborts the binary naming it.
//!
//! Cases that show a known defect of the library are kept in the catalogue, with the correct
//! behaviour as their expectation, but run in a separate `known defects` list that reports
//! without failing (and says when a defect looks fixed).
//!
//! `cargo test --test suite hostile:: -- --nocapture` prints the catalogue as a markdown table.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use finegrain::checkpoint::{
    self, Checkpoint, CLASSES_KEY, FORMAT_KEY, MODEL_KEY, PREPROCESS_KEY, PROGRESS_KEY, TRAIN_KEY,
};
use finegrain::data::{self, DataOptions, Split};
use rand::SeedableRng;
use safetensors::tensor::Dtype;
use serde_json::{json, Value};

const SHIPPED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/weights/fashion-mnist-tiny.safetensors"
);

/// A case slower than this fails (work out of proportion to a tiny input).
const SLOW: Duration = Duration::from_secs(2);
/// A case running this long is a hang: the binary aborts, naming it.
const HANG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// The catalogue's types

/// What a case read (the path its error must name) and what the reader said: a summary of
/// what was read, or the error.
type Outcome = (PathBuf, finegrain::Result<String>);
type RunFn = Box<dyn Fn(&Ctx, &Path) -> Outcome>;

enum Expect {
    /// An error whose message names the file and contains every keyword.
    Error(Vec<&'static str>),
    /// Accepted; the summary of what was read contains this.
    Accepted(&'static str),
}

struct Case {
    reader: &'static str,
    name: &'static str,
    /// What the user sees, in words (the table's last column, before the message).
    sees: &'static str,
    expect: Expect,
    /// Needs the test adapter (a network to load tensors into).
    gpu: bool,
    /// A known defect: what happens now instead of `expect`.
    defect: Option<&'static str>,
    run: RunFn,
}

struct Cases(Vec<Case>);

impl Cases {
    fn add(
        &mut self,
        reader: &'static str,
        name: &'static str,
        sees: &'static str,
        expect: Expect,
        run: impl Fn(&Ctx, &Path) -> Outcome + 'static,
    ) -> &mut Case {
        self.0.push(Case {
            reader,
            name,
            sees,
            expect,
            gpu: false,
            defect: None,
            run: Box::new(run),
        });
        self.0.last_mut().unwrap()
    }
}

fn err(words: &[&'static str]) -> Expect {
    Expect::Error(words.to_vec())
}

fn ok(summary: &'static str) -> Expect {
    Expect::Accepted(summary)
}

/// Seeds shared by the cases: valid images, the shipped checkpoint, a torchvision state
/// dict of its backbone, and (with an adapter) a training network of its model.
struct Ctx {
    /// 6x6 grayscale PNG.
    png: Vec<u8>,
    /// 16x16 RGB baseline JPEG.
    jpeg: Vec<u8>,
    /// The same 16x16 RGB image as a PNG.
    rgb_png: Vec<u8>,
    shipped: Vec<u8>,
    torchvision: Vec<u8>,
    net: Option<(&'static finegrain::Gpu, finegrain::train::Network)>,
}

// ---------------------------------------------------------------------------------------
// Building inputs

fn put(p: &Path, bytes: impl AsRef<[u8]>) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, bytes).unwrap();
}

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// A valid IDX image file of `count` images of `rows x cols`.
fn idx_images(count: u32, rows: u32, cols: u32) -> Vec<u8> {
    let data: Vec<u8> = (0..count * rows * cols)
        .map(|i| (i as u8).wrapping_mul(31))
        .collect();
    idx(0x803, &[count, rows, cols], &data)
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    idx(0x801, &[labels.len() as u32], labels)
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// A valid IDX folder in `d` (train: 3 images of 4x5, labels 0 1 2; test: 2 images, labels
/// 1 0) after `edit` changed its files (file name -> contents).
fn idx_folder(d: &Path, edit: impl FnOnce(&mut BTreeMap<String, Vec<u8>>)) -> PathBuf {
    let mut files = BTreeMap::new();
    files.insert(TRAIN_IMAGES.to_string(), idx_images(3, 4, 5));
    files.insert(TRAIN_LABELS.to_string(), idx_labels(&[0, 1, 2]));
    files.insert(TEST_IMAGES.to_string(), idx_images(2, 4, 5));
    files.insert(TEST_LABELS.to_string(), idx_labels(&[1, 0]));
    edit(&mut files);
    for (name, bytes) in &files {
        put(&d.join(name), bytes);
    }
    d.to_path_buf()
}

/// The CUB index files, in this order.
const CUB_FILES: [&str; 4] = [
    "images.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "classes.txt",
];
const IM: usize = 0;
const LB: usize = 1;
const SP: usize = 2;
const CL: usize = 3;

/// A valid CUB tree in `d` (4 images of 2 classes; ids 1 and 2 train, 3 and 4 test) after
/// `edit` changed its index files (`None`: not written).
fn cub(ctx: &Ctx, d: &Path, edit: impl FnOnce(&mut [Option<String>; 4])) -> PathBuf {
    let mut f = [
        Some("1 001.a/1.png\n2 002.b/2.png\n3 001.a/3.png\n4 002.b/4.png\n".to_string()),
        Some("1 1\n2 2\n3 1\n4 2\n".to_string()),
        Some("1 1\n2 1\n3 0\n4 0\n".to_string()),
        Some("1 001.a\n2 002.b\n".to_string()),
    ];
    edit(&mut f);
    for (i, c) in [(1, "001.a"), (2, "002.b"), (3, "001.a"), (4, "002.b")] {
        put(&d.join(format!("images/{c}/{i}.png")), &ctx.png);
    }
    for (name, text) in CUB_FILES.iter().zip(&f) {
        if let Some(t) = text {
            put(&d.join(name), t);
        }
    }
    d.to_path_buf()
}

/// A valid class-folder tree in `d`: classes `a` and `b`, 3 small PNGs each
/// ([`finegrain::testing::write_toy_folders`]).
fn toy(d: &Path) -> PathBuf {
    finegrain::testing::write_toy_folders(d, &["a", "b"], 3, 8, 1);
    d.to_path_buf()
}

fn encode(img: image::DynamicImage, fmt: image::ImageFormat) -> Vec<u8> {
    let mut c = std::io::Cursor::new(Vec::new());
    img.write_to(&mut c, fmt).unwrap();
    c.into_inner()
}

/// CRC-32 (IEEE), for PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// The PNG `png` with its IHDR edited by `f` (the 13 bytes of IHDR data), CRC fixed.
fn png_ihdr(png: &[u8], f: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut b = png.to_vec();
    f(&mut b[16..29]);
    let crc = crc32(&b[12..29]);
    b[29..33].copy_from_slice(&crc.to_be_bytes());
    b
}

fn png_with_size(png: &[u8], w: u32, h: u32) -> Vec<u8> {
    png_ihdr(png, |d| {
        d[0..4].copy_from_slice(&w.to_be_bytes());
        d[4..8].copy_from_slice(&h.to_be_bytes());
    })
}

/// The baseline JPEG `jpeg` whose SOF0 announces `w x h`.
fn jpeg_with_size(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut b = jpeg.to_vec();
    let i = b.windows(2).position(|m| m == [0xff, 0xc0]).unwrap();
    b[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
    b[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
    b
}

/// (start of the chunk's data, its length) of the PNG's first IDAT chunk.
fn png_idat(png: &[u8]) -> (usize, usize) {
    let t = png.windows(4).position(|w| w == b"IDAT").unwrap();
    let len = u32::from_be_bytes(png[t - 4..t].try_into().unwrap()) as usize;
    (t + 4, len)
}

type Tensors = finegrain::testing::StTensors;
/// An edit of a safetensors file's tensors.
type Edit = fn(&mut Tensors);
use finegrain::testing::{read_safetensors as read_st, write_safetensors as write_st};

fn tensor<'a>(t: &'a mut Tensors, name: &str) -> &'a mut (String, Dtype, Vec<usize>, Vec<u8>) {
    t.iter_mut()
        .find(|e| e.0 == name)
        .unwrap_or_else(|| panic!("no tensor `{name}` in the seed"))
}

fn set_first(t: &mut Tensors, name: &str, v: f32) {
    tensor(t, name).3[..4].copy_from_slice(&v.to_le_bytes());
}

fn remove(t: &mut Tensors, name: &str) {
    let n = t.len();
    t.retain(|e| e.0 != name);
    assert_eq!(t.len() + 1, n, "no tensor `{name}` in the seed");
}

/// Gives tensor `name` the shape `shape` (same element count, so the file stays valid).
fn reshape(t: &mut Tensors, name: &str, shape: &[usize]) {
    let e = tensor(t, name);
    assert_eq!(
        e.2.iter().product::<usize>(),
        shape.iter().product::<usize>()
    );
    e.2 = shape.to_vec();
}

/// Gives tensor `name` the dtype `dtype` of `bytes` bytes per element (zeros).
fn retype(t: &mut Tensors, name: &str, dtype: Dtype, bytes: usize) {
    let e = tensor(t, name);
    e.1 = dtype;
    e.3 = vec![0; e.2.iter().product::<usize>() * bytes];
}

/// Edits the JSON metadata value under `key`.
fn edit_json(meta: &mut HashMap<String, String>, key: &str, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&meta[key]).unwrap();
    f(&mut v);
    meta.insert(key.into(), v.to_string());
}

/// The shipped checkpoint edited by `f`, written as `d/ck.safetensors`.
fn ck_file(
    ctx: &Ctx,
    d: &Path,
    f: impl FnOnce(&mut HashMap<String, String>, &mut Tensors),
) -> PathBuf {
    let (mut meta, mut t) = read_st(&ctx.shipped);
    f(&mut meta, &mut t);
    let p = d.join("ck.safetensors");
    put(&p, write_st(Some(&meta), &t));
    p
}

/// The shipped checkpoint with the model configuration JSON edited by `f`.
fn ck_model(ctx: &Ctx, d: &Path, f: impl FnOnce(&mut Value)) -> PathBuf {
    ck_file(ctx, d, |m, _| edit_json(m, MODEL_KEY, f))
}

/// The torchvision state dict edited by `f`, written as `d/resnet.safetensors`.
fn tv_file(ctx: &Ctx, d: &Path, f: impl FnOnce(&mut Tensors)) -> PathBuf {
    let (_, mut t) = read_st(&ctx.torchvision);
    f(&mut t);
    let p = d.join("resnet.safetensors");
    put(&p, write_st(None, &t));
    p
}

// ---------------------------------------------------------------------------------------
// Running inputs through the public readers

fn read_images(p: &Path) -> Outcome {
    let r = data::read_idx_images(p).map(|im| {
        format!(
            "{} images of {}x{}, {} bytes",
            im.count,
            im.rows,
            im.cols,
            im.pixels.len()
        )
    });
    (p.to_path_buf(), r)
}

fn read_labels(p: &Path) -> Outcome {
    let r = data::read_idx_labels(p).map(|l| format!("{} labels", l.len()));
    (p.to_path_buf(), r)
}

/// Opens `split` of the dataset at `root` (8 px outputs) as training does, then loads every
/// sample as the loader would (which skips a sample that fails, with a warning naming the
/// file): the first failing sample's error, or a summary of the dataset.
fn dataset(root: &Path, split: Split) -> finegrain::Result<String> {
    dataset_with(root, split, DataOptions::default())
}

fn dataset_with(root: &Path, split: Split, opts: DataOptions) -> finegrain::Result<String> {
    let opts = DataOptions {
        size: Some(8),
        ..opts
    };
    let ds = data::open_dataset(root, split, &opts)?;
    let info = ds.info().clone();
    let mut out = vec![0f32; info.sample_len()];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    for i in 0..ds.len() {
        if ds.label(i) as usize >= info.num_classes {
            return Err(finegrain::Error::invalid(
                "test check",
                format!("sample {i} has label {} >= the class count", ds.label(i)),
            ));
        }
        ds.load(i, false, &mut rng, &mut out)?;
    }
    Ok(format!(
        "{} samples, {} classes [{}]",
        ds.len(),
        info.num_classes,
        info.class_names.join(", ")
    ))
}

fn decode(p: &Path) -> Outcome {
    let r = data::read_image(p, 3).map(|(px, w, h)| format!("{w}x{h}, {} bytes", px.len()));
    (p.to_path_buf(), r)
}

fn open_ck(p: &Path) -> Outcome {
    let r = Checkpoint::open(p).map(|c| {
        format!(
            "{} classes [{}], {}x{} input",
            c.model.num_classes,
            c.class_names().join(", "),
            c.preprocessing().height,
            c.preprocessing().width
        )
    });
    (p.to_path_buf(), r)
}

/// Opens the checkpoint and loads it into the network as inference (`optimizer` false) or
/// resuming (`optimizer` true) does.
fn load_ck(ctx: &Ctx, p: &Path, optimizer: bool) -> Outcome {
    let (g, net) = ctx.net.as_ref().expect("a GPU case without an adapter");
    let r = Checkpoint::open(p)
        .and_then(|ck| ck.load_into(g, net, optimizer))
        .map(|()| "loaded".to_string());
    (p.to_path_buf(), r)
}

fn load_tv(ctx: &Ctx, p: &Path) -> Outcome {
    let (g, net) = ctx.net.as_ref().expect("a GPU case without an adapter");
    let r = checkpoint::load_torchvision(g, net, p).map(|rep| {
        let fc = match rep.fc_classes {
            Some(c) => format!(" (its fc has {c} classes)"),
            None => String::new(),
        };
        format!(
            "head from fc: {}{fc}, ignored [{}]",
            rep.head_from_fc,
            rep.ignored.join(", ")
        )
    });
    (p.to_path_buf(), r)
}

// ---------------------------------------------------------------------------------------
// The catalogue

fn idx_cases(c: &mut Cases) {
    let r = "IDX images";
    c.add(
        r,
        "empty file",
        "error: too short",
        err(&["too short", "magic"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte");
            put(&p, []);
            read_images(&p)
        },
    );
    c.add(
        r,
        "magic only, no dimensions",
        "error: truncated header",
        err(&["truncated header"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte");
            put(&p, 0x803u32.to_be_bytes());
            read_images(&p)
        },
    );
    c.add(
        r,
        "header cut inside the dimensions",
        "error: truncated header",
        err(&["truncated header", "12 bytes"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte");
            put(&p, idx(0x803, &[3, 4], &[]));
            read_images(&p)
        },
    );
    c.add(
        r,
        "wrong magic (a labels file)",
        "error: bad magic, expected the images magic",
        err(&["bad magic", "0x00000801", "0x00000803"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte");
            put(&p, idx_labels(&[1, 2, 3]));
            read_images(&p)
        },
    );
    c.add(
        r,
        "wrong dtype code 0x0D (float32)",
        "error: bad magic",
        err(&["bad magic", "0x00000d03"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte");
            put(&p, idx(0xd03, &[1, 2, 2], &[0; 16]));
            read_images(&p)
        },
    );
    c.add(
        r,
        "wrong dimension count (0x0802)",
        "error: bad magic",
        err(&["bad magic", "0x00000802"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte");
            put(&p, idx(0x802, &[2, 10], &[0; 20]));
            read_images(&p)
        },
    );
    c.add(
        r,
        "zero rows",
        "error: rows and cols must be > 0",
        err(&["0x5", "must be > 0"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte");
            put(&p, idx(0x803, &[2, 0, 5], &[]));
            read_images(&p)
        },
    );
    c.add(
        r,
        "zero cols",
        "error: rows and cols must be > 0",
        err(&["4x0", "must be > 0"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte");
            put(&p, idx(0x803, &[2, 4, 0], &[]));
            read_images(&p)
        },
    );
    c.add(
        r,
        "zero images",
        "accepted: an empty image set",
        ok("0 images of 28x28, 0 bytes"),
        |_, d| {
            let p = d.join("x-idx3-ubyte");
            put(&p, idx(0x803, &[0, 28, 28], &[]));
            read_images(&p)
        },
    );
    c.add(
        r,
        "dimensions whose product overflows",
        "error: dimensions overflow",
        err(&["overflow", "4294967295"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte");
            put(&p, idx(0x803, &[u32::MAX, u32::MAX, u32::MAX], &[0; 8]));
            read_images(&p)
        },
    );
    c.add(
        r,
        "header claims 2^31 images, file holds 3",
        "error: truncated, nothing large allocated",
        err(&["truncated", "2147483648", "only 60 bytes"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte");
            let mut b = idx_images(3, 4, 5);
            b[4..8].copy_from_slice(&(1u32 << 31).to_be_bytes());
            put(&p, b);
            read_images(&p)
        },
    );
    c.add(
        r,
        "data shorter than the header says",
        "error: truncated, with the byte counts",
        err(&["truncated", "60 bytes of data", "only 59 bytes"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte");
            let mut b = idx_images(3, 4, 5);
            b.pop();
            put(&p, b);
            read_images(&p)
        },
    );
    c.add(
        r,
        "data longer than the header says",
        "error: more data than announced",
        err(&["more data than", "two files joined"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte");
            let mut b = idx_images(3, 4, 5);
            b.push(7);
            put(&p, b);
            read_images(&p)
        },
    );
    c.add(
        r,
        "raw file named .gz",
        "accepted: the format is found from the contents",
        ok("3 images of 4x5"),
        |_, d| {
            let p = d.join("x-idx3-ubyte.gz");
            put(&p, idx_images(3, 4, 5));
            read_images(&p)
        },
    );
    c.add(
        r,
        "gzip: stream detected by content, name without .gz",
        "accepted",
        ok("3 images of 4x5"),
        |_, d| {
            let p = d.join("x-idx3-ubyte");
            put(&p, gz(&idx_images(3, 4, 5)));
            read_images(&p)
        },
    );
    c.add(
        r,
        "gzip: truncated stream",
        "error: corrupt or truncated gzip stream",
        err(&["gzip"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte.gz");
            let z = gz(&idx_images(30, 28, 28));
            put(&p, &z[..z.len() / 2]);
            read_images(&p)
        },
    );
    c.add(
        r,
        "gzip: only the 2-byte gzip magic",
        "error: corrupt or truncated gzip stream",
        err(&["gzip"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte.gz");
            put(&p, [0x1f, 0x8b]);
            read_images(&p)
        },
    );
    c.add(
        r,
        "gzip: wrong CRC in the trailer",
        "error: corrupt gzip stream (checksum)",
        err(&["gzip", "checksum"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte.gz");
            let mut z = gz(&idx_images(3, 4, 5));
            let n = z.len();
            z[n - 8] ^= 0xff;
            put(&p, z);
            read_images(&p)
        },
    );
    c.add(
        r,
        "gzip: garbage after the stream",
        "error: corrupt gzip stream",
        err(&["gzip"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte.gz");
            let mut z = gz(&idx_images(3, 4, 5));
            z.extend_from_slice(b"garbage!");
            put(&p, z);
            read_images(&p)
        },
    );
    c.add(
        r,
        "gzip: wrong magic inside the stream",
        "error: bad magic",
        err(&["bad magic", "0x00000801"]),
        |_, d| {
            let p = d.join("x-idx3-ubyte.gz");
            put(&p, gz(&idx_labels(&[1, 2])));
            read_images(&p)
        },
    );
    c.add(
        r,
        "gzip: two members concatenated",
        "accepted: read as one stream",
        ok("3 images of 4x5"),
        |_, d| {
            let p = d.join("x-idx3-ubyte.gz");
            let b = idx_images(3, 4, 5);
            let mut z = gz(&b[..30]);
            z.extend(gz(&b[30..]));
            put(&p, z);
            read_images(&p)
        },
    );

    let r = "IDX labels";
    c.add(
        r,
        "an images file read as labels",
        "error: bad magic",
        err(&["bad magic", "0x00000803", "0x00000801"]),
        |_, d| {
            let p = d.join("x-idx1-ubyte");
            put(&p, idx_images(3, 4, 5));
            read_labels(&p)
        },
    );
    c.add(
        r,
        "labels truncated",
        "error: truncated",
        err(&["truncated", "only 4 bytes"]),
        |_, d| {
            let p = d.join("x-idx1-ubyte");
            put(&p, idx(0x801, &[10], &[0; 4]));
            read_labels(&p)
        },
    );
    c.add(
        r,
        "count u32::MAX, 2 labels",
        "error: truncated, nothing large allocated",
        err(&["truncated", "4294967295"]),
        |_, d| {
            let p = d.join("x-idx1-ubyte");
            put(&p, idx(0x801, &[u32::MAX], &[1, 2]));
            read_labels(&p)
        },
    );
    c.add(
        r,
        "gzip of an empty file",
        "error: too short",
        err(&["too short"]),
        |_, d| {
            let p = d.join("x-idx1-ubyte.gz");
            put(&p, gz(&[]));
            read_labels(&p)
        },
    );

    let r = "IDX folder";
    c.add(
        r,
        "labels count != images count",
        "error on the labels file naming both counts",
        err(&["count mismatch", "2 labels", "3 images"]),
        |_, d| {
            let root = idx_folder(d, |f| {
                f.insert(TRAIN_LABELS.into(), idx_labels(&[0, 1]));
            });
            (root.join(TRAIN_LABELS), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "test split: labels count != images count",
        "error on the test labels file",
        err(&["count mismatch", "3 labels", "2 images"]),
        |_, d| {
            let root = idx_folder(d, |f| {
                f.insert(TEST_LABELS.into(), idx_labels(&[0, 1, 1]));
            });
            (root.join(TEST_LABELS), dataset(&root, Split::Test))
        },
    );
    c.add(
        r,
        "label >= classes (classes.txt has 3 names)",
        "error on the labels file naming classes.txt",
        err(&["label 5 out of range", "3 classes", "classes.txt"]),
        |_, d| {
            let root = idx_folder(d, |f| {
                f.insert(TRAIN_LABELS.into(), idx_labels(&[0, 5, 2]));
                f.insert("classes.txt".into(), b"x\ny\nz\n".to_vec());
            });
            (root.join(TRAIN_LABELS), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "Fashion-MNIST folder with label 10",
        "error: label out of range of the 10 classes",
        err(&["label 10 out of range", "10 classes"]),
        |_, d| {
            let root = idx_folder(&d.join("fashion"), |f| {
                f.remove(TRAIN_LABELS);
                f.insert(format!("{TRAIN_LABELS}.gz"), gz(&idx_labels(&[0, 10, 2])));
            });
            (
                root.join(format!("{TRAIN_LABELS}.gz")),
                dataset(&root, Split::Train),
            )
        },
    );
    c.add(
        r,
        "train labels file missing",
        "error on the folder naming the file it needs",
        err(&["no Train labels file", "train-labels-idx1-ubyte"]),
        |_, d| {
            let root = idx_folder(d, |f| {
                f.remove(TRAIN_LABELS);
            });
            (root.clone(), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "test files missing, test split opened",
        "error on the folder naming the file it needs",
        err(&["no Test images file", "t10k-images-idx3-ubyte"]),
        |_, d| {
            let root = idx_folder(d, |f| {
                f.remove(TEST_IMAGES);
                f.remove(TEST_LABELS);
            });
            (root.clone(), dataset(&root, Split::Test))
        },
    );
    c.add(
        r,
        "truncated train images",
        "error on the images file",
        err(&["truncated", "only 59 bytes"]),
        |_, d| {
            let root = idx_folder(d, |f| {
                f.get_mut(TRAIN_IMAGES).unwrap().pop();
            });
            (root.join(TRAIN_IMAGES), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "classes.txt empty",
        "error on the labels file: no class for its labels",
        err(&["out of range", "0 classes", "classes.txt"]),
        |_, d| {
            let root = idx_folder(d, |f| {
                f.insert("classes.txt".into(), Vec::new());
            });
            (root.join(TRAIN_LABELS), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "classes.txt with more names than labels used",
        "accepted: classes without samples are allowed",
        ok("3 samples, 4 classes [a, b, c, d]"),
        |_, d| {
            let root = idx_folder(d, |f| {
                f.insert("classes.txt".into(), b"a\nb\nc\nd\n".to_vec());
            });
            (root.clone(), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "classes.txt with CRLF line endings and blank lines",
        "accepted: names trimmed",
        ok("3 samples, 3 classes [a, b, c]"),
        |_, d| {
            let root = idx_folder(d, |f| {
                f.insert("classes.txt".into(), b"a\r\n\r\nb\r\nc \r\n".to_vec());
            });
            (root.clone(), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "classes.txt not UTF-8",
        "error on classes.txt",
        err(&["UTF-8"]),
        |_, d| {
            let root = idx_folder(d, |f| {
                f.insert("classes.txt".into(), b"a\n\xff\xfe\nc\n".to_vec());
            });
            (root.join("classes.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "classes.txt with a duplicate name",
        "error naming classes.txt, the line and the name, at open",
        err(&["line 3", "bird", "twice"]),
        |_, d| {
            let root = idx_folder(d, |f| {
                f.insert("classes.txt".into(), b"bird\ncat\nbird\n".to_vec());
            });
            (root.join("classes.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "images gzipped, labels raw",
        "accepted: each file is read by its contents",
        ok("3 samples, 3 classes [0, 1, 2]"),
        |_, d| {
            let root = idx_folder(d, |f| {
                let im = f.remove(TRAIN_IMAGES).unwrap();
                f.insert(format!("{TRAIN_IMAGES}.gz"), gz(&im));
            });
            (root.clone(), dataset(&root, Split::Train))
        },
    );
}

fn cub_cases(c: &mut Cases) {
    let r = "CUB files";
    c.add(
        r,
        "images.txt missing (other index files present)",
        "error naming the missing images.txt (recognised as CUB by its other index files)",
        err(&["images.txt", "missing"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[IM] = None);
            (root.join("images.txt"), dataset(&root, Split::Train))
        },
    );
    for (i, file) in CUB_FILES.iter().enumerate().skip(1) {
        let name = match i {
            LB => "image_class_labels.txt missing",
            SP => "train_test_split.txt missing",
            _ => "classes.txt missing",
        };
        c.add(
            r,
            name,
            "error: missing index file, with the layout",
            err(&["missing index file", "CUB-200-2011 layout"]),
            move |ctx, d| {
                let root = cub(ctx, d, |f| f[i] = None);
                (root.join(file), dataset(&root, Split::Train))
            },
        );
    }
    for (i, file) in CUB_FILES.iter().enumerate() {
        let name = match i {
            IM => "images.txt empty",
            LB => "image_class_labels.txt empty",
            SP => "train_test_split.txt only blank lines",
            _ => "classes.txt only whitespace",
        };
        c.add(
            r,
            name,
            "error: empty index file",
            err(&["empty index file"]),
            move |ctx, d| {
                let root = cub(ctx, d, |f| {
                    f[i] = Some(if i % 2 == 0 {
                        String::new()
                    } else {
                        "\n \n\t\n".into()
                    })
                });
                (root.join(file), dataset(&root, Split::Train))
            },
        );
    }
    c.add(
        r,
        "index file is a folder",
        "error: missing index file",
        err(&["missing index file"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[CL] = None);
            std::fs::create_dir(root.join("classes.txt")).unwrap();
            (root.join("classes.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "images.txt: non-numeric id",
        "error naming the line",
        err(&["line 2", "malformed", "two"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| {
                f[IM] =
                    Some("1 001.a/1.png\ntwo 002.b/2.png\n3 001.a/3.png\n4 002.b/4.png\n".into())
            });
            (root.join("images.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "images.txt: negative id",
        "error naming the line",
        err(&["line 1", "malformed", "-1"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| {
                f[IM] = Some("-1 001.a/1.png\n2 002.b/2.png\n".into())
            });
            (root.join("images.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "images.txt: id beyond u64",
        "error naming the line",
        err(&["line 1", "malformed"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| {
                f[IM] = Some("18446744073709551616 001.a/1.png\n2 002.b/2.png\n".into())
            });
            (root.join("images.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "images.txt: id without a path",
        "error naming the line",
        err(&["line 2", "malformed", "<id> <value>"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[IM] = Some("1 001.a/1.png\n2\n".into()));
            (root.join("images.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "images.txt: duplicate id",
        "error naming the line and the id",
        err(&["line 3", "image id 2 appears twice"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| {
                f[IM] = Some("1 001.a/1.png\n2 002.b/2.png\n2 001.a/3.png\n4 002.b/4.png\n".into())
            });
            (root.join("images.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "images.txt: absolute path",
        "error naming the line: not inside images/",
        err(&["line 2", "/etc/hostname", "inside images/"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| {
                f[IM] =
                    Some("1 001.a/1.png\n2 /etc/hostname\n3 001.a/3.png\n4 002.b/4.png\n".into())
            });
            (root.join("images.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "images.txt: `..` path",
        "error naming the line: not inside images/",
        err(&["line 2", "../../outside.png", "inside images/"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| {
                f[IM] = Some(
                    "1 001.a/1.png\n2 ../../outside.png\n3 001.a/3.png\n4 002.b/4.png\n".into(),
                )
            });
            (root.join("images.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "images.txt: path naming a folder (`001.a/..`)",
        "error naming the line",
        err(&["line 1", "001.a/..", "inside images/"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| {
                f[IM] = Some("1 001.a/..\n2 002.b/2.png\n3 001.a/3.png\n4 002.b/4.png\n".into())
            });
            (root.join("images.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "images.txt: UTF-8 byte-order mark",
        "error naming line 1 (the mark is invisible in the message)",
        err(&["line 1", "malformed"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| {
                f[IM] = Some(format!("\u{feff}{}", f[IM].as_ref().unwrap()))
            });
            (root.join("images.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "images.txt: first listed image missing",
        "error naming the image and images.txt",
        err(&["not found", "images.txt"]),
        |ctx, d| {
            let root = cub(ctx, d, |_| {});
            std::fs::remove_file(root.join("images/001.a/1.png")).unwrap();
            (
                root.join("images/001.a/1.png"),
                dataset(&root, Split::Train),
            )
        },
    );
    c.add(
        r,
        "images.txt: a later listed image missing",
        "opens; that sample is skipped with a warning naming the file (an error with --strict)",
        err(&["No such file"]),
        |ctx, d| {
            let root = cub(ctx, d, |_| {});
            std::fs::remove_file(root.join("images/002.b/2.png")).unwrap();
            (
                root.join("images/002.b/2.png"),
                dataset(&root, Split::Train),
            )
        },
    );
    c.add(
        r,
        "images.txt: a listed image corrupt",
        "opens; that sample is skipped with a warning naming the file",
        err(&["not a JPEG or PNG"]),
        |ctx, d| {
            let root = cub(ctx, d, |_| {});
            put(&root.join("images/002.b/2.png"), "not an image");
            (
                root.join("images/002.b/2.png"),
                dataset(&root, Split::Train),
            )
        },
    );
    c.add(
        r,
        "image_class_labels.txt: duplicate id",
        "error naming the line",
        err(&["line 2", "image id 1 appears twice"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[LB] = Some("1 1\n1 2\n2 2\n3 1\n4 2\n".into()));
            (
                root.join("image_class_labels.txt"),
                dataset(&root, Split::Train),
            )
        },
    );
    c.add(
        r,
        "image_class_labels.txt: missing line",
        "error naming the image id without a label",
        err(&["no label for image id 4", "images.txt"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[LB] = Some("1 1\n2 2\n3 1\n".into()));
            (
                root.join("image_class_labels.txt"),
                dataset(&root, Split::Train),
            )
        },
    );
    c.add(
        r,
        "image_class_labels.txt: label 0",
        "error naming the line and the range",
        err(&["line 1", "class id `0`", "1..=2"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[LB] = Some("1 0\n2 2\n3 1\n4 2\n".into()));
            (
                root.join("image_class_labels.txt"),
                dataset(&root, Split::Train),
            )
        },
    );
    c.add(
        r,
        "image_class_labels.txt: label out of range",
        "error naming the line and the range",
        err(&["line 2", "class id `3`", "1..=2", "classes.txt"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[LB] = Some("1 1\n2 3\n3 1\n4 2\n".into()));
            (
                root.join("image_class_labels.txt"),
                dataset(&root, Split::Train),
            )
        },
    );
    c.add(
        r,
        "image_class_labels.txt: non-numeric label",
        "error naming the line",
        err(&["line 2", "class id `b`"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[LB] = Some("1 1\n2 b\n3 1\n4 2\n".into()));
            (
                root.join("image_class_labels.txt"),
                dataset(&root, Split::Train),
            )
        },
    );
    c.add(
        r,
        "image_class_labels.txt: extra column",
        "error naming the line",
        err(&["line 1", "class id `1 extra`"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| {
                f[LB] = Some("1 1 extra\n2 2\n3 1\n4 2\n".into())
            });
            (
                root.join("image_class_labels.txt"),
                dataset(&root, Split::Train),
            )
        },
    );
    c.add(
        r,
        "image_class_labels.txt: label for an unknown image id",
        "accepted: the extra line is unused",
        ok("2 samples, 2 classes [001.a, 002.b]"),
        |ctx, d| {
            let root = cub(ctx, d, |f| {
                f[LB] = Some("1 1\n2 2\n3 1\n4 2\n99 1\n".into())
            });
            (root.clone(), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "train_test_split.txt: flag 2",
        "error naming the line and the allowed values",
        err(&["line 1", "`2`", "expected 1 (train) or 0 (test)"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[SP] = Some("1 2\n2 1\n3 0\n4 0\n".into()));
            (
                root.join("train_test_split.txt"),
                dataset(&root, Split::Train),
            )
        },
    );
    c.add(
        r,
        "train_test_split.txt: flag `yes`",
        "error naming the line",
        err(&["line 2", "`yes`"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[SP] = Some("1 1\n2 yes\n3 0\n4 0\n".into()));
            (
                root.join("train_test_split.txt"),
                dataset(&root, Split::Train),
            )
        },
    );
    c.add(
        r,
        "train_test_split.txt: missing line",
        "error naming the image id without a split",
        err(&["no split for image id 3"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[SP] = Some("1 1\n2 1\n4 0\n".into()));
            (
                root.join("train_test_split.txt"),
                dataset(&root, Split::Train),
            )
        },
    );
    c.add(
        r,
        "train_test_split.txt: duplicate id",
        "error naming the line",
        err(&["line 3", "image id 2 appears twice"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[SP] = Some("1 1\n2 1\n2 0\n3 0\n4 0\n".into()));
            (
                root.join("train_test_split.txt"),
                dataset(&root, Split::Train),
            )
        },
    );
    c.add(
        r,
        "train_test_split.txt: every image in test, train opened",
        "error: the split has no images",
        err(&["Train split has no images"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[SP] = Some("1 0\n2 0\n3 0\n4 0\n".into()));
            (
                root.join("train_test_split.txt"),
                dataset(&root, Split::Train),
            )
        },
    );
    c.add(
        r,
        "classes.txt: gap in the ids",
        "error naming the line and the id expected",
        err(&["line 2", "class id 3, expected 2"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[CL] = Some("1 001.a\n3 002.b\n".into()));
            (root.join("classes.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "classes.txt: duplicate class id",
        "error naming the line",
        err(&["line 2", "class id 1, expected 2"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[CL] = Some("1 001.a\n1 002.b\n".into()));
            (root.join("classes.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "classes.txt: class id 0",
        "error naming the line",
        err(&["line 1", "class id 0, expected 1"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[CL] = Some("0 001.a\n1 002.b\n".into()));
            (root.join("classes.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "classes.txt: non-numeric id",
        "error naming the line",
        err(&["line 1", "malformed"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[CL] = Some("one 001.a\n2 002.b\n".into()));
            (root.join("classes.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "classes.txt: not UTF-8",
        "error on classes.txt",
        err(&["UTF-8"]),
        |ctx, d| {
            let root = cub(ctx, d, |_| {});
            put(&root.join("classes.txt"), b"1 001.a\n2 \xff\xfe\n");
            (root.join("classes.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "classes.txt: duplicate class name",
        "error naming classes.txt, the line and the name, at open",
        err(&["line 2", "001.a", "twice"]),
        |ctx, d| {
            let root = cub(ctx, d, |f| f[CL] = Some("1 001.a\n2 001.a\n".into()));
            (root.join("classes.txt"), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "classes.txt: names with spaces (extra columns)",
        "accepted: the rest of the line is the name",
        ok("2 classes [Black footed Albatross, 002.b]"),
        |ctx, d| {
            let root = cub(ctx, d, |f| {
                f[CL] = Some("1 Black footed Albatross\n2 002.b\n".into())
            });
            (root.clone(), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "CRLF line endings in all four files",
        "accepted: no stray carriage returns in names or paths",
        ok("2 samples, 2 classes [001.a, 002.b]"),
        |ctx, d| {
            let root = cub(ctx, d, |f| {
                for t in f.iter_mut().flatten() {
                    *t = t.replace('\n', "\r\n");
                }
            });
            (root.clone(), dataset(&root, Split::Train))
        },
    );
    c.add(
        r,
        "tabs as separators and trailing whitespace",
        "accepted",
        ok("2 samples, 2 classes [001.a, 002.b]"),
        |ctx, d| {
            let root = cub(ctx, d, |f| {
                for t in f.iter_mut().flatten() {
                    *t = t.replace(' ', "\t").replace('\n', " \t\n");
                }
            });
            (root.clone(), dataset(&root, Split::Test))
        },
    );
    c.add(
        r,
        "archive layout (root/CUB_200_2011/)",
        "accepted: the archive's top folder is found",
        ok("2 samples, 2 classes [001.a, 002.b]"),
        |ctx, d| {
            cub(ctx, &d.join("CUB_200_2011"), |_| {});
            (d.to_path_buf(), dataset(d, Split::Test))
        },
    );
}

fn folder_cases(c: &mut Cases) {
    let r = "class folders";
    c.add(
        r,
        "root does not exist",
        "error naming the path",
        err(&["not found"]),
        |_, d| {
            let p = d.join("nowhere");
            (p.clone(), dataset(&p, Split::Train))
        },
    );
    c.add(
        r,
        "root is a file",
        "error: not a folder",
        err(&["not a folder"]),
        |ctx, d| {
            let p = d.join("photo.png");
            put(&p, &ctx.png);
            (p.clone(), dataset(&p, Split::Train))
        },
    );
    c.add(
        r,
        "empty root",
        "error: no class folders, with the layout",
        err(&["no class folders found", "root/<class>/"]),
        |_, d| (d.to_path_buf(), dataset(d, Split::Train)),
    );
    c.add(
        r,
        "loose images, no class folders",
        "error: no class folders",
        err(&["no class folders found"]),
        |ctx, d| {
            put(&d.join("1.png"), &ctx.png);
            put(&d.join("2.png"), &ctx.png);
            (d.to_path_buf(), dataset(d, Split::Train))
        },
    );
    c.add(
        r,
        "only hidden folders",
        "error: no class folders (hidden ones are skipped)",
        err(&["no class folders found"]),
        |ctx, d| {
            put(&d.join(".git/1.png"), &ctx.png);
            (d.to_path_buf(), dataset(d, Split::Train))
        },
    );
    c.add(
        r,
        "an empty class folder",
        "error naming the class folder",
        err(&["class folder has no image files"]),
        |_, d| {
            toy(d);
            std::fs::create_dir(d.join("c")).unwrap();
            (d.join("c"), dataset(d, Split::Train))
        },
    );
    c.add(
        r,
        "class folder of non-image files (.txt, .gif, no extension)",
        "error naming the class folder",
        err(&["class folder has no image files", ".jpg, .jpeg, .png"]),
        |ctx, d| {
            toy(d);
            put(&d.join("c/notes.txt"), "hello");
            put(&d.join("c/anim.gif"), "GIF89a");
            put(&d.join("c/noext"), &ctx.png);
            (d.join("c"), dataset(d, Split::Train))
        },
    );
    c.add(
        r,
        "file named .png but not an image",
        "opens; the sample is skipped with a warning naming the file (error with --strict)",
        err(&["not a JPEG or PNG"]),
        |_, d| {
            toy(d);
            put(&d.join("a/bad.png"), "this is text");
            (
                d.join("a/bad.png"),
                dataset_with(d, Split::Train, no_test()),
            )
        },
    );
    c.add(
        r,
        "empty .jpg file",
        "opens; the sample is skipped with a warning naming the file",
        err(&["empty file (0 bytes)"]),
        |_, d| {
            toy(d);
            put(&d.join("b/empty.jpg"), []);
            (
                d.join("b/empty.jpg"),
                dataset_with(d, Split::Train, no_test()),
            )
        },
    );
    c.add(
        r,
        "truncated PNG in a class folder",
        "opens; the sample is skipped with a warning naming the file",
        err(&["cannot decode"]),
        |ctx, d| {
            toy(d);
            put(&d.join("a/cut.png"), &ctx.png[..ctx.png.len() - 20]);
            (
                d.join("a/cut.png"),
                dataset_with(d, Split::Train, no_test()),
            )
        },
    );
    #[cfg(unix)]
    c.add(
        r,
        "symbolic link loop inside a class folder",
        "opens; the link is skipped with a warning naming it (an error with --strict)",
        ok("6 samples, 2 classes [a, b]"),
        |_, d| {
            toy(d);
            std::os::unix::fs::symlink("..", d.join("a/loop")).unwrap();
            (d.join("a/loop"), dataset_with(d, Split::Train, no_test()))
        },
    );
    #[cfg(unix)]
    c.add(
        r,
        "symbolic link loop inside a class folder, strict",
        "error naming the link: a loop, refused in strict mode",
        err(&["symbolic link loop", "strict"]),
        |_, d| {
            toy(d);
            std::os::unix::fs::symlink("..", d.join("a/loop")).unwrap();
            let strict = DataOptions {
                strict: true,
                ..no_test()
            };
            (d.join("a/loop"), dataset_with(d, Split::Train, strict))
        },
    );
    #[cfg(unix)]
    c.add(
        r,
        "dangling symbolic link named .png",
        "opens; the link is skipped with a warning naming it (an error with --strict)",
        ok("6 samples, 2 classes [a, b]"),
        |_, d| {
            toy(d);
            std::os::unix::fs::symlink(d.join("gone.png"), d.join("a/link.png")).unwrap();
            (
                d.join("a/link.png"),
                dataset_with(d, Split::Train, no_test()),
            )
        },
    );
    c.add(
        r,
        "class folder named like an image (`cat.png/`)",
        "accepted: a folder is a class whatever its name",
        ok("classes [a, b, cat.png]"),
        |ctx, d| {
            toy(d);
            put(&d.join("cat.png/1.png"), &ctx.png);
            (d.to_path_buf(), dataset_with(d, Split::Train, no_test()))
        },
    );
    c.add(
        r,
        "upper-case and mixed-case extensions",
        "accepted",
        ok("8 samples, 2 classes"),
        |ctx, d| {
            toy(d);
            put(&d.join("a/X.PNG"), &ctx.png);
            put(&d.join("b/y.JpG"), &ctx.jpeg);
            (d.to_path_buf(), dataset_with(d, Split::Train, no_test()))
        },
    );
    c.add(
        r,
        "pre-split: test class not in train",
        "error naming the test class folder",
        err(&["class folder `z` is not in", "subset of the train classes"]),
        |_, d| {
            toy(&d.join("train"));
            toy(&d.join("test"));
            finegrain::testing::write_toy_folders(&d.join("test"), &["z"], 1, 8, 2);
            (d.join("test/z"), dataset(d, Split::Test))
        },
    );
    c.add(
        r,
        "pre-split: empty train class",
        "error naming the class folder",
        err(&["class folder has no image files"]),
        |_, d| {
            toy(&d.join("train"));
            toy(&d.join("test"));
            std::fs::create_dir(d.join("train/c")).unwrap();
            (d.join("train/c"), dataset(d, Split::Train))
        },
    );
    c.add(
        r,
        "pre-split: a train class absent from test",
        "accepted: the test set may lack a class",
        ok("3 samples, 2 classes [a, b]"),
        |_, d| {
            toy(&d.join("train"));
            finegrain::testing::write_toy_folders(&d.join("test"), &["a"], 3, 8, 2);
            (d.to_path_buf(), dataset(d, Split::Test))
        },
    );
    c.add(
        r,
        "one image per class, test split held out",
        "opens empty: no class can hold an image out (a run trains without evaluation)",
        ok("0 samples, 2 classes [a, b]"),
        |_, d| {
            finegrain::testing::write_toy_folders(d, &["a", "b"], 1, 8, 1);
            (d.to_path_buf(), dataset(d, Split::Test))
        },
    );
    c.add(
        r,
        "inference: folder without images",
        "error naming the folder",
        err(&["no PNG or JPEG files"]),
        |_, d| {
            put(&d.join("notes.txt"), "x");
            let r = data::image_files(&[d.to_path_buf()]).map(|f| format!("{} files", f.len()));
            (d.to_path_buf(), r)
        },
    );
    c.add(
        r,
        "inference: path does not exist",
        "error naming the path",
        err(&["no such image file or folder"]),
        |_, d| {
            let p = d.join("missing.jpg");
            let r =
                data::image_files(std::slice::from_ref(&p)).map(|f| format!("{} files", f.len()));
            (p, r)
        },
    );
}

/// Nothing held out: every image of a class-folder tree is in the training split.
fn no_test() -> DataOptions {
    DataOptions {
        test_fraction: 0.0,
        ..DataOptions::default()
    }
}

fn image_cases(c: &mut Cases) {
    let r = "image decoding";
    c.add(
        r,
        "empty file",
        "error: empty file",
        err(&["empty file (0 bytes)"]),
        |_, d| {
            let p = d.join("x.png");
            put(&p, []);
            decode(&p)
        },
    );
    c.add(
        r,
        "text file named .png",
        "error: not a JPEG or PNG",
        err(&["not a JPEG or PNG"]),
        |_, d| {
            let p = d.join("x.png");
            put(&p, "hello, world");
            decode(&p)
        },
    );
    c.add(
        r,
        "GIF named .png",
        "error: unsupported format",
        err(&["Gif"]),
        |_, d| {
            let p = d.join("x.png");
            put(&p, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;");
            decode(&p)
        },
    );
    c.add(
        r,
        "PNG signature only",
        "error: cannot decode",
        err(&["cannot"]),
        |ctx, d| {
            let p = d.join("x.png");
            put(&p, &ctx.png[..8]);
            decode(&p)
        },
    );
    c.add(
        r,
        "truncated PNG (half the file)",
        "error: cannot decode",
        err(&["cannot decode"]),
        |ctx, d| {
            let p = d.join("x.png");
            put(&p, &ctx.png[..ctx.png.len() / 2]);
            decode(&p)
        },
    );
    c.add(
        r,
        "truncated JPEG (half the file)",
        "error: cannot decode",
        err(&["cannot decode"]),
        |ctx, d| {
            let p = d.join("x.jpg");
            put(&p, &ctx.jpeg[..ctx.jpeg.len() / 2]);
            decode(&p)
        },
    );
    c.add(
        r,
        "JPEG with no frame (SOI, EOI)",
        "error: cannot decode",
        err(&["cannot"]),
        |_, d| {
            let p = d.join("x.jpg");
            put(&p, [0xff, 0xd8, 0xff, 0xd9]);
            decode(&p)
        },
    );
    c.add(
        r,
        "PNG header claims 65535x65535",
        "error from the header: over the side limit",
        err(&["65535x65535", "16384-pixel limit"]),
        |ctx, d| {
            let p = d.join("x.png");
            put(&p, png_with_size(&ctx.png, 65535, 65535));
            decode(&p)
        },
    );
    c.add(
        r,
        "JPEG header claims 65535x5",
        "error from the header: over the side limit",
        err(&["65535x5", "16384-pixel limit"]),
        |ctx, d| {
            let p = d.join("x.jpg");
            put(&p, jpeg_with_size(&ctx.jpeg, 65535, 5));
            decode(&p)
        },
    );
    c.add(
        r,
        "RGB PNG header claims 16384x16000 (750 MiB)",
        "error from the header: over the memory limit",
        err(&["16384x16000", "256 MiB limit"]),
        |ctx, d| {
            let p = d.join("x.png");
            put(&p, png_with_size(&ctx.rgb_png, 16384, 16000));
            decode(&p)
        },
    );
    c.add(
        r,
        "gray PNG header claims 16384x16000 (250 MiB), 100 bytes of data",
        "error: cannot decode (not enough pixel data)",
        err(&["cannot decode", "not have enough data"]),
        |ctx, d| {
            let p = d.join("x.png");
            put(&p, png_with_size(&ctx.png, 16384, 16000));
            decode(&p)
        },
    );
    c.add(
        r,
        "PNG width 0",
        "error: cannot decode",
        err(&["cannot decode"]),
        |ctx, d| {
            let p = d.join("x.png");
            put(&p, png_with_size(&ctx.png, 0, 6));
            decode(&p)
        },
    );
    c.add(
        r,
        "JPEG height 0",
        "error: cannot decode",
        err(&["cannot decode"]),
        |ctx, d| {
            let p = d.join("x.jpg");
            put(&p, jpeg_with_size(&ctx.jpeg, 16, 0));
            decode(&p)
        },
    );
    c.add(
        r,
        "PNG bit depth 7 (CRC fixed)",
        "error: cannot decode",
        err(&["cannot decode"]),
        |ctx, d| {
            let p = d.join("x.png");
            put(&p, png_ihdr(&ctx.png, |h| h[8] = 7));
            decode(&p)
        },
    );
    c.add(
        r,
        "PNG with a bad IHDR CRC",
        "error: CRC mismatch",
        err(&["CRC"]),
        |ctx, d| {
            let p = d.join("x.png");
            let mut b = ctx.png.clone();
            b[29] ^= 0xff;
            put(&p, b);
            decode(&p)
        },
    );
    c.add(
        r,
        "PNG with corrupt compressed data (CRC fixed)",
        "error: cannot decode",
        err(&["cannot decode"]),
        |ctx, d| {
            let p = d.join("x.png");
            let mut b = ctx.png.clone();
            let (at, len) = png_idat(&b);
            for x in &mut b[at + 2..at + len] {
                *x = 0xff;
            }
            let crc = crc32(&b[at - 4..at + len]);
            b[at + len..at + len + 4].copy_from_slice(&crc.to_be_bytes());
            put(&p, b);
            decode(&p)
        },
    );
    c.add(
        r,
        "PNG with trailing garbage after IEND",
        "accepted: the image is complete",
        ok("6x6, 108 bytes"),
        |ctx, d| {
            let p = d.join("x.png");
            let mut b = ctx.png.clone();
            b.extend_from_slice(b"trailing garbage");
            put(&p, b);
            decode(&p)
        },
    );
    c.add(
        r,
        "16-bit grayscale PNG",
        "accepted: scaled to 8 bits",
        ok("5x3, 45 bytes"),
        |_, d| {
            let p = d.join("x.png");
            let g16 = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(5, 3, |x, y| {
                image::Luma([(x * 9000 + y * 77) as u16])
            });
            put(
                &p,
                encode(
                    image::DynamicImage::ImageLuma16(g16),
                    image::ImageFormat::Png,
                ),
            );
            decode(&p)
        },
    );
}

fn checkpoint_cases(c: &mut Cases) {
    let r = "checkpoint";
    c.add(
        r,
        "not safetensors (text)",
        "error: not a safetensors file",
        err(&["not a safetensors file"]),
        |_, d| {
            let p = d.join("ck.safetensors");
            put(&p, "this is not a checkpoint at all");
            open_ck(&p)
        },
    );
    c.add(
        r,
        "empty file",
        "error: not a safetensors file",
        err(&["not a safetensors file"]),
        |_, d| {
            let p = d.join("ck.safetensors");
            put(&p, []);
            open_ck(&p)
        },
    );
    c.add(
        r,
        "cut inside the header",
        "error: not a safetensors file",
        err(&["not a safetensors file"]),
        |ctx, d| {
            let p = d.join("ck.safetensors");
            put(&p, &ctx.shipped[..100]);
            open_ck(&p)
        },
    );
    c.add(
        r,
        "header length u64::MAX",
        "error: not a safetensors file (header too large)",
        err(&["not a safetensors file"]),
        |ctx, d| {
            let p = d.join("ck.safetensors");
            let mut b = ctx.shipped.clone();
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            put(&p, b);
            open_ck(&p)
        },
    );
    c.add(
        r,
        "header JSON is an array",
        "error: not a safetensors file",
        err(&["not a safetensors file"]),
        |_, d| {
            let p = d.join("ck.safetensors");
            let h = b"[1, 2, 3]";
            let mut b = (h.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(h);
            put(&p, b);
            open_ck(&p)
        },
    );
    c.add(
        r,
        "tensor data cut off",
        "error: not a safetensors file",
        err(&["not a safetensors file"]),
        |ctx, d| {
            let p = d.join("ck.safetensors");
            put(&p, &ctx.shipped[..ctx.shipped.len() - 1000]);
            open_ck(&p)
        },
    );
    c.add(
        r,
        "no metadata (a plain state dict)",
        "error: not a finegrain checkpoint",
        err(&[
            "no `finegrain.model` metadata",
            "not a finegrain checkpoint",
        ]),
        |ctx, d| {
            let p = d.join("ck.safetensors");
            put(&p, write_st(None, &read_st(&ctx.shipped).1));
            open_ck(&p)
        },
    );
    c.add(
        r,
        "model configuration not an object",
        "error naming the key",
        err(&[MODEL_KEY, "cannot be read"]),
        |ctx, d| open_ck(&ck_model(ctx, d, |v| *v = json!([1, 2]))),
    );
    c.add(
        r,
        "model field of the wrong type (num_classes \"ten\")",
        "error naming the key",
        err(&[MODEL_KEY, "cannot be read"]),
        |ctx, d| open_ck(&ck_model(ctx, d, |v| v["num_classes"] = json!("ten"))),
    );
    c.add(
        r,
        "model field missing (widths)",
        "error naming the key and the field",
        err(&[MODEL_KEY, "widths"]),
        |ctx, d| {
            open_ck(&ck_model(ctx, d, |v| {
                v.as_object_mut().unwrap().remove("widths");
            }))
        },
    );
    c.add(
        r,
        "model in_channels 2",
        "error naming the key and the field",
        err(&[MODEL_KEY, "in_channels is 2"]),
        |ctx, d| open_ck(&ck_model(ctx, d, |v| v["in_channels"] = json!(2))),
    );
    c.add(
        r,
        "model num_classes 1",
        "error naming the key and the field",
        err(&[MODEL_KEY, "num_classes is 1"]),
        |ctx, d| open_ck(&ck_model(ctx, d, |v| v["num_classes"] = json!(1))),
    );
    c.add(
        r,
        "model input_size 0",
        "error naming the key and the field",
        err(&[MODEL_KEY, "input size 0"]),
        |ctx, d| open_ck(&ck_model(ctx, d, |v| v["input_size"] = json!(0))),
    );
    c.add(
        r,
        "model bn_eps 0",
        "error naming the key and the field",
        err(&[MODEL_KEY, "bn_eps"]),
        |ctx, d| open_ck(&ck_model(ctx, d, |v| v["bn_eps"] = json!(0.0))),
    );
    c.add(
        r,
        "model bn_momentum 2",
        "error naming the key and the field",
        err(&[MODEL_KEY, "bn_momentum"]),
        |ctx, d| open_ck(&ck_model(ctx, d, |v| v["bn_momentum"] = json!(2.0))),
    );
    c.add(
        r,
        "model stem pad 2^64-1",
        "error naming the field, before any size arithmetic",
        err(&[MODEL_KEY, "stem pad"]),
        |ctx, d| open_ck(&ck_model(ctx, d, |v| v["stem"]["pad"] = json!(u64::MAX))),
    );
    c.add(
        r,
        "model stage lists of different lengths",
        "error naming the key",
        err(&[MODEL_KEY, "equal length"]),
        |ctx, d| open_ck(&ck_model(ctx, d, |v| v["widths"] = json!([16, 32]))),
    );
    c.add(
        r,
        "model num_classes 11, head tensors for 10",
        "error naming the tensor and the field",
        err(&["head.weight", "[10, 64, 1, 1]", "num_classes 11"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                m.remove(CLASSES_KEY);
                edit_json(m, MODEL_KEY, |v| v["num_classes"] = json!(11));
            }))
        },
    );
    c.add(
        r,
        "stem tensor of the wrong shape",
        "error naming the tensor and the model fields",
        err(&["conv1.weight", "[16, 1, 9, 1]", "stem kernel"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |_, t| {
                reshape(t, "conv1.weight", &[16, 1, 9, 1])
            }))
        },
    );
    c.add(
        r,
        "only the model configuration in the metadata",
        "accepted: placeholder class names and the model's default preprocessing",
        ok("10 classes [class 0, class 1,"),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                m.retain(|k, _| k == MODEL_KEY);
            }))
        },
    );
    c.add(
        r,
        "format tag of another version",
        "error naming the key and the tag",
        err(&[FORMAT_KEY, "finegrain-checkpoint-9"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                m.insert(FORMAT_KEY.into(), "finegrain-checkpoint-9".into());
            }))
        },
    );
    c.add(
        r,
        "class name count mismatch (9 for 10)",
        "error naming the key and both counts",
        err(&[CLASSES_KEY, "9 class names", "10 classes"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, CLASSES_KEY, |v| {
                    v.as_array_mut().unwrap().pop();
                })
            }))
        },
    );
    c.add(
        r,
        "duplicate class names",
        "error naming the key, the classes and the name",
        err(&[CLASSES_KEY, "1 and 3", "Trouser"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, CLASSES_KEY, |v| v[3] = json!("Trouser"))
            }))
        },
    );
    c.add(
        r,
        "empty class name",
        "error naming the key and the class",
        err(&[CLASSES_KEY, "class 4", "empty"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, CLASSES_KEY, |v| v[4] = json!(" "))
            }))
        },
    );
    c.add(
        r,
        "class names not a list",
        "error naming the key",
        err(&[CLASSES_KEY, "cannot be read"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                m.insert(CLASSES_KEY.into(), "{\"a\": 1}".into());
            }))
        },
    );
    c.add(
        r,
        "normalisation std 0",
        "error naming the key and the field",
        err(&[PREPROCESS_KEY, "normalize.std"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, PREPROCESS_KEY, |v| v["normalize"]["std"] = json!([0.0]))
            }))
        },
    );
    c.add(
        r,
        "normalisation of the wrong length (3 means, 1 channel)",
        "error naming the key and the field",
        err(&[PREPROCESS_KEY, "normalize.mean", "3 values"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, PREPROCESS_KEY, |v| {
                    v["normalize"]["mean"] = json!([0.1, 0.2, 0.3])
                })
            }))
        },
    );
    c.add(
        r,
        "preprocessing size 0",
        "error naming the key and the field",
        err(&[PREPROCESS_KEY, "height", "0"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, PREPROCESS_KEY, |v| {
                    v["height"] = json!(0);
                    v["width"] = json!(0);
                })
            }))
        },
    );
    c.add(
        r,
        "preprocessing size 32 for a 28-px model",
        "error naming both keys",
        err(&[PREPROCESS_KEY, "32x32", MODEL_KEY]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, PREPROCESS_KEY, |v| {
                    v["height"] = json!(32);
                    v["width"] = json!(32);
                    v["eval_resize"] = json!(32);
                })
            }))
        },
    );
    c.add(
        r,
        "preprocessing 3 channels for a 1-channel model",
        "error naming both keys",
        err(&[PREPROCESS_KEY, "channels is 3", "in_channels"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, PREPROCESS_KEY, |v| {
                    v["channels"] = json!(3);
                    v["normalize"] = json!({"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]});
                })
            }))
        },
    );
    c.add(
        r,
        "preprocessing eval_resize below the size",
        "error naming the key and the field",
        err(&[PREPROCESS_KEY, "eval_resize"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, PREPROCESS_KEY, |v| v["eval_resize"] = json!(20))
            }))
        },
    );
    c.add(
        r,
        "preprocessing not JSON",
        "error naming the key",
        err(&[PREPROCESS_KEY, "cannot be read"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                m.insert(PREPROCESS_KEY.into(), "{".into());
            }))
        },
    );
    c.add(
        r,
        "training configuration epochs 0",
        "error naming the key and the setting",
        err(&[TRAIN_KEY, "epochs"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, TRAIN_KEY, |v| v["epochs"] = json!(0))
            }))
        },
    );
    c.add(
        r,
        "training configuration lr -1",
        "error naming the key and the setting",
        err(&[TRAIN_KEY, "lr"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, TRAIN_KEY, |v| v["lr"] = json!(-1.0))
            }))
        },
    );
    c.add(
        r,
        "training configuration GCE k 0",
        "error naming the key and the setting",
        err(&[TRAIN_KEY, "invalid k", "k >= 1"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, TRAIN_KEY, |v| v["k"] = json!(0))
            }))
        },
    );
    c.add(
        r,
        "training configuration GCE k 50 for 10 classes",
        "accepted: k is clamped to C - 1 (a note says so when training resumes)",
        ok("10 classes"),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, TRAIN_KEY, |v| v["k"] = json!(50))
            }))
        },
    );
    c.add(
        r,
        "training configuration alpha 2",
        "error naming the key and the setting",
        err(&[TRAIN_KEY, "alpha"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, TRAIN_KEY, |v| v["alpha"] = json!(2.0))
            }))
        },
    );
    c.add(
        r,
        "progress past the end of the run",
        "error naming both keys",
        err(&[PROGRESS_KEY, "past the end", TRAIN_KEY]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, PROGRESS_KEY, |v| v["epoch"] = json!(5))
            }))
        },
    );
    c.add(
        r,
        "progress step fewer than its epochs need",
        "error naming the key",
        err(&[PROGRESS_KEY, "step 3 is less than"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, PROGRESS_KEY, |v| {
                    v["step"] = json!(3);
                    v["epoch"] = json!(2);
                    v["batch"] = json!(5);
                })
            }))
        },
    );
    c.add(
        r,
        "training configuration precision half",
        "error naming the key and the two precisions",
        err(&[TRAIN_KEY, "half", "f32", "mixed"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, TRAIN_KEY, |v| v["precision"] = json!("half"))
            }))
        },
    );
    c.add(
        r,
        "training configuration precision mixed, no loss-scaling state",
        "accepted: the run resumes at the initial loss scale",
        ok("10 classes"),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, TRAIN_KEY, |v| v["precision"] = json!("mixed"))
            }))
        },
    );
    c.add(
        r,
        "loss-scaling state in an f32 run",
        "error naming both keys",
        err(&[PROGRESS_KEY, "amp", "not in mixed precision", TRAIN_KEY]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, PROGRESS_KEY, |v| {
                    v["amp"] = json!([65536f32.to_bits(), 0, 0, 0])
                })
            }))
        },
    );
    c.add(
        r,
        "mixed run's loss scale 3",
        "error naming the key and the scale",
        err(&[PROGRESS_KEY, "loss scale 3", "power of two"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, TRAIN_KEY, |v| v["precision"] = json!("mixed"));
                edit_json(m, PROGRESS_KEY, |v| {
                    v["amp"] = json!([3f32.to_bits(), 0, 0, 0])
                })
            }))
        },
    );
    c.add(
        r,
        "mixed run's loss scale infinite",
        "error naming the key and the scale",
        err(&[PROGRESS_KEY, "loss scale inf"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, TRAIN_KEY, |v| v["precision"] = json!("mixed"));
                edit_json(m, PROGRESS_KEY, |v| {
                    v["amp"] = json!([f32::INFINITY.to_bits(), 0, 0, 0])
                })
            }))
        },
    );
    c.add(
        r,
        "mixed run with more skipped steps than steps",
        "error naming the key and both counts",
        err(&[PROGRESS_KEY, "4000000000 skipped steps"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, TRAIN_KEY, |v| v["precision"] = json!("mixed"));
                edit_json(m, PROGRESS_KEY, |v| {
                    v["amp"] = json!([65536f32.to_bits(), 0, 4_000_000_000u32, 0])
                })
            }))
        },
    );
    c.add(
        r,
        "progress of the wrong type",
        "error naming the key",
        err(&[PROGRESS_KEY, "cannot be read"]),
        |ctx, d| {
            open_ck(&ck_file(ctx, d, |m, _| {
                edit_json(m, PROGRESS_KEY, |v| v["step"] = json!("a lot"))
            }))
        },
    );

    let r = "checkpoint tensors";
    // (case, what the user sees, words of the error, load the momentum too, the edit)
    let gpu_cases: Vec<(&str, &str, Vec<&str>, bool, Edit)> = vec![
        (
            "missing tensor",
            "error listing the missing tensor and its shape",
            vec!["missing tensor `layer2.0.conv1.weight` [32, 16, 3, 3]"],
            false,
            |t| remove(t, "layer2.0.conv1.weight"),
        ),
        (
            "extra tensor",
            "error listing the unexpected tensor",
            vec!["unexpected tensor `extra.weight`"],
            false,
            |t| t.push(("extra.weight".into(), Dtype::F32, vec![2], vec![0; 8])),
        ),
        (
            "tensor of the wrong shape",
            "error listing the tensor, its shape and the one expected",
            vec![
                "layer1.0.conv1.weight",
                "[16, 16, 9, 1]",
                "expected [16, 16, 3, 3]",
            ],
            false,
            |t| reshape(t, "layer1.0.conv1.weight", &[16, 16, 9, 1]),
        ),
        (
            "tensor of the wrong dtype (F16)",
            "error listing the tensor and its dtype",
            vec!["bn1.weight", "dtype F16"],
            false,
            |t| retype(t, "bn1.weight", Dtype::F16, 2),
        ),
        (
            "NaN weight",
            "error naming the tensor: non-finite",
            vec!["layer2.0.conv1.weight", "non-finite"],
            false,
            |t| set_first(t, "layer2.0.conv1.weight", f32::NAN),
        ),
        (
            "infinite bias",
            "error naming the tensor: non-finite",
            vec!["head.bias", "non-finite"],
            false,
            |t| set_first(t, "head.bias", f32::INFINITY),
        ),
        (
            "negative running variance",
            "error naming the tensor: negative variance",
            vec!["layer3.0.bn2.running_var", "negative variance"],
            false,
            |t| set_first(t, "layer3.0.bn2.running_var", -1.0),
        ),
        (
            "NaN running mean",
            "error naming the tensor: non-finite",
            vec!["bn1.running_mean", "non-finite"],
            false,
            |t| set_first(t, "bn1.running_mean", f32::NAN),
        ),
        (
            "resume: momentum missing",
            "error listing the missing momentum tensors",
            vec!["missing tensor `optimizer.momentum.conv1.weight`"],
            true,
            |t| t.retain(|e| !e.0.starts_with(checkpoint::MOMENTUM_PREFIX)),
        ),
        (
            "resume: NaN momentum",
            "error naming the momentum tensor: non-finite",
            vec!["optimizer.momentum.conv1.weight", "non-finite"],
            true,
            |t| set_first(t, "optimizer.momentum.conv1.weight", f32::NAN),
        ),
    ];
    for (name, sees, words, optimizer, f) in gpu_cases {
        c.add(r, name, sees, Expect::Error(words), move |ctx, d| {
            load_ck(ctx, &ck_file(ctx, d, |_, t| f(t)), optimizer)
        })
        .gpu = true;
    }
    c.add(
        r,
        "momentum present, inference load",
        "accepted: the optimizer state is not needed",
        ok("loaded"),
        |ctx, d| load_ck(ctx, &ck_file(ctx, d, |_, _| {}), false),
    )
    .gpu = true;

    let r = "torchvision import";
    c.add(
        r,
        "not safetensors",
        "error: not a safetensors file",
        err(&["not a safetensors file"]),
        |ctx, d| {
            let p = d.join("resnet.safetensors");
            put(&p, "PK\x03\x04 a zip file, as torch.save writes");
            load_tv(ctx, &p)
        },
    )
    .gpu = true;
    // (case, what the user sees, words of the error, the edit)
    let tv_cases: Vec<(&str, &str, Vec<&str>, Edit)> = vec![
        (
            "missing key",
            "error listing the missing tensor",
            vec![
                "missing tensor `layer3.0.bn2.running_mean` [64]",
                "backbone",
            ],
            |t| remove(t, "layer3.0.bn2.running_mean"),
        ),
        (
            "tensor of the wrong shape",
            "error listing the tensor and the shape expected",
            vec!["layer1.0.conv2.weight", "expected [16, 16, 3, 3]"],
            |t| reshape(t, "layer1.0.conv2.weight", &[16, 16, 1, 9]),
        ),
        (
            "NaN weight",
            "error naming the tensor: non-finite",
            vec!["layer2.0.conv1.weight", "non-finite"],
            |t| set_first(t, "layer2.0.conv1.weight", f32::NAN),
        ),
        (
            "negative running_var",
            "error naming the tensor: negative variance",
            vec!["bn1.running_var", "negative variance"],
            |t| set_first(t, "bn1.running_var", -1.0),
        ),
        (
            "wrong dtype (F64)",
            "error naming the tensor: convert to float32",
            vec!["conv1.weight", "dtype F64", "float32"],
            |t| retype(t, "conv1.weight", Dtype::F64, 8),
        ),
        (
            "NaN in fc.weight",
            "error naming the tensor: non-finite",
            vec!["fc.weight", "non-finite"],
            |t| set_first(t, "fc.weight", f32::NAN),
        ),
    ];
    for (name, sees, words, f) in tv_cases {
        c.add(r, name, sees, Expect::Error(words), move |ctx, d| {
            load_tv(ctx, &tv_file(ctx, d, f))
        })
        .gpu = true;
    }
    c.add(
        r,
        "fc for another class count (ImageNet's 1000)",
        "accepted: backbone loaded, the head starts afresh (a note says why)",
        ok("head from fc: false (its fc has 1000 classes), ignored []"),
        |ctx, d| {
            load_tv(
                ctx,
                &tv_file(ctx, d, |t| {
                    let e = tensor(t, "fc.weight");
                    e.2 = vec![1000, 64];
                    e.3 = vec![0; 1000 * 64 * 4];
                    let e = tensor(t, "fc.bias");
                    e.2 = vec![1000];
                    e.3 = vec![0; 4000];
                }),
            )
        },
    )
    .gpu = true;
    c.add(
        r,
        "extra tensors (num_batches_tracked, an aux head)",
        "accepted: extra tensors ignored and reported",
        ok("head from fc: true, ignored [aux.weight]"),
        |ctx, d| {
            load_tv(
                ctx,
                &tv_file(ctx, d, |t| {
                    t.push(("aux.weight".into(), Dtype::F32, vec![3], vec![0; 12]))
                }),
            )
        },
    )
    .gpu = true;
}

fn catalogue() -> Vec<Case> {
    let mut c = Cases(Vec::new());
    idx_cases(&mut c);
    cub_cases(&mut c);
    folder_cases(&mut c);
    image_cases(&mut c);
    checkpoint_cases(&mut c);
    c.0
}

// ---------------------------------------------------------------------------------------
// Running the catalogue

fn context() -> Ctx {
    let gray = image::GrayImage::from_fn(6, 6, |x, y| image::Luma([(x * 40 + y * 7) as u8]));
    let rgb = image::RgbImage::from_fn(16, 16, |x, y| {
        image::Rgb([x as u8 * 15, y as u8 * 15, ((x + y) * 7) as u8])
    });
    let png = encode(
        image::DynamicImage::ImageLuma8(gray),
        image::ImageFormat::Png,
    );
    let jpeg = encode(
        image::DynamicImage::ImageRgb8(rgb.clone()),
        image::ImageFormat::Jpeg,
    );
    let rgb_png = encode(image::DynamicImage::ImageRgb8(rgb), image::ImageFormat::Png);
    let shipped = std::fs::read(SHIPPED).unwrap();
    let torchvision = finegrain::testing::torchvision_state_dict(&shipped);
    let net = finegrain::testing::gpu().map(|g| {
        let ck = Checkpoint::open(Path::new(SHIPPED)).unwrap();
        let method = finegrain::train::MethodConfig {
            diversify: None,
            loss: finegrain::method::loss::LossKind::CrossEntropy,
            accumulate: false,
        };
        let n = finegrain::train::Network::new(g, &ck.model, 1, &method, 0).unwrap();
        (g, n)
    });
    Ctx {
        png,
        jpeg,
        rgb_png,
        shipped,
        torchvision,
        net,
    }
}

/// How a case ended.
struct Verdict {
    /// `None`: as expected; else why not.
    failure: Option<String>,
    /// The message or summary, paths shown relative to `<dir>`.
    shown: String,
    elapsed: Duration,
}

/// The case running now and since when, for the watchdog.
static RUNNING: Mutex<Option<(String, Instant)>> = Mutex::new(None);

fn watchdog() {
    std::thread::spawn(|| loop {
        std::thread::sleep(Duration::from_millis(200));
        let guard = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((name, since)) = &*guard {
            if since.elapsed() > HANG {
                eprintln!("HANG: case `{name}` has run for over {HANG:?}; aborting");
                std::process::abort();
            }
        }
    });
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

/// `msg` on one line with `dir` shown as `<dir>`, cut to about `max` characters.
fn shown(msg: &str, dir: &Path, max: usize) -> String {
    let one = msg
        .replace(&dir.display().to_string(), "<dir>")
        .replace('\n', " ");
    let one: String = one.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > max {
        format!("{}...", one.chars().take(max).collect::<String>())
    } else {
        one
    }
}

fn run_case(ctx: &Ctx, case: &Case, dir: &Path) -> Verdict {
    std::fs::create_dir_all(dir).unwrap();
    let label = format!("{} / {}", case.reader, case.name);
    *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) = Some((label, Instant::now()));
    let t0 = Instant::now();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| (case.run)(ctx, dir)));
    let elapsed = t0.elapsed();
    *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) = None;
    let (failure, full) = match r {
        Err(p) => {
            let m = panic_message(&*p);
            (Some(format!("PANIC: {m}")), format!("panicked: {m}"))
        }
        Ok((named, result)) => {
            let path = named.display().to_string();
            match (&case.expect, result) {
                (Expect::Error(words), Err(e)) => {
                    let m = e.to_string();
                    let mut why = Vec::new();
                    if !m.contains(&path) {
                        why.push(format!("does not name `{path}`"));
                    }
                    for w in words {
                        if !m.contains(w) {
                            why.push(format!("lacks `{w}`"));
                        }
                    }
                    let f = (!why.is_empty()).then(|| format!("error {}: {m}", why.join(", ")));
                    (f, m)
                }
                (Expect::Error(_), Ok(s)) => (
                    Some(format!("accepted ({s}), expected an error")),
                    format!("accepted: {s}"),
                ),
                (Expect::Accepted(want), Ok(s)) => {
                    let f = (!s.contains(want))
                        .then(|| format!("accepted as `{s}`, expected `{want}`"));
                    (f, format!("accepted: {s}"))
                }
                (Expect::Accepted(_), Err(e)) => {
                    let m = e.to_string();
                    (Some(format!("refused, expected acceptance: {m}")), m)
                }
            }
        }
    };
    let failure =
        failure.or_else(|| (elapsed > SLOW).then(|| format!("took {elapsed:?}, over {SLOW:?}")));
    Verdict {
        failure,
        shown: shown(&full, dir, 100),
        elapsed,
    }
}

/// `s` for a markdown table cell (messages go in double-backtick code spans, which may hold
/// the messages' own backticks).
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The readers of the catalogue, each run by the test of the same name.
const READERS: [&str; 9] = [
    "IDX images",
    "IDX labels",
    "IDX folder",
    "CUB files",
    "class folders",
    "image decoding",
    "checkpoint",
    "checkpoint tensors",
    "torchvision import",
];

/// Names one case (or those whose name contains it) to run alone, with `cargo test --test
/// hostile -- --nocapture`: the other cases are not run.
const CASE_VAR: &str = "FINEGRAIN_HOSTILE_CASE";

/// The whole catalogue, numbered as its table is: the asserting cases, then the known
/// defects (run after them and reported, not asserted).
fn numbered() -> Vec<(usize, Case)> {
    let (known_defects, cases): (Vec<Case>, Vec<Case>) =
        catalogue().into_iter().partition(|c| c.defect.is_some());
    cases
        .into_iter()
        .chain(known_defects)
        .enumerate()
        .map(|(n, c)| (n + 1, c))
        .collect()
}

#[test]
fn the_catalogue_names_each_case_once_for_a_known_reader() {
    let all = numbered();
    let asserted = all.iter().filter(|(_, c)| c.defect.is_none()).count();
    assert!(asserted >= 55, "only {asserted} asserted cases");
    let mut names = std::collections::HashSet::new();
    for (_, c) in &all {
        assert!(
            names.insert((c.reader, c.name)),
            "case `{} / {}` twice",
            c.reader,
            c.name
        );
        assert!(
            READERS.contains(&c.reader),
            "case `{}` of reader `{}`, which has no test: add it to READERS and a test",
            c.name,
            c.reader
        );
    }
    for r in READERS {
        assert!(all.iter().any(|(_, c)| c.reader == r), "no case for `{r}`");
    }
}

/// One test per reader: `cargo test --test suite hostile::readers::cub_files`.
mod readers {
    use super::run_reader;

    #[test]
    fn idx_images() {
        run_reader("IDX images");
    }

    #[test]
    fn idx_labels() {
        run_reader("IDX labels");
    }

    #[test]
    fn idx_folder() {
        run_reader("IDX folder");
    }

    #[test]
    fn cub_files() {
        run_reader("CUB files");
    }

    #[test]
    fn class_folders() {
        run_reader("class folders");
    }

    #[test]
    fn image_decoding() {
        run_reader("image decoding");
    }

    #[test]
    fn checkpoint() {
        run_reader("checkpoint");
    }

    #[test]
    fn checkpoint_tensors() {
        run_reader("checkpoint tensors");
    }

    #[test]
    fn torchvision_import() {
        run_reader("torchvision import");
    }
}

/// One reader test at a time: the panic hook and the watchdog's record are global.
static SERIAL: Mutex<()> = Mutex::new(());

/// Run the cases of `reader` (only those whose name contains `FINEGRAIN_HOSTILE_CASE` when
/// it is set), print their rows of the table and assert that each behaves as catalogued.
fn run_reader(reader: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let t0 = Instant::now();
    let only = std::env::var(CASE_VAR).ok().filter(|v| !v.is_empty());
    let all = numbered();
    let picked: Vec<(usize, &Case)> = all
        .iter()
        .filter(|(_, c)| c.reader == reader)
        .filter(|(_, c)| only.as_deref().is_none_or(|o| c.name.contains(o)))
        .map(|(n, c)| (*n, c))
        .collect();
    if picked.is_empty() {
        assert!(only.is_some(), "no case for reader `{reader}`");
        println!("{reader}: no case named like {only:?} ({CASE_VAR})");
        return;
    }
    let ctx = context();
    let root = tempfile::Builder::new()
        .prefix("finegrain-hostile-")
        .tempdir()
        .unwrap();
    static WATCHDOG: std::sync::Once = std::sync::Once::new();
    WATCHDOG.call_once(watchdog);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut defects = Vec::new();
    let mut skipped = 0;
    let mut slowest = (Duration::ZERO, "");
    for &(num, case) in &picked {
        let dir = root.path().join(format!("{num:03}"));
        let (status, shown) = if case.gpu && ctx.net.is_none() {
            skipped += 1;
            ("skipped", "skipped: no adapter".to_string())
        } else {
            let v = run_case(&ctx, case, &dir);
            if v.elapsed > slowest.0 {
                slowest = (v.elapsed, case.name);
            }
            match (case.defect, v.failure) {
                (None, None) => ("ok", v.shown),
                (None, Some(f)) => {
                    failures.push(format!(
                        "#{num} {} / {}: {}",
                        case.reader,
                        case.name,
                        shown(&f, &dir, 400)
                    ));
                    ("FAIL", v.shown)
                }
                (Some(d), None) => {
                    defects.push(format!(
                        "#{num} {} / {}: now behaves correctly (was: {d}); move it back to the \
                         asserting list",
                        case.reader, case.name
                    ));
                    ("fixed?", v.shown)
                }
                (Some(d), Some(f)) => {
                    defects.push(format!(
                        "#{num} {} / {}: {d}\n    got: {}",
                        case.reader,
                        case.name,
                        shown(&f, &dir, 300)
                    ));
                    ("KNOWN DEFECT", v.shown)
                }
            }
        };
        let sees = match (status, case.defect) {
            ("KNOWN DEFECT", Some(d)) => {
                format!("**KNOWN DEFECT**: {d}; {}; now: `` {shown} ``", case.sees)
            }
            ("FAIL", _) => format!("**FAIL**: {}: `` {shown} ``", case.sees),
            ("skipped", _) => format!("{} (not run: no adapter)", case.sees),
            _ => format!("{}: `` {shown} ``", case.sees),
        };
        rows.push(format!(
            "| {num} | {} | {} | {} |",
            case.reader,
            cell(case.name),
            cell(&sees)
        ));
    }
    std::panic::set_hook(hook);
    println!();
    println!("| # | reader | case | what the user sees |");
    println!("| ---: | --- | --- | --- |");
    for r in &rows {
        println!("{r}");
    }
    println!();
    println!(
        "{reader}: {} cases ({} known defects), {skipped} skipped without an adapter, {} \
         failing; slowest `{}` {:?}; {:?} in all",
        picked.len(),
        picked.iter().filter(|(_, c)| c.defect.is_some()).count(),
        failures.len(),
        slowest.1,
        slowest.0,
        t0.elapsed()
    );
    if !defects.is_empty() {
        println!("\nknown defects (not asserted):");
        for d in &defects {
            println!("  {d}");
        }
    }
    assert!(
        failures.is_empty(),
        "{} hostile case(s) of {reader} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
