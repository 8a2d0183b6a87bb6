//! The operator's risk policy: a TOML file (see `policy/default.toml`, the documented
//! default), parsed and checked here. Amounts are decimal strings in the asset's major
//! units, as in the API ("0.0001"); assets are named by their code. [`Policy::parse`]
//! refuses anything it does not understand (unknown keys included), with the reason, so a
//! typo never silently turns a limit off.

use farthing_ledger::amount::{parse_amount, Amount, AmountError};
use serde::Deserialize;
use std::fmt;

/// The default policy, as shipped and documented.
pub const DEFAULT_POLICY: &str = include_str!("../policy/default.toml");

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy: {}", self.0)
    }
}

impl std::error::Error for PolicyError {}

/// A non-negative decimal amount, exactly: `units / 10^scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dec {
    pub units: u128,
    pub scale: u8,
}

impl Dec {
    pub const ZERO: Dec = Dec { units: 0, scale: 0 };

    pub fn parse(text: &str) -> Result<Self, String> {
        // The ledger's own reading, at the scale the text carries.
        let scale = text.split_once('.').map_or(0, |(_, frac)| frac.len());
        if text.starts_with('.') {
            return Err(format!("{text:?} is not a decimal amount like \"0.05\""));
        }
        if scale > 18 {
            return Err(format!("{text:?} has more than 18 decimals"));
        }
        let units = parse_amount(text, scale as u8).map_err(|e| match e {
            AmountError::Overflow => format!("{text:?} is too large"),
            _ => format!("{text:?} is not a decimal amount like \"0.05\""),
        })?;
        Ok(Dec { units, scale: scale as u8 })
    }

    /// In minor units of an asset of `scale` decimals, rounded down (a limit never grows
    /// by rounding).
    pub fn to_minor(self, scale: u8) -> u128 {
        if scale >= self.scale {
            self.units.saturating_mul(10u128.saturating_pow(u32::from(scale - self.scale)))
        } else {
            self.units / 10u128.pow(u32::from(self.scale - scale))
        }
    }

    /// As a float in major units (for features and velocity sums).
    pub fn to_f64(self) -> f64 {
        self.units as f64 / 10f64.powi(i32::from(self.scale))
    }
}

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Dec::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Amount { minor: self.units, scale: self.scale }.fmt(f)
    }
}

/// What a rule does when it fires. Ordered from mildest to strictest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Approve,
    StepUp,
    Review,
    Decline,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::StepUp => "step_up",
            Self::Review => "review",
            Self::Decline => "decline",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "approve" => Self::Approve,
            "step_up" => Self::StepUp,
            "review" => Self::Review,
            "decline" => Self::Decline,
            _ => return None,
        })
    }

    pub const ALL: [Action; 4] = [Self::Approve, Self::StepUp, Self::Review, Self::Decline];
}

fn decline() -> Action {
    Action::Decline
}

/// Whose spending a cap counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapScope {
    Payer,
    Merchant,
    Device,
}

impl CapScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payer => "payer",
            Self::Merchant => "merchant",
            Self::Device => "device",
        }
    }
}

/// Per-payment, daily and monthly (UTC calendar) caps for payments in one asset.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cap {
    pub scope: CapScope,
    pub asset: String,
    pub per_payment: Option<Dec>,
    pub daily: Option<Dec>,
    pub monthly: Option<Dec>,
    #[serde(default = "decline")]
    pub action: Action,
}

/// Whose activity a velocity cap counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VelocityScope {
    Payer,
    Payee,
    Device,
    Ip,
}

impl VelocityScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payer => "payer",
            Self::Payee => "payee",
            Self::Device => "device",
            Self::Ip => "ip",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
pub enum Span {
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "24h")]
    Day,
}

impl Span {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "1m",
            Self::Hour => "1h",
            Self::Day => "24h",
        }
    }
}

/// At most `max_count` payments, or `max_amount` (major units, across assets), within the
/// window, this payment included.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VelocityCap {
    pub scope: VelocityScope,
    pub window: Span,
    pub max_count: Option<u32>,
    pub max_amount: Option<Dec>,
    #[serde(default = "decline")]
    pub action: Action,
}

/// Payments to merchants of these categories (the payee account's `code`) are refused.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blocked {
    #[serde(default)]
    pub merchant_categories: Vec<u16>,
}

/// PSD2 RTS Art. 16: no challenge up to `per_payment_max` while the total since the
/// payer's last strong authentication stays within `cumulative_amount` (or the count within
/// `cumulative_count`; one of the two).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LowValue {
    pub per_payment_max: Dec,
    pub cumulative_amount: Option<Dec>,
    pub cumulative_count: Option<u32>,
}

