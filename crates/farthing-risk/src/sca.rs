//! PSD2 RTS Art. 16: remote payments of at most €30 may skip strong customer authentication
//! (SCA) while, since the payer's last SCA, either the total of such payments stays at most
//! €100 or there have been at most 5 of them (the provider picks which limit it applies).
//! An SCA resets the counters.
//!
//! Amounts are minor units of the policy's asset (limits are set in the same units).

/// Which cumulative limit applies (the RTS lets the provider choose one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CumulativeLimit {
    /// The exempted payments since the last SCA, this one included, total at most this.
    Amount(u128),
    /// At most this many exempted payments since the last SCA, this one included.
    Count(u32),
}

/// The exemption's settings: €30 per payment, and €100 or 5 payments, by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowValueRule {
    pub per_payment_max: u128,
    pub cumulative: CumulativeLimit,
}

/// What a payer has spent without SCA since their last one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinceSca {
    pub count: u32,
    pub sum: u128,
}

impl LowValueRule {
    /// The RTS's figures, for an asset of `scale` decimals counted in euros.
    pub fn psd2_eur(scale: u8, cumulative_by_count: bool) -> Self {
        let euro = 10u128.pow(u32::from(scale));
        Self {
            per_payment_max: 30 * euro,
            cumulative: match cumulative_by_count {
                true => CumulativeLimit::Count(5),
                false => CumulativeLimit::Amount(100 * euro),
            },
        }
    }

    /// May this payment go without SCA, given what was spent since the last one?
    pub fn exempt(&self, since: SinceSca, amount: u128) -> bool {
        amount <= self.per_payment_max
            && match self.cumulative {
                CumulativeLimit::Amount(max) => since.sum.saturating_add(amount) <= max,
                CumulativeLimit::Count(max) => since.count < max,
            }
    }
}

impl SinceSca {
    /// After a payment that went without SCA.
    pub fn record_exempt(&mut self, amount: u128) {
        self.count = self.count.saturating_add(1);
        self.sum = self.sum.saturating_add(amount);
    }

    /// After a strong authentication: everything starts again.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EUR: u128 = 100; // scale 2

    #[test]
    fn thirty_euros_is_the_most_a_single_exempt_payment_may_be() {
        let rule = LowValueRule::psd2_eur(2, false);
        assert!(rule.exempt(SinceSca::default(), 30 * EUR));
        assert!(!rule.exempt(SinceSca::default(), 30 * EUR + 1));
    }

    #[test]
    fn the_cumulative_amount_may_reach_exactly_one_hundred() {
        let rule = LowValueRule::psd2_eur(2, false);
        let mut since = SinceSca::default();
        for _ in 0..3 {
            assert!(rule.exempt(since, 30 * EUR));
            since.record_exempt(30 * EUR);
        }
        assert!(rule.exempt(since, 10 * EUR), "90 + 10 = 100: at the limit");
        assert!(!rule.exempt(since, 10 * EUR + 1), "past it");
        since.record_exempt(10 * EUR);
        assert!(!rule.exempt(since, 1));
        since.reset();
        assert!(rule.exempt(since, 30 * EUR), "an SCA resets the counters");
    }

    #[test]
    fn by_count_the_sixth_payment_needs_sca() {
        let rule = LowValueRule::psd2_eur(2, true);
        let mut since = SinceSca::default();
        for n in 1..=5 {
            assert!(rule.exempt(since, EUR), "payment {n}");
            since.record_exempt(EUR);
        }
        assert!(!rule.exempt(since, EUR));
    }
}
