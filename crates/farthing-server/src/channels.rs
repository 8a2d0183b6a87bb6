//! Payment channels and hash-chain streams on the ledger (docs/RAILS.md): the book of
//! channels in memory, their records in `server.redb`, and the ledger transfers that open,
//! top up, settle and close them.
//!
//! Each channel has an escrow account of its own (`debits_must_not_exceed_credits`): the
//! ledger itself never pays out of it more than was locked. Its balances are the truth
//! about money — locked = its credits, settled + refunded = its debits — so a restart
//! rebuilds every amount from the ledger; `server.redb` keeps only the terms, the state and
//! the best claim (one row per channel, written so that racing writes leave the highest).
//!
//! Ledger transfers of a channel have ids derived from the channel, the operation and the
//! amount before it (locked before a top-up, settled before a settlement): an operation
//! retried after a crash names the same transfer, which the ledger then finds made.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use ed25519_dalek::VerifyingKey;
use farthing_ledger::{Account, AccountFlags, CreateAccountResult, CreateTransferResult, Transfer};
use farthing_rails::channel::{Channel, ChannelError, SignedVoucher, State, Voucher};
use farthing_rails::hex::from_hex;
use farthing_rails::payword::{Commitment, Stream};
use farthing_store::EngineHandle;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::meta::{Meta, Table, Write};

/// Transfer codes of the rails' ledger transfers (the ledger's `code` field).
pub const CODE_LOCK: u16 = 0x7201;
pub const CODE_TOP_UP: u16 = 0x7202;
pub const CODE_SETTLE: u16 = 0x7203;
pub const CODE_REFUND: u16 = 0x7204;
/// The escrow accounts' code.
pub use crate::directory::CODE_ESCROW;

const OP_ESCROW: u8 = 0;
const OP_LOCK: u8 = 1;
const OP_TOP_UP: u8 = 2;
const OP_SETTLE: u8 = 3;
const OP_REFUND: u8 = 4;

/// Where a channel is, as kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Its record is written, its lock may not be on the ledger yet (a crash here is
    /// resolved at start: the lock made, it is open; else it never was).
    Opening,
    Open,
    Closing {
        dispute_until: u64,
    },
    Closed {
        paid: String,
        refunded: String,
        closed_at: u64,
    },
}

/// A stream's terms: the payer's signed commitment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaywordTerms {
    pub root: String,
    pub unit_price: String,
    pub length: u64,
    pub signature: String,
}

/// A channel's record in `server.redb`: its parties and terms (never amounts, which are
/// the ledger's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub id: String,
    pub payer_account_id: String,
    pub payee_account_id: String,
    pub escrow_account_id: String,
    pub asset: u32,
    pub payer_key: String,
    pub expires_at: u64,
    pub dispute_s: u64,
    pub state: Phase,
    pub payword: Option<PaywordTerms>,
    pub opened_amount: String,
    pub created_at: u64,
}

/// The best claim on a channel, as kept: `rank` (a voucher's sequence, a stream's tick)
/// first, big-endian, so that the store keeps the highest whatever order writes land in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    Voucher(SignedVoucher),
    Tick { tick: u64, preimage: [u8; 32] },
}

impl Claim {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 1 + 96);
        match self {
            Self::Voucher(sv) => {
                out.extend_from_slice(&sv.voucher.sequence.to_be_bytes());
                out.push(0);
                out.extend_from_slice(&sv.voucher.cumulative.to_be_bytes());
                out.extend_from_slice(&sv.voucher.expires_at_s.to_be_bytes());
                out.extend_from_slice(&sv.signature);
            }
            Self::Tick { tick, preimage } => {
                out.extend_from_slice(&tick.to_be_bytes());
                out.push(1);
                out.extend_from_slice(preimage);
            }
        }
        out
    }

    pub fn decode(channel: u128, b: &[u8]) -> Option<Self> {
        let rank = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        match (b.get(8)?, b.len()) {
            (0, 97) => Some(Self::Voucher(SignedVoucher {
                voucher: Voucher {
                    channel,
                    sequence: rank,
                    cumulative: u128::from_be_bytes(b[9..25].try_into().ok()?),
                    expires_at_s: u64::from_be_bytes(b[25..33].try_into().ok()?),
                },
                signature: b[33..97].try_into().ok()?,
            })),
            (1, 41) => Some(Self::Tick { tick: rank, preimage: b[9..41].try_into().ok()? }),
            _ => None,
        }
    }

    /// Is the kept claim `old` at or beyond `new`?
    pub fn ahead(old: &[u8], new: &[u8]) -> bool {
        old.len() >= 8 && new.len() >= 8 && old[..8] >= new[..8]
    }
}

