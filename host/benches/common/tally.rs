//! What criterion timed for one function, summed over its samples: criterion reports its own
//! statistics per function, and the ratio benches (`events`, `postgres`) need the totals of two
//! functions side by side.

use std::cell::Cell;
use std::time::Duration;

#[derive(Default)]
pub struct Tally {
    spent: Cell<Duration>,
    count: Cell<u64>,
}

impl Tally {
    /// Adds `count` things (transactions, events, …) done in `dt`.
    pub fn add(&self, dt: Duration, count: u64) {
        self.spent.set(self.spent.get() + dt);
        self.count.set(self.count.get() + count);
    }

    /// Seconds per thing.
    #[allow(
        dead_code,
        reason = "each bench including this module uses one of the two rates"
    )]
    pub fn mean(&self) -> f64 {
        self.spent.get().as_secs_f64() / self.count.get().max(1) as f64
    }

    /// Things per second.
    #[allow(
        dead_code,
        reason = "each bench including this module uses one of the two rates"
    )]
    pub fn per_second(&self) -> f64 {
        self.count.get() as f64 / self.spent.get().as_secs_f64().max(f64::MIN_POSITIVE)
    }
}
