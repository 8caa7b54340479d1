//! `gemm`: C = alpha * op(A) x op(B) + beta * C with strides (see `shaders/gemm.wgsl`).

use super::{CoopTile, GEMM, GEMM_COOP16, GEMM_COOP8, GEMM_F16};
use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, Gpu, Size, Tensor};
use crate::method::dims;

/// Parameter block of `shaders/gemm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GemmParams {
    pub(crate) m: u32,
    pub(crate) n: u32,
    pub(crate) k: u32,
    pub(crate) a_rs: u32,
    pub(crate) a_cs: u32,
    pub(crate) b_rs: u32,
    pub(crate) b_cs: u32,
    pub(crate) c_rs: u32,
    pub(crate) alpha: f32,
    pub(crate) beta: f32,
    pub(crate) a_off: u32,
    pub(crate) b_off: u32,
    pub(crate) c_off: u32,
    pub(crate) a_bs: u32,
    pub(crate) b_bs: u32,
    pub(crate) c_bs: u32,
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
/// beta 0, the kernel chosen from the operands and the adapter).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmOptions {
    /// A is stored (K, M) row-major and used transposed.
    pub trans_a: bool,
    /// B is stored (N, K) row-major and used transposed.
    pub trans_b: bool,
    pub alpha: f32,
    /// 0 overwrites C; 1 accumulates into C.
    pub beta: f32,
    pub kernel: GemmKernel,
}

impl Default for GemmOptions {
    fn default() -> Self {
        GemmOptions {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
            kernel: GemmKernel::Auto,
        }
    }
}

/// The GEMM kernels. C is f32 in all of them; A and B are f32 for [`GemmKernel::F32`] and
/// f16 for the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernel {
    /// From the operands' type: f32 operands take [`GemmKernel::F32`]; f16 operands the
    /// largest cooperative-matrix tile the adapter has, else [`GemmKernel::F16Storage`].
    Auto,
    /// `shaders/gemm.wgsl`: f32 storage and arithmetic, 64 x 64 tiles.
    F32,
    /// `gemm.wgsl` over f16 storage, widened on load: f32 arithmetic, 64 x 64 tiles; for
    /// adapters with shader-f16 and no cooperative matrices.
    F16Storage,
    /// `shaders/coop_tiles.wgsl` + `gemm_coop.wgsl` with 8 x 8 cooperative matrices (f16 x f16 -> f32), 32 x 32
    /// workgroup tiles.
    Coop8,
    /// The same with 16 x 16 cooperative matrices, 64 x 64 workgroup tiles.
    Coop16,
}

impl GemmKernel {
    /// Every kernel but `Auto`, f32 first.
    pub const ALL: [GemmKernel; 4] = [
        GemmKernel::F32,
        GemmKernel::F16Storage,
        GemmKernel::Coop8,
        GemmKernel::Coop16,
    ];

    /// The element type of A and B.
    pub fn operand_dtype(self) -> DType {
        match self {
            GemmKernel::F32 | GemmKernel::Auto => DType::F32,
            _ => DType::F16,
        }
    }

    /// The cooperative-matrix tile of the coop kernels.
    pub fn coop_tile(self) -> Option<CoopTile> {
        match self {
            GemmKernel::Coop8 => Some(CoopTile::T8),
            GemmKernel::Coop16 => Some(CoopTile::T16),
            _ => None,
        }
    }

    /// Whether `gpu` can run this kernel.
    pub fn available(self, gpu: &Gpu) -> bool {
        match (self, self.coop_tile()) {
            (_, Some(t)) => t.available(gpu),
            (GemmKernel::F16Storage, _) => gpu.features.shader_f16,
            _ => true,
        }
    }

    /// The kernel `Auto` stands for, given A and B of type `operands`.
    pub fn resolve(self, gpu: &Gpu, operands: DType) -> GemmKernel {
        match (self, operands) {
            (GemmKernel::Auto, DType::F16) => match CoopTile::best(gpu) {
                Some(CoopTile::T16) => GemmKernel::Coop16,
                Some(CoopTile::T8) => GemmKernel::Coop8,
                None => GemmKernel::F16Storage,
            },
            (GemmKernel::Auto, _) => GemmKernel::F32,
            (k, _) => k,
        }
    }

    /// Side of the workgroup's output tile.
    pub fn tile(self) -> u32 {
        self.coop_tile().map_or(64, CoopTile::workgroup_tile)
    }

    /// What the benchmark tables print: the kernel and its tiles.
    pub fn describe(self) -> &'static str {
        match self {
            GemmKernel::Auto => "auto",
            GemmKernel::F32 => "f32, 64x64 tile",
            GemmKernel::F16Storage => "f16 storage, f32 math, 64x64 tile",
            GemmKernel::Coop8 => "coop-matrix 8x8 f16->f32, 32x32 tile",
            GemmKernel::Coop16 => "coop-matrix 16x16 f16->f32, 64x64 tile",
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
/// `dtype` in at least 2 dimensions, every size at least 1 and within u32 indexing.
fn matrix(role: &str, t: &Tensor, dtype: DType) -> Result<(usize, usize)> {
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
    t.check("gemm", role, dtype, Size::Len(t.numel()))?;
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
        // Auto takes the operands' type; a named kernel requires its own.
        let operands = match o.kernel {
            GemmKernel::Auto => t.a.dtype,
            k => k.operand_dtype(),
        };
        let (ar, ac) = matrix("A", t.a, operands)?;
        let (m, k) = if o.trans_a { (ac, ar) } else { (ar, ac) };
        let (br, bc) = matrix("B", t.b, operands)?;
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
        if matrix("C", t.c, DType::F32)? != (m, n) {
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

    pub(crate) fn params(&self) -> GemmParams {
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
///
/// The kernel is `o.kernel`, `Auto` resolved by [`GemmKernel::resolve`]; error
/// ([`Error::Invalid`]) when the adapter cannot run the one asked for.
pub fn gemm(gpu: &Gpu, t: &Gemm, o: &GemmOptions) -> Result<Dispatch> {
    let p = GemmSpec::of(t, o)?.params();
    let kernel = o.kernel.resolve(gpu, t.a.dtype);
    if !kernel.available(gpu) {
        return Err(Error::invalid_in(
            "gemm kernel",
            format!("{kernel:?}"),
            format!(
                "adapter {} cannot run it (shader-f16: {}, cooperative matrices f16->f32: {:?}, {})",
                gpu.info.name,
                gpu.features.shader_f16,
                gpu.features.coop_f16_f32,
                gpu.subgroup_sizes()
            ),
        ));
    }
    let tile = kernel.tile();
    let wg = [p.n.div_ceil(tile), p.m.div_ceil(tile), 1];
    let tensors = [t.a, t.b, t.c];
    match kernel {
        GemmKernel::F32 | GemmKernel::Auto => gpu.dispatch(&GEMM, "gemm", &p, &tensors, wg),
        GemmKernel::F16Storage => gpu.dispatch(&GEMM_F16, "gemm", &p, &tensors, wg),
        GemmKernel::Coop8 | GemmKernel::Coop16 => {
            let shader = if kernel == GemmKernel::Coop8 {
                &GEMM_COOP8
            } else {
                &GEMM_COOP16
            };
            let constants = CoopTile::constants(gpu);
            gpu.dispatch_with(shader, "coop_gemm", &constants, &p, &tensors, wg)
        }
    }
}