/// How claims on a channel are checked.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per channel, held in place: never moved about
pub enum Rule {
    Vouchers(Channel),
    Stream { stream: Stream, locked: u128, best: Option<(u64, [u8; 32])> },
}

/// A channel as the book holds it.
#[derive(Clone, Debug)]
pub struct Live {
    pub rec: ChannelRecord,
    pub id: u128,
    pub payer: u128,
    pub payee: u128,
    pub escrow: u128,
    pub rule: Rule,
    /// Moved to the payee so far.
    pub settled: u128,
    pub refunded: u128,
    /// A final close has begun: no claim is taken from here on, whatever a caller's clock
    /// says (the claim is frozen before the money moves).
    pub finalizing: bool,
}

impl Live {
    pub fn locked(&self) -> u128 {
        match &self.rule {
            Rule::Vouchers(c) => c.locked,
            Rule::Stream { locked, .. } => *locked,
        }
    }

    /// What the payee may claim now, in all.
    pub fn claimable(&self) -> u128 {
        match &self.rule {
            Rule::Vouchers(c) => c.claimable(),
            Rule::Stream { stream, locked, .. } => {
                let price = stream.commitment.unit_price;
                u128::from(stream.ticks).saturating_mul(price).min(*locked)
            }
        }
    }

    pub fn due(&self) -> u128 {
        self.claimable().saturating_sub(self.settled)
    }

    /// Locked and neither claimed nor refunded: the payer's, at the end.
    pub fn payer_rest(&self) -> u128 {
        self.locked().saturating_sub(self.claimable()).saturating_sub(self.refunded)
    }

    pub fn best_claim(&self) -> Option<Claim> {
        match &self.rule {
            Rule::Vouchers(c) => c.best.map(Claim::Voucher),
            Rule::Stream { best, .. } => {
                best.map(|(tick, preimage)| Claim::Tick { tick, preimage })
            }
        }
    }

    /// Takes claims now? (Open before its expiry, or closing within its window.)
    pub fn takes_claims(&self, now_s: u64) -> bool {
        if self.finalizing {
            return false;
        }
        match self.rec.state {
            Phase::Open => now_s < self.rec.expires_at,
            Phase::Closing { dispute_until } => now_s < dispute_until,
            _ => false,
        }
    }

    /// Due to be finalized now (closing past its window, or open past its expiry)?
    pub fn ripe(&self, now_s: u64) -> bool {
        match self.rec.state {
            Phase::Open => now_s >= self.rec.expires_at,
            Phase::Closing { dispute_until } => now_s >= dispute_until,
            _ => false,
        }
    }

    /// Accepts a voucher: the increment. The best one again is a retry: `Ok(0)`.
    pub fn accept_voucher(&mut self, sv: &SignedVoucher, now_s: u64) -> Result<u128, ChannelError> {
        if self.finalizing {
            return Err(ChannelError::Closed);
        }
        let Rule::Vouchers(c) = &mut self.rule else { return Err(ChannelError::WrongChannel) };
        if c.best.as_ref() == Some(sv) {
            return Ok(0);
        }
        c.accept(sv, now_s)
    }

    /// Every check of [`Live::accept_voucher`] but the signature, changing nothing.
    pub fn precheck_voucher(&self, sv: &SignedVoucher, now_s: u64) -> Result<u128, ChannelError> {
        if self.finalizing {
            return Err(ChannelError::Closed);
        }
        let Rule::Vouchers(c) = &self.rule else { return Err(ChannelError::WrongChannel) };
        if c.best.as_ref() == Some(sv) {
            return Ok(0);
        }
        c.check_verified(sv, now_s)
    }

    /// [`Live::accept_voucher`] for a voucher whose signature was verified against
    /// [`Live::payer_key`].
    pub fn accept_verified_voucher(
        &mut self,
        sv: &SignedVoucher,
        now_s: u64,
    ) -> Result<u128, ChannelError> {
        if self.finalizing {
            return Err(ChannelError::Closed);
        }
        let Rule::Vouchers(c) = &mut self.rule else { return Err(ChannelError::WrongChannel) };
        if c.best.as_ref() == Some(sv) {
            return Ok(0);
        }
        c.accept_verified(sv, now_s)
    }

    /// The key that signs the channel's vouchers (and its stream's commitment).
    pub fn payer_key(&self) -> VerifyingKey {
        match &self.rule {
            Rule::Vouchers(c) => *c.payer_key(),
            Rule::Stream { .. } => parse_key(&self.rec.payer_key).expect("checked at open"),
        }
    }

