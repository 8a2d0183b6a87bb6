//! Which of a channel's vouchers were served, so that vouchers overtaking each other on the
//! wire are each served once and never charged without being served.
//!
//! A client that sends requests concurrently signs vouchers 1, 2, 3 … in order, but they may
//! arrive 3, 1, 2. Voucher 3's cumulative amount already pays for 1 and 2: refusing them
//! (they are not higher than the best) would charge the payer for requests never served.
//! So the paywall keeps, per channel:
//!
//! - the sequences served in a window of [`SERVED_WINDOW_SEQUENCES`] below the best one,
//!   so each sequence is served at most once and a replay is refused;
//! - the *credit*: what accepted vouchers added beyond the price of what was served for
//!   them. A lower voucher is served only while the credit covers its price, so the money
//!   rule holds whatever the order: served × price ≤ the best voucher's cumulative amount,
//!   with equality when the client pays each request its price.

/// How far below the best voucher's sequence a late voucher is still served. A voucher
/// further behind is refused (`voucher_not_higher`); a client with more requests than this
/// in flight on one channel should open more channels.
pub const SERVED_WINDOW_SEQUENCES: u64 = 128;

// The window is a `u128` of bits.
const _: () = assert!(SERVED_WINDOW_SEQUENCES <= 128);

/// What a voucher would do to a channel's served record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The highest yet: it becomes the best; `increment` is what it adds.
    Higher { increment: u128 },
    /// Lower than the best, never served, paid for by the credit.
    Late,
}

/// Why a voucher cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotServed {
    /// A sequence already served, or further behind than the window.
    NotHigher,
    /// The credit (or the increment) does not cover the price.
    BelowPrice { covered: u128 },
}

/// A channel's served sequences and credit, as this paywall has seen them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// The best voucher's sequence, if any.
    top: Option<u64>,
    /// Bit `i`: sequence `top - i` was served (bit 0, the top itself, always is).
    bits: u128,
    /// Minor units accepted and not yet spent on a served request.
    credit: u128,
}

impl Served {
    /// A channel learned from Farthing with its best voucher at `top`: everything at or
    /// below it counts as served (this paywall cannot know otherwise), and there is no
    /// credit.
    pub fn learned(top: Option<u64>) -> Self {
        Self { top, bits: if top.is_some() { u128::MAX } else { 0 }, credit: 0 }
    }

    pub fn credit(&self) -> u128 {
        self.credit
    }

    /// Whether a voucher numbered `sequence` for `cumulative`, on a channel whose best total
    /// is `best_cumulative`, may be served at `price`. Changes nothing.
    pub fn check(
        &self,
        sequence: u64,
        cumulative: u128,
        best_cumulative: u128,
        price: u128,
    ) -> Result<Admission, NotServed> {
        let Some(top) = self.top.filter(|&top| sequence <= top) else {
            if self.top.is_some() && cumulative <= best_cumulative {
                // A higher sequence must also carry a higher amount.
                return Err(NotServed::NotHigher);
            }
            let increment = cumulative.saturating_sub(best_cumulative);
            if increment < price {
                return Err(NotServed::BelowPrice { covered: increment });
            }
            return Ok(Admission::Higher { increment });
        };
        let behind = top - sequence;
        if behind >= SERVED_WINDOW_SEQUENCES
            || self.bits & (1 << behind) != 0
            || cumulative > best_cumulative
        {
            return Err(NotServed::NotHigher);
        }
        if self.credit < price {
            return Err(NotServed::BelowPrice { covered: self.credit });
        }
        Ok(Admission::Late)
    }

