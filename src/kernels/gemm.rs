//! `gemm`: C = alpha * op(A) x op(B) + beta * C with strides (see `shaders/gemm.wgsl`).

use super::GEMM;
use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, Gpu, Size, Tensor};
use crate::method::dims;

/// Parameter block of `shaders/gemm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GemmParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub a_rs: u32,
    pub a_cs: u32,
    pub b_rs: u32,
    pub b_cs: u32,
    pub c_rs: u32,
    pub alpha: f32,
    pub beta: f32,
    pub a_off: u32,
    pub b_off: u32,
    pub c_off: u32,
    pub a_bs: u32,
    pub b_bs: u32,
    pub c_bs: u32,
}

/// Tensors of [`gemm`], each viewed as a row-major matrix `(rows, cols)` with `cols` its
/// last dimension (so `(N, H, W, D)` is `(N * H * W, D)`): `a` (M, K), or (K, M) used
/// transposed; `b` (K, N), or (N, K) used transposed; `c` (M, N).
pub struct Gemm<'a> {
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub c: &'a Tensor,
}

/// How [`gemm`] combines its operands. [`Default`]: `C = A x B` (no transposes, alpha 1,
/// beta 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmOptions {
    /// A is stored (K, M) row-major and used transposed.
    pub trans_a: bool,
    /// B is stored (N, K) row-major and used transposed.
    pub trans_b: bool,
    pub alpha: f32,
    /// 0 overwrites C; 1 accumulates into C.
    pub beta: f32,
}

impl Default for GemmOptions {
    fn default() -> Self {
        GemmOptions {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
        }
    }
}

/// The sizes of one GEMM and how it combines them ([`GemmSpec::of`] reads them from the
/// tensors).
#[derive(Clone, Copy, Debug)]
pub struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// A is stored (K, M) row-major and used transposed.
    pub trans_a: bool,
    /// B is stored (N, K) row-major and used transposed.
    pub trans_b: bool,
    pub alpha: f32,
    /// 0 overwrites C; 1 accumulates into C.
    pub beta: f32,
}

/// `(rows, cols)` of the matrix view of `t` (its `role` in the GEMM): error unless it holds
/// f32 in at least 2 dimensions, every size at least 1 and within u32 indexing.
fn matrix(role: &str, t: &Tensor) -> Result<(usize, usize)> {
    let cols = match t.shape.as_slice() {
        [.., _, last] => *last,
        _ => {
            return Err(Error::ShapeMismatch {
                context: format!("gemm {role}"),
                tensor: t.label.clone(),
                expected: "at least 2 dimensions (rows, ..., cols)".into(),
                found: t.shape.clone(),
                dtype: format!("{:?}", t.dtype),
            })
        }
    };
    t.check("gemm", role, DType::F32, Size::Len(t.numel()))?;
    let rows = t.numel().checked_div(cols).unwrap_or(0);
    dims(
        &format!("gemm {role} (`{}`)", t.label),
        &[("rows", rows), ("cols", cols)],
    )?;
    Ok((rows, cols))
}

impl GemmSpec {
    /// Plain C[m, n] = A[m, k] x B[k, n].
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        GemmSpec {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
        }
    }

    /// M, N, K from the tensors of `t` (M and K from `a`, N from `b`), with `o`; error
    /// unless `b` has K and `c` is (M, N).
    pub fn of(t: &Gemm, o: &GemmOptions) -> Result<GemmSpec> {
        let (ar, ac) = matrix("A", t.a)?;
        let (m, k) = if o.trans_a { (ac, ar) } else { (ar, ac) };
        let (br, bc) = matrix("B", t.b)?;
        let (bk, n) = if o.trans_b { (bc, br) } else { (br, bc) };
        let want_b = if o.trans_b { [n, k] } else { [k, n] };
        if bk != k {
            return Err(Error::ShapeMismatch {
                context: "gemm B".into(),
                tensor: t.b.label.clone(),
                expected: format!("{} x {} (K = {k} from A)", want_b[0], want_b[1]),
                found: t.b.shape.clone(),
                dtype: format!("{:?}", t.b.dtype),
            });
        }
        if matrix("C", t.c)? != (m, n) {
            return Err(Error::ShapeMismatch {
                context: "gemm C".into(),
                tensor: t.c.label.clone(),
                expected: format!("{m} x {n}"),
                found: t.c.shape.clone(),
                dtype: format!("{:?}", t.c.dtype),
            });
        }
        Ok(GemmSpec {
            m,
            n,
            k,
            trans_a: o.trans_a,
            trans_b: o.trans_b,
            alpha: o.alpha,
            beta: o.beta,
        })
    }

    pub fn params(&self) -> GemmParams {
        let (m, n, k) = (self.m as u32, self.n as u32, self.k as u32);
        let (a_rs, a_cs) = if self.trans_a { (1, m) } else { (k, 1) };
        let (b_rs, b_cs) = if self.trans_b { (1, k) } else { (n, 1) };
        GemmParams {
            m,
            n,
            k,
            a_rs,
            a_cs,
            b_rs,
            b_cs,
            c_rs: n,
            alpha: self.alpha,
            beta: self.beta,
            ..Default::default()
        }
    }

    /// GFLOP of one run.
    pub fn gflop(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64 * 1e-9
    }
}

/// Build the dispatch for C = alpha * op(A) x op(B) + beta * C, the sizes read from the
/// tensors ([`GemmSpec::of`]). Overwrites C (beta = 0) or accumulates into it (beta = 1).
pub fn gemm(gpu: &Gpu, t: &Gemm, o: &GemmOptions) -> Result<Dispatch> {
    let p = GemmSpec::of(t, o)?.params();
    let wg = [p.n.div_ceil(64), p.m.div_ceil(64), 1];
    gpu.dispatch(&GEMM, "gemm", &p, &[t.a, t.b, t.c], wg)
}
