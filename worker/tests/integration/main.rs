//! Worker integration tests: the ring over real TCP, data-parallel training on it, and
//! background checkpoints (training runs ahead of the upload; resumes stay bit-identical).

mod checkpoint_async;
mod ddp;
mod ring;
