//! The risk engine in the server: it judges every payment before the ledger, keeps each
//! decision with its transfer (durably, before the answer), reloads the policy file when it
//! changes (every version kept, every change in the audit trail), learns from labels, and
//! rebuilds its windows and spend counters from the ledger at start.
//!
//! A *payment* is a transfer out of a payer's wallet: an account with
//! `debits_must_not_exceed_credits` (the only kind a non-admin key may pay from). Moves
//! between house accounts (funding, settlement) are the operator's and are not judged.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use farthing_ledger::{PendingStatus, Transfer, TransferFlags};
use farthing_risk::engine::{Decision, LoadedModel, Request, RiskEngine, SelfLimits};
use farthing_risk::features::{Capacity, Channel, Payment, FEATURE_NAMES, N_FEATURES};
use farthing_risk::ftrl::{Ftrl, FtrlParams};
use farthing_risk::kept::Kept;
use farthing_risk::policy::{Action, Policy, DEFAULT_POLICY};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::directory::{AccountInfo, Directory, CODE_ESCROW};
use crate::error::{ApiError, ApiResult};
use crate::meta::{Meta, Table, Write};

/// The payer's device and network, as the merchant or wallet saw them.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskContext {
    /// A stable device identifier (an app install id, a passkey's credential id...).
    #[serde(default)]
    pub device: Option<String>,
    /// The payer's IP address.
    #[serde(default)]
    pub ip: Option<String>,
    /// web, app, api or iot.
    #[serde(default)]
    pub channel: Option<String>,
}

/// Payments older than this are not replayed at start (the monthly caps need at most 31
/// days; the windows 24 hours).
const REPLAY_NS: u64 = 32 * 86_400 * 1_000_000_000;

/// A feature's share of a decision's score.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Contribution {
    pub feature: String,
    /// In log-odds: positive pushes toward fraud.
    pub contribution: f64,
}

/// The candidate model's opinion (shadow mode).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ShadowView {
    pub score: f64,
    pub action: String,
}

/// A risk decision as kept with its transfer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct DecisionRecord {
    pub transfer_id: String,
    /// approve, step_up, review or decline.
    pub action: String,
    /// The probability of fraud, when a model judged the payment.
    pub score: Option<f64>,
    /// Every rule that fired, in the order they ran.
    pub reasons: Vec<String>,
    /// The features that pushed the score most.
    pub top_features: Vec<Contribution>,
    /// The live model's version (name@digest).
    pub model: Option<String>,
    pub policy_version: u64,
    /// Why no challenge was needed: no_challenge, low_value (PSD2 Art. 16),
    /// risk_analysis (Art. 18).
    pub exemption: Option<String>,
    pub shadow: Option<ShadowView>,
    /// The funds are held until the payment is approved or rejected.
    pub held: bool,
    pub at: String,
    pub payer_account_id: String,
    pub payee_account_id: String,
    pub asset: u32,
    /// Minor units.
    pub amount_minor: String,
    /// In the asset's major units.
    pub amount: String,
    /// The payer opted out of profiling: judged by rules and policies only.
    pub opted_out: bool,
    /// The features as computed (kept so a later label can teach the online model; not
    /// shown by the API).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(ignore)]
    pub features: Vec<Option<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub base_raw: Option<f64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schema(ignore)]
    pub at_ns: u64,
    /// The keyed hash of the payer's device, to give back its reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub device: Option<u64>,
}

impl DecisionRecord {
    /// What the API shows (the features stay inside).
    pub fn view(&self) -> Self {
        Self { features: Vec::new(), base_raw: None, at_ns: 0, device: None, ..self.clone() }
    }

    /// What the payee (and whoever sees only the payee's side) is shown: the outcome, not
    /// why — the reasons, score and features describe the payer.
    pub fn payee_view(&self) -> Self {
        Self {
            score: None,
            reasons: Vec::new(),
            top_features: Vec::new(),
            model: None,
            exemption: None,
            shadow: None,
            opted_out: false,
            ..self.view()
        }
    }

    pub fn action(&self) -> Action {
        Action::parse(&self.action).unwrap_or(Action::Decline)
    }

