//! Seeded, structure-aware fuzzing of every reader of user data, shared by `tests/suite/fuzz.rs`
//! (a bounded number of cases per reader) and `examples/fuzz.rs` (long runs).
//!
//! Each reader starts from valid files (IDX images and labels raw and gzipped, the four CUB
//! index files, class-folder trees, PNG and JPEG images, checkpoints, torchvision state
//! dicts) and mutates them: truncation, bit flips, byte insertion and deletion, splices,
//! integers in text and headers replaced by extremes (0, -1, 2^31, 2^64 - 1, ...), edited
//! JSON fields, numbers and types, duplicated and dropped lines, paths with `..`, image
//! headers with extreme dimensions (CRCs fixed so the decoder reaches them). Case `i` of a run
//! with seed `s` draws every choice from its own generator, so it replays alone.
//!
//! A case fails when the reader panics, takes longer than [`SLOW`], allocates more than
//! [`ALLOC_CAP`] at once over what it started with, or returns an error that does not name the
//! file (or, for a dataset folder, a path under it).

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use finegrain::checkpoint::{self, Checkpoint};
use finegrain::data::{self, DataOptions, Split};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use serde_json::Value;

/// A case slower than this is a failure (a hang, or work out of proportion to the input).
pub const SLOW: Duration = Duration::from_secs(2);
/// Largest growth of live heap memory one case may cause: the inputs are at most a few
/// hundred KiB, so more than this means a size taken from a header without a bound.
pub const ALLOC_CAP: usize = 1 << 30;

/// The shipped checkpoint: the seed of the checkpoint and torchvision readers.
pub const SHIPPED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/weights/fashion-mnist-tiny.safetensors"
);

// ---------------------------------------------------------------------------------------
// Memory accounting

/// The global allocator of the fuzz binaries: the system allocator, counting live bytes and
/// their peak, so a case's peak growth can be checked.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                grew(new - l.size());
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------------------------------
// Mutations

/// Integers that break arithmetic, as text.
pub const EXTREME_INTS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "255",
    "256",
    "65535",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "99999999999999999999999999",
];
/// Other numbers, as text (JSON and index files).
pub const EXTREME_NUMS: &[&str] = &[
    "1e308", "1e309", "-1e309", "-0", "0.0", "1e-320", "NaN", "inf", "0.5", "-0.5", "1.0e400",
];
/// Header values for binary formats (IDX dimensions, image sizes).
pub const EXTREME_U32: &[u32] = &[
    0,
    1,
    2,
    3,
    28,
    4096,
    4097,
    65535,
    65536,
    1 << 24,
    (1 << 31) - 1,
    1 << 31,
    u32::MAX - 1,
    u32::MAX,
];

fn pick<'a, T>(rng: &mut StdRng, v: &'a [T]) -> &'a T {
    &v[rng.random_range(0..v.len())]
}

/// One to `max` byte-level mutations of `data`; `others` are splice sources.
pub fn mutate_bytes(rng: &mut StdRng, data: &mut Vec<u8>, others: &[&[u8]], max: usize) {
    let n = rng.random_range(1..=max);
    for _ in 0..n {
        let len = data.len();
        match rng.random_range(0..10) {
            0 if len > 0 => data.truncate(rng.random_range(0..len)),
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] ^= 1 << rng.random_range(0..8);
            }
            2 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] = *pick(rng, &[0u8, 0xff, 0x7f, 0x80, b'0', b'\n', b' ', b'.']);
            }
            3 => {
                let i = rng.random_range(0..=len);
                let k = rng.random_range(1..=8);
                for _ in 0..k {
                    data.insert(i, rng.random());
                }
            }
            4 if len > 0 => {
                let i = rng.random_range(0..len);
                let k = rng.random_range(1..=(len - i).min(64));
                data.drain(i..i + k);
            }
            5 if len > 0 => {
                // Duplicate a range in place.
                let i = rng.random_range(0..len);
                let k = rng.random_range(1..=(len - i).min(256));
                let chunk: Vec<u8> = data[i..i + k].to_vec();
                let at = rng.random_range(0..=len);
                data.splice(at..at, chunk);
            }
            6 if !others.is_empty() => {
                // Splice: our prefix, another seed's suffix.
                let o = *pick(rng, others);
                let cut = rng.random_range(0..=len);
                let ocut = rng.random_range(0..=o.len());
                data.truncate(cut);
                data.extend_from_slice(&o[ocut..]);
            }
            7 if len >= 4 => {
                let i = rng.random_range(0..=len - 4);
                let v = *pick(rng, EXTREME_U32);
                let b = if rng.random() {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                data[i..i + 4].copy_from_slice(&b);
            }
            8 if len > 0 => {
                // A run of random bytes.
                let i = rng.random_range(0..len);
                let k = rng.random_range(1..=(len - i).min(32));
                for b in &mut data[i..i + k] {
                    *b = rng.random();
                }
            }
            _ => {
                let i = rng.random_range(0..=len);
                data.insert(i, rng.random());
            }
        }
    }
}

