//! The memory plan is the one allocation table: a network allocates its buffers from it
//! (`MemoryPlan::allocate`) and nothing else allocates. For a few models, batch sizes,
//! methods (with and without gradient accumulation) and both modes, on the test adapter
//! with its own kernel choice and with the tiled kernels (which split more weight
//! gradients), the bytes and buffers the device created while building the network are the
//! plan's (less the dispatches' uniform parameter blocks, which the plan leaves out): no
//! launcher allocates a buffer of its own. Every tensor the network holds is in the plan
//! with its buffer's size and type; in f32 and in mixed precision. Devices of its own, so
//! the counters see only this test.

use finegrain::gpu::{Gpu, GpuOptions, KernelFamily};
use finegrain::method::diversify::DiversifyConfig;
use finegrain::method::loss::LossKind;
use finegrain::model::ModelConfig;
use finegrain::testing::gpu;
use finegrain::train::memory::{MemoryPlan, SPLIT_K_SCRATCH};
use finegrain::train::MethodConfig;
use finegrain::train::{NetMode, Network};
use finegrain::Precision;

#[test]
fn memory_plan_equals_the_bytes_the_network_allocates() {
    if gpu().is_none() {
        return;
    }
    let methods = [
        // With gradient accumulation: the accumulating lists add their loss scratch only.
        MethodConfig {
            diversify: Some(DiversifyConfig::default()),
            loss: LossKind::Gce { k: 2 },
            accumulate: true,
        },
        MethodConfig {
            diversify: None,
            loss: LossKind::CrossEntropy,
            accumulate: false,
        },
    ];
    let models = [
        ("tiny", 1, 12, 3, 4),
        ("tiny", 1, 12, 3, 1),
        ("resnet18", 3, 32, 4, 2),
        ("resnet50", 3, 32, 5, 2),
    ];
    for kernels in [None, Some(KernelFamily::Tiled)] {
        let opts = GpuOptions {
            kernels,
            ..GpuOptions::from_env().unwrap()
        };
        let g = &Gpu::new(&opts).unwrap();
        let class = g.class();
        let mut split = false;
        for (name, ch, size, classes, batch) in models {
            let model = ModelConfig::preset(name, ch, size, classes).unwrap();
            for (method, precision) in methods
                .iter()
                .flat_map(|m| [(m, Precision::F32), (m, Precision::Mixed)])
            {
                if precision == Precision::Mixed && !g.features.shader_f16 {
                    // Refused, saying why; nothing to measure.
                    let e = Network::inference_with_precision(g, &model, batch, precision).err();
                    assert!(e.unwrap().to_string().contains("shader-f16"));
                    continue;
                }
                for mode in [NetMode::Train, NetMode::Inference] {
                    let what = format!(
                        "{name} {size}px batch {batch} {method:?} {mode:?} {precision:?} {class:?}"
                    );
                    let (buffers0, _) = g.created();
                    let bytes0 = g.bytes_created();
                    let net = match mode {
                        NetMode::Train => {
                            Network::with_precision(g, &model, batch, method, 1, precision)
                        }
                        NetMode::Inference => {
                            Network::inference_with_precision(g, &model, batch, precision)
                        }
                    }
                    .unwrap();
                    let bytes = g.bytes_created() - bytes0;
                    let buffers = g.created().0 - buffers0;
                    let dispatches: Vec<_> = net.dispatches().collect();
                    let uniforms: u64 = dispatches.iter().map(|d| d.params.size()).sum();
                    let plan =
                        MemoryPlan::with_precision(&model, batch, mode, class, method, precision)
                            .unwrap();
                    assert_eq!(
                        bytes - uniforms,
                        plan.total_bytes(),
                        "{what}: bytes allocated (less {uniforms} of uniforms) vs the plan\n{}",
                        plan.markdown_table()
                    );
                    assert_eq!(
                        buffers - dispatches.len(),
                        plan.buffers.len(),
                        "{what}: buffers created (less one uniform per dispatch) vs the plan"
                    );
                    for t in net.tensors() {
                        let b = plan.buffer_of(&t.label).unwrap_or_else(|| {
                            panic!("{what}: tensor `{}` is not in the plan", t.label)
                        });
                        assert_eq!(t.buffer.size(), b.bytes(), "{what}: `{}`", t.label);
                        assert_eq!(t.dtype, b.dtype, "{what}: `{}`", t.label);
                    }
                    split |= plan.buffer_of(SPLIT_K_SCRATCH).is_some();
                }
            }
        }
        // Where this adapter's kernels split the weight gradient, the scratch was checked.
        eprintln!("{class:?}: split-K scratch planned: {split}");
    }
}
