//! The NCCL all-reduce of gradients in GPU memory ([`NcclReduce`], the `cuda` feature).
//!
//! NCCL's library is opened by the path `nccl_lib` finds (cudarc's loader never looks for
//! `libnccl.so.2`), and its functions are called with cudarc's NCCL types. The communicator is
//! non-blocking (`NCCL_COMM_BLOCKING=0`, set by [`set_non_blocking`] before any thread starts):
//! every call returns at once and is then polled through `ncclCommGetAsyncError` and the
//! stream's state, against a deadline and the job's [`AbortHandle`]. Either one ends in
//! `ncclCommAbort`, so a dead peer never leaves a survivor inside NCCL.
//!
//! The gradients stay on the device: the flat tensor's buffer is reduced in place with
//! `ncclAvg`, in buckets, on a stream of this module's own, after the compute stream has
//! finished writing it.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use burn::tensor::{Tensor, TensorPrimitive};
use cudarc::driver::{CudaContext, CudaStream, sys as cuda};
use cudarc::nccl::sys::{ncclComm_t, ncclDataType_t, ncclRedOp_t, ncclUniqueId};

use super::{AbortHandle, CollectiveError, DeviceReduce};
use crate::gpu::GpuInner;

/// Bytes of NCCL's unique id, as it travels between the ranks.
pub const UNIQUE_ID_BYTES: usize = 128;

/// `ncclResult_t` values this module tells apart (others are errors NCCL describes).
const NCCL_SUCCESS: u32 = 0;
const NCCL_IN_PROGRESS: u32 = 7;

/// How often a pending call is polled: short against a step, long against a busy loop.
const POLL: Duration = Duration::from_micros(50);

/// Sets `NCCL_COMM_BLOCKING=0` unless the user set it, so communicators never block.
///
/// # Safety
/// Must run before any other thread exists (it changes the environment).
#[allow(unsafe_code)]
pub unsafe fn set_non_blocking() {
    if std::env::var_os("NCCL_COMM_BLOCKING").is_none() {
        // SAFETY: the caller guarantees that no other thread reads the environment yet.
        unsafe { std::env::set_var("NCCL_COMM_BLOCKING", "0") };
    }
}

type Result32 = u32;

/// NCCL's entry points, resolved once from the library file.
struct Nccl {
    get_version: unsafe extern "C" fn(*mut c_int) -> Result32,
    get_unique_id: unsafe extern "C" fn(*mut ncclUniqueId) -> Result32,
    comm_init_rank: unsafe extern "C" fn(*mut ncclComm_t, c_int, ncclUniqueId, c_int) -> Result32,
    comm_get_async_error: unsafe extern "C" fn(ncclComm_t, *mut Result32) -> Result32,
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        ncclComm_t,
        *mut c_void,
    ) -> Result32,
    comm_abort: unsafe extern "C" fn(ncclComm_t) -> Result32,
    comm_destroy: unsafe extern "C" fn(ncclComm_t) -> Result32,
    get_error_string: unsafe extern "C" fn(Result32) -> *const c_char,
    get_last_error: unsafe extern "C" fn(ncclComm_t) -> *const c_char,
    /// Keeps the functions above mapped.
    _lib: libloading::Library,
}

