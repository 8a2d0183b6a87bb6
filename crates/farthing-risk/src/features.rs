//! Real-time features of a payment, computed from what came before it, in bounded memory.
//!
//! [`FeatureState::features`] reads the state as it is (the payment itself not yet in it);
//! [`FeatureState::record`] adds a payment once it is accepted, [`FeatureState::declined`]
//! counts a refusal. The same payments in the same order give the same features, so an
//! evaluation replays history exactly as the live engine saw it.
//!
//! Amounts inside the state are millionths of a major unit (so 0.0001 EUR is 100), which
//! lets one window add payments of different assets; a deployment whose assets differ
//! widely in value should read the sums as "activity", not money.
//!
//! Every table is bounded ([`BoundedTable`]); small sets of recent counterparts, devices
//! and IPs are fixed arrays. A payer who opted out of profiling gets no profile at all
//! (amount history, payees, devices, age): only the velocity windows, which the policy's
//! velocity caps need and which forget by themselves within 24 hours.

use crate::window::{Activity, BoundedTable, Velocity, Window};

const NS_PER_S: u64 = 1_000_000_000;
const HOUR_NS: u64 = 3_600 * NS_PER_S;
const DAY_NS: u64 = 24 * HOUR_NS;

/// A payer younger than this (since first seen) is "young" for the payee fan-in feature.
const YOUNG_NS: u64 = DAY_NS;

/// The features, in the order of the vector every model sees. Changing the order or the
/// meaning needs a new model: a model names its features and is refused if they differ.
pub const FEATURE_NAMES: [&str; 34] = [
    "amount_log",
    "hour_of_day",
    "account_age_h",
    "payer_history_log",
    "amount_vs_history",
    "payer_cnt_1m",
    "payer_cnt_1h",
    "payer_cnt_24h",
    "payer_sum_1h_log",
    "payer_sum_24h_log",
    "payer_gap_log",
    "payer_gap_regularity",
    "payer_payees_1h",
    "first_to_payee",
    "new_device",
    "new_ip",
    "payer_declines_1h",
    "payer_in_1h_log",
    "payer_out_in_ratio_1h",
    "payee_cnt_1m",
    "payee_cnt_1h",
    "payee_sum_1h_log",
    "payee_payers_1h",
    "payee_young_payers_1h",
    "payee_young_share_1h",
    "payee_age_h",
    "device_cnt_1h",
    "device_payers_24h",
    "ip_cnt_1h",
    "ip_payers_24h",
    "channel",
    "merchant_category",
    "amount_vs_payee",
    "payer_is_payee_recent",
];

/// The number of features.
pub const N_FEATURES: usize = FEATURE_NAMES.len();

/// A feature vector; missing values are `NAN`.
pub type Vector = [f64; N_FEATURES];

/// Where a payment came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    Web,
    App,
    Api,
    Iot,
}

impl Channel {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "web" => Self::Web,
            "app" => Self::App,
            "api" => Self::Api,
            "iot" => Self::Iot,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::App => "app",
            Self::Api => "api",
            Self::Iot => "iot",
        }
    }
}

/// One payment as the risk engine sees it: ids, not personal data (devices and IPs arrive
/// hashed).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Payment {
    /// Engine time, nanoseconds since the Unix epoch.
    pub at_ns: u64,
    pub payer: u128,
    pub payee: u128,
    /// In the asset's major units (for features; policies count exact minor units).
    pub amount: f64,
    pub device: Option<u64>,
    pub ip: Option<u64>,
    pub channel: Option<Channel>,
    pub merchant_category: Option<u16>,
    /// When the payer's account was made, if known (else: when first seen).
    pub payer_since_ns: Option<u64>,
    /// The payer opted out of profiling.
    pub opted_out: bool,
}

fn micros(amount: f64) -> u64 {
    (amount.max(0.0) * 1e6).round().min(u64::MAX as f64) as u64
}

