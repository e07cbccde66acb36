//! candle's CUDA device, set up for measurement (CUDA builds only).
//!
//! Two settings make the timed loop measure the model rather than the
//! allocator, as PyTorch's caching allocator does for its side:
//! - the device memory pool keeps what it has (release threshold: all), so
//!   activations freed at the end of one iteration are reused by the next
//!   instead of being unmapped and mapped again at every synchronisation;
//! - per-allocation event tracking is off: cudarc records two CUDA events per
//!   allocation to order uses across streams, and candle runs every kernel of
//!   a device on one stream.
//!
//! The pool's high-water mark, reset at each point, is the point's peak
//! device memory: reading NVML after the point sees only what is still held.
//!
//! `FLEETBENCH_CUDA_STOCK_ALLOCATOR=1` leaves both settings as candle has
//! them, so that `bench/gpu/` can measure what they change at each batch size.

use candle_core::Device;
use candle_core::cuda_backend::cudarc::driver::{CudaContext, result, sys};
use std::sync::Arc;

/// Every CUDA device this process can see, as (ordinal, UUID bytes), in CUDA's
/// own order: `CUDA_VISIBLE_DEVICES` and `CUDA_DEVICE_ORDER` already applied.
/// Creates no context.
pub fn visible_devices() -> Result<Vec<(u32, [u8; 16])>, String> {
    result::init().map_err(|e| format!("CUDA could not start: {e}"))?;
    let count = result::device::get_count()
        .map_err(|e| format!("CUDA could not count its devices: {e}"))?;
    let mut out = Vec::new();
    for ordinal in 0..count.max(0) {
        let uuid = result::device::get(ordinal)
            .and_then(result::device::get_uuid)
            .map_err(|e| format!("CUDA could not read the UUID of device {ordinal}: {e}"))?;
        // `c_char` is i8 on x86-64 and u8 on aarch64: keep the bits either way.
        let bytes = uuid.bytes.map(|b| b as u8);
        out.push((ordinal as u32, bytes));
    }
    Ok(out)
}

/// Opens CUDA device `ordinal` for a sweep, with the pool and event-tracking
/// settings above. Must run before any tensor is created on it.
pub fn open(ordinal: u32) -> Result<Device, String> {
    let device = Device::new_cuda(ordinal as usize).map_err(|e| one_line(&e.to_string()))?;
    if stock_allocator() {
        return Ok(device);
    }
    let cuda = device
        .as_cuda_device()
        .map_err(|e| one_line(&e.to_string()))?;
    // SAFETY: candle issues every operation of this device on one stream (the
    // context's per-thread stream, and each device's sweep runs on one thread),
    // so no allocation is ever used on a stream other than its own; this is the
    // case cudarc documents as not needing events. It is called before any
    // tensor exists on the device, as candle's documentation requires.
    #[allow(unsafe_code)]
    unsafe {
        cuda.disable_event_tracking();
    }
    let context = cuda.cuda_stream().context().clone();
    if context.has_async_alloc() {
        set_pool_attribute(
            &context,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            u64::MAX,
        )
        .map_err(|e| format!("could not keep freed memory in the CUDA pool: {e}"))?;
    }
    Ok(device)
}

/// Starts a new peak window for [`pool_peak_bytes`].
pub fn reset_pool_peak(device: &Device) -> Result<(), String> {
    let context = context_of(device)?;
    // Writing 0 to the high-water mark sets it to the current use (CUDA driver API).
    set_pool_attribute(
        &context,
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
        0,
    )
}

/// Most bytes the device's memory pool had handed out since the last
/// [`reset_pool_peak`]; `None` when the device does not allocate from a pool.
pub fn pool_peak_bytes(device: &Device) -> Result<Option<u64>, String> {
    let context = context_of(device)?;
    if !context.has_async_alloc() {
        return Ok(None);
    }
    get_pool_attribute(
        &context,
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
    )
    .map(Some)
}

fn context_of(device: &Device) -> Result<Arc<CudaContext>, String> {
    let cuda = device
        .as_cuda_device()
        .map_err(|e| one_line(&e.to_string()))?;
    Ok(cuda.cuda_stream().context().clone())
}

/// The pool cudarc allocates from: `cuMemAllocAsync` uses the device's
/// current pool.
fn current_pool(context: &CudaContext) -> Result<sys::CUmemoryPool, String> {
    context.bind_to_thread().map_err(|e| e.to_string())?;
    // SAFETY: the device handle comes from a live context of this process.
    #[allow(unsafe_code)]
    unsafe {
        result::device::get_mem_pool(context.cu_device()).map_err(|e| e.to_string())
    }
}

fn set_pool_attribute(
    context: &CudaContext,
    attribute: sys::CUmemPool_attribute,
    value: u64,
) -> Result<(), String> {
    let pool = current_pool(context)?;
    let mut value = value;
    // SAFETY: the pool is the device's live pool, and both attributes used here
    // (release threshold, used-memory high-water mark) take a cuuint64_t.
    #[allow(unsafe_code)]
    unsafe {
        result::mem_pool::set_attribute(pool, attribute, (&raw mut value).cast())
            .map_err(|e| e.to_string())
    }
}

fn get_pool_attribute(
    context: &CudaContext,
    attribute: sys::CUmemPool_attribute,
) -> Result<u64, String> {
    let pool = current_pool(context)?;
    let mut value: u64 = 0;
    // SAFETY: as for `set_pool_attribute`: a live pool and a cuuint64_t attribute.
    #[allow(unsafe_code)]
    unsafe {
        result::mem_pool::get_attribute(pool, attribute, (&raw mut value).cast())
            .map_err(|e| e.to_string())?;
    }
    Ok(value)
}

/// Whether the operator asked for candle's own allocator settings.
pub fn stock_allocator() -> bool {
    std::env::var_os("FLEETBENCH_CUDA_STOCK_ALLOCATOR").is_some_and(|v| v == "1")
}

fn one_line(text: &str) -> String {
    fleetbench_common::spec::one_line(text)
}
