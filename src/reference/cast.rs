//! Twins of `shaders/cast.wgsl` (f32 -> f16 and f16 -> f32).

/// `x * scale` rounded to the nearest f16 (ties to even), magnitudes that round past 65504
/// as infinities of their sign, NaN as NaN; returned as the f32 values the f16s hold.
pub fn cast_values(x: &[f32], scale: f32) -> Vec<f32> {
    x.iter()
        .map(|&v| half::f16::from_f32(v * scale).to_f32())
        .collect()
}

/// The two f16 values nearest `v` (below and above; the same twice when `v` is one, is
/// not finite, or rounds to an infinity), as f32: WGSL lets a conversion round to either.
pub fn f16_neighbours(v: f32) -> (f32, f32) {
    let h = half::f16::from_f32(v);
    let hv = h.to_f32();
    if hv == v || !v.is_finite() || !hv.is_finite() {
        return (hv, hv);
    }
    // The f16 on v's other side: one step of magnitude (the bit pattern of a sign and
    // magnitude format) toward zero when rounding went up in magnitude, else away.
    let bits = h.to_bits();
    let other_bits = if hv.abs() > v.abs() {
        bits - 1
    } else {
        bits + 1
    };
    let other = half::f16::from_bits(other_bits).to_f32();
    (hv.min(other), hv.max(other))
}