fn log_sum(sum_micros: u64) -> f64 {
    (sum_micros as f64 / 1e6).ln_1p()
}

/// The most recent distinct keys seen, with when each was last seen: a fixed array.
#[derive(Clone, Copy, Debug)]
pub struct Recent<const N: usize> {
    keys: [u64; N],
    at: [u64; N],
}

impl<const N: usize> Default for Recent<N> {
    fn default() -> Self {
        Self { keys: [0; N], at: [0; N] }
    }
}

impl<const N: usize> Recent<N> {
    /// Was `key` seen (and not pushed out by `N` others since)?
    pub fn contains(&self, key: u64) -> bool {
        self.keys.iter().zip(&self.at).any(|(k, t)| *k == key && *t != 0)
    }

    /// Notes `key` at `at_ns` (replacing the oldest entry when full).
    pub fn note(&mut self, key: u64, at_ns: u64) {
        let at = at_ns.max(1);
        let slot = match self.keys.iter().zip(&self.at).position(|(k, t)| *k == key && *t != 0) {
            Some(i) => i,
            None => (0..N).min_by_key(|i| self.at[*i]).unwrap_or(0),
        };
        self.keys[slot] = key;
        self.at[slot] = self.at[slot].max(at);
    }

    /// Distinct keys seen within `span_ns` before `now_ns` (at most `N`).
    pub fn count_since(&self, now_ns: u64, span_ns: u64) -> usize {
        self.at.iter().filter(|t| **t != 0 && now_ns.saturating_sub(**t) < span_ns).count()
    }

    fn newest(&self) -> u64 {
        self.at.iter().copied().max().unwrap_or(0)
    }
}

/// What is remembered of a payer who has not opted out: their habits.
#[derive(Clone, Debug, Default)]
struct Profile {
    first_seen_ns: u64,
    payments: u64,
    /// Running mean and variance (Welford) of ln(amount).
    mean_log: f64,
    m2_log: f64,
    last_ns: u64,
    last_gap_ns: u64,
    payees: Recent<32>,
    devices: Recent<4>,
    ips: Recent<4>,
}

#[derive(Clone, Debug)]
struct PayerState {
    out: Velocity,
    incoming: Window,
    declines: Window,
    profile: Option<Box<Profile>>,
}

impl Default for PayerState {
    fn default() -> Self {
        Self {
            out: Velocity::default(),
            incoming: Window::new(600, 6),
            declines: Window::new(600, 6),
            profile: None,
        }
    }
}

impl Activity for PayerState {
    fn last_active_ns(&self) -> Option<u64> {
        [self.out.last_active_ns(), self.incoming.last_active_ns(), self.declines.last_active_ns()]
            .into_iter()
            .flatten()
            .max()
    }
}

#[derive(Clone, Debug)]
struct PayeeState {
    incoming: Velocity,
    young: Window,
    payers: Recent<32>,
    first_seen_ns: u64,
    /// Running mean of ln(amount) received.
    mean_log: f64,
    received: u64,
}

impl Default for PayeeState {
    fn default() -> Self {
        Self {
            incoming: Velocity::default(),
            young: Window::new(600, 6),
            payers: Recent::default(),
            first_seen_ns: 0,
            mean_log: 0.0,
            received: 0,
        }
    }
}

impl Activity for PayeeState {
    fn last_active_ns(&self) -> Option<u64> {
        self.incoming.last_active_ns()
    }
}

/// A device or an IP address: how busy, and how many payers share it.
#[derive(Clone, Debug, Default)]
struct SharedState {
    velocity: Velocity,
    payers: Recent<16>,
}

impl Activity for SharedState {
    fn last_active_ns(&self) -> Option<u64> {
        self.velocity.last_active_ns().max(Some(self.payers.newest()).filter(|t| *t != 0))
    }
}

/// How many keys each table may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub payers: usize,
    pub payees: usize,
    pub devices: usize,
    pub ips: usize,
}

