//! The merchant's side: a book of channels in memory, a batching signature verifier, and a
//! flusher that settles the best new voucher of each channel with Farthing.
//!
//! A voucher is accepted — it becomes its channel's best in memory — before the paid route
//! runs, and reaches Farthing at the next flush. What was served but not yet flushed is at
//! the merchant's risk only until then (a refusal at flush blocks the channel here), and
//! the client's next voucher is cumulative, so it covers everything served before it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::VerifyingKey;
use farthing_rails::channel::{
    verify_signatures, Channel, ChannelError, SignedVoucher, VERIFY_BATCH_SIZE_MAX,
};

use crate::served::{Admission, NotServed, Served};
use crate::source::{ChannelInfo, ChannelSource, ChannelState, SourceError};
use crate::x402::{
    PaymentPayload, PaymentRequired, PaymentRequirements, RequirementsExtra, Resource,
    SettlementExtra, SettlementResponse, SCHEME, VOUCHER_ENCODING, X402_VERSION,
};

/// Channel ids remembered as unknown at most.
pub const UNKNOWN_CHANNELS_MAX: usize = 65_536;

/// Vouchers waiting for the verifier at most; beyond, requests are turned away (busy).
pub const VERIFY_QUEUE_MAX: usize = 16 * 1024;

/// What the paywall sells under, and how often it settles.
#[derive(Clone, Debug)]
pub struct PaywallConfig {
    /// `farthing:<ledger>`.
    pub network: String,
    /// The merchant's (payee's) account id.
    pub pay_to: String,
    /// Asset code, and its decimal places (prices are minor units).
    pub asset: String,
    pub asset_scale: u32,
    /// Farthing's base URL, told to clients (`extra.farthing`) to open channels at.
    pub farthing_url: String,
    pub max_timeout_seconds: u64,
    /// Minor units suggested for a new channel's deposit.
    pub suggested_deposit: u128,
    /// How often the best new vouchers are submitted to Farthing.
    pub flush_interval: Duration,
    /// Threads verifying signatures (each batches whatever is waiting).
    pub verifier_threads: usize,
    /// A known channel is refetched (for a voucher over its locked amount: a top-up?) at
    /// most this often.
    pub refetch_interval: Duration,
    /// A channel's state (open, closing) is asked again when older than this, before a
    /// voucher on it is taken: a payer's close is seen within it.
    pub state_refetch_interval: Duration,
    /// Slack for clocks and slow calls in the safety rules below.
    pub margin: Duration,
}

impl PaywallConfig {
    /// The shortest dispute window a channel may have to be paid through here: a payer's
    /// close is seen within `state_refetch_interval`, and what was taken before it reaches
    /// Farthing within `flush_interval`, both inside the window. A shorter window would
    /// let a payer close, spend, and take the money back before the vouchers arrive.
    pub fn dispute_s_min(&self) -> u64 {
        // The state fetch and the submit may each take up to their timeout.
        let calls = Duration::from_millis(2 * crate::source::FARTHING_TIMEOUT_MS);
        (self.flush_interval + self.state_refetch_interval + calls + self.margin).as_secs()
    }
}

impl PaywallConfig {
    /// Defaults: 60 s timeout, flush every 5 s, one verifier thread per core.
    pub fn new(network: &str, pay_to: &str, asset: &str, asset_scale: u32, farthing: &str) -> Self {
        Self {
            network: network.into(),
            pay_to: pay_to.into(),
            asset: asset.into(),
            asset_scale,
            farthing_url: farthing.into(),
            max_timeout_seconds: 60,
            suggested_deposit: 10u128.pow(asset_scale),
            flush_interval: Duration::from_secs(5),
            verifier_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            refetch_interval: Duration::from_secs(1),
            state_refetch_interval: Duration::from_secs(5),
            margin: Duration::from_secs(10),
        }
    }
}

/// Why a payment was turned away. `code` goes in the 402's `error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// A code of docs/RAILS.md (`voucher_bad_signature`, ...) or one of this paywall's:
    /// `payment_invalid` (an unreadable or mismatched header), `voucher_wrong_payee`,
    /// `voucher_wrong_asset`, `voucher_below_price`, `channel_unavailable` (Farthing
    /// could not be asked), `paywall_busy`.
    pub code: &'static str,
    pub detail: String,
}

