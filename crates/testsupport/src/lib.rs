//! Throwaway servers for Nuage's tests, started by the tests themselves so
//! that they run on a fresh machine with nothing but the packages
//! `scripts/install-test-deps.sh` installs.
//!
//! [`postgres`]: one PostgreSQL per test process, from Debian's packages, on
//! a temporary data directory and a free loopback port, with a fresh database
//! per caller. It never touches a PostgreSQL the machine already runs.
//!
//! [`data`]: deterministic blob bytes by position, for streaming tests.
//!
//! `nodes` (feature `nodes`): in-process storage nodes over mutual TLS in
//! sites of France, Germany and the US, for the replicated store's tests.
//!
//! `guest` (feature `compute`): the tiny guest the compute tests boot under
//! QEMU, their skip-unless-CI rule and the reaping of leftover QEMU processes.
//!
//! Test code only: this crate panics with a clear message where a test
//! should fail.

pub mod data;
#[cfg(feature = "compute")]
pub mod guest;
#[cfg(feature = "nodes")]
pub mod nodes;
pub mod postgres;