impl Nccl {
    /// The process's NCCL, loaded on first use, or why it cannot be.
    fn get() -> Result<&'static Nccl, CollectiveError> {
        static NCCL: OnceLock<Result<Nccl, String>> = OnceLock::new();
        NCCL.get_or_init(Self::load)
            .as_ref()
            .map_err(|why| CollectiveError::Device(why.clone()))
    }

    #[allow(unsafe_code)]
    fn load() -> Result<Nccl, String> {
        let path = super::nccl_lib::find()?;
        let failed = |e: libloading::Error| format!("cannot load {}: {e}", path.display());
        // SAFETY: loading NCCL runs only its library initialisers, which have no
        // preconditions.
        let lib = unsafe { libloading::Library::new(&path) }.map_err(failed)?;
        macro_rules! symbol {
            ($name:literal) => {
                // SAFETY: the field's type is the C signature of this symbol in nccl.h.
                *unsafe { lib.get($name) }.map_err(failed)?
            };
        }
        Ok(Nccl {
            get_version: symbol!(b"ncclGetVersion\0"),
            get_unique_id: symbol!(b"ncclGetUniqueId\0"),
            comm_init_rank: symbol!(b"ncclCommInitRank\0"),
            comm_get_async_error: symbol!(b"ncclCommGetAsyncError\0"),
            all_reduce: symbol!(b"ncclAllReduce\0"),
            comm_abort: symbol!(b"ncclCommAbort\0"),
            comm_destroy: symbol!(b"ncclCommDestroy\0"),
            get_error_string: symbol!(b"ncclGetErrorString\0"),
            get_last_error: symbol!(b"ncclGetLastError\0"),
            _lib: lib,
        })
    }

    /// NCCL's words for `code`, with its last error on `comm` when there is one.
    #[allow(unsafe_code)]
    fn describe(&self, what: &str, code: Result32, comm: ncclComm_t) -> CollectiveError {
        let text = |p: *const c_char| {
            // SAFETY: NCCL returns NUL-terminated static or per-communicator strings.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        };
        // SAFETY: both accept any code and a null or live communicator.
        let summary = text(unsafe { (self.get_error_string)(code) }).unwrap_or_default();
        let last = text(unsafe { (self.get_last_error)(comm) }).filter(|s| !s.is_empty());
        CollectiveError::Device(match last {
            Some(last) => format!("NCCL {what} failed: {summary} ({last})"),
            None => format!("NCCL {what} failed: {summary} (code {code})"),
        })
    }
}

/// NCCL's version as `major.minor.patch`, or why NCCL cannot be used.
#[allow(unsafe_code)]
pub fn version() -> Result<String, CollectiveError> {
    let nccl = Nccl::get()?;
    let mut v: c_int = 0;
    // SAFETY: writes one int.
    let code = unsafe { (nccl.get_version)(&mut v) };
    if code != NCCL_SUCCESS {
        return Err(nccl.describe("ncclGetVersion", code, std::ptr::null_mut()));
    }
    // NCCL_VERSION(X,Y,Z) = X*10000 + Y*100 + Z since 2.9.
    Ok(format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100))
}

/// A fresh unique id (rank 0 makes it; every rank of the generation joins with it).
#[allow(unsafe_code)]
pub fn unique_id() -> Result<Vec<u8>, CollectiveError> {
    let nccl = Nccl::get()?;
    let mut id = ncclUniqueId {
        internal: [0; UNIQUE_ID_BYTES],
    };
    // SAFETY: writes the 128-byte id.
    let code = unsafe { (nccl.get_unique_id)(&mut id) };
    if code != NCCL_SUCCESS {
        return Err(nccl.describe("ncclGetUniqueId", code, std::ptr::null_mut()));
    }
    Ok(id.internal.iter().map(|&b| b as u8).collect())
}

/// One rank's NCCL communicator, with the stream its all-reduces run on.
pub struct NcclReduce {
    nccl: &'static Nccl,
    comm: ncclComm_t,
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    rank: usize,
    /// Elements per `ncclAllReduce` call.
    bucket: usize,
    /// Longest wait for one call, or for all ranks to join.
    timeout: Duration,
    abort: AbortHandle,
    broken: bool,
}

// SAFETY: the communicator and the stream are used by one thread at a time (the owner's),
// which NCCL and CUDA allow; they are only handles.
#[allow(unsafe_code)]
unsafe impl Send for NcclReduce {}

