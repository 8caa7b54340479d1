//! Checkpoint files: the safetensors header and every metadata check of `Checkpoint::open`.
fn main() {
    let dir = finegrain_afl::scratch();
    let path = dir.join("ck.safetensors");
    afl::fuzz!(|data: &[u8]| {
        finegrain_afl::check(&path, data, finegrain::checkpoint::Checkpoint::open);
    });
}