/// PSD2 RTS Art. 18: transaction risk analysis may exempt payments up to `max_amount`
/// while the measured fraud rate (fraud by value over the last 90 days) is below
/// `fraud_rate_below`, and the payment's score is at most `max_score`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tra {
    pub max_amount: Dec,
    pub fraud_rate_below: f64,
    #[serde(default = "default_tra_score")]
    pub max_score: f64,
}

fn default_tra_score() -> f64 {
    0.2
}

/// Security tiers by amount for one asset.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub asset: String,
    /// Below this, a payment whose score needs nothing more is approved without a
    /// challenge and counts toward nothing.
    #[serde(default = "zero")]
    pub no_challenge_below: Dec,
    /// Above this, a payment needs a step-up (unless transaction risk analysis exempts it).
    pub step_up_above: Option<Dec>,
    pub low_value: Option<LowValue>,
    #[serde(default)]
    pub tra: Vec<Tra>,
}

fn zero() -> Dec {
    Dec::ZERO
}

/// How scores turn into actions, and which models make them.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scoring {
    /// A LightGBM text or XGBoost JSON model (path relative to the policy file); absent:
    /// the model shipped with Farthing; "none": rules and policies only.
    pub model: Option<String>,
    /// A candidate model scored beside the live one, reported, never acted on.
    pub shadow: Option<String>,
    /// Learn from labels (`POST /v1/risk/labels`) with the online model.
    #[serde(default = "yes")]
    pub online_learning: bool,
    #[serde(default = "default_step_up")]
    pub step_up_score: f64,
    #[serde(default = "default_review")]
    pub review_score: f64,
    #[serde(default = "default_decline")]
    pub decline_score: f64,
}

fn yes() -> bool {
    true
}
fn default_step_up() -> f64 {
    0.5
}
fn default_review() -> f64 {
    0.8
}
fn default_decline() -> f64 {
    0.97
}

impl Default for Scoring {
    fn default() -> Self {
        Self {
            model: None,
            shadow: None,
            online_learning: true,
            step_up_score: default_step_up(),
            review_score: default_review(),
            decline_score: default_decline(),
        }
    }
}

impl Scoring {
    /// The action a score alone calls for.
    pub fn action(&self, score: f64) -> Action {
        if score >= self.decline_score {
            Action::Decline
        } else if score >= self.review_score {
            Action::Review
        } else if score >= self.step_up_score {
            Action::StepUp
        } else {
            Action::Approve
        }
    }
}

/// How long held payments wait for approval before they expire by themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holds {
    #[serde(default = "default_step_up_timeout")]
    pub step_up_timeout_s: u32,
    #[serde(default = "default_review_timeout")]
    pub review_timeout_s: u32,
}

fn default_step_up_timeout() -> u32 {
    900
}
fn default_review_timeout() -> u32 {
    86_400
}

impl Default for Holds {
    fn default() -> Self {
        Self {
            step_up_timeout_s: default_step_up_timeout(),
            review_timeout_s: default_review_timeout(),
        }
    }
}

/// A parsed, checked policy.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// A name for people (shown with the version).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub scoring: Scoring,
    #[serde(default)]
    pub holds: Holds,
    #[serde(default)]
    pub blocked: Blocked,
    #[serde(default)]
    pub caps: Vec<Cap>,
    #[serde(default)]
    pub velocity: Vec<VelocityCap>,
    #[serde(default)]
    pub tiers: Vec<Tier>,
    /// Caps on payment channels, per asset.
    #[serde(default)]
    pub channels: Vec<ChannelCap>,
}

/// A cap on what one payment channel may lock (its opening amount and every top-up), for
/// channels in one asset: what its vouchers can ever claim.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelCap {
    pub asset: String,
    pub locked_max: Dec,
}

