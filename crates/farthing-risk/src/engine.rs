//! The risk engine: one decision per payment — approve, step_up, review or decline — with a
//! score, reason codes and the features that weighed most, from the policy's rules and the
//! models, in that order:
//!
//! 1. blocked merchant categories;
//! 2. caps (the policy's per payer, merchant and device; the payer's own stricter limits);
//! 3. velocity caps;
//! 4. the score (live trees plus the online correction), unless the payer opted out;
//! 5. the security tier by amount: no challenge below a threshold, the PSD2 Art. 16
//!    counters, step-up above an amount unless Art. 18 risk analysis exempts it.
//!
//! The strictest action wins. A payment that is not declined is **reserved** at once (its
//! amount counts toward caps and windows), so two payments racing each other cannot both
//! slip under a cap; [`RiskEngine::release`] gives the reservation back if the ledger
//! refuses the payment or a held one is rejected.

use crate::features::{Capacity, FeatureState, Payment, Vector, FEATURE_NAMES, N_FEATURES};
use crate::ftrl::{Ftrl, FtrlParams};
use crate::gbdt::{Model, ModelError};
use crate::policy::{Action, CapScope, Policy, Span, VelocityScope};
use crate::sca::{CumulativeLimit, LowValueRule, SinceSca};
use crate::window::VelocityTotals;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

const NS_PER_S: u64 = 1_000_000_000;
const DAY_NS: u64 = 86_400 * NS_PER_S;

/// A model ready to score: its features mapped onto ours.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: Model,
    /// What decisions record: a name and a digest of the file.
    pub version: String,
    /// For each of the model's inputs, which of our features it is.
    inputs: Vec<usize>,
    identity: bool,
}

impl LoadedModel {
    /// Maps a model's feature names onto Farthing's; refuses a model that needs a feature
    /// Farthing does not compute.
    pub fn new(model: Model, version: String) -> Result<Self, ModelError> {
        let mut inputs = Vec::with_capacity(model.feature_names.len());
        for name in &model.feature_names {
            match FEATURE_NAMES.iter().position(|n| n == name) {
                Some(i) => inputs.push(i),
                None => {
                    return Err(ModelError(format!(
                        "the model uses a feature Farthing does not compute: {name:?} (see `farthing risk features`)"
                    )))
                }
            }
        }
        let identity =
            inputs.len() == N_FEATURES && inputs.iter().enumerate().all(|(i, j)| i == *j);
        Ok(Self { model, version, inputs, identity })
    }

    /// Reads a LightGBM text model or an XGBoost JSON model, whichever `bytes` is.
    pub fn parse(text: &str, name: &str) -> Result<Self, ModelError> {
        let model = if text.trim_start().starts_with('{') {
            Model::from_xgboost_json(text)?
        } else {
            Model::from_lightgbm(text)?
        };
        Self::new(model, format!("{name}@{}", short_digest(text.as_bytes())))
    }

    fn input<'a>(&self, x: &'a Vector, buf: &'a mut Vector) -> &'a [f64] {
        if self.identity {
            return x;
        }
        for (k, i) in self.inputs.iter().enumerate() {
            buf[k] = x[*i];
        }
        &buf[..self.inputs.len()]
    }

    pub fn raw(&self, x: &Vector) -> f64 {
        let mut buf = [0.0; N_FEATURES];
        self.model.raw_score(self.input(x, &mut buf))
    }

    /// The raw score and each of our features' share of it, in one walk of the trees.
    fn explained(&self, x: &Vector) -> (f64, Vector) {
        let mut buf = [0.0; N_FEATURES];
        let mut by_input = [0.0; N_FEATURES];
        let (raw, _) =
            self.model.explain_into(self.input(x, &mut buf), &mut by_input[..self.inputs.len()]);
        if self.identity {
            return (raw, by_input);
        }
        let mut out = [0.0; N_FEATURES];
        for (k, i) in self.inputs.iter().enumerate() {
            out[*i] += by_input[k];
        }
        (raw, out)
    }
}