impl Refused {
    fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into() }
    }
    fn channel(e: ChannelError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

/// A channel as the paywall keeps it.
struct Entry {
    channel: Channel,
    payer_account_id: String,
    payee_account_id: String,
    asset: String,
    open: bool,
    dispute_s: u64,
    /// The best voucher is newer than what Farthing was last given.
    dirty: bool,
    /// Farthing refused a voucher this paywall accepted (a bad signature): no more.
    blocked: bool,
    /// The sequences served and the credit: late vouchers are served, each once.
    served: Served,
    fetched_at: Instant,
}

impl Entry {
    /// `asked`: when the fetch was sent (the state is at least that fresh, no fresher).
    fn new(info: ChannelInfo, asked: Instant) -> Self {
        let mut channel =
            Channel::open(info.id, info.payer_key, info.locked_units, info.expires_at);
        channel.best = info.best_voucher;
        let served = Served::learned(info.best_voucher.map(|b| b.voucher.sequence));
        Self {
            channel,
            payer_account_id: info.payer_account_id,
            payee_account_id: info.payee_account_id,
            asset: info.asset,
            open: info.state == ChannelState::Open,
            dispute_s: info.dispute_s,
            dirty: false,
            blocked: false,
            served,
            fetched_at: asked,
        }
    }

    /// Learns a refetched channel, keeping a better voucher accepted here meanwhile.
    fn refresh(&mut self, info: ChannelInfo, asked: Instant) {
        let mine = self.channel.best;
        let dirty = self.dirty;
        let blocked = self.blocked;
        let served = std::mem::take(&mut self.served);
        *self = Self::new(info, asked);
        self.blocked = blocked;
        if let Some(mine) = mine {
            if self.channel.claimable() < mine.voucher.cumulative {
                self.channel.best = Some(mine);
                self.dirty = dirty;
                self.served = served;
            } else if self.channel.best == Some(mine) {
                // Farthing has what was served here: what was served stays known.
                self.served = served;
            }
        }
    }

    /// Every rule but the signature; `Ok` with the payer's key and what the voucher would
    /// do: become the best, or be served late (see [`crate::served`]).
    fn check(
        &self,
        config: &PaywallConfig,
        sv: &SignedVoucher,
        price: u128,
        now_s: u64,
    ) -> Result<(VerifyingKey, Admission), Refused> {
        if self.blocked || !self.open {
            return Err(Refused::channel(ChannelError::Closed));
        }
        if self.payee_account_id != config.pay_to {
            return Err(Refused::new("voucher_wrong_payee", "the channel pays someone else"));
        }
        if self.asset != config.asset {
            return Err(Refused::new("voucher_wrong_asset", "the channel is in another asset"));
        }
        if self.dispute_s < config.dispute_s_min() {
            return Err(Refused::new(
                "channel_dispute_too_short",
                format!(
                    "the channel's dispute window is {} s; this paywall needs at least {} s",
                    self.dispute_s,
                    config.dispute_s_min()
                ),
            ));
        }
        let last_flush = (config.flush_interval + config.margin).as_secs()
            + 2 * crate::source::FARTHING_TIMEOUT_MS / 1_000;
        if now_s.saturating_add(last_flush) >= self.channel.expires_at_s {
            return Err(Refused::new(
                "channel_closed",
                "the channel expires before a voucher taken now would reach Farthing",
            ));
        }
        self.channel.check_except_order(sv, now_s).map_err(Refused::channel)?;
        let v = &sv.voucher;
        let admission = self
            .served
            .check(v.sequence, v.cumulative, self.channel.claimable(), price)
            .map_err(|e| match e {
                NotServed::NotHigher => Refused::channel(ChannelError::NotHigher),
                NotServed::BelowPrice { covered } => Refused::new(
                    "voucher_below_price",
                    format!("the voucher pays {covered} of the price, {price}"),
                ),
            })?;
        if now_s.saturating_add(last_flush) >= sv.voucher.expires_at_s {
            return Err(Refused::new(
                "voucher_expires_too_soon",
                "the voucher expires before it would reach Farthing: sign it to last longer",
            ));
        }
        Ok((*self.channel.payer_key(), admission))
    }
}

/// A voucher waiting for its signature check.
struct Job {
    voucher: SignedVoucher,
    key: VerifyingKey,
    answer: tokio::sync::oneshot::Sender<bool>,
}

struct Inner {
    config: PaywallConfig,
    source: Arc<dyn ChannelSource>,
    book: Mutex<HashMap<u128, Entry>>,
    /// When a flush last reached Farthing whole (or found nothing to send). Past
    /// `flush_interval` twice plus the margin, no voucher is taken: what is served must
    /// reach Farthing within a channel's dispute window.
    flushed_ok: Mutex<Instant>,
    /// Channel ids Farthing said it does not know (for this merchant), and when: not
    /// asked again within `refetch_interval`, so junk vouchers cost no call each.
    unknown: Mutex<HashMap<u128, Instant>>,
    verifier: crossbeam_channel::Sender<Job>,
    /// One flush at a time.
    flushing: tokio::sync::Mutex<()>,
}

/// The paywall: cheap to clone (an `Arc` inside). Make per-route layers with
/// [`Paywall::layer`].
#[derive(Clone)]
pub struct Paywall {
    inner: Arc<Inner>,
}

/// What one flush did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub submitted: usize,
    pub refused: Vec<(u128, String)>,
}