/// Spans of ASCII digits (with a leading `-`) in `s`.
fn number_spans(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() || (b[i] == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let start = i;
            i += 1;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'e') {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

/// Text-aware mutations of a line-based or JSON text: numbers replaced by extremes, lines
/// duplicated, dropped, swapped or edited, paths with `..`, odd whitespace; sometimes raw
/// byte mutations on top. The result may not be UTF-8.
pub fn mutate_text(rng: &mut StdRng, text: &str) -> Vec<u8> {
    let mut s = text.to_string();
    let n = rng.random_range(1..=3);
    for _ in 0..n {
        match rng.random_range(0..11) {
            0..=2 => {
                let spans = number_spans(&s);
                if let Some(&(a, b)) = spans.get(rng.random_range(0..spans.len().max(1))) {
                    let r = if rng.random_range(0..4) == 0 {
                        pick(rng, EXTREME_NUMS).to_string()
                    } else {
                        pick(rng, EXTREME_INTS).to_string()
                    };
                    s.replace_range(a..b, &r);
                }
            }
            3 | 4 => {
                let mut lines: Vec<String> = s.lines().map(String::from).collect();
                if !lines.is_empty() {
                    let i = rng.random_range(0..lines.len());
                    match rng.random_range(0..6) {
                        0 => {
                            let l = lines[i].clone();
                            lines.insert(rng.random_range(0..=lines.len()), l);
                        }
                        1 => {
                            lines.remove(i);
                        }
                        2 => {
                            let j = rng.random_range(0..lines.len());
                            lines.swap(i, j);
                        }
                        3 => lines[i] = lines[i].split_whitespace().next().unwrap_or("").into(),
                        4 => lines[i].push_str(" extra field"),
                        _ => lines[i] = lines[i].replace(' ', "\t"),
                    }
                }
                s = lines.join(if rng.random() { "\n" } else { "\r\n" });
            }
            5 => {
                let p = *pick(
                    rng,
                    &[
                        "../../../../etc/passwd",
                        "/etc/hostname",
                        "..",
                        ".",
                        "",
                        "a/../../b.png",
                        "nul\0byte.png",
                        "dir/",
                        "\u{202e}gnp.x",
                    ],
                );
                let at = rng.random_range(0..=s.len());
                let at = (0..=at).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                s.insert_str(at, p);
            }
            6 => {
                let at = rng.random_range(0..=s.len());
                let at = (0..=at).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                let filler = *pick(rng, &["\n\n", "   ", "\t", "\u{feff}", "é", "\"", "}", "]"]);
                s.insert_str(at, filler);
            }
            7 => {
                let long = "9".repeat(rng.random_range(20..400));
                let spans = number_spans(&s);
                if let Some(&(a, b)) = spans.get(rng.random_range(0..spans.len().max(1))) {
                    s.replace_range(a..b, &long);
                }
            }
            8 => {
                let k = rng.random_range(0..=s.len());
                let k = (0..=k).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                s.truncate(k);
            }
            9 => {
                // A long line.
                let at = rng.random_range(0..=s.len());
                let at = (0..=at).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                s.insert_str(at, &"x".repeat(rng.random_range(100..5000)));
            }
            _ => {
                let mut b = s.into_bytes();
                mutate_bytes(rng, &mut b, &[], 2);
                return b;
            }
        }
    }
    s.into_bytes()
}

/// A random JSON value of an unexpected kind or size.
fn odd_value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..10) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => Value::from(*pick(
            rng,
            &[0i64, -1, 1, i64::MAX, i64::MIN, 1 << 31, 1 << 32],
        )),
        3 => Value::from(*pick(rng, &[u64::MAX, 1 << 40, 4097])),
        4 => Value::from(*pick(rng, &[0.5f64, -0.0, 1e300, -1e300, 1e-300, 3.5])),
        5 => Value::String(String::new()),
        6 => {
            Value::String(pick(rng, &["x", "cosine", "gce", "Center", "tiny", "basic"]).to_string())
        }
        7 => Value::Array(vec![]),
        8 => Value::Array(vec![Value::from(1); rng.random_range(1..5)]),
        _ => Value::Object(Default::default()),
    }
}