    /// Accepts a stream's tick: the ticks gained. The best tick again is a retry: `Ok(0)`.
    pub fn accept_tick(
        &mut self,
        tick: u64,
        preimage: &[u8; 32],
        now_s: u64,
        skip_max: u64,
    ) -> Result<u64, ChannelError> {
        let open = self.takes_claims(now_s);
        let Rule::Stream { stream, best, .. } = &mut self.rule else {
            return Err(ChannelError::WrongChannel);
        };
        if !open {
            return Err(ChannelError::Closed);
        }
        if *best == Some((tick, *preimage)) {
            return Ok(0);
        }
        let gained = stream.tick(tick, preimage, now_s, skip_max)?;
        *best = Some((tick, *preimage));
        Ok(gained)
    }

    /// No claim gets in from `now_s` on (the first step of a final close): the record to
    /// keep, if this changed it.
    pub fn stop_claims(&mut self, now_s: u64) -> Option<ChannelRecord> {
        self.finalizing = true;
        match self.rec.state {
            Phase::Closed { .. } => None,
            Phase::Closing { dispute_until } if dispute_until <= now_s => None,
            _ => {
                self.set_phase(Phase::Closing { dispute_until: now_s });
                Some(self.rec.clone())
            }
        }
    }

    /// The last step of a final close, once what was due is settled and the rest refunded.
    pub fn mark_closed(&mut self, now_s: u64) {
        let phase = Phase::Closed {
            paid: self.settled.to_string(),
            refunded: self.refunded.to_string(),
            closed_at: now_s,
        };
        self.set_phase(phase);
    }

    /// Sets the state, here and in the voucher rules (which refuse by it).
    pub fn set_phase(&mut self, phase: Phase) {
        if let Rule::Vouchers(c) = &mut self.rule {
            c.state = match &phase {
                Phase::Opening | Phase::Open => State::Open,
                Phase::Closing { dispute_until } => {
                    State::Closing { dispute_until_s: *dispute_until }
                }
                Phase::Closed { .. } => {
                    State::Closed { paid: self.settled, refunded: self.refunded }
                }
            };
        }
        self.rec.state = phase;
    }

    pub fn add_locked(&mut self, amount: u128) {
        match &mut self.rule {
            Rule::Vouchers(c) => c.locked += amount,
            Rule::Stream { locked, .. } => *locked += amount,
        }
    }

    /// Builds the book's entry from a record, the best claim kept, and the escrow
    /// account's balances (locked = credits; settled + refunded = debits).
    pub fn restore(
        rec: ChannelRecord,
        claim: Option<Claim>,
        locked: u128,
        moved_out: u128,
        refunded: u128,
    ) -> Result<Self, String> {
        let bad = |what: &str| format!("channel {}: {what}", rec.id);
        let parse = |t: &str| t.parse::<u128>().map_err(|_| bad("a damaged id"));
        let (id, payer, payee, escrow) = (
            parse(&rec.id)?,
            parse(&rec.payer_account_id)?,
            parse(&rec.payee_account_id)?,
            parse(&rec.escrow_account_id)?,
        );
        let key = parse_key(&rec.payer_key).map_err(|_| bad("a damaged key"))?;
        let rule = match &rec.payword {
            None => {
                let mut c = Channel::open(id, key, locked, rec.expires_at);
                if let Some(Claim::Voucher(sv)) = claim {
                    c.best = Some(sv);
                }
                Rule::Vouchers(c)
            }
            Some(terms) => {
                let commitment = commitment(id, payee, terms, rec.expires_at)
                    .map_err(|_| bad("damaged stream terms"))?;
                let sig = hex64(&terms.signature).map_err(|_| bad("a damaged signature"))?;
                let mut stream = Stream::open(commitment, &sig, &key).map_err(|e| bad(e.code()))?;
                let mut best = None;
                if let Some(Claim::Tick { tick, preimage }) = claim {
                    stream.tick(tick, &preimage, 0, u64::MAX).map_err(|e| bad(e.code()))?;
                    best = Some((tick, preimage));
                }
                Rule::Stream { stream, locked, best }
            }
        };
        let phase = rec.state.clone();
        let ripe = matches!(phase, Phase::Closing { dispute_until } if dispute_until <= crate::auth::now_unix_s());
        let mut live = Self {
            rec,
            id,
            payer,
            payee,
            escrow,
            rule,
            settled: moved_out - refunded,
            refunded,
            finalizing: false,
        };
        live.set_phase(phase);
        live.finalizing = ripe;
        Ok(live)
    }
}

/// The stream commitment a channel's terms describe.
pub fn commitment(
    id: u128,
    payee: u128,
    t: &PaywordTerms,
    expires_at: u64,
) -> Result<Commitment, String> {
    Ok(Commitment {
        stream: id,
        payee,
        root: hex32(&t.root)?,
        unit_price: t.unit_price.parse().map_err(|_| "unit_price".to_string())?,
        length: t.length,
        expires_at_s: expires_at,
    })
}

