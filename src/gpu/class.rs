//! What the launchers choose per adapter: the convolution kernel family, the batch-norm
//! sizing, and the two together as the adapter class that buffer sizes depend on.
//! [`Gpu::new`] resolves them once ([`Gpu::class`]).

use super::Gpu;
use crate::error::{Error, Result};

/// The family of the convolution kernels (`kernels::conv2d`'s f32 and f16-storage passes).
/// Every family computes the same results (within f32 rounding) for every shape; only speed
/// differs. [`Gpu::new`] picks one for its adapter ([`Gpu::kernels`]) unless
/// [`GpuOptions::kernels`](super::GpuOptions::kernels) names one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFamily {
    /// 64 x 64 output tiles, 16 x 16 threads, 4 x 4 per thread, reduction tiles of 16 through
    /// workgroup memory, and a split-K weight gradient: the GPU kernels.
    Tiled,
    /// No workgroup memory: 64 lanes along the large GEMM dimension, blocks of 8 channels of
    /// the small one read at workgroup-uniform addresses. For CPU (SIMD) adapters such as
    /// lavapipe, where it is several times faster than `Tiled`; what they get when their
    /// subgroups are not 8 wide.
    Broadcast,
    /// `Broadcast`'s layout with blocks of 16 channels, each lane of an 8-wide subgroup
    /// loading two of them and `subgroupBroadcast` sharing them (`shaders/conv2d_subgroup.wgsl`):
    /// 3 loads per multiply-add step instead of 17. For CPU adapters with 8-wide subgroups
    /// (lavapipe on x86-64), where it is several times faster than `Broadcast`. An error
    /// elsewhere.
    Subgroup,
}

impl KernelFamily {
    /// What an adapter gets unless asked: `Tiled` on GPUs; on CPU adapters `Subgroup` where
    /// the subgroups are 8 wide (`subgroups_of_8`), else `Broadcast`.
    pub fn auto(cpu: bool, subgroups_of_8: bool) -> Self {
        match (cpu, subgroups_of_8) {
            (false, _) => KernelFamily::Tiled,
            (true, true) => KernelFamily::Subgroup,
            (true, false) => KernelFamily::Broadcast,
        }
    }

    /// Parse `auto` (`None`: [`KernelFamily::auto`]), `tiled`, `broadcast` or `subgroup`,
    /// in any case; `what` names the flag or variable in errors.
    pub fn parse(what: &'static str, v: &str) -> Result<Option<Self>> {
        match v.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(None),
            "tiled" => Ok(Some(KernelFamily::Tiled)),
            "broadcast" => Ok(Some(KernelFamily::Broadcast)),
            "subgroup" => Ok(Some(KernelFamily::Subgroup)),
            other => Err(Error::invalid(
                what,
                format!("`{other}` is not one of auto, tiled, broadcast, subgroup"),
            )),
        }
    }

    /// Error unless `gpu` can run this family (`Subgroup` needs 8-wide subgroups).
    pub fn check(self, gpu: &Gpu) -> Result<()> {
        if self == KernelFamily::Subgroup && !gpu.subgroups_of_8() {
            return Err(Error::invalid(
                "kernel family",
                format!(
                    "the subgroup kernels need subgroups of exactly 8 invocations; {} has {}",
                    gpu.info.name,
                    gpu.subgroup_sizes()
                ),
            ));
        }
        Ok(())
    }
}

/// How the batch-norm kernels cut their work: many small pieces on GPUs, a few large ones on
/// CPU adapters (`kernels::batchnorm` has the numbers). [`Gpu::new`] picks it from the
/// adapter's type; the results differ only in the order of the reductions' sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnSizing {
    /// About 2048 reduction workgroups of at least 32 rows, so that large GPUs fill up, and
    /// one thread per element in the element-wise kernels.
    Gpu,
    /// About 32 reduction workgroups of at least 1024 rows, and 64 rows per thread in the
    /// element-wise kernels. On lavapipe every workgroup's barriers are coroutine switches
    /// of all its invocations and every load of a per-channel value is a gather, so small
    /// pieces spend more time on those than on the data: this sizing makes the reductions
    /// about 4.5x and the element-wise kernels about 2.5x faster there.
    Cpu,
}

/// What the launchers choose on an adapter, and so what the sizes of their scratch buffers
/// depend on: the convolution kernel family (the split-K weight gradient's scratch) and the
/// batch-norm sizing (its reduction partials). [`Gpu::class`] is the device's; the memory plan
/// takes one, so that a network can be sized for an adapter without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterClass {
    pub kernels: KernelFamily,
    pub bn: BnSizing,
}

impl AdapterClass {
    /// A GPU: tiled convolutions, GPU batch-norm sizing.
    pub const GPU: AdapterClass = AdapterClass {
        kernels: KernelFamily::Tiled,
        bn: BnSizing::Gpu,
    };
    /// A CPU adapter with 8-wide subgroups (lavapipe on x86-64).
    pub const CPU_SUBGROUP: AdapterClass = AdapterClass {
        kernels: KernelFamily::Subgroup,
        bn: BnSizing::Cpu,
    };
    /// A CPU adapter without 8-wide subgroups.
    pub const CPU: AdapterClass = AdapterClass {
        kernels: KernelFamily::Broadcast,
        bn: BnSizing::Cpu,
    };
}

impl std::str::FromStr for AdapterClass {
    type Err = Error;

    /// `gpu`, `cpu-subgroup` or `cpu`.
    fn from_str(name: &str) -> Result<AdapterClass> {
        match name {
            "gpu" => Ok(AdapterClass::GPU),
            "cpu-subgroup" => Ok(AdapterClass::CPU_SUBGROUP),
            "cpu" => Ok(AdapterClass::CPU),
            other => Err(Error::invalid(
                "adapter class",
                format!("`{other}` is not one of gpu, cpu-subgroup, cpu"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_families_parse_and_resolve() {
        let k = |v| KernelFamily::parse("FINEGRAIN_KERNELS", v);
        assert_eq!(k("auto").unwrap(), None);
        assert_eq!(k("").unwrap(), None);
        assert_eq!(k(" Tiled").unwrap(), Some(KernelFamily::Tiled));
        assert_eq!(k("broadcast").unwrap(), Some(KernelFamily::Broadcast));
        assert_eq!(k("SUBGROUP").unwrap(), Some(KernelFamily::Subgroup));
        let e = k("cpu").unwrap_err();
        assert!(
            matches!(
                &e,
                Error::Invalid {
                    setting: "FINEGRAIN_KERNELS",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("auto, tiled, broadcast, subgroup"),
            "{e}"
        );
        assert_eq!(KernelFamily::auto(false, true), KernelFamily::Tiled);
        assert_eq!(KernelFamily::auto(true, true), KernelFamily::Subgroup);
        assert_eq!(KernelFamily::auto(true, false), KernelFamily::Broadcast);
        assert_eq!("cpu".parse::<AdapterClass>().unwrap(), AdapterClass::CPU);
    }
}
