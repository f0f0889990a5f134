//! Nuage's foundation types: limits, names, identifiers and the clock.
//!
//! This crate owns the vocabulary every other crate shares. It performs no I/O and
//! must never depend on another Nuage crate, so nothing here can fail for reasons
//! outside the caller's inputs.

pub mod clock;
pub mod ids;
pub mod limits;
pub mod names;

pub use clock::{Clock, SystemClock};