pub fn parse_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = hex32(text)?;
    let key =
        VerifyingKey::from_bytes(&bytes).map_err(|_| "not an Ed25519 public key".to_string())?;
    if key.is_weak() {
        // A small-order key: signatures under it prove nothing.
        return Err("a weak (small-order) Ed25519 key".into());
    }
    Ok(key)
}

fn unhex<const N: usize>(text: &str) -> Result<[u8; N], String> {
    from_hex::<N>(text).ok_or_else(|| format!("{} hexadecimal characters expected", 2 * N))
}

pub fn hex32(text: &str) -> Result<[u8; 32], String> {
    unhex::<32>(text)
}

pub fn hex64(text: &str) -> Result<[u8; 64], String> {
    unhex::<64>(text)
}

pub use farthing_rails::hex::to_hex;

/// One channel of the book: its state behind a lock held for microseconds (claims), and a
/// second, async one that serializes the operations that write the ledger.
pub struct Slot {
    pub live: Mutex<Live>,
    pub ops: Arc<tokio::sync::Mutex<()>>,
}

/// The book of channels.
pub struct Rails {
    pub meta: Meta,
    pub engine: EngineHandle,
    secret: crate::meta::Secret,
    book: RwLock<HashMap<u128, Arc<Slot>>>,
    /// The channels newest first, all and by account (payer or payee), so that a list is a
    /// range of an index, never a walk of the whole book.
    listed: RwLock<Listed>,
    /// Ids being opened now (a second open of the same id waits its turn: refused).
    opening: Mutex<HashSet<u128>>,
}

/// Where a channel sorts in a list: its creation time (Unix seconds), then its id.
pub type ListKey = (u64, u128);

#[derive(Default)]
struct Listed {
    all: BTreeSet<ListKey>,
    by_account: HashMap<u128, BTreeSet<ListKey>>,
}

fn be128(v: u128) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

impl Rails {
    /// Loads every channel, resolving those a crash caught half-open, and rebuilding every
    /// amount from the escrow accounts.
    pub async fn open(
        meta: Meta,
        engine: EngineHandle,
        secret: crate::meta::Secret,
    ) -> Result<Self, String> {
        let rails = Self {
            meta,
            engine,
            secret,
            book: RwLock::new(HashMap::new()),
            listed: RwLock::new(Listed::default()),
            opening: Mutex::new(HashSet::new()),
        };
        let rows = rails.meta.scan(Table::Channels, &[])?;
        for (_, value) in rows {
            let mut rec: ChannelRecord = serde_json::from_slice(&value)
                .map_err(|e| format!("server.redb: a damaged channel record: {e}"))?;
            let id: u128 = rec.id.parse().map_err(|_| "server.redb: a damaged channel id")?;
            let escrow: u128 = rec.escrow_account_id.parse().map_err(|_| "damaged escrow id")?;
            let lock_id = rails.transfer_id(id, OP_LOCK, 0);
            let refund_id = rails.transfer_id(id, OP_REFUND, 0);
            let (account, lock, refund) = rails
                .engine
                .read_async(move |sm| {
                    (
                        sm.account(escrow).copied(),
                        sm.transfer(lock_id).copied(),
                        sm.transfer(refund_id).copied(),
                    )
                })
                .await
                .map_err(|e| e.to_string())?;
            if rec.state == Phase::Opening {
                if lock.is_none() {
                    // Never opened: the lock was not made.
                    rails.meta.write(vec![Write::Delete(Table::Channels, be128(id))]).await?;
                    continue;
                }
                rec.state = Phase::Open;
                rails.put_record(&rec).await?;
            }
            let balances = account.map(|a| a.balances).unwrap_or_default();
            let claim = rails
                .meta
                .get(Table::ChannelClaims, &be128(id))?
                .and_then(|b| Claim::decode(id, &b));
            let live = Live::restore(
                rec,
                claim,
                balances.credits_posted,
                balances.debits_posted,
                refund.map_or(0, |t| t.amount),
            )?;
            rails.insert(live);
        }
        Ok(rails)
    }

    /// A ledger id for one of a channel's accounts or transfers, derived from the
    /// directory's secret, the channel, the operation and a number.
    pub fn transfer_id(&self, channel: u128, op: u8, n: u128) -> u128 {
        let mut h = Sha256::new();
        h.update(b"farthing-channel-ledger-id\n");
        h.update(self.secret.0);
        h.update(channel.to_be_bytes());
        h.update([op]);
        h.update(n.to_be_bytes());
        let id = u128::from_be_bytes(h.finalize()[..16].try_into().expect("16 bytes"));
        id.clamp(1, u128::MAX - 1)
    }

    pub fn escrow_id(&self, channel: u128) -> u128 {
        self.transfer_id(channel, OP_ESCROW, 0)
    }

