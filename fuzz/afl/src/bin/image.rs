//! Image decoding through finegrain's limits (JPEG and PNG), as grayscale and RGB.
//! `fuzz_nohook!`: read_image catches a decoder's own panics and returns an error naming
//! the file (what a user gets), so only what escapes it is a crash here.
fn main() {
    let dir = finegrain_afl::scratch();
    let path = dir.join("x.img");
    afl::fuzz_nohook!(|data: &[u8]| {
        finegrain_afl::check(&path, data, |p| finegrain::data::read_image(p, 1));
        finegrain_afl::check(&path, data, |p| finegrain::data::read_image(p, 3));
    });
}