    /// Records a voucher [`Served::check`] admitted.
    pub fn serve(&mut self, sequence: u64, admission: Admission, price: u128) {
        match admission {
            Admission::Higher { increment } => {
                self.bits = match self.top {
                    Some(top) if sequence - top < 128 => self.bits << (sequence - top),
                    _ => 0,
                } | 1;
                self.top = Some(sequence);
                // Checked by `check`: the increment covers the price.
                self.credit = self.credit.saturating_add(increment - price);
            }
            Admission::Late => {
                let top = self.top.expect("a late voucher has a best above it");
                self.bits |= 1 << (top - sequence);
                self.credit -= price;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    /// Serves what it can of vouchers `order` (sequence n for n × price), like the paywall.
    fn run(order: &[u64], price: u128) -> (Served, u128, Vec<u64>) {
        let mut served = Served::default();
        let mut best = 0u128;
        let mut ok = Vec::new();
        for &n in order {
            let cumulative = u128::from(n) * price;
            if let Ok(admission) = served.check(n, cumulative, best, price) {
                served.serve(n, admission, price);
                if let Admission::Higher { .. } = admission {
                    best = cumulative;
                }
                ok.push(n);
            }
        }
        (served, best, ok)
    }

    #[test]
    fn vouchers_out_of_order_are_each_served_once_and_charged_exactly() {
        let (served, best, ok) = run(&[3, 1, 2, 2, 5, 4, 1, 6], 10);
        assert_eq!(ok, vec![3, 1, 2, 5, 4, 6]);
        assert_eq!(best, 60);
        assert_eq!(ok.len() as u128 * 10, best, "served × price = charged");
        assert_eq!(served.credit(), 0);
    }

    #[test]
    fn a_late_voucher_needs_credit_and_the_window() {
        let mut served = Served::default();
        // Sequence 2 pays exactly its price: no credit for a late 1.
        served.serve(2, served.check(2, 10, 0, 10).unwrap(), 10);
        assert_eq!(served.check(1, 5, 10, 10), Err(NotServed::BelowPrice { covered: 0 }));
        // Far ahead, with credit: sequences behind the window are not served.
        let far = 2 + SERVED_WINDOW_SEQUENCES + 1;
        served.serve(far, served.check(far, 10_000, 10, 10).unwrap(), 10);
        assert_eq!(
            served.check(far - SERVED_WINDOW_SEQUENCES, 20, 10_000, 10),
            Err(NotServed::NotHigher)
        );
        assert_eq!(served.check(far - 1, 20, 10_000, 10), Ok(Admission::Late));
        // A late voucher claiming more than the best is not late: refused.
        assert_eq!(served.check(far - 1, 20_000, 10_000, 10), Err(NotServed::NotHigher));
        // Higher sequence, not higher amount: refused.
        assert_eq!(served.check(far + 1, 10_000, 10_000, 10), Err(NotServed::NotHigher));
    }

    #[test]
    fn a_channel_learned_from_farthing_serves_nothing_below_its_best() {
        let served = Served::learned(Some(9));
        for n in 1..=9 {
            assert_eq!(served.check(n, 1, 90, 10), Err(NotServed::NotHigher));
        }
        assert!(matches!(served.check(10, 100, 90, 10), Ok(Admission::Higher { increment: 10 })));
    }

    proptest::proptest! {
        /// Whatever order the vouchers of a client paying `price` each arrive in, and
        /// however many are replayed, no sequence is served twice and served × price never
        /// exceeds what the best voucher charges; with nothing lost beyond the window, the
        /// two are equal.
        #[test]
        fn served_times_price_never_exceeds_the_charge(
            order in proptest::collection::vec(1u64..200, 1..400),
            price in 1u128..1_000,
        ) {
            let (_, best, ok) = run(&order, price);
            let mut seen = std::collections::HashSet::new();
            for n in &ok {
                proptest::prop_assert!(seen.insert(*n), "sequence {} served twice", n);
            }
            proptest::prop_assert!(ok.len() as u128 * price <= best);
        }

        /// Every permutation of 1..=n (n within the window) is served whole.
        #[test]
        fn a_shuffled_burst_within_the_window_is_served_whole(
            order in proptest::sample::subsequence((1u64..=100).collect::<Vec<_>>(), 100)
                .prop_shuffle(),
        ) {
            let (served, best, ok) = run(&order, 7);
            proptest::prop_assert_eq!(ok.len(), 100);
            proptest::prop_assert_eq!(best, 700);
            proptest::prop_assert_eq!(served.credit(), 0);
        }
    }
}