    pub fn lock_id(&self, channel: u128) -> u128 {
        self.transfer_id(channel, OP_LOCK, 0)
    }

    pub fn top_up_id(&self, channel: u128, locked_before: u128) -> u128 {
        self.transfer_id(channel, OP_TOP_UP, locked_before)
    }

    fn insert(&self, live: Live) {
        let id = live.id;
        let key = (live.rec.created_at, id);
        let (payer, payee) = (live.payer, live.payee);
        let slot =
            Arc::new(Slot { live: Mutex::new(live), ops: Arc::new(tokio::sync::Mutex::new(())) });
        if self.book.write().unwrap().insert(id, slot).is_none() {
            let mut listed = self.listed.write().unwrap();
            listed.all.insert(key);
            for account in [payer, payee] {
                listed.by_account.entry(account).or_default().insert(key);
            }
        }
    }

    /// Up to `limit` channels, newest first, of `account` (paying or paid) or of all, from
    /// before `before` (a previous page's last key); and whether more follow.
    pub fn page(
        &self,
        account: Option<u128>,
        before: Option<ListKey>,
        limit: usize,
    ) -> (Vec<Arc<Slot>>, bool) {
        let keys: Vec<ListKey> = {
            let listed = self.listed.read().unwrap();
            let set = match account {
                Some(a) => match listed.by_account.get(&a) {
                    Some(set) => set,
                    None => return (Vec::new(), false),
                },
                None => &listed.all,
            };
            let below = before.unwrap_or((u64::MAX, u128::MAX));
            set.range(..below).rev().take(limit + 1).copied().collect()
        };
        let more = keys.len() > limit;
        let book = self.book.read().unwrap();
        let slots = keys.iter().take(limit).filter_map(|(_, id)| book.get(id).cloned()).collect();
        (slots, more)
    }

    pub fn get(&self, id: u128) -> Option<Arc<Slot>> {
        self.book.read().unwrap().get(&id).cloned()
    }

    /// Every channel (a snapshot of the book's slots).
    pub fn all(&self) -> Vec<Arc<Slot>> {
        self.book.read().unwrap().values().cloned().collect()
    }

    pub async fn put_record(&self, rec: &ChannelRecord) -> Result<(), String> {
        let id: u128 = rec.id.parse().map_err(|_| "bad id".to_string())?;
        let value = serde_json::to_vec(rec).map_err(|e| e.to_string())?;
        self.meta.write(vec![Write::Put(Table::Channels, be128(id), value)]).await
    }

    /// The write that keeps a claim (unless a higher one is kept already).
    pub fn claim_write(id: u128, claim: &Claim) -> Write {
        Write::PutUnlessAhead(Table::ChannelClaims, be128(id), claim.encode(), Claim::ahead)
    }

    /// Marks an id as being opened; false if it already is.
    pub fn begin_open(&self, id: u128) -> bool {
        self.opening.lock().unwrap().insert(id)
    }

    pub fn end_open(&self, id: u128) {
        self.opening.lock().unwrap().remove(&id);
    }

    /// Opens a channel whose record is durable as `Opening`: the escrow account, then the
    /// lock (payer → escrow). On the ledger's refusal, the record goes and the code comes
    /// back; made, the channel is open.
    pub async fn make(
        &self,
        mut rec: ChannelRecord,
        amount: u128,
        payer_owner: u128,
        decision: farthing_ledger::Decision,
    ) -> Result<Result<(Live, Account), CreateTransferResult>, String> {
        let id: u128 = rec.id.parse().map_err(|_| "bad id".to_string())?;
        let escrow = Account {
            id: self.escrow_id(id),
            // The payer's, to see; but no key moves money in or out of it other than by the
            // channel's rules (the API refuses transfers that touch an escrow account).
            owner_id: payer_owner,
            user_data_64: 0,
            asset: rec.asset,
            code: CODE_ESCROW,
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::HISTORY,
            ..Account::default()
        };
        let made =
            self.engine.create_accounts_async(vec![escrow]).await.map_err(|e| e.to_string())?;
        if !matches!(made[0].code, CreateAccountResult::Ok | CreateAccountResult::Exists) {
            self.meta.write(vec![Write::Delete(Table::Channels, be128(id))]).await?;
            return Err(format!("the escrow account: {}", made[0].code.code()));
        }
        let lock = Transfer {
            id: self.lock_id(id),
            debit_account_id: rec.payer_account_id.parse().map_err(|_| "bad payer")?,
            credit_account_id: escrow.id,
            amount,
            user_data_128: id,
            asset: rec.asset,
            code: CODE_LOCK,
            ..Transfer::default()
        };
        // The lock travels with the risk engine's decision on it (if any), in one record.
        let result = self
            .engine
            .create_judged_transfers_async(vec![lock], vec![decision])
            .await
            .map_err(|e| e.to_string())?;
        if !matches!(result[0].code, CreateTransferResult::Ok | CreateTransferResult::Exists) {
            self.meta.write(vec![Write::Delete(Table::Channels, be128(id))]).await?;
            return Ok(Err(result[0].code));
        }
        rec.state = Phase::Open;
        self.put_record(&rec).await?;
        let eid = escrow.id;
        let stored = self
            .engine
            .read_async(move |sm| sm.account(eid).copied())
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the escrow account vanished")?;
        let live = Live::restore(rec, None, amount, 0, 0)?;
        self.insert(live.clone());
        Ok(Ok((live, stored)))
    }