    /// The features kept with the decision, as the engine computed them (missing: NaN).
    pub fn feature_vector(&self) -> [f64; N_FEATURES] {
        let mut features = [f64::NAN; N_FEATURES];
        for (slot, v) in features.iter_mut().zip(&self.features) {
            *slot = v.unwrap_or(f64::NAN);
        }
        features
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A policy version as kept.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PolicyVersion {
    pub version: u64,
    pub name: String,
    /// SHA-256 of the text, hex.
    pub digest: String,
    /// The file it came from ("built-in" for the shipped default).
    pub source: String,
    pub loaded_at: String,
    pub live_model: Option<String>,
    pub shadow_model: Option<String>,
    pub text: String,
}

/// One change to risk settings.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub at: String,
    /// policy_loaded, policy_refused, self_limits, profiling, label, approved, rejected.
    pub kind: String,
    /// The API key prefix that made the change, or "policy-file".
    pub actor: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// An account's own risk settings, as kept.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AccountSettings {
    per_payment: Option<String>,
    daily: Option<String>,
    monthly: Option<String>,
    opted_out: bool,
}

/// The files a policy came from, and what they looked like, to notice a change.
#[derive(Clone, Debug, Default, PartialEq)]
struct Stamp(Vec<(PathBuf, Option<(SystemTime, u64)>)>);

fn stamp_of(paths: &[PathBuf]) -> Stamp {
    Stamp(
        paths
            .iter()
            .map(|p| {
                let m = std::fs::metadata(p).ok();
                (p.clone(), m.and_then(|m| Some((m.modified().ok()?, m.len()))))
            })
            .collect(),
    )
}

struct Loaded {
    digest: String,
    stamp: Stamp,
    /// The digest of the last text refused, so a broken file is reported once.
    refused: Option<String>,
}

/// What a second label for the same transfer is refused with.
pub const ALREADY_LABELLED: &str = "already_labelled";

/// The shipped model (trained on `farthing simulate` traffic).
const DEFAULT_MODEL: &str = farthing_risk::DEFAULT_MODEL;

pub struct Risk {
    engine: Mutex<RiskEngine>,
    policy_path: Option<PathBuf>,
    loaded: Mutex<Loaded>,
    hash_key: [u8; 32],
    meta: Meta,
    audit_seq: AtomicU64,
    /// The ledger, where the decisions of transfers made are kept.
    ledger: farthing_store::EngineHandle,
    /// Every model version seen (live or shadow), by digest: a kept decision names its
    /// model by digest only.
    models: Mutex<std::collections::HashMap<u64, String>>,
    /// Features not kept because the store's queue was full (they teach nothing later).
    pub features_dropped: AtomicU64,
    /// Each asset's scale, to show a kept decision's amount.
    scales: Mutex<std::collections::HashMap<u32, u8>>,
}

/// A decision read back: from the ledger (with the transfer it judged), or a decline's
/// from the server's records.
pub struct Found {
    pub record: DecisionRecord,
    /// The transfer the decision judged, when one was made.
    pub transfer: Option<Transfer>,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn hex(bytes: &[u8]) -> String {
    farthing_tlog::note::to_hex(bytes)
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// The policy and its models, read from disk (or built in), checked.
struct Candidate {
    policy: Policy,
    text: String,
    digest: String,
    source: String,
    live: Option<Arc<LoadedModel>>,
    shadow: Option<Arc<LoadedModel>>,
    files: Vec<PathBuf>,
}

fn load_model(dir: &Path, name: &str) -> Result<Arc<LoadedModel>, String> {
    let path = dir.join(name);
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("model {}: {e}", path.display()))?;
    let short = path.file_name().map_or(name.to_string(), |f| f.to_string_lossy().into_owned());
    LoadedModel::parse(&text, &short).map(Arc::new).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_candidate(path: Option<&Path>) -> Result<Candidate, String> {
    let (text, source, dir) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| format!("risk policy {}: {e}", p.display()))?,
            p.display().to_string(),
            p.parent().map(Path::to_path_buf).unwrap_or_default(),
        ),
        None => (DEFAULT_POLICY.to_string(), "built-in".to_string(), PathBuf::new()),
    };
    let policy = Policy::parse(&text).map_err(|e| e.to_string())?;
    let mut files: Vec<PathBuf> = path.map(Path::to_path_buf).into_iter().collect();
    let live = match &policy.scoring.model {
        Some(name) if name == "none" => None,
        Some(name) => {
            files.push(dir.join(name));
            Some(load_model(&dir, name)?)
        }
        None if DEFAULT_MODEL.is_empty() => None,
        None => Some(Arc::new(
            LoadedModel::parse(DEFAULT_MODEL, "farthing-default")
                .map_err(|e| format!("the shipped model: {e}"))?,
        )),
    };
    let shadow = match &policy.scoring.shadow {
        Some(name) => {
            files.push(dir.join(name));
            Some(load_model(&dir, name)?)
        }
        None => None,
    };
    Ok(Candidate { digest: sha256_hex(&text), policy, text, source, live, shadow, files })
}