impl Default for Capacity {
    fn default() -> Self {
        Self { payers: 200_000, payees: 200_000, devices: 200_000, ips: 200_000 }
    }
}

/// Everything the features are computed from.
#[derive(Debug)]
pub struct FeatureState {
    payers: BoundedTable<u128, PayerState>,
    payees: BoundedTable<u128, PayeeState>,
    devices: BoundedTable<u64, SharedState>,
    ips: BoundedTable<u64, SharedState>,
}

fn hash_u128(id: u128) -> u64 {
    (id as u64) ^ ((id >> 64) as u64).rotate_left(29)
}

impl FeatureState {
    pub fn new(capacity: Capacity) -> Self {
        Self {
            payers: BoundedTable::new(capacity.payers),
            payees: BoundedTable::new(capacity.payees),
            devices: BoundedTable::new(capacity.devices),
            ips: BoundedTable::new(capacity.ips),
        }
    }

    /// Keys held, per table (payers, payees, devices, IPs).
    pub fn sizes(&self) -> [usize; 4] {
        [self.payers.len(), self.payees.len(), self.devices.len(), self.ips.len()]
    }

    /// How long the payer has been known, if at all.
    fn payer_since(&self, p: &Payment) -> Option<u64> {
        let seen =
            self.payers.get(&p.payer).and_then(|s| s.profile.as_ref()).map(|pr| pr.first_seen_ns);
        match (p.payer_since_ns, seen) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The payer's velocity totals (for the policy's velocity caps): count and sum in
    /// millionths over 1 min, 1 h, 24 h — before this payment.
    pub fn payer_velocity(&self, payer: u128, now_ns: u64) -> crate::window::VelocityTotals {
        self.payers.get(&payer).map(|s| s.out.totals(now_ns)).unwrap_or_default()
    }

    pub fn payee_velocity(&self, payee: u128, now_ns: u64) -> crate::window::VelocityTotals {
        self.payees.get(&payee).map(|s| s.incoming.totals(now_ns)).unwrap_or_default()
    }

    pub fn device_velocity(&self, device: u64, now_ns: u64) -> crate::window::VelocityTotals {
        self.devices.get(&device).map(|s| s.velocity.totals(now_ns)).unwrap_or_default()
    }

    pub fn ip_velocity(&self, ip: u64, now_ns: u64) -> crate::window::VelocityTotals {
        self.ips.get(&ip).map(|s| s.velocity.totals(now_ns)).unwrap_or_default()
    }

