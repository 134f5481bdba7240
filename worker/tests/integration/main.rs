//! Worker integration tests: the ring over real TCP, and data-parallel training on it.

mod ddp;
mod ring;
