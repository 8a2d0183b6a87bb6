//! An online logistic model, FTRL-Proximal (McMahan et al., "Ad Click Prediction: a View
//! from the Trenches", 2013): it learns from each confirmed outcome as it arrives (fraud,
//! legitimate, chargeback), one pass, per-coordinate learning rates, L1 for sparsity.
//!
//! Features are a dense vector of `f64` (the same features the trees see, scaled to about
//! unit size); a bias is kept apart. Deterministic: the same labels in the same order give
//! the same weights.

/// Learning settings: `alpha`, `beta` (per-coordinate rates), `l1`, `l2` (regularisation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FtrlParams {
    pub alpha: f64,
    pub beta: f64,
    pub l1: f64,
    pub l2: f64,
}

impl Default for FtrlParams {
    fn default() -> Self {
        Self { alpha: 0.1, beta: 1.0, l1: 0.01, l2: 1.0 }
    }
}

/// The model's state: for each coordinate (the bias last), `z` and `n`.
#[derive(Clone, Debug, PartialEq)]
pub struct Ftrl {
    params: FtrlParams,
    z: Vec<f64>,
    n: Vec<f64>,
    /// Labels learned from.
    pub updates: u64,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x.clamp(-35.0, 35.0)).exp())
}

impl Ftrl {
    pub fn new(features: usize, params: FtrlParams) -> Self {
        Self { params, z: vec![0.0; features + 1], n: vec![0.0; features + 1], updates: 0 }
    }

    fn weight(&self, i: usize) -> f64 {
        let FtrlParams { alpha, beta, l1, l2 } = self.params;
        let z = self.z[i];
        if z.abs() <= l1 {
            return 0.0;
        }
        -(z - z.signum() * l1) / ((beta + self.n[i].sqrt()) / alpha + l2)
    }

    /// The learned state (`z`, `n`, updates), to keep it across restarts.
    pub fn state(&self) -> (Vec<f64>, Vec<f64>, u64) {
        (self.z.clone(), self.n.clone(), self.updates)
    }

    /// A model from a saved state; `None` if it does not fit `features`.
    pub fn from_state(
        features: usize,
        params: FtrlParams,
        z: Vec<f64>,
        n: Vec<f64>,
        updates: u64,
    ) -> Option<Self> {
        (z.len() == features + 1 && n.len() == features + 1).then_some(Self {
            params,
            z,
            n,
            updates,
        })
    }

    /// The weights now (the bias last); zero where L1 pruned a feature.
    pub fn weights(&self) -> Vec<f64> {
        (0..self.z.len()).map(|i| self.weight(i)).collect()
    }

    fn input(x: &[f64], i: usize) -> f64 {
        // The bias is the last coordinate, always 1; missing values (NaN) count as 0.
        match x.get(i) {
            Some(v) if v.is_finite() => *v,
            Some(_) => 0.0,
            None => 1.0,
        }
    }

    /// The model's log-odds for these features.
    pub fn margin(&self, x: &[f64]) -> f64 {
        let d = self.z.len();
        (0..d).map(|i| self.weight(i) * Self::input(&x[..x.len().min(d - 1)], i)).sum()
    }

    /// The probability that a payment with these features is fraud.
    pub fn predict(&self, x: &[f64]) -> f64 {
        sigmoid(self.margin(x))
    }

    /// Learns from one outcome: `fraud` true for fraud or a chargeback, false for a payment
    /// confirmed legitimate. Returns the prediction it made before learning.
    pub fn learn(&mut self, x: &[f64], fraud: bool) -> f64 {
        self.learn_with_base(x, 0.0, fraud)
    }

    /// Learns as a correction to another model: the prediction is
    /// `sigmoid(base + margin(x))`, where `base` is that model's log-odds, so with no labels
    /// yet the other model's score stands unchanged, and each label moves it.
    pub fn learn_with_base(&mut self, x: &[f64], base: f64, fraud: bool) -> f64 {
        let d = self.z.len();
        let x = &x[..x.len().min(d - 1)];
        let p = sigmoid(base + self.margin(x));
        let y = if fraud { 1.0 } else { 0.0 };
        for i in 0..d {
            let xi = Self::input(x, i);
            if xi == 0.0 {
                continue;
            }
            let g = (p - y) * xi;
            let w = self.weight(i);
            let sigma = ((self.n[i] + g * g).sqrt() - self.n[i].sqrt()) / self.params.alpha;
            self.z[i] += g - sigma * w;
            self.n[i] += g * g;
        }
        self.updates += 1;
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator (no dependency): xorshift.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn learning_moves_scores_the_right_way() {
        let mut m = Ftrl::new(3, FtrlParams::default());
        let risky = [1.0, 0.0, 0.5];
        let safe = [0.0, 1.0, 0.5];
        let (risky0, safe0) = (m.predict(&risky), m.predict(&safe));
        assert_eq!((risky0, safe0), (0.5, 0.5), "an untrained model knows nothing");
        let mut last = (risky0, safe0);
        for round in 0..300 {
            m.learn(&risky, true);
            m.learn(&safe, false);
            let now = (m.predict(&risky), m.predict(&safe));
            assert!(now.0 > last.0 && now.1 < last.1, "round {round}: {now:?} after {last:?}");
            last = now;
        }
        assert!(m.predict(&risky) > 0.8, "{}", m.predict(&risky));
        assert!(m.predict(&safe) < 0.2, "{}", m.predict(&safe));
        // A confirmed-legitimate outcome for the risky pattern lowers its score at once.
        let before = m.predict(&risky);
        m.learn(&risky, false);
        assert!(m.predict(&risky) < before);
    }

    #[test]
    fn it_separates_a_noisy_pattern_and_prunes_noise_features() {
        let params = FtrlParams { l1: 1.0, ..FtrlParams::default() };
        let mut m = Ftrl::new(4, params);
        let mut rng = Rng(0x9e3779b97f4a7c15);
        for _ in 0..5_000 {
            let signal = rng.next();
            let x = [signal, rng.next(), rng.next(), rng.next()];
            let fraud = rng.next() < signal * signal; // fraud grows with feature 0
            m.learn(&x, fraud);
        }
        let w = m.weights();
        assert!(w[0] > 1.0, "the signal feature carries weight: {w:?}");
        assert!(m.predict(&[0.95, 0.5, 0.5, 0.5]) > m.predict(&[0.05, 0.5, 0.5, 0.5]));
        assert_eq!(m.updates, 5_000);
    }

    #[test]
    fn missing_values_count_as_zero_and_replay_is_deterministic() {
        let mut a = Ftrl::new(2, FtrlParams::default());
        let mut b = Ftrl::new(2, FtrlParams::default());
        for (x, y) in [([1.0, f64::NAN], true), ([0.0, 1.0], false), ([1.0, 0.0], true)] {
            a.learn(&x, y);
            b.learn(&x, y);
        }
        assert_eq!(a, b);
        assert_eq!(a.predict(&[1.0, f64::NAN]), a.predict(&[1.0, 0.0]));
    }
}