/// FNV-1a, 64 bits: stable across runs and platforms (not a defence against anyone).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A short, stable digest of a file, as hex, to name a version.
pub fn short_digest(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a(bytes))
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x.clamp(-35.0, 35.0)).exp())
}

/// The online model's view of the features: signed log scale, categories left out.
fn online_input(x: &Vector) -> Vector {
    let mut out = [0.0; N_FEATURES];
    for (i, v) in x.iter().enumerate() {
        if v.is_finite() && FEATURE_NAMES[i] != "merchant_category" && FEATURE_NAMES[i] != "channel"
        {
            out[i] = v.signum() * v.abs().ln_1p();
        }
    }
    out
}

/// One payment to judge.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Request {
    pub payment: Payment,
    pub asset: u32,
    /// Exact, in the asset's minor units.
    pub amount_minor: u128,
}

/// Why a payment was exempt from a challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exemption {
    /// Below the tier's no-challenge threshold.
    NoChallenge,
    /// PSD2 Art. 16 (counted toward the cumulative limit).
    LowValue,
    /// PSD2 Art. 18 transaction risk analysis.
    RiskAnalysis,
}

impl Exemption {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoChallenge => "no_challenge",
            Self::LowValue => "low_value",
            Self::RiskAnalysis => "risk_analysis",
        }
    }
}

/// The candidate model's opinion, in shadow mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShadowScore {
    pub score: f64,
    pub action: Action,
}

/// What the engine decided, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub action: Action,
    /// The probability of fraud, when a model judged the payment (not for a payer who
    /// opted out of profiling).
    pub score: Option<f64>,
    /// The live model's raw score (log-odds) before the online correction.
    pub base_raw: Option<f64>,
    /// Every rule that fired, most serious first.
    pub reasons: Vec<Cow<'static, str>>,
    /// The features that pushed the score most, with their share in log-odds.
    pub top: Vec<(&'static str, f64)>,
    pub model: Option<Arc<str>>,
    pub policy_version: u64,
    pub exemption: Option<Exemption>,
    pub shadow: Option<ShadowScore>,
    /// The features as computed, kept with the decision so a later label can teach the
    /// online model.
    pub features: Vector,
}

/// Spend in one scope, for one asset, this UTC day and month.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Spend {
    day: u32,
    day_sum: u128,
    month: u32,
    month_sum: u128,
}

impl Spend {
    fn current(&self, day: u32, month: u32) -> (u128, u128) {
        (
            if self.day == day { self.day_sum } else { 0 },
            if self.month == month { self.month_sum } else { 0 },
        )
    }

    fn add(&mut self, day: u32, month: u32, amount: u128) {
        if self.day != day {
            self.day = day;
            self.day_sum = 0;
        }
        if self.month != month {
            self.month = month;
            self.month_sum = 0;
        }
        self.day_sum = self.day_sum.saturating_add(amount);
        self.month_sum = self.month_sum.saturating_add(amount);
    }

    fn sub(&mut self, day: u32, month: u32, amount: u128) {
        if self.day == day {
            self.day_sum = self.day_sum.saturating_sub(amount);
        }
        if self.month == month {
            self.month_sum = self.month_sum.saturating_sub(amount);
        }
    }
}

/// Days since the Unix epoch and the calendar month (year × 12 + month − 1), in UTC.
pub fn day_and_month(at_ns: u64) -> (u32, u32) {
    let days = at_ns / DAY_NS;
    let (year, month, _) = crate::calendar::civil(days);
    (days as u32, (year * 12 + month - 1) as u32)
}

/// Limits a payer set for their own account, in its asset's minor units. They can only
/// make things stricter: the policy's caps apply as well.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelfLimits {
    pub per_payment: Option<u128>,
    pub daily: Option<u128>,
    pub monthly: Option<u128>,
}

/// Fraud by value over the last 90 days, for Art. 18: approved volume, confirmed fraud
/// and the number of labels per UTC day.
#[derive(Clone, Debug)]
struct FraudRate {
    days: Box<[(u32, f64, f64, u32)]>,
}

