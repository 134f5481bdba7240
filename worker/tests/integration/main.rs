//! Worker integration tests: the ring over real TCP, and data-parallel training on it.

mod checkpoint_async;
mod ddp;
mod ring;
