//! The state as bytes and back, for snapshots. Indexes are rebuilt on load, not stored.
//!
//! Transfers never change once committed, so a snapshot holds only the transfers committed
//! since the previous one (from position `transfers_from`) plus the whole of the mutable
//! state (accounts, pending states, remembered failures, balance history); a chain of
//! snapshots rebuilds the ledger. The transfers, the bulk, cost in proportion to what happened
//! since the last snapshot; the mutable state grows with the ledger.
//!
//! Layout: `FSNAPST3`, `transfers_from` (u64), then u64 counts (assets, accounts, transfers
//! in this part, pending, failed, history accounts, decisions in this part) and
//! `last_timestamp`, then the sections in that order: assets (32 B), accounts (128 B),
//! transfers (128 B), decisions (transfer position u32, 4 zero bytes, then the decision's
//! 128 B: those kept with this part's transfers), pending (index u32, status u8, 3 zero bytes,
//! expires_at u64), failed (id u128, code u8, 15 zero bytes), history (account index u32,
//! rows u32, then rows of timestamp u64 and four u128 balances). `FSNAPST2`, written before
//! decisions existed, has no decision count or section and is still read.

use crate::codec::{
    decode_account, decode_asset, decode_decision, decode_transfer, encode_accounts, encode_assets,
    encode_decision, encode_transfers,
};
use crate::limits::{ASSET_BYTES, EVENT_BYTES};
use crate::results::CreateTransferResult;
use crate::state::{PendingState, StateMachine};
use crate::types::{BalanceAt, Balances, PendingStatus};

const MAGIC: &[u8; 8] = b"FSNAPST3";
/// The layout before decisions: read, never written.
const MAGIC_V2: &[u8; 8] = b"FSNAPST2";
const HISTORY_ROW_BYTES: usize = 8 + 64;
const DECISION_ROW_BYTES: usize = 8 + EVENT_BYTES;

/// A snapshot captured at one instant, its transfers encoded a piece at a time.
#[derive(Debug)]
pub struct SnapshotBuilder {
    out: Vec<u8>,
    tail: Vec<u8>,
    from: usize,
    next: usize,
    end: usize,
    /// The decisions of this part (indexes into the ledger's list), encoded after the
    /// transfers.
    decision_next: usize,
    decision_end: usize,
}

impl SnapshotBuilder {
    /// Encodes up to `max` more transfers from `sm` (the ledger it was begun on; transfers
    /// before `end` never change). Returns true once all are encoded.
    pub fn step(&mut self, sm: &StateMachine, max: usize) -> bool {
        let stop = self.end.min(self.next.saturating_add(max));
        encode_transfers(&sm.transfers[self.next..stop], &mut self.out);
        let budget = max - (stop - self.next).min(max);
        self.next = stop;
        if self.next < self.end {
            return false;
        }
        let stop = self.decision_end.min(self.decision_next.saturating_add(budget));
        let mut buf = [0u8; EVENT_BYTES];
        for (position, d) in &sm.decisions[self.decision_next..stop] {
            self.out.extend_from_slice(&(*position as u64).to_le_bytes());
            encode_decision(d, &mut buf);
            self.out.extend_from_slice(&buf);
        }
        self.decision_next = stop;
        self.decision_next == self.decision_end
    }

    /// Position of the first transfer this snapshot holds.
    pub fn transfers_from(&self) -> usize {
        self.from
    }

    /// Position just after the last transfer this snapshot holds.
    pub fn transfers_end(&self) -> usize {
        self.end
    }

    /// The encoded snapshot. Panics if transfers remain to be encoded.
    pub fn finish(mut self) -> Vec<u8> {
        assert_eq!(self.next, self.end, "snapshot finished before its transfers");
        assert_eq!(self.decision_next, self.decision_end, "snapshot finished before decisions");
        self.out.extend_from_slice(&self.tail);
        self.out
    }
}

impl StateMachine {
    /// Appends the encoded state to `out`: every transfer from position `transfers_from` on,
    /// and all the rest of the state. `transfers_from` 0 makes a self-contained snapshot.
    pub fn encode_snapshot(&self, transfers_from: usize, out: &mut Vec<u8>) {
        let mut builder = self.begin_snapshot(transfers_from);
        while !builder.step(self, usize::MAX) {}
        out.extend_from_slice(&builder.finish());
    }

