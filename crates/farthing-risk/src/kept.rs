//! A decision as it is kept with its transfer: a fixed 112-byte body that the ledger stores
//! beside the transfer, in the same WAL record (so that a transfer and the decision that
//! judged it are durable together, or not at all).
//!
//! Layout (byte offsets, little-endian; part of the data-directory format):
//! version 0 (= 1), action 1, exemption 2, flags 3 (bit 0 opted out, 1 score, 2 base_raw,
//! 3 shadow), shadow action 4, zero 5..8, score f64 8, base_raw f64 16, policy_version 24,
//! model digest 32 (0: none), reasons bitmask 40 (bit i: [`REASONS`]`[i]`), device hash 48
//! (0: none), assessed at (ns) 56, shadow score f32 64, top features 68..93 (five of:
//! feature index + 1 u8, contribution f32; 0: none), zero 93..112.
//!
//! The features themselves are not kept here: they describe a person's habits and must be
//! erasable (an opt-out strips them), and the ledger never forgets.

use std::borrow::Cow;

use crate::engine::{Decision, Exemption};
use crate::features::FEATURE_NAMES;
use crate::policy::Action;

/// Bytes of a kept decision's body.
pub const BODY_BYTES: usize = farthing_ledger::DECISION_BODY_BYTES;
/// Top features a kept decision names.
pub const TOP_MAX: usize = 5;
const VERSION: u8 = 1;

/// Every reason the engine can give, each a bit of the kept bitmask (at most 64). Listed
/// in the order the engine's rules run, so a decoded decision lists them in that order.
pub const REASONS: [&str; 43] = [
    "merchant_category_blocked",
    "cap.payer.per_payment",
    "cap.payer.daily",
    "cap.payer.monthly",
    "cap.merchant.per_payment",
    "cap.merchant.daily",
    "cap.merchant.monthly",
    "cap.device.per_payment",
    "cap.device.daily",
    "cap.device.monthly",
    "self_limit.per_payment",
    "self_limit.daily",
    "self_limit.monthly",
    "velocity.payer.1m.count",
    "velocity.payer.1m.amount",
    "velocity.payer.1h.count",
    "velocity.payer.1h.amount",
    "velocity.payer.24h.count",
    "velocity.payer.24h.amount",
    "velocity.payee.1m.count",
    "velocity.payee.1m.amount",
    "velocity.payee.1h.count",
    "velocity.payee.1h.amount",
    "velocity.payee.24h.count",
    "velocity.payee.24h.amount",
    "velocity.device.1m.count",
    "velocity.device.1m.amount",
    "velocity.device.1h.count",
    "velocity.device.1h.amount",
    "velocity.device.24h.count",
    "velocity.device.24h.amount",
    "velocity.ip.1m.count",
    "velocity.ip.1m.amount",
    "velocity.ip.1h.count",
    "velocity.ip.1h.amount",
    "velocity.ip.24h.count",
    "velocity.ip.24h.amount",
    "score.decline",
    "score.review",
    "score.step_up",
    "tier.amount_above_step_up",
    "tier.low_value_limit",
    "profiling_opted_out",
];

/// A decision as kept: everything the API shows about it but the features.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    pub action: Action,
    pub score: Option<f64>,
    pub base_raw: Option<f64>,
    pub policy_version: u64,
    /// The live model's digest (the part after `@` in its version), 0 for none.
    pub model_digest: u64,
    pub reasons: Vec<Cow<'static, str>>,
    pub top: Vec<(&'static str, f64)>,
    pub exemption: Option<Exemption>,
    pub shadow: Option<(f64, Action)>,
    pub opted_out: bool,
    /// The keyed hash of the payer's device, to give back its reservation on a reject.
    pub device: Option<u64>,
    /// When the engine judged it (ns).
    pub at_ns: u64,
}

