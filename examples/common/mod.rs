//! What the examples add to the library's errors. The library's messages say what went wrong
//! and which setting or file it concerns; the commands that fix it belong to the command
//! line, so they are here.

/// Print `e` as `error: ...`, followed by the commands that fix it where there are any.
pub fn report(e: &finegrain::Error) {
    eprintln!("error: {e}");
    if let Some(a) = advice(e) {
        eprintln!("{a}");
    }
}

/// The commands that fix `e`, indented, or `None`.
pub fn advice(e: &finegrain::Error) -> Option<&'static str> {
    match e {
        finegrain::Error::NoAdapter { .. } | finegrain::Error::SoftwareGl { .. } => Some(
            "  Without a GPU, install Mesa's software Vulkan driver (lavapipe): `apt-get install \
             mesa-vulkan-drivers`;\n  on Debian bookworm, `sudo bash .ci/install-lavapipe.sh` \
             takes Mesa 25 from bookworm-backports, several times faster.",
        ),
        _ => None,
    }
}
