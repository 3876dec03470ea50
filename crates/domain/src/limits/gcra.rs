//! The generic cell rate algorithm (GCRA) over a one-minute window, with
//! weights and refunds: the arithmetic of the request and token limits,
//! shared by the in-process store and (as Lua) the Redis one.
//!
//! A limit of `n` a minute lets `n` units through at once, then one every
//! `60 s / n`. The state is one instant, the theoretical arrival time (TAT):
//! the moment the window would be empty again. Admitting `cost` units moves
//! it by `cost` emission intervals; a refund moves it back. Times are
//! microseconds (Unix time), which Lua's doubles hold exactly.
//!
//! Written here rather than taken from `governor`, which has no refunds (a
//! token reservation is settled with the real usage) and keeps its state in
//! process only.

/// The window every limit is counted over, in microseconds.
pub const WINDOW_US: u64 = 60_000_000;

/// A limit of `per_minute` units a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    per_minute: u64,
}

/// A refused admission: when the same cost would be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub retry_after_us: u64,
}

/// What a limit's headers say at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    pub limit: u64,
    pub remaining: u64,
    /// Until the window is whole again.
    pub reset_us: u64,
}

impl Gcra {
    pub const fn per_minute(per_minute: u64) -> Self {
        Self { per_minute }
    }

    /// Microseconds one unit occupies (at least 1).
    fn emission_us(self) -> u64 {
        (WINDOW_US / self.per_minute.max(1)).max(1)
    }

    /// Admits `cost` units at `now` given the stored `tat`: the new TAT to
    /// store, or when to retry. A cost larger than the whole limit is never
    /// admitted (its retry is the time until the window is whole).
    ///
    /// # Errors
    /// [`Denied`] when the window has no room for `cost` now.
    pub fn admit(self, tat: u64, now: u64, cost: u64) -> Result<u64, Denied> {
        let base = tat.max(now);
        let new_tat = base.saturating_add(cost.saturating_mul(self.emission_us()));
        let allowed_until = now.saturating_add(WINDOW_US);
        if new_tat <= allowed_until {
            Ok(new_tat)
        } else if cost > self.per_minute {
            Err(Denied {
                retry_after_us: base.saturating_sub(now).max(1),
            })
        } else {
            Err(Denied {
                retry_after_us: new_tat - allowed_until,
            })
        }
    }

    /// The TAT after `units` are given back (a reservation larger than the
    /// real usage), never earlier than `now`'s empty window.
    pub fn refund(self, tat: u64, now: u64, units: u64) -> u64 {
        tat.saturating_sub(units.saturating_mul(self.emission_us()))
            .max(now)
    }

    /// The TAT after `units` more are charged (usage past its reservation):
    /// always taken, the window may run negative.
    pub fn charge(self, tat: u64, now: u64, units: u64) -> u64 {
        tat.max(now)
            .saturating_add(units.saturating_mul(self.emission_us()))
    }

    /// The limit, what is left of it and when it is whole again.
    pub fn state(self, tat: u64, now: u64) -> WindowState {
        let used_us = tat.saturating_sub(now);
        WindowState {
            limit: self.per_minute,
            remaining: WINDOW_US.saturating_sub(used_us) / self.emission_us(),
            reset_us: used_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn a_limit_lets_its_whole_minute_through_at_once_then_one_per_interval() {
        let rpm = Gcra::per_minute(30);
        let now = 1_000 * S;
        let mut tat = 0;
        for _ in 0..30 {
            tat = rpm.admit(tat, now, 1).unwrap();
        }
        let denied = rpm.admit(tat, now, 1).unwrap_err();
        assert_eq!(denied.retry_after_us, 2 * S);
        assert_eq!(
            rpm.state(tat, now),
            WindowState {
                limit: 30,
                remaining: 0,
                reset_us: 60 * S
            }
        );
        // Two seconds later one more fits.
        let later = now + 2 * S;
        tat = rpm.admit(tat, later, 1).unwrap();
        assert!(rpm.admit(tat, later, 1).is_err());
        assert_eq!(rpm.state(tat, later + 60 * S).remaining, 30);
    }

    #[test]
    fn weights_refunds_and_charges_move_the_window() {
        let tpm = Gcra::per_minute(1_000);
        let now = 5_000 * S;
        let tat = tpm.admit(0, now, 600).unwrap();
        assert_eq!(tpm.state(tat, now).remaining, 400);
        assert!(tpm.admit(tat, now, 500).is_err());
        let refunded = tpm.refund(tat, now, 300);
        assert_eq!(tpm.state(refunded, now).remaining, 700);
        assert_eq!(
            tpm.refund(refunded, now, 10_000),
            now,
            "never before an empty window"
        );
        let charged = tpm.charge(refunded, now, 900);
        assert_eq!(tpm.state(charged, now).remaining, 0);
        assert!(tpm.admit(charged, now, 1).is_err());
    }

    #[test]
    fn a_cost_over_the_whole_limit_is_refused_with_the_time_to_an_empty_window() {
        let tpm = Gcra::per_minute(100);
        let now = 10 * S;
        assert_eq!(tpm.admit(0, now, 101).unwrap_err().retry_after_us, 1);
        let tat = tpm.admit(0, now, 50).unwrap();
        assert_eq!(tpm.admit(tat, now, 101).unwrap_err().retry_after_us, 30 * S);
    }
}