impl Default for FraudRate {
    fn default() -> Self {
        Self { days: vec![(u32::MAX, 0.0, 0.0, 0); 90].into_boxed_slice() }
    }
}

impl FraudRate {
    /// The day's slot; `None` for a day older than the one the slot now holds (it has
    /// left the 90 days).
    fn slot(&mut self, day: u32) -> Option<&mut (u32, f64, f64, u32)> {
        let s = &mut self.days[day as usize % 90];
        if s.0 != u32::MAX && day < s.0 {
            return None;
        }
        if s.0 != day {
            *s = (day, 0.0, 0.0, 0);
        }
        Some(s)
    }

    /// Measured only once outcomes have been labelled: with no labels there is no rate
    /// (and so no Art. 18 exemption), not a rate of zero.
    fn rate(&self, today: u32) -> Option<f64> {
        let (volume, fraud, labels) = self
            .days
            .iter()
            .filter(|(d, ..)| *d != u32::MAX && *d <= today && today - *d < 90)
            .fold((0.0, 0.0, 0u64), |(v, f, n), (_, dv, df, dn)| {
                (v + dv, f + df, n + u64::from(*dn))
            });
        (volume > 0.0 && labels > 0).then(|| fraud / volume)
    }
}

/// Where the live and the candidate models disagreed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShadowReport {
    pub scored: u64,
    /// Payments the two would have decided differently.
    pub disagreements: u64,
    /// Counts of (live action, candidate action) pairs.
    pub matrix: HashMap<(Action, Action), u64>,
    pub mean_abs_diff: f64,
}

/// A cap in minor units: scope, per payment, daily, monthly, and what it does.
type CapRule = (CapScope, Option<u128>, Option<u128>, Option<u128>, Action);

/// Compiled rules for one asset.
#[derive(Clone, Debug, Default)]
struct AssetRules {
    caps: Vec<CapRule>,
    tier: Option<TierRules>,
}

#[derive(Clone, Debug)]
struct TierRules {
    no_challenge_below: u128,
    step_up_above: Option<u128>,
    low_value: Option<LowValueRule>,
    /// (max amount, fraud rate below, max score), smallest amount first.
    tra: Vec<(u128, f64, f64)>,
}

/// The engine's state. Not thread-safe by itself: the server keeps it behind a lock and
/// holds it for microseconds.
pub struct RiskEngine {
    policy: Arc<Policy>,
    policy_version: u64,
    assets: HashMap<u32, (String, u8)>,
    rules: HashMap<u32, AssetRules>,
    live: Option<Arc<LoadedModel>>,
    shadow: Option<Arc<LoadedModel>>,
    online: Ftrl,
    features: FeatureState,
    spend: HashMap<(CapScope, u128, u32), Spend>,
    self_limits: HashMap<u128, SelfLimits>,
    since_sca: HashMap<(u128, u32), SinceSca>,
    opted_out: HashSet<u128>,
    fraud_rate: FraudRate,
    shadow_report: ShadowReport,
}