fn be128(id: u128) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// Features are kept under the payer, then the transfer: an opt-out strips a range.
fn features_key(payer: u128, id: u128) -> Vec<u8> {
    let mut key = payer.to_be_bytes().to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// Rows an opt-out deletes in one write.
const STRIP_PAGE_ROWS: usize = 4_096;

fn parse_dec(field: &str, text: &str, scale: u8) -> ApiResult<u128> {
    farthing_ledger::amount::parse_amount(text, scale).map_err(|e| {
        ApiError::invalid(field, format!("{field}: {e} (a decimal string such as \"25.00\")"))
    })
}

impl Risk {
    /// Loads the policy (refusing to start on a broken one), the models, the accounts'
    /// settings and the online model, and replays the last month of payments.
    pub async fn open(
        meta: Meta,
        policy_path: Option<PathBuf>,
        engine: &farthing_store::EngineHandle,
        directory: &Directory,
        hash_key: [u8; 32],
    ) -> Result<Arc<Self>, String> {
        let c = read_candidate(policy_path.as_deref())?;
        let latest = meta.scan_rev(Table::RiskPolicies, b"", 1)?;
        let latest: Option<PolicyVersion> =
            latest.first().and_then(|(_, v)| serde_json::from_slice(&v[..]).ok());
        let mut risk_engine = RiskEngine::new(c.policy.clone(), 0, Capacity::default());
        risk_engine.set_models(c.live.clone(), c.shadow.clone());
        let risk = Arc::new(Self {
            engine: Mutex::new(risk_engine),
            policy_path,
            loaded: Mutex::new(Loaded {
                digest: String::new(),
                stamp: stamp_of(&c.files),
                refused: None,
            }),
            hash_key,
            meta: meta.clone(),
            audit_seq: AtomicU64::new(0),
            ledger: engine.clone(),
            models: Mutex::new(std::collections::HashMap::new()),
            features_dropped: AtomicU64::new(0),
            scales: Mutex::new(std::collections::HashMap::new()),
        });
        for v in meta.scan(Table::RiskPolicies, b"")? {
            if let Ok(p) = serde_json::from_slice::<PolicyVersion>(&v.1) {
                risk.know_models(p.live_model.iter().chain(&p.shadow_model));
            }
        }
        risk.know_models(
            c.live.iter().map(|m| &m.version).chain(c.shadow.iter().map(|m| &m.version)),
        );
        match latest {
            Some(v)
                if v.digest == c.digest
                    && v.live_model == c.live.as_ref().map(|m| m.version.clone())
                    && v.shadow_model == c.shadow.as_ref().map(|m| m.version.clone()) =>
            {
                risk.engine.lock().unwrap().set_policy(c.policy.clone(), v.version);
                risk.loaded.lock().unwrap().digest = c.digest.clone();
            }
            previous => {
                let version = previous.map_or(1, |v| v.version + 1);
                risk.adopt(c, version).await?;
            }
        }
        {
            let mut e = risk.engine.lock().unwrap();
            for a in directory.assets() {
                e.register_asset(a.id, &a.code, a.scale);
                risk.scales.lock().unwrap().insert(a.id, a.scale);
            }
        }
        for (k, v) in meta.scan(Table::RiskAccounts, b"")? {
            let Ok(id) = <[u8; 16]>::try_from(&k[..]).map(u128::from_be_bytes) else { continue };
            let Ok(settings) = serde_json::from_slice::<AccountSettings>(&v) else { continue };
            let scale =
                directory.account(id).and_then(|a| directory.asset(a.asset)).map_or(0, |a| a.scale);
            let limits = settings_limits(&settings, scale).unwrap_or_default();
            let mut e = risk.engine.lock().unwrap();
            e.set_self_limits(id, limits);
            e.set_opted_out(id, settings.opted_out);
        }
        if let Some(v) = meta.get(Table::Meta, b"risk_online")? {
            if let Ok((z, n, updates)) = serde_json::from_slice::<(Vec<f64>, Vec<f64>, u64)>(&v) {
                if let Some(online) =
                    Ftrl::from_state(N_FEATURES, FtrlParams::default(), z, n, updates)
                {
                    risk.engine.lock().unwrap().set_online(online);
                }
            }
        }
        risk.replay(engine, directory).await?;
        // The measured fraud rate (Art. 18) from the labels kept.
        for (k, v) in meta.scan(Table::RiskLabels, b"")? {
            let Ok(id) = <[u8; 16]>::try_from(&k[..]).map(u128::from_be_bytes) else { continue };
            let Ok(entry) = serde_json::from_slice::<serde_json::Value>(&v) else { continue };
            let Some(found) = risk.decision(id).await? else { continue };
            let record = found.record;
            let fraud = entry["label"].as_str() != Some("legitimate");
            let amount = record.amount.parse::<f64>().unwrap_or(0.0);
            let at = entry["at_ns"].as_u64().unwrap_or_else(now_ns);
            risk.engine.lock().unwrap().count_label(amount, at, fraud);
        }
        Ok(risk)
    }

    /// Puts a checked policy in force as `version`, keeps it, and records the change.
    async fn adopt(&self, c: Candidate, version: u64) -> Result<(), String> {
        let record = PolicyVersion {
            version,
            name: c.policy.name.clone(),
            digest: c.digest.clone(),
            source: c.source.clone(),
            loaded_at: crate::receipt::utc(now_ns()),
            live_model: c.live.as_ref().map(|m| m.version.clone()),
            shadow_model: c.shadow.as_ref().map(|m| m.version.clone()),
            text: c.text.clone(),
        };
        let detail = serde_json::json!({
            "version": version, "digest": c.digest, "source": c.source,
            "live_model": record.live_model, "shadow_model": record.shadow_model,
        });
        let mut writes = vec![Write::Put(
            Table::RiskPolicies,
            version.to_be_bytes().to_vec(),
            serde_json::to_vec(&record).map_err(|e| e.to_string())?,
        )];
        writes.push(self.audit_write("policy_loaded", "policy-file", detail));
        self.meta.write(writes).await?;
        self.know_models(record.live_model.iter().chain(&record.shadow_model));
        {
            let mut e = self.engine.lock().unwrap();
            e.set_policy(c.policy, version);
            e.set_models(c.live, c.shadow);
        }
        let mut l = self.loaded.lock().unwrap();
        l.digest = c.digest;
        l.stamp = stamp_of(&c.files);
        l.refused = None;
        tracing::info!(version, source = %c.source, "risk policy in force");
        Ok(())
    }

    fn know_models<'a>(&self, versions: impl Iterator<Item = &'a String>) {
        let mut m = self.models.lock().unwrap();
        for v in versions {
            m.insert(farthing_risk::kept::model_digest(v), v.clone());
        }
    }

    fn audit_write(&self, kind: &str, actor: &str, detail: serde_json::Value) -> Write {
        let at = now_ns();
        let seq = self.audit_seq.fetch_add(1, Ordering::Relaxed);
        let mut key = at.to_be_bytes().to_vec();
        key.extend_from_slice(&seq.to_be_bytes());
        let entry = AuditEntry {
            at: crate::receipt::utc(at),
            kind: kind.to_string(),
            actor: actor.to_string(),
            detail,
        };
        Write::Put(Table::RiskAudit, key, serde_json::to_vec(&entry).expect("audit json"))
    }

    pub async fn audit(
        &self,
        kind: &str,
        actor: &str,
        detail: serde_json::Value,
    ) -> Result<(), String> {
        self.meta.write(vec![self.audit_write(kind, actor, detail)]).await
    }

    /// Checks the policy file (and its models) for a change; adopts a good new version,
    /// reports a bad one once and keeps the old.
    pub async fn reload(&self) -> Result<(), String> {
        let Some(path) = self.policy_path.clone() else { return Ok(()) };
        {
            // While a refused version is on disk, look every time: the model file it names
            // may appear later.
            let l = self.loaded.lock().unwrap();
            let now = stamp_of(&l.stamp.0.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>());
            if now == l.stamp && !l.stamp.0.is_empty() && l.refused.is_none() {
                return Ok(());
            }
        }
        let text_digest =
            std::fs::read_to_string(&path).map(|t| sha256_hex(&t)).unwrap_or_default();
        match read_candidate(Some(&path)) {
            Ok(c) => {
                let same = {
                    let l = self.loaded.lock().unwrap();
                    let e = self.engine.lock().unwrap();
                    l.digest == c.digest
                        && e.live_model().map(|m| &m.version) == c.live.as_ref().map(|m| &m.version)
                        && e.shadow_model().map(|m| &m.version)
                            == c.shadow.as_ref().map(|m| &m.version)
                };
                if same {
                    let mut l = self.loaded.lock().unwrap();
                    l.stamp = stamp_of(&c.files);
                    l.refused = None;
                    return Ok(());
                }
                let version = self.engine.lock().unwrap().policy_version() + 1;
                self.adopt(c, version).await
            }
            Err(reason) => {
                let report = {
                    let mut l = self.loaded.lock().unwrap();
                    // Look again next time only if something changes.
                    l.stamp =
                        stamp_of(&l.stamp.0.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>());
                    let seen = format!("{text_digest}:{reason}");
                    let new = l.refused.as_deref() != Some(seen.as_str());
                    l.refused = Some(seen);
                    new
                };
                if report {
                    tracing::warn!(%reason, "risk policy refused; the previous version stays in force");
                    self.audit(
                        "policy_refused",
                        "policy-file",
                        serde_json::json!({ "reason": reason, "digest": text_digest }),
                    )
                    .await?;
                }
                Ok(())
            }
        }
    }

    /// Rebuilds windows and spend counters from the payments of the last 32 days.
    async fn replay(
        &self,
        engine: &farthing_store::EngineHandle,
        directory: &Directory,
    ) -> Result<(), String> {
        let cutoff = now_ns().saturating_sub(REPLAY_NS);
        let recent: Vec<Transfer> = engine
            .read_async(move |sm| {
                let all = sm.transfers();
                let start = all.partition_point(|t| t.timestamp < cutoff);
                all[start..]
                    .iter()
                    .filter(|t| t.pending_id == 0)
                    .filter(|t| {
                        !t.flags.contains(TransferFlags::PENDING)
                            || matches!(
                                sm.pending_status(t.id),
                                Some(PendingStatus::Pending | PendingStatus::Posted)
                            )
                    })
                    .copied()
                    .collect()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut e = self.engine.lock().unwrap();
        let mut replayed = 0u64;
        for t in &recent {
            let [d, c] = directory.accounts([t.debit_account_id, t.credit_account_id]);
            let (Some(d), Some(c)) = (d, c) else { continue };
            // Settlements and refunds out of a channel's escrow are not payments: the lock
            // into it was (judged at the channel's opening or top-up).
            if !d.bounded || d.code == CODE_ESCROW {
                continue;
            }
            let scale = directory.asset(t.asset).map_or(0, |a| a.scale);
            let mut r = request(t, scale, &d, &c, None, None, None);
            r.payment.at_ns = t.timestamp;
            e.replay(&r);
            replayed += 1;
        }
        if replayed > 0 {
            tracing::info!(replayed, "risk engine: recent payments replayed");
        }
        Ok(())
    }

    pub fn register_asset(&self, id: u32, code: &str, scale: u8) {
        self.scales.lock().unwrap().insert(id, scale);
        self.engine.lock().unwrap().register_asset(id, code, scale);
    }

    /// A keyed hash of a device id or IP address: the engine never sees (or keeps) the text.
    fn hash(&self, kind: &[u8], text: &str) -> u64 {
        let mut h = Sha256::new();
        h.update(self.hash_key);
        h.update(kind);
        h.update(text.as_bytes());
        u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
    }

    /// The payment a transfer is, if it is one (out of a payer's wallet, not a post or void).
    pub fn payment(
        &self,
        t: &Transfer,
        scale: u8,
        debit: &AccountInfo,
        credit: Option<&AccountInfo>,
        context: Option<&RiskContext>,
    ) -> ApiResult<Option<Request>> {
        if !debit.bounded || t.pending_id != 0 {
            return Ok(None);
        }
        let Some(credit) = credit else { return Ok(None) };
        let (mut device, mut ip, mut channel) = (None, None, None);
        if let Some(cx) = context {
            device = cx.device.as_deref().map(|d| self.hash(b"device:", d));
            if let Some(text) = cx.ip.as_deref() {
                let addr: std::net::IpAddr = text.parse().map_err(|_| {
                    ApiError::invalid("risk_context/ip", format!("{text:?} is not an IP address."))
                })?;
                ip = Some(self.hash(b"ip:", &addr.to_string()));
            }
            if let Some(text) = cx.channel.as_deref() {
                channel = Some(Channel::parse(text).ok_or_else(|| {
                    ApiError::invalid(
                        "risk_context/channel",
                        "channel is one of web, app, api, iot.",
                    )
                })?);
            }
        }
        Ok(Some(request(t, scale, debit, credit, device, ip, channel)))
    }

    pub fn assess(&self, r: &Request) -> Decision {
        self.engine.lock().unwrap().assess(r)
    }

    pub fn release(&self, r: &Request, d: &Decision, refused_by_ledger: bool) {
        self.engine.lock().unwrap().release(r, d, refused_by_ledger)
    }

    /// What one payment channel in this asset may lock in all, under the policy.
    pub fn channel_locked_max(&self, asset: &str, scale: u8) -> Option<u128> {
        let e = self.engine.lock().unwrap();
        e.policy().channels.iter().find(|c| c.asset == asset).map(|c| c.locked_max.to_minor(scale))
    }

    pub fn hold_timeout_s(&self, action: Action) -> u32 {
        let e = self.engine.lock().unwrap();
        let h = e.policy().holds;
        match action {
            Action::Review => h.review_timeout_s,
            _ => h.step_up_timeout_s,
        }
    }

    pub fn record(
        &self,
        id: u128,
        r: &Request,
        d: &Decision,
        held: bool,
        scale: u8,
    ) -> DecisionRecord {
        DecisionRecord {
            transfer_id: id.to_string(),
            action: d.action.as_str().to_string(),
            score: d.score,
            reasons: d.reasons.iter().map(|r| r.to_string()).collect(),
            top_features: d
                .top
                .iter()
                .map(|(f, c)| Contribution { feature: f.to_string(), contribution: *c })
                .collect(),
            model: d.model.as_deref().map(str::to_string),
            policy_version: d.policy_version,
            exemption: d.exemption.map(|e| e.as_str().to_string()),
            shadow: d
                .shadow
                .map(|s| ShadowView { score: s.score, action: s.action.as_str().to_string() }),
            held,
            at: crate::receipt::utc(r.payment.at_ns),
            payer_account_id: r.payment.payer.to_string(),
            payee_account_id: r.payment.payee.to_string(),
            asset: r.asset,
            amount_minor: r.amount_minor.to_string(),
            amount: farthing_ledger::amount::format_amount(r.amount_minor, scale),
            opted_out: r.payment.opted_out || d.reasons.iter().any(|r| r == "profiling_opted_out"),
            // An opted-out payer's features are not kept beyond the windows they live in.
            features: if d.score.is_none() {
                Vec::new()
            } else {
                d.features.iter().map(|v| v.is_finite().then_some(*v)).collect()
            },
            base_raw: d.base_raw,
            at_ns: r.payment.at_ns,
            // Kept only while held, to give back the device's reservation on a reject.
            device: if held { r.payment.device } else { None },
        }
    }

    /// Keeps a declined payment's decision, durably (no transfer was made to keep it with).
    /// A decision kept with a transfer in the ledger always wins over this one.
    pub async fn keep_decline(&self, record: &DecisionRecord) -> Result<(), String> {
        let id: u128 = record.transfer_id.parse().map_err(|_| "bad id".to_string())?;
        let value = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        self.meta.write(vec![Write::Put(Table::RiskDecisions, be128(id), value)]).await
    }

    /// The decision to keep with transfer `id` in the ledger (same WAL record).
    pub fn kept(&self, id: u128, r: &Request, d: &Decision) -> farthing_ledger::Decision {
        let opted_out = r.payment.opted_out || d.reasons.iter().any(|r| r == "profiling_opted_out");
        let kept = Kept::of(d, opted_out, r.payment.device, r.payment.at_ns);
        farthing_ledger::Decision { transfer_id: id, body: kept.encode() }
    }

    /// Keeps the features a payment made by this request was judged on, off the answer's
    /// path: they only teach the online model when a label comes, and may be lost in a
    /// crash (the decision itself is in the ledger).
    pub fn keep_features(&self, t: &Transfer, d: &Decision) {
        if d.score.is_none() {
            // Not profiled (opted out, or no model): nothing to keep.
            return;
        }
        // When, then the features: old rows are pruned by age (`risk_features_retention_days`).
        let mut value = Vec::with_capacity(8 + N_FEATURES * 4);
        value.extend_from_slice(&now_ns().to_le_bytes());
        for v in d.features {
            value.extend_from_slice(&(v as f32).to_le_bytes());
        }
        let key = features_key(t.debit_account_id, t.id);
        if !self.meta.write_soon(vec![Write::Put(Table::RiskFeatures, key, value)]) {
            self.features_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The decision made for transfer `id`: the one kept with it in the ledger, or a
    /// decline's.
    pub async fn decision(&self, id: u128) -> Result<Option<Found>, String> {
        let (t, kept, held) = self
            .ledger
            .read_async(move |sm| {
                (sm.transfer(id).copied(), sm.decision(id).copied(), sm.is_held(id))
            })
            .await
            .map_err(|e| e.to_string())?;
        if let (Some(t), Some(kept)) = (t, kept) {
            let record = self.record_of(&t, &kept, held)?;
            return Ok(Some(Found { record, transfer: Some(t) }));
        }
        let declined = self.meta.get(Table::RiskDecisions, &be128(id))?;
        let record = declined.and_then(|v| serde_json::from_slice::<DecisionRecord>(&v).ok());
        // A record of an older version kept with a transfer made is shown, never held.
        Ok(record.map(|r| Found { record: DecisionRecord { held: false, ..r }, transfer: t }))
    }

    /// A decision kept in the ledger as the API's record, with its features if kept.
    fn record_of(
        &self,
        t: &Transfer,
        d: &farthing_ledger::Decision,
        held: bool,
    ) -> Result<DecisionRecord, String> {
        let k = Kept::decode(&d.body).map_err(|e| e.to_string())?;
        let features =
            match self.meta.get(Table::RiskFeatures, &features_key(t.debit_account_id, t.id))? {
                Some(v) => features_of(&v)
                    .1
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .map(|v| v.is_finite().then_some(f64::from(v)))
                    .collect(),
                None => Vec::new(),
            };
        let scale = self.scales.lock().unwrap().get(&t.asset).copied().unwrap_or(0);
        let model = (k.model_digest != 0).then(|| {
            let m = self.models.lock().unwrap();
            m.get(&k.model_digest).cloned().unwrap_or_else(|| format!("@{:016x}", k.model_digest))
        });
        Ok(DecisionRecord {
            transfer_id: t.id.to_string(),
            action: k.action.as_str().to_string(),
            score: k.score,
            reasons: k.reasons.iter().map(|r| r.to_string()).collect(),
            top_features: k
                .top
                .iter()
                .map(|(f, c)| Contribution { feature: f.to_string(), contribution: *c })
                .collect(),
            model,
            policy_version: k.policy_version,
            exemption: k.exemption.map(|e| e.as_str().to_string()),
            shadow: k.shadow.map(|(score, a)| ShadowView { score, action: a.as_str().into() }),
            held,
            at: crate::receipt::utc(k.at_ns),
            payer_account_id: t.debit_account_id.to_string(),
            payee_account_id: t.credit_account_id.to_string(),
            asset: t.asset,
            amount_minor: t.amount.to_string(),
            amount: farthing_ledger::amount::format_amount(t.amount, scale),
            opted_out: k.opted_out,
            features,
            base_raw: k.base_raw,
            at_ns: k.at_ns,
            device: if held { k.device } else { None },
        })
    }

    /// A decision as the API shows it: an approval's top features, not worked out on the
    /// payment path, are computed now from the features kept with it (by the same model,
    /// while it is loaded).
    pub fn explained_view(&self, record: &DecisionRecord) -> DecisionRecord {
        let mut view = record.view();
        if view.top_features.is_empty() && !record.features.is_empty() {
            if let Some(model) = &record.model {
                let features = record.feature_vector();
                if let Some(top) = self.engine.lock().unwrap().explain(&features, model) {
                    view.top_features = top
                        .into_iter()
                        .map(|(f, c)| Contribution { feature: f.to_string(), contribution: c })
                        .collect();
                }
            }
        }
        view
    }

    /// Marks a held payment approved or rejected (the record shows it is no longer held).
    pub async fn settle_hold(
        &self,
        record: &DecisionRecord,
        approved: bool,
        actor: &str,
    ) -> Result<(), String> {
        let id: u128 = record.transfer_id.parse().map_err(|_| "bad id".to_string())?;
        let payer: u128 = record.payer_account_id.parse().unwrap_or(0);
        let action = record.action();
        let mut writes = Vec::new();
        let kind = if approved { "approved" } else { "rejected" };
        writes.push(self.audit_write(
            kind,
            actor,
            serde_json::json!({ "transfer_id": record.transfer_id, "action": record.action }),
        ));
        // An operator's verdict on a review is a label (unless it has one): it teaches the
        // online model.
        if action == Action::Review && self.meta.get(Table::RiskLabels, &be128(id))?.is_none() {
            let label = if approved { "legitimate" } else { "fraud" };
            writes.extend(self.learn(record, label, actor)?);
        }
        {
            // The ledger has settled the hold: the engine follows at once, whatever
            // happens to the store's write below.
            let mut e = self.engine.lock().unwrap();
            if approved && action == Action::StepUp {
                e.strong_authentication(payer, record.asset);
            }
            if !approved {
                let r = self.request_of(record);
                let d = decision_of(record);
                e.release(&r, &d, false);
            }
        }
        self.meta.write(writes).await
    }

    fn request_of(&self, record: &DecisionRecord) -> Request {
        let amount_minor: u128 = record.amount_minor.parse().unwrap_or(0);
        Request {
            payment: Payment {
                at_ns: record.at_ns,
                payer: record.payer_account_id.parse().unwrap_or(0),
                payee: record.payee_account_id.parse().unwrap_or(0),
                amount: record.amount.parse().unwrap_or(0.0),
                device: record.device,
                ip: None,
                channel: None,
                merchant_category: None,
                payer_since_ns: None,
                opted_out: record.opted_out,
            },
            asset: record.asset,
            amount_minor,
        }
    }

    /// Teaches the online model from a confirmed outcome; returns the writes that keep
    /// the label and the model's new state.
    fn learn(
        &self,
        record: &DecisionRecord,
        label: &str,
        actor: &str,
    ) -> Result<Vec<Write>, String> {
        let fraud = label != "legitimate";
        let features = record.feature_vector();
        let payer: u128 = record.payer_account_id.parse().unwrap_or(0);
        let state = {
            let mut e = self.engine.lock().unwrap();
            let amount = record.amount.parse::<f64>().unwrap_or(0.0);
            if e.opted_out(payer) || record.features.is_empty() {
                // The payer's behaviour may not teach the model; the outcome still counts
                // toward the measured fraud rate.
                e.count_label(amount, now_ns(), fraud);
            } else {
                e.label(&features, record.base_raw, amount, now_ns(), fraud);
            }
            e.online().state()
        };
        let id: u128 = record.transfer_id.parse().map_err(|_| "bad id".to_string())?;
        let at = now_ns();
        let entry = serde_json::json!({ "transfer_id": record.transfer_id, "label": label, "actor": actor, "at": crate::receipt::utc(at), "at_ns": at });
        Ok(vec![
            Write::Put(Table::RiskLabels, be128(id), serde_json::to_vec(&entry).expect("json")),
            Write::Put(
                Table::Meta,
                b"risk_online".to_vec(),
                serde_json::to_vec(&state).expect("json"),
            ),
            self.audit_write("label", actor, entry),
        ])
    }

    /// A label posted through the API.
    pub async fn label(
        &self,
        record: &DecisionRecord,
        label: &str,
        actor: &str,
    ) -> Result<(), String> {
        let id: u128 = record.transfer_id.parse().map_err(|_| "bad id".to_string())?;
        if self.meta.get(Table::RiskLabels, &be128(id))?.is_some() {
            return Err(ALREADY_LABELLED.into());
        }
        let writes = self.learn(record, label, actor)?;
        self.meta.write(writes).await
    }

    /// The score the same payment would get now.
    pub fn rescore(&self, record: &DecisionRecord) -> Option<f64> {
        let features = record.feature_vector();
        self.engine.lock().unwrap().rescore(&features)
    }

    pub fn self_limits_view(&self, account: u128, scale: u8) -> (SelfLimitsView, bool) {
        let e = self.engine.lock().unwrap();
        let l = e.self_limits(account);
        let f = |v: Option<u128>| v.map(|v| farthing_ledger::amount::format_amount(v, scale));
        (
            SelfLimitsView {
                per_payment: f(l.per_payment),
                daily: f(l.daily),
                monthly: f(l.monthly),
            },
            e.opted_out(account),
        )
    }

    /// Sets an account's own limits and profiling choice, durably, with an audit entry.
    pub async fn set_account(
        &self,
        account: u128,
        scale: u8,
        limits: Option<SelfLimitsView>,
        opted_out: Option<bool>,
        actor: &str,
    ) -> ApiResult<()> {
        let current = self
            .meta
            .get(Table::RiskAccounts, &be128(account))
            .map_err(internal)?
            .and_then(|v| serde_json::from_slice::<AccountSettings>(&v).ok())
            .unwrap_or_default();
        let mut next = current.clone();
        if let Some(l) = &limits {
            next.per_payment = l.per_payment.clone();
            next.daily = l.daily.clone();
            next.monthly = l.monthly.clone();
        }
        if let Some(o) = opted_out {
            next.opted_out = o;
        }
        let parsed = settings_limits(&next, scale)?;
        let (kind, detail) = match opted_out {
            Some(o) => (
                "profiling",
                serde_json::json!({ "account_id": account.to_string(), "opted_out": o }),
            ),
            None => (
                "self_limits",
                serde_json::json!({ "account_id": account.to_string(), "per_payment": next.per_payment, "daily": next.daily, "monthly": next.monthly }),
            ),
        };
        let writes = vec![
            Write::Put(
                Table::RiskAccounts,
                be128(account),
                serde_json::to_vec(&next).expect("json"),
            ),
            self.audit_write(kind, actor, detail),
        ];
        self.meta.write(writes).await.map_err(internal)?;
        {
            let mut e = self.engine.lock().unwrap();
            e.set_self_limits(account, parsed);
            e.set_opted_out(account, next.opted_out);
        }
        if opted_out == Some(true) {
            self.strip_features(account).await.map_err(internal)?;
        }
        Ok(())
    }

    /// Deletes the features kept longer than `retention` (they teach the model only while a
    /// label may still come), walking the table a page at a time; returns how many. Rows of
    /// older builds carry no time and are kept.
    pub async fn prune_features(&self, retention: Duration) -> Result<usize, String> {
        let cutoff = now_ns().saturating_sub(retention.as_nanos() as u64);
        self.meta
            .delete_where(Table::RiskFeatures, |v| features_of(v).0.is_some_and(|at| at < cutoff))
            .await
    }

    /// Removes the features kept with a payer's past decisions (they opted out of
    /// profiling): the decisions stay, their inputs go. Keys start with the payer, so this
    /// reads only the payer's rows, a page at a time.
    async fn strip_features(&self, payer: u128) -> Result<(), String> {
        let prefix = payer.to_be_bytes();
        loop {
            let rows = self.meta.range(Table::RiskFeatures, &prefix, STRIP_PAGE_ROWS)?;
            let mine: Vec<Write> = rows
                .into_iter()
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| Write::Delete(Table::RiskFeatures, k))
                .collect();
            if mine.is_empty() {
                return Ok(());
            }
            let full = mine.len() == STRIP_PAGE_ROWS;
            self.meta.write(mine).await?;
            if !full {
                return Ok(());
            }
        }
    }

    /// One policy version, by number.
    pub fn policy_version(&self, version: u64) -> Result<Option<PolicyVersion>, String> {
        Ok(self
            .meta
            .get(Table::RiskPolicies, &version.to_be_bytes())?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// A page of the policy versions, newest first, from before `before` (a previous
    /// page's cursor); and the next page's cursor.
    pub fn policy_versions(
        &self,
        limit: usize,
        before: Option<&[u8]>,
    ) -> Result<(Vec<PolicyVersion>, Option<Vec<u8>>), String> {
        let (rows, next) = self.meta.page_rev(Table::RiskPolicies, b"", before, limit)?;
        Ok((rows.into_iter().filter_map(|(_, v)| serde_json::from_slice(&v).ok()).collect(), next))
    }

    /// A page of the audit trail, newest first; see [`Risk::policy_versions`].
    pub fn audit_trail(
        &self,
        limit: usize,
        before: Option<&[u8]>,
    ) -> Result<(Vec<AuditEntry>, Option<Vec<u8>>), String> {
        let (rows, next) = self.meta.page_rev(Table::RiskAudit, b"", before, limit)?;
        Ok((rows.into_iter().filter_map(|(_, v)| serde_json::from_slice(&v).ok()).collect(), next))
    }

    /// Of these asset codes, those the policy in force has neither caps nor security tiers
    /// for: payments in them are judged by the model and velocity alone.
    pub fn assets_without_rules(&self, codes: &[String]) -> Vec<String> {
        let e = self.engine.lock().unwrap();
        let policy = e.policy();
        codes
            .iter()
            .filter(|code| {
                !policy.caps.iter().any(|c| &c.asset == *code)
                    && !policy.tiers.iter().any(|t| &t.asset == *code)
            })
            .cloned()
            .collect()
    }

    /// What the engine is running with.
    pub fn status(&self) -> RiskStatus {
        let e = self.engine.lock().unwrap();
        let rep = e.shadow_report();
        let mut matrix: Vec<ShadowCell> = rep
            .matrix
            .iter()
            .map(|((l, c), n)| ShadowCell {
                live: l.as_str().into(),
                candidate: c.as_str().into(),
                payments: *n,
            })
            .collect();
        matrix.sort_by(|a, b| (&a.live, &a.candidate).cmp(&(&b.live, &b.candidate)));
        let [payers, payees, devices, ips] = e.feature_state().sizes();
        RiskStatus {
            policy_version: e.policy_version(),
            policy_name: e.policy().name.clone(),
            live_model: e.live_model().map(|m| m.version.clone()),
            shadow_model: e.shadow_model().map(|m| m.version.clone()),
            online_updates: e.online().updates,
            fraud_rate: e.fraud_rate(now_ns()),
            features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            tracked: TrackedKeys { payers, payees, devices, ips },
            shadow: ShadowSummary {
                scored: rep.scored,
                disagreements: rep.disagreements,
                mean_abs_score_diff: rep.mean_abs_diff,
                matrix,
            },
        }
    }
}

fn internal(e: String) -> ApiError {
    ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e)
}

fn settings_limits(s: &AccountSettings, scale: u8) -> ApiResult<SelfLimits> {
    let p = |field: &str, v: &Option<String>| {
        v.as_deref().map(|t| parse_dec(field, t, scale)).transpose()
    };
    Ok(SelfLimits {
        per_payment: p("per_payment", &s.per_payment)?,
        daily: p("daily", &s.daily)?,
        monthly: p("monthly", &s.monthly)?,
    })
}

fn decision_of(record: &DecisionRecord) -> Decision {
    Decision {
        action: record.action(),
        score: record.score,
        base_raw: record.base_raw,
        reasons: Vec::new(),
        top: Vec::new(),
        model: None,
        policy_version: record.policy_version,
        exemption: match record.exemption.as_deref() {
            Some("low_value") => Some(farthing_risk::engine::Exemption::LowValue),
            _ => None,
        },
        shadow: None,
        features: [f64::NAN; N_FEATURES],
    }
}

fn request(
    t: &Transfer,
    scale: u8,
    debit: &AccountInfo,
    credit: &AccountInfo,
    device: Option<u64>,
    ip: Option<u64>,
    channel: Option<Channel>,
) -> Request {
    Request {
        payment: Payment {
            at_ns: now_ns(),
            payer: t.debit_account_id,
            payee: t.credit_account_id,
            amount: t.amount as f64 / 10f64.powi(i32::from(scale)),
            device,
            ip,
            channel,
            merchant_category: Some(credit.code),
            payer_since_ns: Some(debit.created_ns),
            opted_out: false,
        },
        asset: t.asset,
        amount_minor: t.amount,
    }
}

/// An account's own limits, as decimal strings in its asset's units (absent: none).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelfLimitsView {
    #[serde(default)]
    pub per_payment: Option<String>,
    #[serde(default)]
    pub daily: Option<String>,
    #[serde(default)]
    pub monthly: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrackedKeys {
    pub payers: usize,
    pub payees: usize,
    pub devices: usize,
    pub ips: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShadowCell {
    pub live: String,
    pub candidate: String,
    pub payments: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShadowSummary {
    pub scored: u64,
    /// Payments the candidate would have decided differently.
    pub disagreements: u64,
    pub mean_abs_score_diff: f64,
    pub matrix: Vec<ShadowCell>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RiskStatus {
    pub policy_version: u64,
    pub policy_name: String,
    pub live_model: Option<String>,
    pub shadow_model: Option<String>,
    /// Labels the online model has learned from.
    pub online_updates: u64,
    /// Fraud by value over the last 90 days (PSD2 Art. 18), when there was volume.
    pub fraud_rate: Option<f64>,
    /// The features every model sees, in order.
    pub features: Vec<String>,
    /// Keys held in the feature tables (each bounded).
    pub tracked: TrackedKeys,
    pub shadow: ShadowSummary,
}

/// Checks the policy file for changes until the server stops.
/// A kept features row: when it was kept (rows of older builds carry no time), and the
/// features, 4 bytes each.
fn features_of(value: &[u8]) -> (Option<u64>, &[u8]) {
    match value.len() == 8 + N_FEATURES * 4 {
        true => {
            let at = u64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
            (Some(at), &value[8..])
        }
        false => (None, value),
    }
}

/// Prunes kept features past their retention, daily.
pub async fn prune_features_task(
    risk: Arc<Risk>,
    retention: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match risk.prune_features(retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned kept risk features past their retention"),
            Err(e) => tracing::warn!(error = %e, "pruning kept risk features"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(86_400)) => {}
            _ = stop.changed() => return,
        }
    }
}

pub async fn watch(risk: Arc<Risk>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = risk.reload().await {
            tracing::warn!(error = %e, "risk policy reload");
        }
    }
}