    /// The payment's features, from what came before it.
    pub fn features(&self, p: &Payment) -> Vector {
        let now = p.at_ns;
        let nan = f64::NAN;
        let mut x = [nan; N_FEATURES];
        x[0] = p.amount.max(0.0).ln_1p();
        x[1] = ((now / HOUR_NS) % 24) as f64;
        if let Some(since) = self.payer_since(p) {
            x[2] = now.saturating_sub(since) as f64 / HOUR_NS as f64;
        } else {
            x[2] = 0.0;
        }
        let payer = self.payers.get(&p.payer);
        let profile = payer.and_then(|s| s.profile.as_deref()).filter(|_| !p.opted_out);
        let out = payer.map(|s| s.out.totals(now)).unwrap_or_default();
        x[5] = f64::from(out.minute.count);
        x[6] = f64::from(out.hour.count);
        x[7] = f64::from(out.day.count);
        x[8] = log_sum(out.hour.sum);
        x[9] = log_sum(out.day.sum);
        x[16] = payer.map_or(0.0, |s| f64::from(s.declines.total(now).count));
        let incoming = payer.map(|s| s.incoming.total(now).sum).unwrap_or(0);
        x[17] = log_sum(incoming);
        x[18] = if incoming == 0 {
            0.0
        } else {
            ((out.hour.sum + micros(p.amount)) as f64 / incoming as f64).min(100.0)
        };
        x[33] = if incoming > 0 { 1.0 } else { 0.0 };
        match profile {
            Some(pr) => {
                x[3] = (pr.payments as f64).ln_1p();
                if pr.payments >= 3 {
                    let sd = (pr.m2_log / (pr.payments - 1) as f64).sqrt();
                    x[4] = (p.amount.max(1e-6).ln() - pr.mean_log) / (sd + 0.25);
                }
                if pr.last_ns != 0 {
                    let gap = now.saturating_sub(pr.last_ns);
                    x[10] = (gap as f64 / NS_PER_S as f64).ln_1p();
                    if pr.last_gap_ns != 0 {
                        let (a, b) = (gap as f64, pr.last_gap_ns as f64);
                        x[11] = (a - b).abs() / a.max(b).max(1.0);
                    }
                }
                x[12] = pr.payees.count_since(now, HOUR_NS) as f64;
                x[13] = if pr.payees.contains(hash_u128(p.payee)) { 0.0 } else { 1.0 };
                x[14] = p.device.map_or(nan, |d| f64::from(u8::from(!pr.devices.contains(d))));
                x[15] = p.ip.map_or(nan, |i| f64::from(u8::from(!pr.ips.contains(i))));
            }
            None if !p.opted_out => {
                x[3] = 0.0;
                x[12] = 0.0;
                x[13] = 1.0;
                x[14] = p.device.map_or(nan, |_| 1.0);
                x[15] = p.ip.map_or(nan, |_| 1.0);
            }
            None => {}
        }
        if let Some(payee) = self.payees.get(&p.payee) {
            let t = payee.incoming.totals(now);
            x[19] = f64::from(t.minute.count);
            x[20] = f64::from(t.hour.count);
            x[21] = log_sum(t.hour.sum);
            x[22] = payee.payers.count_since(now, HOUR_NS) as f64;
            let young = payee.young.total(now).count;
            x[23] = f64::from(young);
            x[24] =
                if t.hour.count == 0 { 0.0 } else { f64::from(young) / f64::from(t.hour.count) };
            x[25] = now.saturating_sub(payee.first_seen_ns) as f64 / HOUR_NS as f64;
            if payee.received >= 3 {
                x[32] = p.amount.max(1e-6).ln() - payee.mean_log;
            }
        } else {
            x[19..=24].fill(0.0);
            x[25] = 0.0;
        }
        if let Some(d) = p.device {
            let s = self.devices.get(&d);
            x[26] = s.map_or(0.0, |s| f64::from(s.velocity.totals(now).hour.count));
            x[27] = s.map_or(0.0, |s| s.payers.count_since(now, DAY_NS) as f64);
        }
        if let Some(i) = p.ip {
            let s = self.ips.get(&i);
            x[28] = s.map_or(0.0, |s| f64::from(s.velocity.totals(now).hour.count));
            x[29] = s.map_or(0.0, |s| s.payers.count_since(now, DAY_NS) as f64);
        }
        x[30] = p.channel.map_or(nan, |c| c as u8 as f64);
        x[31] = p.merchant_category.map_or(nan, f64::from);
        x
    }