/// Why a body could not be read: it was not written by this version of the codec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("kept decision: {0}")]
pub struct KeptError(&'static str);

/// The digest part of a model version `name@digest` (0 when there is none).
pub fn model_digest(version: &str) -> u64 {
    version.rsplit_once('@').and_then(|(_, d)| u64::from_str_radix(d, 16).ok()).unwrap_or(0)
}

fn action_code(a: Action) -> u8 {
    match a {
        Action::Approve => 1,
        Action::StepUp => 2,
        Action::Review => 3,
        Action::Decline => 4,
    }
}

fn action_of(code: u8) -> Result<Action, KeptError> {
    Ok(match code {
        1 => Action::Approve,
        2 => Action::StepUp,
        3 => Action::Review,
        4 => Action::Decline,
        _ => return Err(KeptError("unknown action")),
    })
}

fn exemption_code(e: Option<Exemption>) -> u8 {
    match e {
        None => 0,
        Some(Exemption::NoChallenge) => 1,
        Some(Exemption::LowValue) => 2,
        Some(Exemption::RiskAnalysis) => 3,
    }
}

fn exemption_of(code: u8) -> Result<Option<Exemption>, KeptError> {
    Ok(match code {
        0 => None,
        1 => Some(Exemption::NoChallenge),
        2 => Some(Exemption::LowValue),
        3 => Some(Exemption::RiskAnalysis),
        _ => return Err(KeptError("unknown exemption")),
    })
}

/// The reasons as a bitmask. A reason outside [`REASONS`] would be lost: the engine gives
/// none (a test holds every rule to the list).
fn reasons_mask(reasons: &[Cow<'static, str>]) -> u64 {
    let mut mask = 0u64;
    for r in reasons {
        let at = REASONS.iter().position(|k| *k == r.as_ref());
        debug_assert!(at.is_some(), "reason {r:?} is not in the kept list");
        if let Some(i) = at {
            mask |= 1 << i;
        }
    }
    mask
}

impl Kept {
    /// What of a decision is kept (its top features, if worked out, among them).
    pub fn of(d: &Decision, opted_out: bool, device: Option<u64>, at_ns: u64) -> Self {
        Self {
            action: d.action,
            score: d.score,
            base_raw: d.base_raw,
            policy_version: d.policy_version,
            model_digest: d.model.as_deref().map_or(0, model_digest),
            reasons: d.reasons.clone(),
            top: d.top.iter().take(TOP_MAX).copied().collect(),
            exemption: d.exemption,
            shadow: d.shadow.map(|s| (s.score, s.action)),
            opted_out,
            device,
            at_ns,
        }
    }

    pub fn encode(&self) -> [u8; BODY_BYTES] {
        let mut b = [0u8; BODY_BYTES];
        b[0] = VERSION;
        b[1] = action_code(self.action);
        b[2] = exemption_code(self.exemption);
        b[3] = u8::from(self.opted_out)
            | u8::from(self.score.is_some()) << 1
            | u8::from(self.base_raw.is_some()) << 2
            | u8::from(self.shadow.is_some()) << 3;
        b[4] = self.shadow.map_or(0, |(_, a)| action_code(a));
        b[8..16].copy_from_slice(&self.score.unwrap_or(0.0).to_le_bytes());
        b[16..24].copy_from_slice(&self.base_raw.unwrap_or(0.0).to_le_bytes());
        b[24..32].copy_from_slice(&self.policy_version.to_le_bytes());
        b[32..40].copy_from_slice(&self.model_digest.to_le_bytes());
        b[40..48].copy_from_slice(&reasons_mask(&self.reasons).to_le_bytes());
        b[48..56].copy_from_slice(&self.device.unwrap_or(0).to_le_bytes());
        b[56..64].copy_from_slice(&self.at_ns.to_le_bytes());
        b[64..68].copy_from_slice(&(self.shadow.map_or(0.0, |(s, _)| s) as f32).to_le_bytes());
        for (i, (name, c)) in self.top.iter().take(TOP_MAX).enumerate() {
            let at = 68 + 5 * i;
            let index = FEATURE_NAMES.iter().position(|n| n == name).expect("a feature");
            b[at] = index as u8 + 1;
            b[at + 1..at + 5].copy_from_slice(&(*c as f32).to_le_bytes());
        }
        b
    }

    pub fn decode(b: &[u8; BODY_BYTES]) -> Result<Self, KeptError> {
        if b[0] != VERSION {
            return Err(KeptError("unknown version"));
        }
        let f64_at = |at: usize| f64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let f32_at = |at: usize| f32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let flags = b[3];
        let mask = u64_at(40);
        let reasons = (0..REASONS.len())
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| Cow::Borrowed(REASONS[i]))
            .collect();
        let mut top = Vec::new();
        for i in 0..TOP_MAX {
            let at = 68 + 5 * i;
            let Some(name) = (b[at] as usize).checked_sub(1).map(|k| FEATURE_NAMES.get(k)) else {
                break;
            };
            let name = name.ok_or(KeptError("unknown feature"))?;
            top.push((*name, f64::from(f32_at(at + 1))));
        }
        let shadow = match flags & 8 != 0 {
            true => Some((f64::from(f32_at(64)), action_of(b[4])?)),
            false => None,
        };
        Ok(Self {
            action: action_of(b[1])?,
            exemption: exemption_of(b[2])?,
            opted_out: flags & 1 != 0,
            score: (flags & 2 != 0).then(|| f64_at(8)),
            base_raw: (flags & 4 != 0).then(|| f64_at(16)),
            shadow,
            policy_version: u64_at(24),
            model_digest: u64_at(32),
            reasons,
            device: Some(u64_at(48)).filter(|d| *d != 0),
            at_ns: u64_at(56),
            top,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_decision_round_trips() {
        let k = Kept {
            action: Action::Review,
            score: Some(0.8125),
            base_raw: Some(-1.5),
            policy_version: 7,
            model_digest: 0x0123_4567_89ab_cdef,
            reasons: vec!["cap.payer.daily".into(), "score.review".into()],
            top: vec![(FEATURE_NAMES[3], 0.5), (FEATURE_NAMES[0], -0.25)],
            exemption: None,
            shadow: Some((0.25, Action::Approve)),
            opted_out: false,
            device: Some(42),
            at_ns: 1_700_000_000_000_000_000,
        };
        assert_eq!(Kept::decode(&k.encode()), Ok(k));
    }

    #[test]
    fn the_reason_list_fits_a_bitmask_and_has_no_repeats() {
        assert!(REASONS.len() <= 64);
        let mut sorted = REASONS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), REASONS.len());
    }

    #[test]
    fn a_body_of_another_version_is_refused() {
        assert!(Kept::decode(&[0u8; BODY_BYTES]).is_err());
    }

    #[test]
    fn a_model_digest_is_read_from_its_version() {
        assert_eq!(model_digest("farthing-default@00000000000000ff"), 255);
        assert_eq!(model_digest("no-digest"), 0);
    }
}
