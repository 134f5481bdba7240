//! Training on an NVIDIA GPU (the `cuda` feature): the backend, the devices the CUDA driver
//! shows, and what a task needs before it may start on one (the driver, a device, NVRTC and
//! the CUDA headers CubeCL compiles its kernels against). Every check runs before Burn
//! touches the device, because CubeCL panics where one of them is missing; a task that lacks
//! one fails with the check's words instead.

use burn::backend::Autodiff;
use burn_cubecl::CubeBackend;
use cubecl::cuda::{CudaDevice, CudaRuntime};
use kiln_proto::v1::Gpu;

/// Burn's CubeCL backend on CUDA, without the fusion layer: its tensors are plain device
/// buffers, whose memory NCCL reduces in place.
pub type GpuInner = CubeBackend<CudaRuntime, f32, i32, u8>;

/// The GPU training backend.
pub type GpuBackend = Autodiff<GpuInner>;

/// The GPUs the driver shows this process (after `CUDA_VISIBLE_DEVICES`), or why none can be
/// listed.
// The driver's probes are FFI calls; each is justified where it is made.
#[allow(unsafe_code)]
pub fn devices() -> Result<Vec<Gpu>, String> {
    use cudarc::driver::result;
    // SAFETY: only probes whether libcuda can be opened.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("the CUDA driver (libcuda.so) is not installed".to_owned());
    }
    let driver = |e: result::DriverError| format!("the CUDA driver failed: {e}");
    result::init().map_err(driver)?;
    let count = result::device::get_count().map_err(driver)?;
    (0..count)
        .map(|ordinal| {
            let device = result::device::get(ordinal).map_err(driver)?;
            // SAFETY: `device` is a handle the driver just returned.
            let memory = unsafe { result::device::total_mem(device) }.map_err(driver)?;
            Ok(Gpu {
                index: ordinal as u32,
                name: result::device::get_name(device).map_err(driver)?,
                memory_bytes: memory as u64,
            })
        })
        .collect()
}

/// The device a rank trains on, the first one it sees (the provider gives each worker its
/// own through `CUDA_VISIBLE_DEVICES`), once everything CubeCL needs is there.
#[allow(unsafe_code)]
pub fn device() -> Result<CudaDevice, String> {
    let gpus = devices()?;
    let Some(first) = gpus.first() else {
        return Err(match std::env::var("CUDA_VISIBLE_DEVICES") {
            Ok(v) => format!("the CUDA driver shows no GPU (CUDA_VISIBLE_DEVICES={v:?})"),
            Err(_) => "the CUDA driver shows no GPU".to_owned(),
        });
    };
    // SAFETY: only probes whether libnvrtc can be opened.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(
            "NVRTC (libnvrtc.so), which compiles the kernels, is not installed; install the CUDA toolkit's nvrtc".to_owned(),
        );
    }
    let headers = cubecl::cuda::install::cuda_path().map(|p| p.join("include"));
    match headers {
        Some(dir) if dir.join("cuda.h").is_file() || dir.join("cuda_runtime.h").is_file() => {}
        Some(dir) => {
            return Err(format!(
                "the CUDA headers are not in {} (set CUDA_PATH to the toolkit's folder)",
                dir.display()
            ));
        }
        None => {
            return Err(
                "the CUDA headers were not found: set CUDA_PATH to the CUDA toolkit's folder"
                    .to_owned(),
            );
        }
    }
    tracing::info!(gpu = %first.name, "training on the GPU");
    Ok(CudaDevice {
        index: first.index as usize,
    })
}