/// Paths (as key / index lists) of every node of `v`.
fn json_paths(v: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                prefix.push(Value::String(k.clone()));
                json_paths(x, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                prefix.push(Value::from(i));
                json_paths(x, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn json_at<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    let mut cur = v;
    for p in path {
        cur = match p {
            Value::String(k) => &mut cur[k.as_str()],
            Value::Number(i) => &mut cur[i.as_u64().unwrap() as usize],
            _ => unreachable!(),
        };
    }
    cur
}

/// Structure-aware JSON edits: a node replaced by an odd value, a number scaled or pushed to
/// an extreme, a key deleted or added, an array element duplicated or dropped.
pub fn mutate_json(rng: &mut StdRng, v: &mut Value) {
    let n = rng.random_range(1..=3);
    for _ in 0..n {
        let mut paths = Vec::new();
        json_paths(v, &mut Vec::new(), &mut paths);
        let path = pick(rng, &paths).clone();
        let node = json_at(v, &path);
        match rng.random_range(0..7) {
            0 | 1 => *node = odd_value(rng),
            2 => {
                if let Some(x) = node.as_f64() {
                    let f: f64 = *pick(rng, &[0.0, -1.0, 2.0, 1000.0, 1e9, 0.5]);
                    *node = if x.fract() == 0.0 && f.fract() == 0.0 && (x * f).abs() < 9e18 {
                        Value::from((x * f) as i64)
                    } else {
                        Value::from(x * f)
                    };
                } else {
                    *node = odd_value(rng);
                }
            }
            3 => match node {
                Value::Object(m) if !m.is_empty() => {
                    let k = m.keys().nth(rng.random_range(0..m.len())).unwrap().clone();
                    m.remove(&k);
                }
                Value::Array(a) if !a.is_empty() => {
                    a.remove(rng.random_range(0..a.len()));
                }
                _ => *node = odd_value(rng),
            },
            4 => match node {
                Value::Object(m) => {
                    m.insert("unknown_field".into(), odd_value(rng));
                }
                Value::Array(a) if !a.is_empty() => {
                    let x = a[rng.random_range(0..a.len())].clone();
                    let k = rng.random_range(1..4);
                    for _ in 0..k {
                        a.push(x.clone());
                    }
                }
                _ => *node = odd_value(rng),
            },
            5 => {
                if let Value::String(s) = node {
                    *s = match rng.random_range(0..4) {
                        0 => String::new(),
                        1 => " ".into(),
                        2 => s.repeat(2),
                        _ => format!("{s}\u{0}"),
                    };
                } else {
                    *node = odd_value(rng);
                }
            }
            _ => *node = Value::Array(vec![node.clone()]),
        }
    }
}

/// JSON text mutated either structurally or as text.
fn mutate_json_text(rng: &mut StdRng, text: &str) -> Vec<u8> {
    match serde_json::from_str::<Value>(text) {
        Ok(mut v) if rng.random_range(0..3) > 0 => {
            mutate_json(rng, &mut v);
            let s = v.to_string();
            if rng.random_range(0..4) == 0 {
                mutate_text(rng, &s)
            } else {
                s.into_bytes()
            }
        }
        _ => mutate_text(rng, text),
    }
}

// ---------------------------------------------------------------------------------------
// Seed files

fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn gunzip(b: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(b)
        .take(1 << 20)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

fn idx_images_seed(count: u32, rows: u32, cols: u32, salt: u8) -> Vec<u8> {
    let data: Vec<u8> = (0..count * rows * cols)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect();
    idx_bytes(0x803, &[count, rows, cols], &data)
}

fn idx_labels_seed(count: u32, classes: u8) -> Vec<u8> {
    let data: Vec<u8> = (0..count).map(|i| (i % classes as u32) as u8).collect();
    idx_bytes(0x801, &[count], &data)
}

/// Small valid PNG and JPEG files: gray, RGB, RGBA, 16-bit.
pub fn image_seeds() -> Vec<Vec<u8>> {
    use image::{DynamicImage, ImageFormat};
    let mut out = Vec::new();
    let rgb = image::RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8 * 30, y as u8 * 40, 99]));
    let gray = image::GrayImage::from_fn(3, 6, |x, y| image::Luma([(x * 50 + y * 9) as u8]));
    let rgba = image::RgbaImage::from_fn(4, 4, |x, y| image::Rgba([x as u8, y as u8, 7, 128]));
    let g16 = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(5, 3, |x, y| {
        image::Luma([(x * 9000 + y * 77) as u16])
    });
    let imgs = [
        (DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Png),
        (DynamicImage::ImageLuma8(gray.clone()), ImageFormat::Png),
        (DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
        (DynamicImage::ImageLuma16(g16), ImageFormat::Png),
        (DynamicImage::ImageRgb8(rgb), ImageFormat::Jpeg),
        (DynamicImage::ImageLuma8(gray), ImageFormat::Jpeg),
    ];
    for (img, fmt) in imgs {
        let mut c = std::io::Cursor::new(Vec::new());
        img.write_to(&mut c, fmt).unwrap();
        out.push(c.into_inner());
    }
    out
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

/// A copy of the PNG `png` whose IHDR announces `w x h` (CRC fixed).
pub fn png_with_size(png: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut b = png.to_vec();
    b[16..20].copy_from_slice(&w.to_be_bytes());
    b[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&b[12..29]);
    b[29..33].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A copy of the baseline JPEG `jpeg` whose SOF0 announces `w x h`.
pub fn jpeg_with_size(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut b = jpeg.to_vec();
    let i = b
        .windows(2)
        .position(|m| m == [0xff, 0xc0])
        .expect("a baseline JPEG");
    b[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
    b[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
    b
}

/// Image-aware mutations: PNG IHDR or JPEG SOF dimensions set to extremes (PNG CRC fixed so
/// the decoder believes them), or byte mutations.
pub fn mutate_image(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = pick(rng, seeds).clone();
    let others: Vec<&[u8]> = seeds.iter().map(|s| s.as_slice()).collect();
    let is_png = b.starts_with(&[0x89, b'P', b'N', b'G']);
    match rng.random_range(0..4) {
        0 if is_png && b.len() >= 33 => {
            // IHDR data at 16..29: width, height, bit depth, colour type, ...
            let which = rng.random_range(0..3);
            if which < 2 {
                let v = *pick(rng, EXTREME_U32);
                b[16 + 4 * which..20 + 4 * which].copy_from_slice(&v.to_be_bytes());
            } else {
                b[24 + rng.random_range(0..5)] = rng.random();
            }
            let crc = crc32(&b[12..29]);
            b[29..33].copy_from_slice(&crc.to_be_bytes());
            if rng.random_range(0..3) == 0 {
                mutate_bytes(rng, &mut b, &others, 2);
            }
        }
        0 | 1 if !is_png => {
            // SOFn marker: ff c0..c2, length, precision, height (u16), width (u16), components.
            if let Some(i) = b
                .windows(2)
                .position(|w| w[0] == 0xff && (0xc0..=0xc2).contains(&w[1]))
            {
                if i + 10 <= b.len() {
                    let v = *pick(rng, &[0u16, 1, 0xffff, 0x7fff, 4097, 16384]);
                    let at = i + 5 + 2 * rng.random_range(0..2);
                    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
                    if rng.random_range(0..4) == 0 {
                        b[i + 9] = *pick(rng, &[0u8, 2, 4, 255]);
                    }
                }
            }
            if rng.random_range(0..3) == 0 {
                mutate_bytes(rng, &mut b, &others, 2);
            }
        }
        _ => mutate_bytes(rng, &mut b, &others, 4),
    }
    b
}

type Tensors = finegrain::testing::StTensors;
use finegrain::testing::{read_safetensors as read_st, write_safetensors as write_st};

/// A copy of the safetensors file `b` whose F32 tensor `name` starts with `value`.
pub fn set_first_value(b: &[u8], name: &str, value: f32) -> Vec<u8> {
    let (meta, mut t) = read_st(b);
    let e = t.iter_mut().find(|e| e.0 == name).expect("tensor present");
    e.3[..4].copy_from_slice(&value.to_le_bytes());
    write_st((!meta.is_empty()).then_some(&meta), &t)
}

/// A copy of the safetensors file `b` with metadata `key` rewritten by `f`.
pub fn edit_metadata(b: &[u8], key: &str, f: impl FnOnce(&str) -> String) -> Vec<u8> {
    let (mut meta, t) = read_st(b);
    let v = f(&meta[key]);
    assert_ne!(v, meta[key], "the edit changed nothing");
    meta.insert(key.into(), v);
    write_st(Some(&meta), &t)
}

/// Splits a safetensors file into (header JSON, data).
fn st_split(b: &[u8]) -> Option<(Value, &[u8])> {
    let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
    let h = b.get(8..8usize.checked_add(n)?)?;
    Some((serde_json::from_slice(h).ok()?, &b[8 + n..]))
}

fn st_join(h: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h);
    out.extend_from_slice(data);
    out
}

/// Safetensors-aware mutations of `seed`: a metadata value's JSON (the key `focus` most of
/// the time), a tensor entry's dtype, shape or offsets, tensors renamed or dropped, the
/// header length, or bytes anywhere.
fn mutate_safetensors(rng: &mut StdRng, seed: &[u8], focus: Option<&str>) -> Vec<u8> {
    let Some((mut h, data)) = st_split(seed) else {
        let mut b = seed.to_vec();
        mutate_bytes(rng, &mut b, &[], 4);
        return b;
    };
    let raw_header_edit = |rng: &mut StdRng, h: &Value| -> Vec<u8> {
        let s = h.to_string();
        mutate_text(rng, &s)
    };
    let kind = if focus.is_some() {
        *pick(rng, &[0, 0, 0, 0, 0, 1, 2, 3, 4])
    } else {
        rng.random_range(0..6)
    };
    match kind {
        0 => {
            // A metadata value.
            let meta = h
                .as_object_mut()
                .unwrap()
                .entry("__metadata__")
                .or_insert_with(|| Value::Object(Default::default()));
            let meta = meta.as_object_mut().unwrap();
            if meta.is_empty() {
                meta.insert(
                    checkpoint::MODEL_KEY.into(),
                    Value::String(r#"{"name":"tiny"}"#.into()),
                );
            }
            let key = match focus {
                Some(k) if rng.random_range(0..8) > 0 => k.to_string(),
                _ => meta
                    .keys()
                    .nth(rng.random_range(0..meta.len()))
                    .unwrap()
                    .clone(),
            };
            match rng.random_range(0..12) {
                0 => {
                    meta.remove(&key);
                }
                1 => {
                    meta.insert(key, odd_value(rng));
                }
                _ => {
                    let text = meta.get(&key).and_then(Value::as_str).unwrap_or("{}");
                    let m = mutate_json_text(rng, text);
                    meta.insert(key, Value::String(String::from_utf8_lossy(&m).into_owned()));
                }
            }
            st_join(h.to_string().as_bytes(), data)
        }
        1 => {
            // A tensor entry: dtype, shape, offsets.
            let obj = h.as_object_mut().unwrap();
            let names: Vec<String> = obj
                .keys()
                .filter(|k| *k != "__metadata__")
                .cloned()
                .collect();
            let name = pick(rng, &names).clone();
            let e = &mut obj[&name];
            match rng.random_range(0..5) {
                0 => {
                    e["dtype"] = Value::from(*pick(
                        rng,
                        &["F16", "F64", "I64", "U8", "BOOL", "BF16", "F8_E4M3", "X"],
                    ))
                }
                1 => {
                    let s = e["shape"].as_array_mut().unwrap();
                    if !s.is_empty() && rng.random() {
                        let i = rng.random_range(0..s.len());
                        s[i] = Value::from(*pick(
                            rng,
                            &[
                                0u64,
                                1,
                                u64::MAX,
                                1 << 32,
                                1 << 62,
                                usize::MAX as u64 / 2 + 1,
                            ],
                        ));
                    } else if rng.random() {
                        s.push(Value::from(1));
                    } else {
                        s.clear();
                    }
                }
                2 => {
                    let o = e["data_offsets"].as_array_mut().unwrap();
                    let i = rng.random_range(0..2);
                    o[i] = Value::from(*pick(
                        rng,
                        &[
                            0u64,
                            1,
                            4,
                            u64::MAX,
                            data.len() as u64,
                            data.len() as u64 + 1,
                        ],
                    ));
                }
                3 => {
                    let mut v = e.clone();
                    mutate_json(rng, &mut v);
                    *e = v;
                }
                _ => {
                    let v = obj.remove(&name).unwrap();
                    if rng.random() {
                        let to = pick(rng, &names).clone();
                        obj.insert(format!("{to}{}", if rng.random() { "" } else { "x" }), v);
                    }
                }
            }
            st_join(h.to_string().as_bytes(), data)
        }
        2 => {
            let mut hb = raw_header_edit(rng, &h);
            if rng.random_range(0..4) == 0 {
                mutate_bytes(rng, &mut hb, &[], 2);
            }
            st_join(&hb, data)
        }
        3 => {
            // The header length.
            let mut b = seed.to_vec();
            let v: u64 = *pick(
                rng,
                &[
                    0,
                    1,
                    7,
                    b.len() as u64,
                    b.len() as u64 - 8,
                    u64::MAX,
                    1 << 40,
                    100_000_001,
                ],
            );
            b[..8].copy_from_slice(&v.to_le_bytes());
            b
        }
        _ => {
            let mut b = seed.to_vec();
            // Keep byte edits near the header most of the time: the data is just numbers.
            if rng.random_range(0..3) > 0 {
                let n = 8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
                let mut head = b[..n.min(b.len())].to_vec();
                mutate_bytes(rng, &mut head, &[], 3);
                head.extend_from_slice(&b[n.min(b.len())..]);
                b = head;
            } else {
                mutate_bytes(rng, &mut b, &[], 3);
            }
            b
        }
    }
}

// ---------------------------------------------------------------------------------------
// Targets

/// What one case did, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The reader accepted the input.
    Ok,
    /// The reader returned an error naming the file.
    Error,
}

/// Every reader, by name.
pub const READERS: &[&str] = &[
    "idx-images",
    "idx-labels",
    "idx-dir",
    "cub-images",
    "cub-labels",
    "cub-split",
    "cub-classes",
    "folder",
    "image",
    "checkpoint",
    "checkpoint-model",
    "checkpoint-preprocess",
    "checkpoint-classes",
    "checkpoint-train",
    "checkpoint-progress",
    "torchvision",
];

/// A reader and its seeds; `case` writes one mutated input under its folder and reads it.
pub struct Target {
    pub name: &'static str,
    dir: tempfile::TempDir,
    seeds: Vec<Vec<u8>>,
    images: Vec<Vec<u8>>,
    /// For `torchvision`: the adapter and a network of the shipped model (`None` skips).
    net: Option<(&'static finegrain::Gpu, finegrain::train::Network)>,
}

fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("finegrain-fuzz")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::Builder::new()
        .prefix("finegrain-fuzz")
        .tempdir()
        .unwrap()
}

const CUB_CLASSES: &str = "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n3 003.Sooty\n";

fn cub_images_txt() -> String {
    (1..=6)
        .map(|i| format!("{i} {:03}.c/img_{i}.png\n", 1 + (i - 1) % 3))
        .collect()
}
fn cub_labels_txt() -> String {
    (1..=6)
        .map(|i| format!("{i} {}\n", 1 + (i - 1) % 3))
        .collect()
}
fn cub_split_txt() -> String {
    (1..=6).map(|i| format!("{i} {}\n", i % 2)).collect()
}

/// Opens `split` of the dataset at `root` and, if it opens, reads its first samples.
fn open_and_load(root: &Path, rng: &mut StdRng) -> finegrain::Result<()> {
    let mut opts = DataOptions::default();
    match rng.random_range(0..4) {
        0 => {}
        1 => opts.size = Some(rng.random_range(1..24)),
        2 => {
            opts.size = Some(8);
            opts.channels = Some(*pick(rng, &[1, 3]));
            opts.test_fraction = *pick(rng, &[0.0, 0.5, 0.9]);
        }
        _ => opts.size = Some(16),
    }
    let split = if rng.random() {
        Split::Train
    } else {
        Split::Test
    };
    let _ = data::dataset_kind(root);
    let ds = data::open_dataset(root, split, &opts)?;
    let info = ds.info().clone();
    assert_eq!(info.class_names.len(), info.num_classes);
    let n = ds.len().min(3);
    if n > 0 {
        let mut out = vec![0f32; info.sample_len()];
        for i in 0..n {
            assert!(
                (ds.label(i) as usize) < info.num_classes,
                "label out of range"
            );
            let _ = ds.describe(i);
            ds.load(i, rng.random(), rng, &mut out)?;
        }
    }
    Ok(())
}

impl Target {
    /// The target called `name`; `torchvision` needs the test adapter (`gpu`) and is given a
    /// network of the shipped model.
    pub fn new(name: &str, gpu: Option<&'static finegrain::Gpu>) -> Target {
        let name: &'static str = READERS
            .iter()
            .find(|r| **r == name)
            .unwrap_or_else(|| panic!("unknown reader `{name}`; readers: {READERS:?}"));
        let images = image_seeds();
        let mut seeds = Vec::new();
        let mut net = None;
        match name {
            "idx-images" | "idx-dir" => {
                let a = idx_images_seed(3, 4, 5, 1);
                let b = idx_images_seed(2, 28, 28, 7);
                let c = idx_images_seed(0, 1, 1, 0);
                seeds = vec![gzip(&a), a, b.clone(), gzip(&b), c];
            }
            "idx-labels" => {
                let a = idx_labels_seed(3, 3);
                let b = idx_labels_seed(40, 10);
                seeds = vec![gzip(&a), a, b.clone(), gzip(&b)];
            }
            "checkpoint"
            | "checkpoint-model"
            | "checkpoint-preprocess"
            | "checkpoint-classes"
            | "checkpoint-train"
            | "checkpoint-progress" => {
                let full = std::fs::read(SHIPPED).unwrap();
                let (meta, t) = read_st(&full);
                // A slim copy: `Checkpoint::open` checks only the stem and head tensors.
                let slim: Tensors = t
                    .iter()
                    .filter(|e| {
                        matches!(e.0.as_str(), "conv1.weight" | "head.weight" | "head.bias")
                    })
                    .cloned()
                    .collect();
                seeds = vec![write_st(Some(&meta), &slim), full];
            }
            "torchvision" => {
                let full = std::fs::read(SHIPPED).unwrap();
                seeds = vec![finegrain::testing::torchvision_state_dict(&full)];
                if let Some(g) = gpu {
                    let ck = Checkpoint::open(Path::new(SHIPPED)).unwrap();
                    let method = finegrain::train::MethodConfig {
                        diversify: None,
                        loss: finegrain::method::loss::LossKind::CrossEntropy,
                        accumulate: false,
                    };
                    let n = finegrain::train::Network::new(g, &ck.model, 1, &method, 0).unwrap();
                    net = Some((g, n));
                }
            }
            _ => {}
        }
        Target {
            name,
            dir: scratch(),
            seeds,
            images,
            net,
        }
    }

    /// Whether this target can run here (`torchvision` needs an adapter).
    pub fn available(&self) -> bool {
        self.name != "torchvision" || self.net.is_some()
    }

    /// The network and seed state dict of the `torchvision` target.
    pub fn torchvision_parts(&self) -> (&finegrain::train::Network, &[u8]) {
        (&self.net.as_ref().expect("an adapter").1, &self.seeds[0])
    }

    fn others(&self) -> Vec<&[u8]> {
        self.seeds.iter().map(|s| s.as_slice()).collect()
    }

    /// A mutated IDX file: the decompressed payload edited (header fields to extremes, or
    /// bytes) and recompressed when the seed is gzipped, or the bytes as they are.
    fn idx_case(&self, rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
        let seed = pick(rng, seeds);
        let gz = seed.starts_with(&[0x1f, 0x8b]);
        let mut payload = if gz {
            gunzip(seed).unwrap()
        } else {
            seed.clone()
        };
        if !gz || rng.random_range(0..4) > 0 {
            if payload.len() >= 8 && rng.random_range(0..2) == 0 {
                // A header field (magic or a dimension) to an extreme.
                let fields = (payload.len().min(16)) / 4;
                let f = rng.random_range(0..fields);
                let v = if f == 0 {
                    *pick(
                        rng,
                        &[0x801u32, 0x803, 0x802, 0x804, 0x808, 0x8ff, 0x0c03, 0],
                    )
                } else {
                    *pick(rng, EXTREME_U32)
                };
                payload[4 * f..4 * f + 4].copy_from_slice(&v.to_be_bytes());
                if rng.random_range(0..3) == 0 {
                    mutate_bytes(rng, &mut payload, &[], 2);
                }
            } else {
                let others = self.others();
                mutate_bytes(rng, &mut payload, &others, 4);
            }
            if gz {
                let mut z = gzip(&payload);
                if rng.random_range(0..6) == 0 {
                    // And a damaged stream now and then.
                    mutate_bytes(rng, &mut z, &[], 2);
                }
                return z;
            }
            payload
        } else {
            let mut z = seed.clone();
            mutate_bytes(rng, &mut z, &[], 3);
            z
        }
    }

    /// Runs one case. `Err` is a failure (message says why); the path of what was read is
    /// what a reader's error must name.
    fn case(&mut self, rng: &mut StdRng) -> (PathBuf, finegrain::Result<()>) {
        let root = self.dir.path().to_path_buf();
        match self.name {
            "idx-images" | "idx-labels" => {
                let b = self.idx_case(rng, &self.seeds);
                let p = root.join(if rng.random() { "x-idx.gz" } else { "x-idx" });
                std::fs::write(&p, &b).unwrap();
                let r = if self.name == "idx-images" {
                    data::read_idx_images(&p).map(|im| {
                        assert_eq!(im.pixels.len(), im.count * im.rows * im.cols);
                        if im.count > 0 {
                            let _ = im.image(im.count - 1);
                        }
                    })
                } else {
                    data::read_idx_labels(&p).map(|_| ())
                };
                (p, r)
            }
            "idx-dir" => {
                let d = root.join(format!("case-{}", rng.random::<u32>()));
                std::fs::create_dir(&d).unwrap();
                let labels = [gzip(&idx_labels_seed(3, 3)), idx_labels_seed(2, 10)];
                let which = rng.random_range(0..5);
                for (split, n_img, n_lab) in [("train", 3, 3), ("t10k", 2, 2)] {
                    let mut im = if n_img == 3 {
                        gzip(&idx_images_seed(3, 4, 5, 1))
                    } else {
                        idx_images_seed(2, 4, 5, 3)
                    };
                    let mut lb = if n_lab == 3 {
                        labels[0].clone()
                    } else {
                        labels[1].clone()
                    };
                    if which == 0 || (which == 1 && split == "train") {
                        im = self.idx_case(rng, &self.seeds);
                    }
                    if which == 2 || (which == 3 && split == "t10k") {
                        lb = self.idx_case(rng, &labels);
                    }
                    let gz = |b: &[u8]| {
                        if b.starts_with(&[0x1f, 0x8b]) {
                            ".gz"
                        } else {
                            ""
                        }
                    };
                    std::fs::write(d.join(format!("{split}-images-idx3-ubyte{}", gz(&im))), &im)
                        .unwrap();
                    std::fs::write(d.join(format!("{split}-labels-idx1-ubyte{}", gz(&lb))), &lb)
                        .unwrap();
                }
                if which == 4 || rng.random_range(0..4) == 0 {
                    let names = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n";
                    std::fs::write(d.join("classes.txt"), mutate_text(rng, names)).unwrap();
                }
                let r = open_and_load(&d, rng);
                discard(&d);
                (d, r)
            }
            "cub-images" | "cub-labels" | "cub-split" | "cub-classes" => {
                let d = root.join(format!("case-{}", rng.random::<u32>()));
                let base = if rng.random_range(0..4) == 0 {
                    d.join("CUB_200_2011")
                } else {
                    d.clone()
                };
                for c in 1..=3 {
                    std::fs::create_dir_all(base.join(format!("images/{c:03}.c"))).unwrap();
                }
                for i in 1..=6 {
                    let img = if rng.random_range(0..8) == 0 {
                        mutate_image(rng, &self.images)
                    } else {
                        self.images[i % self.images.len()].clone()
                    };
                    let c = 1 + (i - 1) % 3;
                    std::fs::write(base.join(format!("images/{c:03}.c/img_{i}.png")), img).unwrap();
                }
                let files = [
                    ("images.txt", cub_images_txt(), "cub-images"),
                    ("image_class_labels.txt", cub_labels_txt(), "cub-labels"),
                    ("train_test_split.txt", cub_split_txt(), "cub-split"),
                    ("classes.txt", CUB_CLASSES.to_string(), "cub-classes"),
                ];
                for (file, text, reader) in files {
                    let b = if reader == self.name || rng.random_range(0..10) == 0 {
                        mutate_text(rng, &text)
                    } else {
                        text.into_bytes()
                    };
                    if rng.random_range(0..40) > 0 || reader != self.name {
                        std::fs::write(base.join(file), b).unwrap();
                    }
                }
                if rng.random_range(0..20) == 0 {
                    // An index file that is a folder.
                    let f = *pick(rng, &["image_class_labels.txt", "classes.txt"]);
                    let _ = std::fs::remove_file(base.join(f));
                    std::fs::create_dir(base.join(f)).unwrap();
                }
                let r = open_and_load(&d, rng);
                discard(&d);
                (d, r)
            }
            "folder" => {
                let d = root.join(format!("case-{}", rng.random::<u32>()));
                std::fs::create_dir(&d).unwrap();
                self.folder_tree(rng, &d);
                // Inference's walk too; no image at all is an error naming the inputs.
                let r = open_and_load(&d, rng)
                    .and_then(|()| data::image_files(std::slice::from_ref(&d)).map(|_| ()));
                discard(&d);
                (d, r)
            }
            "image" => {
                let b = mutate_image(rng, &self.images);
                let p = root.join(*pick(rng, &["x.png", "x.jpg", "x"]));
                std::fs::write(&p, &b).unwrap();
                let r = data::read_image(&p, *pick(rng, &[1, 3])).map(|(px, w, h)| {
                    assert!(w > 0 && h > 0);
                    assert_eq!(px.len() % (w * h), 0);
                });
                (p, r)
            }
            "torchvision" => {
                let b = mutate_safetensors(rng, &self.seeds[0], None);
                let p = root.join("resnet.safetensors");
                std::fs::write(&p, &b).unwrap();
                let (g, net) = self.net.as_ref().expect("available() was checked");
                let r = checkpoint::load_torchvision(g, net, &p).map(|_| ());
                (p, r)
            }
            ck => {
                let focus = match ck {
                    "checkpoint-model" => Some(checkpoint::MODEL_KEY),
                    "checkpoint-preprocess" => Some(checkpoint::PREPROCESS_KEY),
                    "checkpoint-classes" => Some(checkpoint::CLASSES_KEY),
                    "checkpoint-train" => Some(checkpoint::TRAIN_KEY),
                    "checkpoint-progress" => Some(checkpoint::PROGRESS_KEY),
                    _ => None,
                };
                let seed = if rng.random_range(0..10) == 0 {
                    &self.seeds[1]
                } else {
                    &self.seeds[0]
                };
                let b = mutate_safetensors(rng, seed, focus);
                let p = root.join("ck.safetensors");
                std::fs::write(&p, &b).unwrap();
                let r = Checkpoint::open(&p).map(|c| {
                    let _ = c.preprocessing();
                    assert_eq!(c.class_names().len(), c.model.num_classes);
                    let _ = c.train_config();
                    let _ = c.progress();
                    let _ = c.model.feature_size();
                });
                (p, r)
            }
        }
    }

    /// A random class-folder tree under `d`: maybe pre-split, odd class and file names,
    /// valid, damaged and empty images, other files, link loops and dangling links.
    fn folder_tree(&self, rng: &mut StdRng, d: &Path) {
        let presplit = rng.random_range(0..3) == 0;
        let tops: Vec<PathBuf> = if presplit {
            vec![d.join("train"), d.join("test")]
        } else {
            vec![d.to_path_buf()]
        };
        let class_names = [
            "cat", "dog", "b b", ".hidden", "ü", "..x", "train", "test", "z", "cat.png",
        ];
        let file_names = [
            "a.png",
            "b.JPG",
            "c.jpeg",
            "n.txt",
            ".h.png",
            "sub/inner.png",
            "sub/.deep/x.jpg",
            "noext",
            "d.Png",
        ];
        for top in &tops {
            std::fs::create_dir_all(top).unwrap();
            let k = rng.random_range(0..4);
            for _ in 0..k {
                let c = top.join(pick(rng, &class_names));
                std::fs::create_dir_all(&c).unwrap();
                let files = rng.random_range(0..4);
                for _ in 0..files {
                    let f = c.join(pick(rng, &file_names));
                    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
                    let body = match rng.random_range(0..6) {
                        0 => Vec::new(),
                        1 | 2 => mutate_image(rng, &self.images),
                        _ => pick(rng, &self.images).clone(),
                    };
                    let _ = std::fs::write(&f, body);
                }
                #[cfg(unix)]
                if rng.random_range(0..12) == 0 {
                    let (target, name) = *pick(
                        rng,
                        &[
                            ("..", "loop"),
                            ("missing.png", "dangling.png"),
                            (".", "self"),
                        ],
                    );
                    let _ = std::os::unix::fs::symlink(target, c.join(name));
                }
            }
            if rng.random_range(0..8) == 0 {
                let _ = std::fs::write(top.join("stray.png"), pick(rng, &self.images));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running

/// A failed case: which, and why.
#[derive(Debug)]
pub struct Failure {
    pub reader: &'static str,
    pub seed: u64,
    pub case: u64,
    pub why: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} case {} of seed {}: {}\n  replay: cargo run --release --example fuzz -- \
             --reader {} --seed {} --first {} --cases 1",
            self.reader, self.case, self.seed, self.why, self.reader, self.seed, self.case
        )
    }
}

/// Figures of a run over one reader.
#[derive(Debug, Default)]
pub struct Stats {
    pub cases: u64,
    pub ok: u64,
    pub errors: u64,
    pub failures: Vec<Failure>,
    pub slowest: Duration,
    pub peak_alloc: usize,
    pub elapsed: Duration,
}

/// The generator of case `case` of a run with `seed`.
pub fn case_rng(seed: u64, reader: &str, case: u64) -> StdRng {
    let mut h = seed ^ 0x5151_f00d;
    for b in reader.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    StdRng::seed_from_u64(h.wrapping_add(case.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
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

/// Removes a case's dataset folder; with `FINEGRAIN_FUZZ_KEEP=DIR` (for replaying one case)
/// it is first copied into DIR, so the input that failed can be looked at and kept.
fn discard(d: &Path) {
    if let Ok(keep) = std::env::var("FINEGRAIN_FUZZ_KEEP") {
        for e in walkdir::WalkDir::new(d).into_iter().flatten() {
            if let Ok(rel) = e.path().strip_prefix(d) {
                let to = Path::new(&keep).join(rel);
                if e.file_type().is_dir() {
                    let _ = std::fs::create_dir_all(&to);
                } else {
                    let _ = std::fs::copy(e.path(), &to);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(d);
}

/// Silences the default panic message while fuzzing (panics are reported as failures).
/// `FINEGRAIN_FUZZ_VERBOSE=1` keeps the default hook (message and backtrace of each panic).
pub fn quiet_panics() {
    if std::env::var("FINEGRAIN_FUZZ_VERBOSE").is_ok_and(|v| v == "1") {
        return;
    }
    std::panic::set_hook(Box::new(|_| {}));
}

/// A case still running after this is a hang: the watchdog prints it and ends the process.
pub const HANG: Duration = Duration::from_secs(60);

/// The case in progress (its description and start), for the watchdog.
static CURRENT: std::sync::Mutex<Option<(String, Instant)>> = std::sync::Mutex::new(None);

/// Starts (once) a thread that ends the process, naming the case, when one runs past [`HANG`].
fn watchdog() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_secs(1));
            let cur = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((what, t)) = &*cur {
                if t.elapsed() > HANG {
                    eprintln!("HANG: {what} has run for {:?}", t.elapsed());
                    std::process::exit(3);
                }
            }
        });
    });
}

/// Runs cases `first..first + cases` of `target` with `seed`; stops early after
/// `max_failures` failures.
pub fn run(target: &mut Target, seed: u64, first: u64, cases: u64, max_failures: usize) -> Stats {
    let mut s = Stats::default();
    let t0 = Instant::now();
    watchdog();
    for case in first..first + cases {
        let mut rng = case_rng(seed, target.name, case);
        *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some((
            format!(
                "{} case {case} of seed {seed} (replay: cargo run --release --example fuzz -- \
                 --reader {} --seed {seed} --first {case} --cases 1)",
                target.name, target.name
            ),
            Instant::now(),
        ));
        let live0 = LIVE.load(Ordering::Relaxed);
        PEAK.store(live0, Ordering::Relaxed);
        let start = Instant::now();
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| target.case(&mut rng)));
        let took = start.elapsed();
        *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(live0);
        s.cases += 1;
        s.slowest = s.slowest.max(took);
        s.peak_alloc = s.peak_alloc.max(peak);
        let fail = |why: String| Failure {
            reader: target.name,
            seed,
            case,
            why,
        };
        let mut why = None;
        match r {
            Err(p) => why = Some(format!("panicked: {}", panic_message(&*p))),
            Ok((_, Ok(()))) => s.ok += 1,
            Ok((path, Err(e))) => {
                let msg = e.to_string();
                if msg.contains(&path.display().to_string()) {
                    s.errors += 1;
                } else {
                    why = Some(format!("error does not name {}: {msg}", path.display()));
                }
            }
        }
        if why.is_none() && took > SLOW {
            why = Some(format!("took {took:?} (limit {SLOW:?})"));
        }
        if why.is_none() && peak > ALLOC_CAP {
            why = Some(format!(
                "allocated {} MiB at once (limit {} MiB)",
                peak >> 20,
                ALLOC_CAP >> 20
            ));
        }
        if let Some(w) = why {
            s.failures.push(fail(w));
            if s.failures.len() >= max_failures {
                break;
            }
        }
    }
    s.elapsed = t0.elapsed();
    s
}
