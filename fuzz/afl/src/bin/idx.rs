//! IDX images and labels (raw or gzipped: the reader looks at the bytes, not the name).
fn main() {
    let dir = finegrain_afl::scratch();
    let (images, labels) = (dir.join("x-idx3-ubyte"), dir.join("x-idx1-ubyte"));
    afl::fuzz!(|data: &[u8]| {
        finegrain_afl::check(&images, data, finegrain::data::read_idx_images);
        finegrain_afl::check(&labels, data, finegrain::data::read_idx_labels);
    });
}