    /// Moves what is due to the payee of one channel (its `ops` lock held by the caller):
    /// the transfer's id, or None when nothing is due.
    pub async fn settle_one(&self, slot: &Slot) -> Result<Option<u128>, String> {
        let t = {
            let live = slot.live.lock().unwrap();
            match self.settlement(&live) {
                Some(t) => t,
                None => return Ok(None),
            }
        };
        let result = self.engine.create_transfers_async(vec![t]).await;
        match result.as_deref().map(|r| r[0].code) {
            Ok(CreateTransferResult::Ok | CreateTransferResult::Exists) => {
                slot.live.lock().unwrap().settled += t.amount;
                Ok(Some(t.id))
            }
            other => {
                // The counters may be behind the ledger (an outcome unknown, say): read
                // them again, so the next attempt names the right transfer.
                self.resync(slot).await;
                Err(format!("the settlement was not made: {other:?}"))
            }
        }
    }

    /// Sets a channel's amounts from the ledger again: locked = the escrow's credits,
    /// refunded = the refund transfer's amount, settled = the rest of its debits.
    pub async fn resync(&self, slot: &Slot) {
        let (id, escrow) = {
            let live = slot.live.lock().unwrap();
            (live.id, live.escrow)
        };
        let refund_id = self.transfer_id(id, OP_REFUND, 0);
        let read = self
            .engine
            .read_async(move |sm| {
                (sm.account(escrow).map(|a| a.balances), sm.transfer(refund_id).map(|t| t.amount))
            })
            .await;
        if let Ok((Some(b), refund)) = read {
            let mut live = slot.live.lock().unwrap();
            let refunded = refund.unwrap_or(0);
            live.refunded = refunded;
            live.settled = b.debits_posted - refunded;
            let locked = live.locked();
            if b.credits_posted > locked {
                live.add_locked(b.credits_posted - locked);
            }
        }
    }

    /// The settlement transfer for what is due now, if anything is.
    fn settlement(&self, live: &Live) -> Option<Transfer> {
        // Never more than the escrow still holds (a backstop: the claim is frozen before a
        // refund, so the two cannot overlap).
        let held = live.locked().saturating_sub(live.settled).saturating_sub(live.refunded);
        let due = live.due().min(held);
        (due > 0).then(|| Transfer {
            id: self.transfer_id(live.id, OP_SETTLE, live.settled),
            debit_account_id: live.escrow,
            credit_account_id: live.payee,
            amount: due,
            user_data_128: live.id,
            asset: live.rec.asset,
            code: CODE_SETTLE,
            ..Transfer::default()
        })
    }