impl Paywall {
    /// Starts the verifier threads and the flusher task: call it inside a Tokio runtime.
    /// Both stop once the last clone of the paywall is dropped (call [`Paywall::flush`]
    /// before, at shutdown).
    pub fn new(config: PaywallConfig, source: Arc<dyn ChannelSource>) -> Self {
        let (verifier, jobs) = crossbeam_channel::bounded(VERIFY_QUEUE_MAX);
        for _ in 0..config.verifier_threads.max(1) {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name("paywall-verify".into())
                .spawn(move || verify_loop(jobs))
                .expect("a verifier thread starts");
        }
        let interval = config.flush_interval;
        let inner = Arc::new(Inner {
            config,
            source,
            book: Mutex::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
            flushed_ok: Mutex::new(Instant::now()),
            verifier,
            flushing: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(flush_loop(Arc::downgrade(&inner), interval));
        Self { inner }
    }

    pub fn config(&self) -> &PaywallConfig {
        &self.inner.config
    }

    /// What to ask for: the `PAYMENT-REQUIRED` of a route, with `error`.
    pub fn required(
        &self,
        url: &str,
        description: &str,
        mime_type: &str,
        price: u128,
        error: &str,
    ) -> PaymentRequired {
        let c = &self.inner.config;
        PaymentRequired {
            x402_version: X402_VERSION,
            error: error.into(),
            resource: Resource {
                url: url.into(),
                description: description.into(),
                mime_type: mime_type.into(),
            },
            accepts: vec![PaymentRequirements {
                scheme: SCHEME.into(),
                network: c.network.clone(),
                amount: price.to_string(),
                asset: c.asset.clone(),
                pay_to: c.pay_to.clone(),
                max_timeout_seconds: c.max_timeout_seconds,
                extra: RequirementsExtra {
                    farthing: c.farthing_url.clone(),
                    asset_scale: c.asset_scale,
                    voucher: VOUCHER_ENCODING.into(),
                    suggested_deposit: c.suggested_deposit.to_string(),
                },
            }],
        }
    }

    /// Reads a `PAYMENT-SIGNATURE` header and takes its voucher for `price` minor units:
    /// on `Ok` the voucher is its channel's best, and the answer is the `PAYMENT-RESPONSE`.
    pub async fn admit(&self, header: &str, price: u128) -> Result<SettlementResponse, Refused> {
        let payload = PaymentPayload::from_header(header)
            .map_err(|e| Refused::new("payment_invalid", e.to_string()))?;
        let c = &self.inner.config;
        let accepted = &payload.accepted;
        if accepted.network != c.network || accepted.pay_to != c.pay_to || accepted.asset != c.asset
        {
            return Err(Refused::new("payment_invalid", "accepted is not what this route offers"));
        }
        let sv = payload
            .payload
            .to_signed()
            .map_err(|e| Refused::new("payment_invalid", e.to_string()))?;
        self.take(&sv, price, now_s()).await
    }

    /// Takes a voucher for `price` minor units at `now_s`; see [`Paywall::admit`].
    pub async fn take(
        &self,
        sv: &SignedVoucher,
        price: u128,
        now_s: u64,
    ) -> Result<SettlementResponse, Refused> {
        let c = &self.inner.config;
        let since = self.inner.flushed_ok.lock().expect("flushed lock").elapsed();
        if since > 2 * c.flush_interval + c.margin {
            return Err(Refused::new(
                "paywall_busy",
                "vouchers are not reaching Farthing (the last flushes failed): none is taken",
            ));
        }
        let key = self.precheck(sv, price, now_s).await?;
        if !self.verify(sv, key).await? {
            return Err(Refused::channel(ChannelError::BadSignature));
        }
        // Again under the lock: another request may have moved the channel meanwhile.
        let mut book = self.inner.book.lock().expect("book lock");
        let entry = book.get_mut(&sv.voucher.channel).ok_or_else(|| {
            Refused::new("channel_unavailable", "the channel was dropped meanwhile")
        })?;
        let (verified_key, admission) = entry.check(&self.inner.config, sv, price, now_s)?;
        if verified_key != key {
            return Err(Refused::channel(ChannelError::BadSignature));
        }
        if let Admission::Higher { .. } = admission {
            entry.channel.accept_verified(sv, now_s).map_err(Refused::channel)?;
            entry.dirty = true;
        }
        let v = &sv.voucher;
        entry.served.serve(v.sequence, admission, price);
        let claimed = entry.channel.claimable();
        Ok(SettlementResponse {
            success: true,
            network: self.inner.config.network.clone(),
            transaction: format!("{}/{}", v.channel, v.sequence),
            payer: entry.payer_account_id.clone(),
            extra: SettlementExtra {
                channel_id: v.channel.to_string(),
                claimed: claimed.to_string(),
                remaining: (entry.channel.locked - claimed).to_string(),
            },
        })
    }

    /// The channel's rules, learning the channel if new, and refetching it once if the
    /// voucher is over the locked amount (a top-up).
    async fn precheck(
        &self,
        sv: &SignedVoucher,
        price: u128,
        now_s: u64,
    ) -> Result<VerifyingKey, Refused> {
        let id = sv.voucher.channel;
        let known = {
            let book = self.inner.book.lock().expect("book lock");
            book.get(&id).map(|e| {
                let age = e.fetched_at.elapsed();
                let fresh = age < self.inner.config.refetch_interval;
                let stale = age >= self.inner.config.state_refetch_interval;
                (e.check(&self.inner.config, sv, price, now_s).map(|(key, _)| key), fresh, stale)
            })
        };
        match known {
            // Its state is old: a close may have come meanwhile.
            Some((_, _, true)) => {}
            Some((Err(r), false, _)) if r.code == ChannelError::OverLocked.code() => {}
            Some((result, _, _)) => return result,
            None => {
                let mut unknown = self.inner.unknown.lock().expect("unknown lock");
                if let Some(at) = unknown.get(&id) {
                    if at.elapsed() < self.inner.config.refetch_interval {
                        return Err(Refused::channel(ChannelError::WrongChannel));
                    }
                    unknown.remove(&id);
                }
            }
        }
        let asked = Instant::now();
        let info = self.inner.source.fetch(id).await.map_err(|e| match e {
            SourceError::NotFound => {
                let mut unknown = self.inner.unknown.lock().expect("unknown lock");
                // Bounded: past the bound, the oldest half goes.
                if unknown.len() >= UNKNOWN_CHANNELS_MAX {
                    let mut ages: Vec<_> = unknown.iter().map(|(k, v)| (*v, *k)).collect();
                    ages.sort();
                    for (_, k) in ages.iter().take(UNKNOWN_CHANNELS_MAX / 2) {
                        unknown.remove(k);
                    }
                }
                unknown.insert(id, Instant::now());
                Refused::channel(ChannelError::WrongChannel)
            }
            e => Refused::new("channel_unavailable", e.to_string()),
        })?;
        if info.id != id {
            return Err(Refused::channel(ChannelError::WrongChannel));
        }
        let mut book = self.inner.book.lock().expect("book lock");
        let entry = match book.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let entry = e.into_mut();
                entry.refresh(info, asked);
                entry
            }
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Entry::new(info, asked)),
        };
        entry.check(&self.inner.config, sv, price, now_s).map(|(key, _)| key)
    }

    /// Hands the voucher to the verifier threads; `Ok(signature good)`.
    async fn verify(&self, sv: &SignedVoucher, key: VerifyingKey) -> Result<bool, Refused> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job = Job { voucher: *sv, key, answer };
        self.inner
            .verifier
            .try_send(job)
            .map_err(|_| Refused::new("paywall_busy", "too many payments waiting"))?;
        answered.await.map_err(|_| Refused::new("paywall_busy", "the verifier stopped"))
    }

    /// The best voucher kept for a channel, if the paywall knows it.
    pub fn best(&self, channel_id: u128) -> Option<SignedVoucher> {
        let book = self.inner.book.lock().expect("book lock");
        book.get(&channel_id).and_then(|e| e.channel.best)
    }

    /// Submits the best new voucher of each channel to Farthing, in one call. Run by the
    /// flusher every flush interval; call it at shutdown too.
    pub async fn flush(&self) -> Result<FlushReport, SourceError> {
        flush_inner(&self.inner).await
    }
}