impl NcclReduce {
    /// Joins the communicator of `world` ranks that `id` names, as `rank`, on GPU `ordinal`:
    /// returns once every rank has joined (rank 0 included, which waits for the others), or
    /// fails after `timeout` or when `abort` fires.
    #[allow(unsafe_code)]
    pub fn join(
        id: &[u8],
        rank: usize,
        world: usize,
        ordinal: usize,
        bucket_bytes: usize,
        timeout: Duration,
        abort: AbortHandle,
    ) -> Result<Self, CollectiveError> {
        let nccl = Nccl::get()?;
        let internal: [c_char; UNIQUE_ID_BYTES] = id
            .iter()
            .map(|&b| b as c_char)
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|_| {
                CollectiveError::InvalidConfig(format!(
                    "an NCCL unique id has {UNIQUE_ID_BYTES} bytes, not {}",
                    id.len()
                ))
            })?;
        let cuda = |e: cudarc::driver::DriverError| CollectiveError::Device(format!("CUDA: {e}"));
        // The primary context, which CubeCL trains in: the pointers NCCL gets are its own.
        let context = CudaContext::new(ordinal).map_err(cuda)?;
        let stream = context.new_stream().map_err(cuda)?;
        let mut comm: ncclComm_t = std::ptr::null_mut();
        let (nranks, me) = (
            c_int::try_from(world).map_err(|_| CollectiveError::InvalidConfig("world".into()))?,
            c_int::try_from(rank).map_err(|_| CollectiveError::InvalidConfig("rank".into()))?,
        );
        // SAFETY: `comm` receives the handle; the id is passed by value.
        let code =
            unsafe { (nccl.comm_init_rank)(&mut comm, nranks, ncclUniqueId { internal }, me) };
        let mut this = Self {
            nccl,
            comm,
            context,
            stream,
            rank,
            bucket: (bucket_bytes / std::mem::size_of::<f32>()).max(1),
            timeout,
            abort,
            broken: false,
        };
        if code != NCCL_SUCCESS && code != NCCL_IN_PROGRESS {
            this.broken = true;
            return Err(nccl.describe("ncclCommInitRank", code, comm));
        }
        this.settle("ncclCommInitRank", Instant::now() + timeout)?;
        tracing::info!(rank, world, gpu = ordinal, "joined the NCCL communicator");
        Ok(this)
    }

    /// Polls the communicator until its last call has completed, aborting it on a deadline,
    /// an abort, or an error.
    #[allow(unsafe_code)]
    fn settle(&mut self, what: &str, deadline: Instant) -> Result<(), CollectiveError> {
        loop {
            let mut state = NCCL_SUCCESS;
            // SAFETY: `comm` is this rank's live communicator; writes one result.
            let code = unsafe { (self.nccl.comm_get_async_error)(self.comm, &mut state) };
            let state = if code == NCCL_SUCCESS { state } else { code };
            match state {
                NCCL_SUCCESS => return Ok(()),
                NCCL_IN_PROGRESS => self.wait_or_abort(what, deadline)?,
                error => {
                    let why = self.nccl.describe(what, error, self.comm);
                    self.abort_comm();
                    return Err(why);
                }
            }
        }
    }

    /// Polls the stream until the reductions queued on it are done.
    #[allow(unsafe_code)]
    fn drain(&mut self, deadline: Instant) -> Result<(), CollectiveError> {
        loop {
            // SAFETY: the stream is this communicator's own and alive.
            match unsafe { cuda::cuStreamQuery(self.stream.cu_stream()) } {
                cuda::CUresult::CUDA_SUCCESS => return Ok(()),
                cuda::CUresult::CUDA_ERROR_NOT_READY => {
                    // A peer's failure shows up here, not on the stream.
                    self.settle("ncclAllReduce", deadline)?;
                    self.wait_or_abort("ncclAllReduce", deadline)?;
                }
                error => {
                    self.abort_comm();
                    return Err(CollectiveError::Device(format!(
                        "the all-reduce's CUDA stream failed: {error:?}"
                    )));
                }
            }
        }
    }

    /// Sleeps one poll, unless the deadline passed or the job aborted: then aborts the
    /// communicator (which frees a peer waiting on this rank, too).
    fn wait_or_abort(&mut self, what: &str, deadline: Instant) -> Result<(), CollectiveError> {
        if self.abort.is_aborted() {
            self.abort_comm();
            return Err(CollectiveError::Aborted);
        }
        if Instant::now() > deadline {
            self.abort_comm();
            return Err(CollectiveError::DeviceTimeout {
                what: what.to_owned(),
                after: self.timeout,
            });
        }
        std::thread::sleep(POLL);
        Ok(())
    }

    #[allow(unsafe_code)]
    fn abort_comm(&mut self) {
        if !self.broken {
            self.broken = true;
            tracing::warn!(rank = self.rank, "aborting the NCCL communicator");
            // SAFETY: the communicator is live; abort may be called with calls pending.
            let _ = unsafe { (self.nccl.comm_abort)(self.comm) };
        }
    }

    /// Reduces `count` f32 at device address `ptr` in place, bucket by bucket.
    #[allow(unsafe_code)]
    fn reduce_in_place(&mut self, ptr: u64, count: usize) -> Result<(), CollectiveError> {
        let deadline = Instant::now() + self.timeout;
        let mut done = 0;
        while done < count {
            let n = self.bucket.min(count - done);
            let at = (ptr + (done * std::mem::size_of::<f32>()) as u64) as *mut c_void;
            // SAFETY: `at..at + n` lies inside the buffer the caller keeps alive and that
            // nothing else writes until the stream is drained; in place is allowed.
            let code = unsafe {
                (self.nccl.all_reduce)(
                    at,
                    at,
                    n,
                    ncclDataType_t::ncclFloat32 as c_int,
                    ncclRedOp_t::ncclAvg as c_int,
                    self.comm,
                    self.stream.cu_stream().cast(),
                )
            };
            if code != NCCL_SUCCESS && code != NCCL_IN_PROGRESS {
                let why = self.nccl.describe("ncclAllReduce", code, self.comm);
                self.abort_comm();
                return Err(why);
            }
            // A non-blocking communicator takes the next call only once this one is enqueued.
            self.settle("ncclAllReduce", deadline)?;
            done += n;
        }
        self.drain(deadline)
    }
}

