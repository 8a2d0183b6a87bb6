//! The whole state as bytes and back, for snapshots. Indexes are rebuilt on load, not stored.
//!
//! Layout: `FSNAPST1`, then u64 counts (assets, accounts, transfers, pending, failed,
//! history accounts) and `last_timestamp`, then the sections in that order: assets (32 B),
//! accounts (128 B), transfers (128 B), pending (index u32, status u8, 3 zero bytes,
//! expires_at u64), failed (id u128, code u8, 15 zero bytes), history (account index u32,
//! rows u32, then rows of timestamp u64 and four u128 balances).

use crate::codec::{
    decode_account, decode_asset, decode_transfer, encode_accounts, encode_assets, encode_transfers,
};
use crate::limits::{ASSET_BYTES, EVENT_BYTES};
use crate::results::CreateTransferResult;
use crate::state::{PendingState, StateMachine};
use crate::types::{BalanceAt, Balances, PendingStatus};

const MAGIC: &[u8; 8] = b"FSNAPST1";
const HISTORY_ROW_BYTES: usize = 8 + 64;

impl StateMachine {
    /// Appends the encoded state to `out`.
    pub fn encode_snapshot(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        let history_rows: usize = self.history.values().map(Vec::len).sum();
        for n in [
            self.assets.len(),
            self.accounts.len(),
            self.transfers.len(),
            self.pending.len(),
            self.failed.len(),
            self.history.len(),
        ] {
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
        out.extend_from_slice(&self.last_timestamp.to_le_bytes());
        out.reserve(self.transfers.len() * EVENT_BYTES + history_rows * HISTORY_ROW_BYTES);
        encode_assets(&self.assets(), out);
        encode_accounts(&self.accounts, out);
        encode_transfers(&self.transfers, out);
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
                for v in [
                    b.debits_pending,
                    b.debits_posted,
                    b.credits_pending,
                    b.credits_posted,
                ] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }

    /// Rebuilds a state from [`Self::encode_snapshot`] bytes, checking every length and
    /// every cross-reference; a malformed snapshot is an error, never a partial state.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Cursor { bytes, at: 0 };
        if r.take(8)? != MAGIC {
            return Err("not a Farthing state snapshot (bad magic)".into());
        }
        let mut counts = [0usize; 6];
        for c in &mut counts {
            *c = usize::try_from(r.u64()?).map_err(|_| "count too large")?;
        }
        let [assets, accounts, transfers, pending, failed, history] = counts;
        let mut sm = StateMachine::new();
        sm.last_timestamp = r.u64()?;
        sm.reserve(accounts, transfers);
        for _ in 0..assets {
            let a = decode_asset(r.take(ASSET_BYTES)?);
            sm.assets.insert(a.id, a);
        }
        for i in 0..accounts {
            let a = decode_account(r.take(EVENT_BYTES)?);
            if sm.account_index.insert(a.id, i as u32).is_some() {
                return Err(format!("account {} appears twice", a.id));
            }
            sm.accounts.push(a);
            sm.account_transfers.push(Vec::new());
        }
        for i in 0..transfers {
            let t = decode_transfer(r.take(EVENT_BYTES)?);
            let lookup = |id| sm.account_index.get(&id).copied();
            let (Some(dr), Some(cr)) = (lookup(t.debit_account_id), lookup(t.credit_account_id))
            else {
                return Err(format!("transfer {} names a missing account", t.id));
            };
            if sm.transfer_index.insert(t.id, i as u32).is_some() {
                return Err(format!("transfer {} appears twice", t.id));
            }
            sm.account_transfers[dr as usize].push(i as u32);
            sm.account_transfers[cr as usize].push(i as u32);
            sm.transfers.push(t);
        }
        sm.decode_tables(&mut r, pending, failed, history)?;
        if r.at != bytes.len() {
            return Err(format!(
                "{} unexpected bytes after the state",
                bytes.len() - r.at
            ));
        }
        Ok(sm)
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
            if index as usize >= self.transfers.len() {
                return Err(format!("pending index {index} out of range"));
            }
            if status == PendingStatus::Pending && expires_at != u64::MAX {
                self.expiries.insert((expires_at, index));
            }
            self.pending
                .insert(index, PendingState { status, expires_at });
        }
        for _ in 0..failed {
            let id = r.u128()?;
            let code = CreateTransferResult::from_u8(r.take(16)?[0]).ok_or("bad failure code")?;
            self.failed.insert(id, code);
        }
        for _ in 0..history {
            let index = r.u32()?;
            let rows = r.u32()? as usize;
            if index as usize >= self.accounts.len() {
                return Err(format!("history account index {index} out of range"));
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
                list.push(BalanceAt {
                    timestamp,
                    balances,
                });
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