    /// Captures the state now and returns a builder that encodes the transfers (which never
    /// change) a piece at a time, so that a large snapshot never stalls the writer.
    pub fn begin_snapshot(&self, transfers_from: usize) -> SnapshotBuilder {
        assert!(transfers_from <= self.transfers.len(), "snapshot starts past the log");
        let end = self.transfers.len();
        let decisions_from =
            self.decisions.partition_point(|(p, _)| (*p as usize) < transfers_from);
        let decisions_end = self.decisions.len();
        let mut tail = Vec::new();
        self.encode_tail(&mut tail);
        let mut out = Vec::with_capacity(64 + (end - transfers_from) * EVENT_BYTES + tail.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(transfers_from as u64).to_le_bytes());
        for n in [
            self.assets.len(),
            self.accounts.len(),
            end - transfers_from,
            self.pending.len(),
            self.failed.len(),
            self.history.len(),
            decisions_end - decisions_from,
        ] {
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
        out.extend_from_slice(&self.last_timestamp.to_le_bytes());
        encode_assets(&self.assets(), &mut out);
        encode_accounts(&self.accounts, &mut out);
        SnapshotBuilder {
            out,
            tail,
            from: transfers_from,
            next: transfers_from,
            end,
            decision_next: decisions_from,
            decision_end: decisions_end,
        }
    }

    /// Pending states, failures and history: the sections after the transfers.
    fn encode_tail(&self, out: &mut Vec<u8>) {
        let mut pending: Vec<_> = self.pending.iter().collect();
        pending.sort_unstable_by_key(|(i, _)| **i);
        for (index, p) in pending {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&[p.status as u8, 0, 0, 0]);
            out.extend_from_slice(&p.expires_at.to_le_bytes());
        }
        let mut failed: Vec<_> = self.failed.iter().collect();
        failed.sort_unstable_by_key(|(id, _)| **id);
        for (id, code) in failed {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&[*code as u8]);
            out.extend_from_slice(&[0u8; 15]);
        }
        let mut history: Vec<_> = self.history.iter().collect();
        history.sort_unstable_by_key(|(i, _)| **i);
        for (index, rows) in history {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
            for r in rows {
                out.extend_from_slice(&r.timestamp.to_le_bytes());
                let b = &r.balances;
                for v in [b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }

    /// Rebuilds a state from one self-contained snapshot (`transfers_from` 0).
    pub fn decode_snapshot(bytes: &[u8]) -> Result<Self, String> {
        Self::decode_snapshot_chain(&[bytes]).map_err(|(_, reason)| reason)
    }

    /// Rebuilds a state from a chain of snapshots, oldest first: the transfers of every part,
    /// each continuing where the previous ended, and the rest of the state from the last.
    /// Every length and cross-reference is checked; a malformed chain is an error, never a
    /// partial state. An error names the part (its index) it was found in.
    pub fn decode_snapshot_chain(parts: &[&[u8]]) -> Result<Self, (usize, String)> {
        Self::decode_snapshot_chain_reserving(parts, 0)
    }

    /// Like [`Self::decode_snapshot_chain`], with room reserved up front for `transfers`
    /// transfers in all (what the chain and the log after it hold), so nothing regrows.
    pub fn decode_snapshot_chain_reserving(
        parts: &[&[u8]],
        transfers: usize,
    ) -> Result<Self, (usize, String)> {
        let mut sm = StateMachine::new();
        sm.reserve(0, transfers);
        if parts.is_empty() {
            return Err((0, "no snapshot".into()));
        }
        // A part that starts at transfer 0 is self-contained: the chain restarts there.
        let starts_at = |p: &[u8]| p.get(8..16).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
        let first = parts.iter().rposition(|p| starts_at(p) == Some(0)).unwrap_or(0);
        for (i, part) in parts.iter().enumerate().skip(first) {
            sm.decode_part(part, i + 1 == parts.len()).map_err(|e| (i, e))?;
        }
        Ok(sm)
    }

    /// Decodes one part: its transfers always, the rest only for the `last` part.
    fn decode_part(&mut self, bytes: &[u8], last: bool) -> Result<(), String> {
        let mut r = Cursor { bytes, at: 0 };
        let magic = r.take(8)?;
        if magic != MAGIC && magic != MAGIC_V2 {
            return Err("not a Farthing state snapshot (bad magic)".into());
        }
        let transfers_from = r.u64()?;
        if transfers_from != self.transfers.len() as u64 {
            return Err(format!(
                "snapshot continues the log at transfer {transfers_from}, the chain so far \
                 holds {}",
                self.transfers.len()
            ));
        }
        let mut counts = [0usize; 7];
        let sections = if magic == MAGIC { 7 } else { 6 };
        for c in &mut counts[..sections] {
            *c = usize::try_from(r.u64()?).map_err(|_| "count too large")?;
        }
        let [assets, accounts, transfers, pending, failed, history, decisions] = counts;
        let last_timestamp = r.u64()?;
        let asset_bytes = r.take(assets.checked_mul(ASSET_BYTES).ok_or("count too large")?)?;
        let account_bytes = r.take(accounts.checked_mul(EVENT_BYTES).ok_or("count too large")?)?;
        // Accounts must be known to index transfers: take this part's (every part lists all
        // accounts that existed when it was taken, a superset of those its transfers name).
        self.accounts.clear();
        self.account_index.clear();
        self.account_transfers.iter_mut().for_each(Vec::clear);
        self.account_transfers.resize(accounts, Vec::new());
        self.accounts.reserve(accounts);
        for (i, chunk) in account_bytes.chunks_exact(EVENT_BYTES).enumerate() {
            let a = decode_account(chunk);
            if self.account_index.insert(a.id, i as u32).is_some() {
                return Err(format!("account {} appears twice", a.id));
            }
            self.accounts.push(a);
        }
        let transfer_bytes =
            r.take(transfers.checked_mul(EVENT_BYTES).ok_or("count too large")?)?;
        self.transfers.reserve(transfers);
        self.transfer_index.reserve(transfers, &self.transfers);
        for chunk in transfer_bytes.chunks_exact(EVENT_BYTES) {
            let t = decode_transfer(chunk);
            if self.transfer_position(t.id).is_some() {
                return Err(format!("transfer {} appears twice", t.id));
            }
            if self.transfers.last().is_some_and(|p| p.timestamp >= t.timestamp) {
                return Err(format!("transfer {} is out of time order", t.id));
            }
            let position = self.transfers.len() as u32;
            self.transfer_index.insert(t.id, position, &self.transfers);
            self.transfers.push(t);
        }
        self.decode_decisions(&mut r, transfers_from as usize, decisions)?;
        if !last {
            return Ok(());
        }
        if self.transfers.last().is_some_and(|t| t.timestamp > last_timestamp) {
            return Err("the last timestamp is before the last transfer's".into());
        }
        self.last_timestamp = last_timestamp;
        for chunk in asset_bytes.chunks_exact(ASSET_BYTES) {
            let a = decode_asset(chunk);
            if self.assets.insert(a.id, a).is_some() {
                return Err(format!("asset {} appears twice", a.id));
            }
        }
        if let Some(a) = self.accounts.iter().find(|a| !self.assets.contains_key(&a.asset)) {
            return Err(format!("account {} holds asset {}, which does not exist", a.id, a.asset));
        }
        self.index_account_transfers()?;
        self.decode_tables(&mut r, pending, failed, history)?;
        if r.at != bytes.len() {
            return Err(format!("{} unexpected bytes after the state", bytes.len() - r.at));
        }
        Ok(())
    }

    /// This part's decisions: each names one of this part's transfers, in position order.
    fn decode_decisions(
        &mut self,
        r: &mut Cursor<'_>,
        transfers_from: usize,
        n: usize,
    ) -> Result<(), String> {
        let bytes = r.take(n.checked_mul(DECISION_ROW_BYTES).ok_or("count too large")?)?;
        self.decisions.reserve(n);
        for row in bytes.chunks_exact(DECISION_ROW_BYTES) {
            let position = u64::from_le_bytes(row[..8].try_into().unwrap());
            let d = decode_decision(&row[8..]);
            let t = usize::try_from(position).ok().and_then(|p| self.transfers.get(p));
            if position < transfers_from as u64 || t.is_none_or(|t| t.id != d.transfer_id) {
                return Err(format!("decision for transfer {} at a wrong position", d.transfer_id));
            }
            if self.decisions.last().is_some_and(|(p, _)| *p as u64 >= position) {
                return Err(format!("decision for transfer {} is out of order", d.transfer_id));
            }
            self.decisions.push((position as u32, d));
        }
        Ok(())
    }

    /// Rebuilds every account's list of transfers from the log.
    fn index_account_transfers(&mut self) -> Result<(), String> {
        for (position, t) in self.transfers.iter().enumerate() {
            let lookup = |id| self.account_index.get(&id).copied();
            let (Some(dr), Some(cr)) = (lookup(t.debit_account_id), lookup(t.credit_account_id))
            else {
                return Err(format!("transfer {} names a missing account", t.id));
            };
            self.account_transfers[dr as usize].push(position as u32);
            self.account_transfers[cr as usize].push(position as u32);
        }
        Ok(())
    }

    fn decode_tables(
        &mut self,
        r: &mut Cursor<'_>,
        pending: usize,
        failed: usize,
        history: usize,
    ) -> Result<(), String> {
        for _ in 0..pending {
            let index = r.u32()?;
            let status = PendingStatus::from_u8(r.take(4)?[0]).ok_or("bad pending status")?;
            let expires_at = r.u64()?;
            let is_pending = |t: &crate::Transfer| t.flags.contains(crate::TransferFlags::PENDING);
            if !self.transfers.get(index as usize).is_some_and(is_pending) {
                return Err(format!("pending state for transfer #{index}, not a pending transfer"));
            }
            if self.pending.contains_key(&index) {
                return Err(format!("pending state for transfer #{index} appears twice"));
            }
            if status == PendingStatus::Pending && expires_at != u64::MAX {
                self.expiries.insert((expires_at, index));
            }
            self.pending.insert(index, PendingState { status, expires_at });
        }
        for _ in 0..failed {
            let id = r.u128()?;
            let code = CreateTransferResult::from_u8(r.take(16)?[0]).ok_or("bad failure code")?;
            if self.failed.insert(id, code).is_some() {
                return Err(format!("failure of transfer id {id} appears twice"));
            }
        }
        for _ in 0..history {
            let index = r.u32()?;
            let rows = r.u32()? as usize;
            let has_history = |a: &crate::Account| a.flags.contains(crate::AccountFlags::HISTORY);
            if !self.accounts.get(index as usize).is_some_and(has_history) {
                return Err(format!("history for account #{index}, which keeps none"));
            }
            if self.history.contains_key(&index) {
                return Err(format!("history of account #{index} appears twice"));
            }
            let mut list = Vec::with_capacity(rows.min(r.remaining() / HISTORY_ROW_BYTES));
            for _ in 0..rows {
                let timestamp = r.u64()?;
                let balances = Balances {
                    debits_pending: r.u128()?,
                    debits_posted: r.u128()?,
                    credits_pending: r.u128()?,
                    credits_posted: r.u128()?,
                };
                list.push(BalanceAt { timestamp, balances });
            }
            self.history.insert(index, list);
        }
        Ok(())
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("snapshot truncated at byte {}", self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn u128(&mut self) -> Result<u128, String> {
        Ok(u128::from_le_bytes(self.take(16)?.try_into().unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Account, Asset, AssetKind, Transfer, TransferFlags};

    fn ledger() -> StateMachine {
        let mut sm = StateMachine::new();
        sm.create_assets(&[Asset::new(1, "USD", 2, AssetKind::Fiat)], 1);
        let account = |id| Account { id, asset: 1, code: 1, ..Default::default() };
        sm.create_accounts(&[account(1), account(2)], 10);
        let t = |id, flags| Transfer {
            id,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 5,
            asset: 1,
            code: 1,
            flags,
            ..Default::default()
        };
        sm.create_transfers(&[t(10, TransferFlags::empty()), t(11, TransferFlags::PENDING)], 20);
        sm
    }

    #[test]
    fn a_snapshot_round_trips_to_the_same_digest() {
        let sm = ledger();
        let mut bytes = Vec::new();
        sm.encode_snapshot(0, &mut bytes);
        assert_eq!(StateMachine::decode_snapshot(&bytes).unwrap().digest(), sm.digest());
    }

    #[test]
    fn a_pending_state_on_a_plain_transfer_is_refused() {
        let sm = ledger();
        let mut bytes = Vec::new();
        sm.encode_snapshot(0, &mut bytes);
        // The pending section follows magic, start, seven counts, timestamp, then the
        // tables (no decisions here).
        let at = 8 + 8 + 7 * 8 + 8 + ASSET_BYTES + 2 * EVENT_BYTES + 2 * EVENT_BYTES;
        assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), 1);
        bytes[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
        let err = StateMachine::decode_snapshot(&bytes).unwrap_err();
        assert!(err.contains("not a pending transfer"), "{err}");
    }
}