impl DeviceReduce<GpuInner> for NcclReduce {
    fn all_reduce_mean(
        &mut self,
        flat: Tensor<GpuInner, 1>,
    ) -> Result<Tensor<GpuInner, 1>, CollectiveError> {
        if self.broken {
            return Err(CollectiveError::Broken);
        }
        // A contiguous buffer nothing else reads: NCCL writes it in place.
        let mut tensor = burn_cubecl::kernel::into_contiguous(flat.into_primitive().tensor());
        if !tensor.can_mut() || !tensor.is_contiguous() {
            tensor = tensor.copy();
        }
        let count = tensor.meta.shape().num_elements();
        if tensor.dtype != burn::tensor::DType::F32 {
            return Err(CollectiveError::Device(format!(
                "NCCL reduces f32 gradients here, not {:?}",
                tensor.dtype
            )));
        }
        let cuda = |e: String| CollectiveError::Device(e);
        // CubeCL's stream has written the gradients once it is idle.
        cubecl::future::block_on(tensor.client.sync()).map_err(|e| cuda(format!("{e:?}")))?;
        // Held until the reduction is drained: the memory cannot be reused meanwhile.
        let resource = tensor
            .client
            .get_resource(tensor.handle.clone())
            .map_err(|e| cuda(format!("{e:?}")))?;
        let bytes = (count * std::mem::size_of::<f32>()) as u64;
        if resource.resource().size < bytes {
            return Err(cuda(format!(
                "the gradient buffer has {} bytes, not the {bytes} its shape needs",
                resource.resource().size
            )));
        }
        self.context
            .bind_to_thread()
            .map_err(|e| cuda(format!("CUDA: {e}")))?;
        self.reduce_in_place(resource.resource().ptr, count)?;
        drop(resource);
        Ok(Tensor::from_primitive(TensorPrimitive::Float(tensor)))
    }
}

impl Drop for NcclReduce {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if !self.broken {
            // SAFETY: nothing is pending (every call was drained); the handle is not reused.
            let _ = unsafe { (self.nccl.comm_destroy)(self.comm) };
        }
    }
}
