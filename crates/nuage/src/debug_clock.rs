//! The key service's clock, which integration tests may move forward.
//!
//! KMS key deletion waits at least 7 days (as in AWS), and a test of what
//! happens after it (crypto-shredding) cannot wait that long. In **debug
//! builds only**, `NUAGE_TEST_KEY_CLOCK_AHEAD_DAYS=N` (1 to 3,650) makes the
//! key service's clock run N days ahead of the system's: the key lifecycle
//! (deletion dates, automatic rotation, the dates recorded on keys) sees the
//! future, while everything else (request signatures, object dates, the
//! identity service) keeps the system's time, so real clients still work.
//!
//! Release builds (`cargo build --release`, what is shipped) never read the
//! variable: they say so on stderr if it is set, and use the system clock.
//! The variable is read here, in the binary, like every environment input.

use nuage_base::Clock;
use std::sync::Arc;

/// The variable a test sets.
pub const KEY_CLOCK_AHEAD_DAYS_VAR: &str = "NUAGE_TEST_KEY_CLOCK_AHEAD_DAYS";
/// The furthest ahead a test may move the key clock.
const AHEAD_DAYS_MAX: i64 = 3650;
const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// `clock` moved forward by a fixed offset.
struct AheadClock {
    clock: Arc<dyn Clock>,
    ahead_ns: i64,
}

impl Clock for AheadClock {
    fn now_unix_ns(&self) -> i64 {
        self.clock.now_unix_ns().saturating_add(self.ahead_ns)
    }
}

/// The clock for the key service: `clock` itself, or (debug builds, with
/// the variable set) `clock` moved forward.
///
/// # Errors
/// In debug builds, a value that is not a whole number of days in range.
pub fn key_clock(clock: &Arc<dyn Clock>) -> anyhow::Result<Arc<dyn Clock>> {
    let Some(value) = std::env::var_os(KEY_CLOCK_AHEAD_DAYS_VAR) else {
        return Ok(Arc::clone(clock));
    };
    if !cfg!(debug_assertions) {
        eprintln!(
            "nuage: {KEY_CLOCK_AHEAD_DAYS_VAR} is ignored: it is honoured by debug (test) builds only"
        );
        return Ok(Arc::clone(clock));
    }
    let days: i64 = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|d| (1..=AHEAD_DAYS_MAX).contains(d))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{KEY_CLOCK_AHEAD_DAYS_VAR} must be a number of days from 1 to {AHEAD_DAYS_MAX}"
            )
        })?;
    eprintln!(
        "nuage: TEST ONLY: the key service's clock runs {days} day(s) ahead ({KEY_CLOCK_AHEAD_DAYS_VAR})"
    );
    tracing::warn!(
        days,
        "the key service's clock runs ahead of the system's (test-only, debug build)"
    );
    Ok(Arc::new(AheadClock {
        clock: Arc::clone(clock),
        ahead_ns: days * NS_PER_DAY,
    }))
}