impl Policy {
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| PolicyError(e.to_string()))?;
        policy.check()?;
        Ok(policy)
    }

    pub fn default_policy() -> Self {
        Self::parse(DEFAULT_POLICY).expect("the shipped policy parses")
    }

    fn check(&self) -> Result<(), PolicyError> {
        let fail = |m: String| Err(PolicyError(m));
        let s = &self.scoring;
        for (name, v) in [
            ("step_up_score", s.step_up_score),
            ("review_score", s.review_score),
            ("decline_score", s.decline_score),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return fail(format!("scoring.{name} = {v} is not between 0 and 1"));
            }
        }
        if !(s.step_up_score <= s.review_score && s.review_score <= s.decline_score) {
            return fail("scoring needs step_up_score <= review_score <= decline_score".into());
        }
        for (i, c) in self.caps.iter().enumerate() {
            if c.per_payment.is_none() && c.daily.is_none() && c.monthly.is_none() {
                return fail(format!("caps[{i}] sets none of per_payment, daily, monthly"));
            }
            if c.action == Action::Approve {
                return fail(format!("caps[{i}].action cannot be approve"));
            }
            check_code(&c.asset, &format!("caps[{i}].asset"))?;
        }
        for (i, v) in self.velocity.iter().enumerate() {
            if v.max_count.is_none() && v.max_amount.is_none() {
                return fail(format!("velocity[{i}] sets neither max_count nor max_amount"));
            }
            if v.action == Action::Approve {
                return fail(format!("velocity[{i}].action cannot be approve"));
            }
        }
        let mut assets = std::collections::HashSet::new();
        for (i, t) in self.tiers.iter().enumerate() {
            check_code(&t.asset, &format!("tiers[{i}].asset"))?;
            if !assets.insert(t.asset.as_str()) {
                return fail(format!("tiers[{i}]: a second tier for {}", t.asset));
            }
            if let Some(lv) = &t.low_value {
                if lv.cumulative_amount.is_some() == lv.cumulative_count.is_some() {
                    return fail(format!(
                        "tiers[{i}].low_value needs exactly one of cumulative_amount and cumulative_count"
                    ));
                }
            }
            for (j, tra) in t.tra.iter().enumerate() {
                if !(0.0..=1.0).contains(&tra.fraud_rate_below)
                    || !(0.0..=1.0).contains(&tra.max_score)
                {
                    return fail(format!(
                        "tiers[{i}].tra[{j}]: rates and scores are between 0 and 1"
                    ));
                }
            }
        }
        let mut channel_assets = std::collections::HashSet::new();
        for (i, c) in self.channels.iter().enumerate() {
            check_code(&c.asset, &format!("channels[{i}].asset"))?;
            if !channel_assets.insert(c.asset.as_str()) {
                return fail(format!("channels[{i}]: a second channel cap for {}", c.asset));
            }
        }
        if self.holds.step_up_timeout_s == 0 || self.holds.review_timeout_s == 0 {
            return fail("holds: a timeout of 0 would hold funds forever".into());
        }
        Ok(())
    }
}

fn check_code(code: &str, at: &str) -> Result<(), PolicyError> {
    if code.is_empty() || code.len() > 12 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(PolicyError(format!("{at} = {code:?} is not an asset code")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_parses() {
        let p = Policy::default_policy();
        assert!(!p.caps.is_empty() && !p.tiers.is_empty() && !p.velocity.is_empty());
    }

    #[test]
    fn channel_caps_parse_and_are_checked() {
        let p = Policy::parse("[[channels]]\nasset = \"EUR\"\nlocked_max = \"20.00\"\n").unwrap();
        assert_eq!(p.channels[0].locked_max.to_minor(2), 2_000);
        let twice = "[[channels]]\nasset = \"EUR\"\nlocked_max = \"1\"\n".repeat(2);
        assert!(Policy::parse(&twice).unwrap_err().0.contains("second channel cap"));
        assert!(Policy::parse("[[channels]]\nasset = \"EUR\"\n").is_err());
    }

    #[test]
    fn decimals_are_exact() {
        let d = Dec::parse("0.0001").unwrap();
        assert_eq!(d.to_minor(4), 1);
        assert_eq!(d.to_minor(6), 100);
        assert_eq!(d.to_minor(2), 0, "rounded down");
        assert_eq!(Dec::parse("30").unwrap().to_minor(2), 3_000);
        assert_eq!(Dec::parse("12.50").unwrap().to_string(), "12.50");
        assert_eq!(Dec::parse("0.05").unwrap().to_string(), "0.05");
        for bad in ["", ".5", "5.", "-1", "1e3", "0x10", "1.2.3"] {
            assert!(Dec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mistakes_are_refused_with_the_reason() {
        let cases = [
            (
                "[scoring]\nstep_up_score = 0.9\nreview_score = 0.5\n",
                "step_up_score <= review_score",
            ),
            ("[[caps]]\nscope = \"payer\"\nasset = \"EUR\"\n", "sets none"),
            (
                "[[caps]]\nscope = \"payer\"\nasset = \"EUR\"\ndaily = \"10\"\ndayly = \"5\"\n",
                "unknown field",
            ),
            ("[[caps]]\nscope = \"planet\"\nasset = \"EUR\"\ndaily = \"10\"\n", "unknown variant"),
            ("[[caps]]\nscope = \"payer\"\nasset = \"EUR\"\ndaily = \"ten\"\n", "not a decimal"),
            (
                "[[velocity]]\nscope = \"payer\"\nwindow = \"2h\"\nmax_count = 1\n",
                "unknown variant",
            ),
            (
                "[[tiers]]\nasset = \"EUR\"\n[tiers.low_value]\nper_payment_max = \"30\"\n",
                "exactly one of",
            ),
            ("[holds]\nstep_up_timeout_s = 0\n", "forever"),
        ];
        for (text, why) in cases {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.0.contains(why), "{text}: {e}");
        }
    }
}