impl RiskEngine {
    pub fn new(policy: Policy, policy_version: u64, capacity: Capacity) -> Self {
        let mut engine = Self {
            policy: Arc::new(policy),
            policy_version,
            assets: HashMap::new(),
            rules: HashMap::new(),
            live: None,
            shadow: None,
            online: Ftrl::new(N_FEATURES, FtrlParams::default()),
            features: FeatureState::new(capacity),
            spend: HashMap::new(),
            self_limits: HashMap::new(),
            since_sca: HashMap::new(),
            opted_out: HashSet::new(),
            fraud_rate: FraudRate::default(),
            shadow_report: ShadowReport::default(),
        };
        engine.compile();
        engine
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    pub fn policy_version(&self) -> u64 {
        self.policy_version
    }

    /// Puts a new policy in force (the engine's state — windows, spend, counters — stays).
    pub fn set_policy(&mut self, policy: Policy, version: u64) {
        self.policy = Arc::new(policy);
        self.policy_version = version;
        self.compile();
    }

    pub fn set_models(&mut self, live: Option<Arc<LoadedModel>>, shadow: Option<Arc<LoadedModel>>) {
        if self.shadow.as_ref().map(|m| &m.version) != shadow.as_ref().map(|m| &m.version) {
            self.shadow_report = ShadowReport::default();
        }
        self.live = live;
        self.shadow = shadow;
    }

    pub fn live_model(&self) -> Option<&Arc<LoadedModel>> {
        self.live.as_ref()
    }

    pub fn shadow_model(&self) -> Option<&Arc<LoadedModel>> {
        self.shadow.as_ref()
    }

    pub fn shadow_report(&self) -> &ShadowReport {
        &self.shadow_report
    }

    /// Tells the engine an asset's code and scale (the policy names assets by code).
    pub fn register_asset(&mut self, id: u32, code: &str, scale: u8) {
        self.assets.insert(id, (code.to_string(), scale));
        self.compile();
    }

    pub fn set_self_limits(&mut self, account: u128, limits: SelfLimits) {
        if limits == SelfLimits::default() {
            self.self_limits.remove(&account);
        } else {
            self.self_limits.insert(account, limits);
        }
    }

    pub fn self_limits(&self, account: u128) -> SelfLimits {
        self.self_limits.get(&account).copied().unwrap_or_default()
    }

    /// Opts a payer out of profiling (dropping their profile) or back in.
    pub fn set_opted_out(&mut self, account: u128, out: bool) {
        if out {
            self.opted_out.insert(account);
            self.features.forget_profile(account);
        } else {
            self.opted_out.remove(&account);
        }
    }

    pub fn opted_out(&self, account: u128) -> bool {
        self.opted_out.contains(&account)
    }

    pub fn online(&self) -> &Ftrl {
        &self.online
    }

    pub fn set_online(&mut self, online: Ftrl) {
        self.online = online;
    }

    /// The measured fraud rate by value over the last 90 days, if there was volume.
    pub fn fraud_rate(&self, now_ns: u64) -> Option<f64> {
        self.fraud_rate.rate(day_and_month(now_ns).0)
    }

    pub fn feature_state(&self) -> &FeatureState {
        &self.features
    }

    fn compile(&mut self) {
        self.rules.clear();
        for (id, (code, scale)) in &self.assets {
            let minor = |d: crate::policy::Dec| d.to_minor(*scale);
            let mut rules = AssetRules::default();
            for c in self.policy.caps.iter().filter(|c| &c.asset == code) {
                rules.caps.push((
                    c.scope,
                    c.per_payment.map(minor),
                    c.daily.map(minor),
                    c.monthly.map(minor),
                    c.action,
                ));
            }
            if let Some(t) = self.policy.tiers.iter().find(|t| &t.asset == code) {
                let mut tra: Vec<_> = t
                    .tra
                    .iter()
                    .map(|r| (minor(r.max_amount), r.fraud_rate_below, r.max_score))
                    .collect();
                tra.sort_by_key(|r| r.0);
                rules.tier = Some(TierRules {
                    no_challenge_below: minor(t.no_challenge_below),
                    step_up_above: t.step_up_above.map(minor),
                    low_value: t.low_value.as_ref().map(|lv| LowValueRule {
                        per_payment_max: minor(lv.per_payment_max),
                        cumulative: match (lv.cumulative_amount, lv.cumulative_count) {
                            (Some(a), _) => CumulativeLimit::Amount(minor(a)),
                            (None, Some(n)) => CumulativeLimit::Count(n),
                            (None, None) => CumulativeLimit::Count(0),
                        },
                    }),
                    tra,
                });
            }
            self.rules.insert(*id, rules);
        }
    }

    fn with_opt_out(&self, r: &Request) -> Payment {
        let mut p = r.payment;
        p.opted_out |= self.opted_out.contains(&p.payer);
        p
    }

    fn score(&self, x: &Vector) -> Option<(f64, f64)> {
        let live = self.live.as_ref()?;
        Some(self.with_online(x, live.raw(x)))
    }

    /// The score from the live model's raw score plus the online correction; and the raw.
    fn with_online(&self, x: &Vector, base: f64) -> (f64, f64) {
        let online = if self.policy.scoring.online_learning && self.online.updates > 0 {
            self.online.margin(&online_input(x))
        } else {
            0.0
        };
        (sigmoid(base + online), base)
    }

    /// Judges a payment and, unless it is declined, reserves it.
    pub fn assess(&mut self, r: &Request) -> Decision {
        let p = self.with_opt_out(r);
        let now = p.at_ns;
        let x = self.features.features(&p);
        let (day, month) = day_and_month(now);
        let mut v = Verdict { action: Action::Approve, reasons: Vec::new() };

        if let Some(mcc) = p.merchant_category {
            if self.policy.blocked.merchant_categories.contains(&mcc) {
                v.fire(Action::Decline, "merchant_category_blocked".into());
            }
        }

        let rules = self.rules.get(&r.asset);
        if let Some(rules) = rules {
            for (scope, per_payment, daily, monthly, act) in &rules.caps {
                let key = match scope {
                    CapScope::Payer => p.payer,
                    CapScope::Merchant => p.payee,
                    CapScope::Device => match p.device {
                        Some(d) => u128::from(d),
                        None => continue,
                    },
                };
                let spent = self
                    .spend
                    .get(&(*scope, key, r.asset))
                    .map_or((0, 0), |s| s.current(day, month));
                for (limit, spent, period) in [
                    (*per_payment, 0, "per_payment"),
                    (*daily, spent.0, "daily"),
                    (*monthly, spent.1, "monthly"),
                ] {
                    if limit.is_some_and(|l| spent.saturating_add(r.amount_minor) > l) {
                        v.fire(*act, format!("cap.{}.{period}", scope.as_str()).into());
                    }
                }
            }
        }
        if let Some(own) = self.self_limits.get(&p.payer) {
            let spent = self
                .spend
                .get(&(CapScope::Payer, p.payer, r.asset))
                .map_or((0, 0), |s| s.current(day, month));
            for (limit, spent, why) in [
                (own.per_payment, 0, "self_limit.per_payment"),
                (own.daily, spent.0, "self_limit.daily"),
                (own.monthly, spent.1, "self_limit.monthly"),
            ] {
                if limit.is_some_and(|l| spent.saturating_add(r.amount_minor) > l) {
                    v.fire(Action::Decline, why.into());
                }
            }
        }

        let amount_micros = (p.amount.max(0.0) * 1e6).round() as u64;
        for cap in &self.policy.velocity {
            let totals: VelocityTotals = match cap.scope {
                VelocityScope::Payer => self.features.payer_velocity(p.payer, now),
                VelocityScope::Payee => self.features.payee_velocity(p.payee, now),
                VelocityScope::Device => match p.device {
                    Some(d) => self.features.device_velocity(d, now),
                    None => continue,
                },
                VelocityScope::Ip => match p.ip {
                    Some(i) => self.features.ip_velocity(i, now),
                    None => continue,
                },
            };
            let t = match cap.window {
                Span::Minute => totals.minute,
                Span::Hour => totals.hour,
                Span::Day => totals.day,
            };
            let over_count = cap.max_count.is_some_and(|m| t.count.saturating_add(1) > m);
            let over_sum = cap.max_amount.is_some_and(|m| {
                t.sum.saturating_add(amount_micros) > (m.to_f64() * 1e6).round() as u64
            });
            if over_count || over_sum {
                let what = if over_count { "count" } else { "amount" };
                v.fire(
                    cap.action,
                    format!("velocity.{}.{}.{what}", cap.scope.as_str(), cap.window.as_str())
                        .into(),
                );
            }
        }

        let live = self.live.as_ref().filter(|_| !p.opted_out);
        let scored = live.map(|m| self.with_online(&x, m.raw(&x)));
        let scoring = &self.policy.scoring;
        if let Some((score, _)) = scored {
            match scoring.action(score) {
                Action::Decline => v.fire(Action::Decline, "score.decline".into()),
                Action::Review => v.fire(Action::Review, "score.review".into()),
                Action::StepUp => v.fire(Action::StepUp, "score.step_up".into()),
                Action::Approve => {}
            }
        } else if p.opted_out {
            v.reasons.push("profiling_opted_out".into());
        }

        // The security tier, for what would otherwise go through (or only step up).
        let mut exemption = None;
        if v.action <= Action::StepUp {
            if let Some(tier) = rules.and_then(|r| r.tier.as_ref()) {
                let since = self.since_sca.get(&(p.payer, r.asset)).copied().unwrap_or_default();
                let score = scored.map(|s| s.0);
                let tra = || {
                    let rate = self.fraud_rate.rate(day)?;
                    let s = score?;
                    tier.tra
                        .iter()
                        .find(|(max, below, max_score)| {
                            r.amount_minor <= *max && rate < *below && s <= *max_score
                        })
                        .map(|_| Exemption::RiskAnalysis)
                };
                if v.action == Action::StepUp {
                    // The score asked for a challenge: the tier cannot waive it.
                } else if r.amount_minor < tier.no_challenge_below {
                    exemption = Some(Exemption::NoChallenge);
                } else if tier.step_up_above.is_some_and(|m| r.amount_minor > m) {
                    match tra() {
                        Some(e) => exemption = Some(e),
                        None => v.fire(Action::StepUp, "tier.amount_above_step_up".into()),
                    }
                } else if let Some(lv) = &tier.low_value {
                    if lv.exempt(since, r.amount_minor) {
                        exemption = Some(Exemption::LowValue);
                    } else {
                        match tra() {
                            Some(e) => exemption = Some(e),
                            None => v.fire(Action::StepUp, "tier.low_value_limit".into()),
                        }
                    }
                }
            }
        }

        let shadow = self.shadow.as_ref().filter(|_| !p.opted_out).map(|m| {
            let s = sigmoid(m.raw(&x));
            ShadowScore { score: s, action: scoring.action(s) }
        });
        if let (Some(sh), Some((live, _))) = (shadow, scored) {
            let rep = &mut self.shadow_report;
            let live_action = scoring.action(live);
            rep.scored += 1;
            rep.disagreements += u64::from(live_action != sh.action);
            *rep.matrix.entry((live_action, sh.action)).or_default() += 1;
            rep.mean_abs_diff += ((sh.score - live).abs() - rep.mean_abs_diff) / rep.scored as f64;
        }

        // What is not approved explains itself at once; an approval's explanation is made
        // when it is read ([`RiskEngine::explain`]), from the features kept with it.
        let top = match (live, v.action) {
            (Some(m), a) if a != Action::Approve => top_contributions(&m.explained(&x).1, 3),
            _ => Vec::new(),
        };

        if v.action == Action::Decline {
            self.features.declined(&p);
        } else {
            self.reserve(r, &p, exemption == Some(Exemption::LowValue));
        }
        Decision {
            action: v.action,
            score: scored.map(|s| s.0),
            base_raw: scored.map(|s| s.1),
            reasons: v.reasons,
            top,
            model: scored.and(self.live.as_ref()).map(|m| Arc::from(m.version.as_str())),
            policy_version: self.policy_version,
            exemption,
            shadow,
            features: x,
        }
    }

    fn reserve(&mut self, r: &Request, p: &Payment, low_value: bool) {
        let (day, month) = day_and_month(p.at_ns);
        self.features.record(p);
        for key in self.spend_keys(r, p) {
            self.spend.entry(key).or_default().add(day, month, r.amount_minor);
        }
        if low_value {
            self.since_sca.entry((p.payer, r.asset)).or_default().record_exempt(r.amount_minor);
        }
        if let Some(slot) = self.fraud_rate.slot(day) {
            slot.1 += p.amount;
        }
    }

    fn spend_keys(&self, r: &Request, p: &Payment) -> impl Iterator<Item = (CapScope, u128, u32)> {
        let device = p.device.map(|d| (CapScope::Device, u128::from(d), r.asset));
        [
            Some((CapScope::Payer, p.payer, r.asset)),
            Some((CapScope::Merchant, p.payee, r.asset)),
            device,
        ]
        .into_iter()
        .flatten()
    }

    /// Adds a payment that already happened (rebuilding the state after a restart).
    pub fn replay(&mut self, r: &Request) {
        let p = self.with_opt_out(r);
        self.reserve(r, &p, false);
    }

    /// Gives back a reservation: the ledger refused the payment, or a held payment was
    /// rejected or expired. A refusal by the ledger counts as a decline for the payer.
    pub fn release(&mut self, r: &Request, decision: &Decision, refused_by_ledger: bool) {
        if decision.action == Action::Decline {
            return;
        }
        let p = self.with_opt_out(r);
        let (day, month) = day_and_month(p.at_ns);
        for key in self.spend_keys(r, &p) {
            if let Some(s) = self.spend.get_mut(&key) {
                s.sub(day, month, r.amount_minor);
            }
        }
        if decision.exemption == Some(Exemption::LowValue) {
            if let Some(s) = self.since_sca.get_mut(&(p.payer, r.asset)) {
                s.count = s.count.saturating_sub(1);
                s.sum = s.sum.saturating_sub(r.amount_minor);
            }
        }
        if let Some(slot) = self.fraud_rate.slot(day) {
            slot.1 -= p.amount;
        }
        if refused_by_ledger {
            self.features.declined(&p);
        }
    }

    /// The payer authenticated strongly (a step-up was approved): the Art. 16 counters
    /// start again.
    pub fn strong_authentication(&mut self, payer: u128, asset: u32) {
        self.since_sca.remove(&(payer, asset));
    }

    /// A confirmed outcome for a decided payment: teaches the online model and counts
    /// fraud toward the measured rate.
    pub fn label(
        &mut self,
        features: &Vector,
        base_raw: Option<f64>,
        amount: f64,
        at_ns: u64,
        fraud: bool,
    ) {
        if self.policy.scoring.online_learning {
            if let Some(base) = base_raw {
                self.online.learn_with_base(&online_input(features), base, fraud);
            }
        }
        self.count_label(amount, at_ns, fraud);
    }

    /// Counts a label toward the measured fraud rate only (rebuilding it after a restart,
    /// or for a payer whose features may not teach the model).
    pub fn count_label(&mut self, amount: f64, at_ns: u64, fraud: bool) {
        if let Some(slot) = self.fraud_rate.slot(day_and_month(at_ns).0) {
            slot.3 += 1;
            if fraud {
                slot.2 += amount;
            }
        }
    }

    /// The top features of a decision made by the model `version`, if that model is still
    /// the live or the shadow one.
    pub fn explain(&self, features: &Vector, version: &str) -> Option<Vec<(&'static str, f64)>> {
        let m = [self.live.as_ref(), self.shadow.as_ref()]
            .into_iter()
            .flatten()
            .find(|m| m.version == version)?;
        Some(top_contributions(&m.explained(features).1, 3))
    }

    /// The score a payment with these features would get now (after what was learned).
    pub fn rescore(&self, features: &Vector) -> Option<f64> {
        self.score(features).map(|s| s.0)
    }
}

/// The action so far and every rule that fired.
struct Verdict {
    action: Action,
    reasons: Vec<Cow<'static, str>>,
}

impl Verdict {
    fn fire(&mut self, action: Action, why: Cow<'static, str>) {
        self.action = self.action.max(action);
        self.reasons.push(why);
    }
}

/// The `n` features that pushed the score up most, strongest first (then, if fewer
/// pushed up, the strongest pulls down); no allocation but the answer.
pub fn top_contributions(c: &Vector, n: usize) -> Vec<(&'static str, f64)> {
    let mut best: Vec<(&'static str, f64)> = Vec::with_capacity(n + 1);
    for (i, v) in c.iter().enumerate() {
        if *v == 0.0 || !v.is_finite() {
            continue;
        }
        let at = best.iter().position(|(_, b)| v > b).unwrap_or(best.len());
        if at < n {
            best.insert(at, (FEATURE_NAMES[i], *v));
            best.truncate(n);
        }
    }
    best
}