    /// Adds an accepted payment (approved, or held for approval) to the state.
    pub fn record(&mut self, p: &Payment) {
        let now = p.at_ns;
        let amount = micros(p.amount);
        // Never seen before counts as new now.
        let young = now.saturating_sub(self.payer_since(p).unwrap_or(now)) < YOUNG_NS;
        let payer_key = hash_u128(p.payer);
        {
            let s = self.payers.entry(&p.payer, now);
            s.out.add(now, now, amount);
            if p.opted_out {
                s.profile = None;
            } else {
                let pr = s.profile.get_or_insert_with(|| {
                    Box::new(Profile {
                        first_seen_ns: p.payer_since_ns.unwrap_or(now).min(now),
                        ..Profile::default()
                    })
                });
                pr.payments += 1;
                let v = p.amount.max(1e-6).ln();
                let delta = v - pr.mean_log;
                pr.mean_log += delta / pr.payments as f64;
                pr.m2_log += delta * (v - pr.mean_log);
                if pr.last_ns != 0 {
                    pr.last_gap_ns = now.saturating_sub(pr.last_ns);
                }
                pr.last_ns = now;
                pr.payees.note(hash_u128(p.payee), now);
                if let Some(d) = p.device {
                    pr.devices.note(d, now);
                }
                if let Some(i) = p.ip {
                    pr.ips.note(i, now);
                }
            }
        }
        {
            let s = self.payees.entry(&p.payee, now);
            if s.first_seen_ns == 0 {
                s.first_seen_ns = now;
            }
            s.incoming.add(now, now, amount);
            if young {
                s.young.add(now, now, amount);
            }
            if !p.opted_out {
                s.payers.note(payer_key, now);
            }
            s.received += 1;
            s.mean_log += (p.amount.max(1e-6).ln() - s.mean_log) / s.received.min(1_000) as f64;
        }
        // Money received by the payee, for its own in-to-out flow when it pays onwards.
        self.payers.entry(&p.payee, now).incoming.add(now, now, amount);
        for (table, key) in [(&mut self.devices, p.device), (&mut self.ips, p.ip)] {
            if let Some(k) = key {
                let s = table.entry(&k, now);
                s.velocity.add(now, now, amount);
                if !p.opted_out {
                    s.payers.note(payer_key, now);
                }
            }
        }
    }

    /// Counts a refused payment against the payer (card testing shows as refusals).
    pub fn declined(&mut self, p: &Payment) {
        self.payers.entry(&p.payer, p.at_ns).declines.add(p.at_ns, p.at_ns, 0);
    }