    /// Settles every channel with something due, one transfer each, all in one ledger
    /// batch. Channels busy with another operation wait for the next round. Returns the
    /// transfers made.
    pub async fn settle_all(&self) -> Result<Vec<(u128, Transfer)>, String> {
        let mut held = Vec::new();
        let mut batch = Vec::new();
        for slot in self.all() {
            let Ok(guard) = slot.ops.clone().try_lock_owned() else { continue };
            let t = self.settlement(&slot.live.lock().unwrap());
            if let Some(t) = t {
                batch.push(t);
                held.push((slot.clone(), guard));
            }
            if batch.len() == farthing_ledger::limits::BATCH_EVENTS_MAX {
                break;
            }
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let results = match self.engine.create_transfers_async(batch.clone()).await {
            Ok(r) => r,
            Err(e) => {
                for (slot, _) in &held {
                    self.resync(slot).await;
                }
                return Err(e.to_string());
            }
        };
        let mut made = Vec::new();
        for ((slot, _guard), (t, r)) in held.iter().zip(batch.iter().zip(results)) {
            match r.code {
                CreateTransferResult::Ok | CreateTransferResult::Exists => {
                    let mut live = slot.live.lock().unwrap();
                    live.settled += t.amount;
                    made.push((live.id, *t));
                }
                code => {
                    tracing::warn!(
                        channel = t.user_data_128,
                        code = code.code(),
                        "settlement refused"
                    );
                    self.resync(slot).await;
                }
            }
        }
        Ok(made)
    }

    /// Closes a channel for good (its `ops` lock held by the caller): no more claims; the
    /// payee gets what is due, the payer the rest; the record says so, durably.
    pub async fn finalize(&self, slot: &Slot, now_s: u64) -> Result<Live, String> {
        // The amounts as the ledger has them (a top-up or settlement whose outcome was
        // unknown is counted).
        self.resync(slot).await;
        let (ending, claim) = {
            let mut live = slot.live.lock().unwrap();
            if matches!(live.rec.state, Phase::Closed { .. }) {
                return Ok(live.clone());
            }
            (live.stop_claims(now_s), live.best_claim().map(|c| (live.id, c)))
        };
        // Durably, the record closed to claims and the frozen best claim together, before
        // any money moves: a crash in what follows reopens nothing, and the refund's amount
        // is the same after a restart.
        let mut writes = Vec::new();
        if let Some(rec) = ending {
            let value = serde_json::to_vec(&rec).map_err(|e| e.to_string())?;
            let id: u128 = rec.id.parse().map_err(|_| "bad id".to_string())?;
            writes.push(Write::Put(Table::Channels, be128(id), value));
        }
        if let Some((id, claim)) = claim {
            writes.push(Self::claim_write(id, &claim));
        }
        if !writes.is_empty() {
            self.meta.write(writes).await?;
        }
        // The payer's part first: it is due whatever becomes of the settlement (a payee
        // account that refuses credits must not keep the payer's money locked).
        let refund = {
            let live = slot.live.lock().unwrap();
            let rest = live.payer_rest();
            (rest > 0).then(|| Transfer {
                id: self.transfer_id(live.id, OP_REFUND, 0),
                debit_account_id: live.escrow,
                credit_account_id: live.payer,
                amount: rest,
                user_data_128: live.id,
                asset: live.rec.asset,
                code: CODE_REFUND,
                ..Transfer::default()
            })
        };
        if let Some(t) = refund {
            let r = self.engine.create_transfers_async(vec![t]).await;
            match r.as_deref().map(|r| r[0].code) {
                Ok(CreateTransferResult::Ok | CreateTransferResult::Exists) => {
                    slot.live.lock().unwrap().refunded += t.amount;
                }
                other => {
                    self.resync(slot).await;
                    return Err(format!("the refund was not made: {other:?}"));
                }
            }
        }
        self.settle_one(slot).await?;
        let rec = {
            let mut live = slot.live.lock().unwrap();
            live.mark_closed(now_s);
            live.rec.clone()
        };
        self.put_record(&rec).await?;
        Ok(slot.live.lock().unwrap().clone())
    }

    /// Finalizes every channel whose dispute window or life has ended. Returns how many.
    pub async fn finalize_ripe(&self, now_s: u64) -> usize {
        let mut n = 0;
        for slot in self.all() {
            if !slot.live.lock().unwrap().ripe(now_s) {
                continue;
            }
            let Ok(_guard) = slot.ops.try_lock() else { continue };
            match self.finalize(&slot, now_s).await {
                Ok(_) => n += 1,
                Err(e) => tracing::warn!(error = %e, "a channel could not be finalized"),
            }
        }
        n
    }
}

/// The rails' background work: settles due claims in batches and finalizes channels
/// whose window or life ended, every `every`, until the server stops (then once more).
pub async fn run(
    state: crate::state::AppState,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        match state.rails.settle_all().await {
            Ok(made) => {
                let n = made.len() as u64;
                state
                    .metrics
                    .channel_settlements
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "settling channels"),
        }
        state.rails.finalize_ripe(crate::auth::now_unix_s()).await;
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn claims_round_trip_and_the_store_keeps_the_highest() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let low = Voucher { channel: 9, sequence: 2, cumulative: 5, expires_at_s: 7 }.sign(&key);
        let high = Voucher { channel: 9, sequence: 300, cumulative: 6, expires_at_s: 7 }.sign(&key);
        for claim in [Claim::Voucher(low), Claim::Tick { tick: 4, preimage: [8; 32] }] {
            assert_eq!(Claim::decode(9, &claim.encode()), Some(claim));
        }
        let (l, h) = (Claim::Voucher(low).encode(), Claim::Voucher(high).encode());
        assert!(Claim::ahead(&h, &l) && !Claim::ahead(&l, &h));
        assert!(Claim::ahead(&l, &l), "the same claim again is not written twice");
        assert_eq!(Claim::decode(9, &l[..40]), None, "a damaged row is not a claim");
    }