/// Vouchers in one submit (Farthing's batch route takes 4,096).
pub const SUBMIT_BATCH_MAX: usize = 4_096;

async fn flush_inner(inner: &Inner) -> Result<FlushReport, SourceError> {
    let _one = inner.flushing.lock().await;
    let all: Vec<SignedVoucher> = {
        let mut book = inner.book.lock().expect("book lock");
        book.values_mut()
            .filter(|e| e.dirty)
            .filter_map(|e| {
                e.dirty = false;
                e.channel.best
            })
            .collect()
    };
    let mut report = FlushReport { submitted: all.len(), refused: Vec::new() };
    let mut failed = None;
    for vouchers in all.chunks(SUBMIT_BATCH_MAX) {
        match inner.source.submit(vouchers.to_vec()).await {
            Ok(results) => learn(inner, vouchers, results, &mut report),
            Err(e) => {
                redirty(inner, vouchers);
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => {
            *inner.flushed_ok.lock().expect("flushed lock") = Instant::now();
            Ok(report)
        }
    }
}

/// What Farthing answered to a submit.
fn learn(
    inner: &Inner,
    vouchers: &[SignedVoucher],
    results: Vec<crate::source::SubmitResult>,
    report: &mut FlushReport,
) {
    let mut book = inner.book.lock().expect("book lock");
    for (sv, result) in vouchers.iter().zip(results) {
        let Err(refusal) = result.outcome else { continue };
        let id = sv.voucher.channel;
        if refusal.code == ChannelError::BadSignature.code() {
            // Passed the batch here, failed one by one there: never serve it again.
            if let Some(e) = book.get_mut(&id) {
                e.blocked = true;
            }
        } else if refusal.code == ChannelError::Closed.code() {
            // Closed for good: take nothing more on it, whatever was taken meanwhile.
            if let Some(e) = book.get_mut(&id) {
                e.open = false;
            }
        } else if book.get(&id).is_some_and(|e| !e.dirty) {
            // Farthing knows better (a higher voucher): learn it afresh.
            book.remove(&id);
        }
        report.refused.push((id, refusal.code));
    }
}

/// After a failed submit: the vouchers are still to send, unless a newer one is.
fn redirty(inner: &Inner, vouchers: &[SignedVoucher]) {
    let mut book = inner.book.lock().expect("book lock");
    for sv in vouchers {
        if let Some(e) = book.get_mut(&sv.voucher.channel) {
            e.dirty = true;
        }
    }
}

async fn flush_loop(inner: Weak<Inner>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        // A failure leaves the vouchers dirty: the next tick tries again.
        let _ = flush_inner(&inner).await;
    }
}

/// One verifier thread: takes whatever is waiting (up to a batch), verifies it at once,
/// answers each. A lone voucher is verified alone, without waiting for company.
fn verify_loop(jobs: crossbeam_channel::Receiver<Job>) {
    let mut batch = Vec::with_capacity(VERIFY_BATCH_SIZE_MAX);
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < VERIFY_BATCH_SIZE_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let items: Vec<_> = batch.iter().map(|j| (&j.voucher, &j.key)).collect();
        let ok = verify_signatures(&items);
        for (job, ok) in batch.drain(..).zip(ok) {
            let _ = job.answer.send(ok);
        }
    }
}

pub(crate) fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