    /// Drops everything profiled about a payer (opt-out or erasure): their windows stay,
    /// as the policy's velocity caps need them, and expire by themselves.
    pub fn forget_profile(&mut self, payer: u128) {
        if let Some(s) = self.payers.get_mut(&payer) {
            s.profile = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NS_PER_S;
    const T0: u64 = 1_790_000_000 * S;

    fn pay(at_s: u64, payer: u128, payee: u128, amount: f64) -> Payment {
        Payment {
            at_ns: T0 + at_s * S,
            payer,
            payee,
            amount,
            device: Some(7),
            ip: Some(9),
            channel: Some(Channel::Web),
            merchant_category: Some(5815),
            payer_since_ns: None,
            opted_out: false,
        }
    }

    fn idx(name: &str) -> usize {
        FEATURE_NAMES.iter().position(|n| *n == name).unwrap()
    }

    #[test]
    fn features_read_only_the_past() {
        let mut st = FeatureState::new(Capacity::default());
        let first = pay(0, 1, 100, 0.01);
        let x = st.features(&first);
        assert_eq!(x[idx("payer_cnt_1h")], 0.0);
        assert_eq!(x[idx("first_to_payee")], 1.0);
        assert_eq!(x[idx("new_device")], 1.0);
        st.record(&first);
        let second = pay(30, 1, 100, 0.01);
        let x = st.features(&second);
        assert_eq!(x[idx("payer_cnt_1m")], 1.0);
        assert_eq!(x[idx("first_to_payee")], 0.0);
        assert_eq!(x[idx("new_device")], 0.0);
        assert_eq!(x[idx("payee_cnt_1h")], 1.0);
        assert_eq!(x[idx("device_payers_24h")], 1.0);
        assert!((x[idx("account_age_h")] - 30.0 / 3600.0).abs() < 1e-9);
        // A minute and more later, the minute window is empty, the hour is not.
        let later = pay(90, 1, 100, 0.01);
        let x = st.features(&later);
        assert_eq!((x[idx("payer_cnt_1m")], x[idx("payer_cnt_1h")]), (0.0, 1.0));
    }

    #[test]
    fn young_fan_in_and_in_to_out_flows_show() {
        let mut st = FeatureState::new(Capacity::default());
        // Ten fresh accounts pay a mule, which pays onwards at once.
        for i in 0..10 {
            st.record(&pay(i, 1_000 + u128::from(i), 42, 20.0));
        }
        let onwards = pay(20, 42, 77, 190.0);
        let x = st.features(&onwards);
        assert!(x[idx("payer_in_1h_log")] > 5.0);
        assert!((x[idx("payer_out_in_ratio_1h")] - 0.95).abs() < 1e-9);
        let to_mule = pay(21, 2_000, 42, 20.0);
        let x = st.features(&to_mule);
        assert_eq!(x[idx("payee_young_payers_1h")], 10.0);
        assert_eq!(x[idx("payee_young_share_1h")], 1.0);
        assert_eq!(x[idx("payee_payers_1h")], 10.0);
    }

    #[test]
    fn amount_history_and_regular_timing() {
        let mut st = FeatureState::new(Capacity::default());
        for i in 0..20 {
            st.record(&pay(i * 10, 1, 100, 0.01));
        }
        let x = st.features(&pay(200, 1, 100, 0.01));
        assert!(x[idx("amount_vs_history")].abs() < 1e-6);
        assert_eq!(x[idx("payer_gap_regularity")], 0.0, "a payment every 10 s exactly");
        let big = st.features(&pay(200, 1, 100, 50.0));
        assert!(big[idx("amount_vs_history")] > 20.0);
    }

    #[test]
    fn an_opted_out_payer_has_windows_but_no_profile() {
        let mut st = FeatureState::new(Capacity::default());
        let mut p = pay(0, 1, 100, 1.0);
        p.opted_out = true;
        st.record(&p);
        p.at_ns += S;
        let x = st.features(&p);
        assert_eq!(x[idx("payer_cnt_1m")], 1.0, "velocity caps still see the window");
        for name in ["payer_history_log", "first_to_payee", "new_device", "amount_vs_history"] {
            assert!(x[idx(name)].is_nan(), "{name} is not kept for an opted-out payer");
        }
        assert_eq!(x[idx("device_payers_24h")], 0.0, "nor is the payer tied to the device");
        // Someone who opts out later loses what was kept.
        let mut q = pay(0, 2, 100, 1.0);
        st.record(&q);
        st.forget_profile(2);
        q.at_ns += S;
        assert_eq!(st.features(&q)[idx("first_to_payee")], 1.0);
    }

    #[test]
    fn declines_count_for_an_hour() {
        let mut st = FeatureState::new(Capacity::default());
        for i in 0..5 {
            st.declined(&pay(i, 1, 100, 0.01));
        }
        assert_eq!(st.features(&pay(10, 1, 100, 0.01))[idx("payer_declines_1h")], 5.0);
        assert_eq!(st.features(&pay(3_700, 1, 100, 0.01))[idx("payer_declines_1h")], 0.0);
    }

    #[test]
    fn recent_sets_keep_the_newest() {
        let mut r: Recent<2> = Recent::default();
        r.note(1, 10);
        r.note(2, 20);
        r.note(1, 30);
        r.note(3, 40); // pushes out 2, the oldest
        assert!(r.contains(1) && r.contains(3) && !r.contains(2));
        assert_eq!(r.count_since(45, 10), 1);
    }

    #[test]
    fn tables_stay_bounded() {
        let cap = Capacity { payers: 100, payees: 10, devices: 10, ips: 10 };
        let mut st = FeatureState::new(cap);
        for i in 0..10_000u64 {
            let mut p = pay(i, u128::from(i), u128::from(i % 50), 1.0);
            p.device = Some(i);
            p.ip = Some(i);
            st.record(&p);
        }
        let [a, b, c, d] = st.sizes();
        assert!(a <= 100 && b <= 10 && c <= 10 && d <= 10);
    }
}
