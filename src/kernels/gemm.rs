//! `gemm`: C = alpha * op(A) x op(B) + beta * C with strides (see `shaders/gemm.wgsl`).

use super::GEMM;
use crate::error::Result;
use crate::gpu::{DType, Dispatch, Gpu, Size, Tensor};

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

/// A matrix operand: a tensor viewed as rows x cols, optionally transposed.
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

/// Build the dispatch for C = alpha * op(A) x op(B) + beta * C. Overwrites C (beta = 0) or
/// accumulates into it (beta = 1).
pub fn gemm(gpu: &Gpu, spec: &GemmSpec, a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Dispatch> {
    a.check("gemm", "A", DType::F32, Size::AtLeast(spec.m * spec.k))?;
    b.check("gemm", "B", DType::F32, Size::AtLeast(spec.k * spec.n))?;
    c.check("gemm", "C", DType::F32, Size::AtLeast(spec.m * spec.n))?;
    gemm_raw(gpu, &spec.params(), 1, a, b, c)
}

/// Build a dispatch from raw parameters (strides, offsets, batch count); the caller is
/// responsible for the bounds.
pub fn gemm_raw(
    gpu: &Gpu,
    p: &GemmParams,
    batch: u32,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
) -> Result<Dispatch> {
    let wg = [p.n.div_ceil(64), p.m.div_ceil(64), batch];
    gpu.dispatch(&GEMM, "gemm", p, &[a, b, c], wg)
}
