//! Per-kernel GPU time from timestamp queries: each profiled dispatch gets its own compute
//! pass with a timestamp at its start and end. Where the adapter has no timestamp queries
//! the profiler is unavailable and benchmarks fall back to host time around a full wait.

use super::{tensor::map_read, Dispatch, Gpu};
use crate::error::{Error, Result};

/// One row of a profile: a kernel name, how often it ran, its total GPU time.
#[derive(Clone, Debug)]
pub struct ProfileRow {
    pub name: String,
    pub calls: usize,
    pub ms: f64,
}

/// Timestamp-query profiler for up to `capacity` dispatches per submit.
pub struct Profiler {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    staging: wgpu::Buffer,
    capacity: u32,
    names: Vec<String>,
}

impl Profiler {
    /// `None` when the adapter has no timestamp queries.
    pub fn new(gpu: &Gpu, capacity: u32) -> Option<Profiler> {
        if !gpu.features.timestamp_query || capacity == 0 {
            return None;
        }
        let count = capacity * 2;
        let query_set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("finegrain.profiler"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let bytes = count as u64 * 8;
        let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("finegrain.profiler.resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("finegrain.profiler.staging"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Some(Profiler {
            query_set,
            resolve,
            staging,
            capacity,
            names: Vec::new(),
        })
    }

    /// Record `dispatches`, each in its own timed pass.
    pub fn record(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        dispatches: &[&Dispatch],
    ) -> Result<()> {
        for d in dispatches {
            let i = self.names.len() as u32;
            if i >= self.capacity {
                return Err(Error::invalid(
                    "profiler",
                    format!("more than {} dispatches in one profile", self.capacity),
                ));
            }
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&d.name),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &self.query_set,
                    beginning_of_pass_write_index: Some(2 * i),
                    end_of_pass_write_index: Some(2 * i + 1),
                }),
            });
            d.record(&mut pass);
            drop(pass);
            self.names.push(d.name.clone());
        }
        Ok(())
    }

    /// Submit `encoder` (after adding the resolve), wait, and return per-kernel times in
    /// the order kernels first appeared. Clears the profiler for the next use.
    pub fn finish(
        &mut self,
        gpu: &Gpu,
        mut encoder: wgpu::CommandEncoder,
    ) -> Result<Vec<ProfileRow>> {
        let n = self.names.len() as u32 * 2;
        if n > 0 {
            encoder.resolve_query_set(&self.query_set, 0..n, &self.resolve, 0);
            encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.staging, 0, n as u64 * 8);
        }
        gpu.queue.submit([encoder.finish()]);
        if n == 0 {
            gpu.wait()?;
            return Ok(Vec::new());
        }
        let bytes = map_read(gpu, &self.staging, n as u64 * 8)?;
        let ts: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let period = gpu.queue.get_timestamp_period() as f64;
        let mut rows: Vec<ProfileRow> = Vec::new();
        for (i, name) in self.names.drain(..).enumerate() {
            let dt = ts[2 * i + 1].saturating_sub(ts[2 * i]) as f64 * period * 1e-6;
            match rows.iter_mut().find(|r| r.name == name) {
                Some(r) => {
                    r.calls += 1;
                    r.ms += dt;
                }
                None => rows.push(ProfileRow {
                    name,
                    calls: 1,
                    ms: dt,
                }),
            }
        }
        Ok(rows)
    }
}