    fn record(payword: Option<PaywordTerms>) -> ChannelRecord {
        ChannelRecord {
            id: "7".into(),
            payer_account_id: "1".into(),
            payee_account_id: "2".into(),
            escrow_account_id: "3".into(),
            asset: 1,
            payer_key: to_hex(SigningKey::from_bytes(&[1; 32]).verifying_key().as_bytes()),
            expires_at: 150,
            dispute_s: 40,
            state: Phase::Open,
            payword,
            opened_amount: "100".into(),
            created_at: 0,
        }
    }

    proptest::proptest! {
        /// The server's channel, driven as its routes and background task drive it — vouchers
        /// (the payer's or forged), top-ups, settlements, the payer's close, the payee's
        /// close, finalization when ripe — never pays the payee more than was locked, nor
        /// less than the best voucher taken before it closed; payee and payer together get
        /// exactly what was locked, once; and nothing is taken after the close.
        #[test]
        fn the_servers_channel_money_always_adds_up(
            ops in proptest::collection::vec((0u8..7, 0u64..50, 0u128..300, 0u64..30), 1..80)
        ) {
            let payer = SigningKey::from_bytes(&[1; 32]);
            let forger = SigningKey::from_bytes(&[2; 32]);
            let mut live = Live::restore(record(None), None, 100, 0, 0).unwrap();
            let mut now = 0u64;
            let mut best_taken = 0u128;
            for (op, seq, amount, dt) in ops {
                now += dt;
                let closed_before = matches!(live.rec.state, Phase::Closed { .. });
                match op {
                    0 | 1 => {
                        let signer = if op == 0 { &payer } else { &forger };
                        let v = Voucher { channel: 7, sequence: seq, cumulative: amount, expires_at_s: now + 30 };
                        if live.accept_voucher(&v.sign(signer), now).is_ok() {
                            proptest::prop_assert_eq!(op, 0, "only the payer's signature is taken");
                            proptest::prop_assert!(!closed_before, "nothing is taken after the close");
                            best_taken = best_taken.max(live.claimable());
                        }
                    }
                    2 => live.settled += live.due(),
                    3 => {
                        // A top-up: as the route allows it (open, before expiry).
                        if live.rec.state == Phase::Open && now < live.rec.expires_at {
                            live.add_locked(amount % 50);
                        }
                    }
                    4 => {
                        // The payer closes: the dispute window starts.
                        if live.rec.state == Phase::Open {
                            let until = now + live.rec.dispute_s;
                            live.set_phase(Phase::Closing { dispute_until: until });
                        }
                    }
                    _ => {
                        // The payee closes (op 5), or the background task finds it ripe.
                        if !closed_before && (op == 5 || live.ripe(now)) {
                            // As `Rails::finalize` does, the ledger's part aside.
                            live.stop_claims(now);
                            live.refunded += live.payer_rest();
                            live.settled += live.due();
                            live.mark_closed(now);
                        }
                    }
                }
                proptest::prop_assert!(live.claimable() <= live.locked(), "never more than locked");
                proptest::prop_assert!(live.settled + live.refunded <= live.locked());
                proptest::prop_assert!(live.settled <= live.claimable());
            }
            if matches!(live.rec.state, Phase::Closed { .. }) {
                proptest::prop_assert_eq!(live.settled + live.refunded, live.locked(), "everything locked goes somewhere");
                proptest::prop_assert_eq!(live.settled, best_taken, "the payee gets its best voucher");
            }
        }
    }

    #[test]
    fn a_final_close_takes_no_claim_whatever_the_callers_clock() {
        let payer = SigningKey::from_bytes(&[1; 32]);
        let mut live = Live::restore(record(None), None, 100, 0, 0).unwrap();
        let v = |seq, total| Voucher {
            channel: 7,
            sequence: seq,
            cumulative: total,
            expires_at_s: 149,
        };
        live.accept_voucher(&v(1, 10).sign(&payer), 10).unwrap();
        // Closing by the payer at 20: its window runs to 60.
        live.set_phase(Phase::Closing { dispute_until: 60 });
        live.accept_voucher(&v(2, 20).sign(&payer), 30).unwrap();
        // The final close starts at 60; a claim read with an older clock (59) is refused.
        live.stop_claims(60);
        let late = v(3, 30).sign(&payer);
        assert_eq!(live.accept_voucher(&late, 59), Err(ChannelError::Closed));
        assert_eq!(live.precheck_voucher(&late, 59), Err(ChannelError::Closed));
        assert_eq!(live.accept_verified_voucher(&late, 59), Err(ChannelError::Closed));
        assert_eq!(live.claimable(), 20);
    }

    #[test]
    fn hex_is_strict() {
        assert!(hex32(&"ab".repeat(32)).is_ok());
        assert!(hex32(&"ab".repeat(31)).is_err());
        assert!(hex32(&"zz".repeat(32)).is_err());
        assert_eq!(to_hex(&[0, 255]), "00ff");
    }
}
