//! Whole-state checks: a digest that replay must reproduce, and the ledger's invariants.

use sha2::{Digest, Sha256};

use crate::codec::{encode_account, encode_asset, encode_decision, encode_transfer};
use crate::limits::{ASSET_BYTES, EVENT_BYTES};
use crate::state::StateMachine;
use crate::types::{AccountFlags, PendingStatus};

impl StateMachine {
    /// SHA-256 over every asset and account (by id, with balances and flags), every transfer
    /// in commit order, every decision kept with one, every pending status, every remembered
    /// failure and every balance history row. Two ledgers with the same digest answer every query the same.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"farthing-state-v1");
        h.update(self.last_timestamp.to_le_bytes());
        let mut small = [0u8; ASSET_BYTES];
        for asset in self.assets() {
            encode_asset(&asset, &mut small);
            h.update(small);
        }
        let mut buf = [0u8; EVENT_BYTES];
        let mut accounts: Vec<_> = self.accounts.iter().collect();
        accounts.sort_unstable_by_key(|a| a.id);
        h.update((accounts.len() as u64).to_le_bytes());
        for a in accounts {
            encode_account(a, &mut buf);
            h.update(buf);
        }
        h.update((self.transfers.len() as u64).to_le_bytes());
        for t in &self.transfers {
            encode_transfer(t, &mut buf);
            h.update(buf);
        }
        // Absent from ledgers without decisions, whose digest is as it always was.
        if !self.decisions.is_empty() {
            h.update((self.decisions.len() as u64).to_le_bytes());
        }
        for (position, d) in &self.decisions {
            h.update(position.to_le_bytes());
            encode_decision(d, &mut buf);
            h.update(buf);
        }
        let mut pending: Vec<_> = self.pending.iter().collect();
        pending.sort_unstable_by_key(|(i, _)| **i);
        for (index, p) in pending {
            h.update(index.to_le_bytes());
            h.update([p.status as u8]);
            h.update(p.expires_at.to_le_bytes());
        }
        let mut failed: Vec<_> = self.failed.iter().collect();
        failed.sort_unstable_by_key(|(id, _)| **id);
        for (id, code) in failed {
            h.update(id.to_le_bytes());
            h.update([*code as u8]);
        }
        let mut history: Vec<_> = self.history.iter().collect();
        history.sort_unstable_by_key(|(i, _)| **i);
        for (index, rows) in history {
            h.update(index.to_le_bytes());
            h.update((rows.len() as u64).to_le_bytes());
            for r in rows {
                h.update(r.timestamp.to_le_bytes());
                let b = &r.balances;
                for v in [b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted] {
                    h.update(v.to_le_bytes());
                }
            }
        }
        h.finalize().into()
    }

    /// Checks the ledger's invariants; returns each violation found, as a sentence.
    /// - per asset, posted debits equal posted credits, and pending debits pending credits;
    /// - no account breaks its balance-limit flag;
    /// - every account's pending balances equal the sum of its still-pending transfers;
    /// - every transfer is between existing accounts of its asset, in time order.
    pub fn check_invariants(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut per_asset: std::collections::BTreeMap<u32, [u128; 4]> = Default::default();
        for a in &self.accounts {
            let s = per_asset.entry(a.asset).or_default();
            let b = &a.balances;
            for (slot, v) in s.iter_mut().zip([
                b.debits_posted,
                b.credits_posted,
                b.debits_pending,
                b.credits_pending,
            ]) {
                *slot = slot.wrapping_add(v);
            }
            let limit = |flag| a.flags.contains(flag);
            if limit(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
                && b.debits_posted.saturating_add(b.debits_pending) > b.credits_posted
            {
                errors.push(format!("account {} debits exceed its credits", a.id));
            }
            if limit(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
                && b.credits_posted.saturating_add(b.credits_pending) > b.debits_posted
            {
                errors.push(format!("account {} credits exceed its debits", a.id));
            }
        }
        for (asset, [dp, cp, dpend, cpend]) in &per_asset {
            if dp != cp {
                errors.push(format!("asset {asset}: posted debits {dp} != posted credits {cp}"));
            }
            if dpend != cpend {
                errors.push(format!("asset {asset}: pending debits {dpend} != credits {cpend}"));
            }
        }
        self.check_pending_sums(&mut errors);
        self.check_transfers(&mut errors);
        errors
    }

    fn check_pending_sums(&self, errors: &mut Vec<String>) {
        let mut sums = vec![(0u128, 0u128); self.accounts.len()];
        for (index, p) in &self.pending {
            if p.status != PendingStatus::Pending {
                continue;
            }
            let t = &self.transfers[*index as usize];
            let dr = self.account_index[&t.debit_account_id] as usize;
            let cr = self.account_index[&t.credit_account_id] as usize;
            sums[dr].0 = sums[dr].0.wrapping_add(t.amount);
            sums[cr].1 = sums[cr].1.wrapping_add(t.amount);
        }
        for (a, (debits, credits)) in self.accounts.iter().zip(sums) {
            if a.balances.debits_pending != debits || a.balances.credits_pending != credits {
                errors
                    .push(format!("account {}: pending balances differ from open pendings", a.id));
            }
        }
    }

    fn check_transfers(&self, errors: &mut Vec<String>) {
        let mut previous = 0u64;
        for (i, t) in self.transfers.iter().enumerate() {
            if t.timestamp <= previous {
                errors.push(format!("transfer #{i} ({}) is out of time order", t.id));
            }
            previous = t.timestamp;
            let (Some(dr), Some(cr)) =
                (self.account(t.debit_account_id), self.account(t.credit_account_id))
            else {
                errors.push(format!("transfer {} names a missing account", t.id));
                continue;
            };
            if dr.asset != t.asset || cr.asset != t.asset {
                errors.push(format!("transfer {} crosses assets", t.id));
            }
        }
    }
}

/// Bytes the state holds in memory, by what they are for (capacities, not lengths).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Accounts, their id index and their per-account transfer lists' headers.
    pub accounts_bytes: u64,
    /// Transfers, their id index and their two entries in per-account lists.
    pub transfers_bytes: u64,
    /// Pending states, expiry queue, remembered failures and balance history.
    pub other_bytes: u64,
}

impl StateMachine {
    /// Estimates memory from the capacities of the state's tables. hashbrown stores a key and
    /// value per bucket plus one control byte.
    pub fn memory_estimate(&self) -> MemoryEstimate {
        use std::mem::size_of;
        let table = |capacity: usize, entry: usize| (capacity * (entry + 1)) as u64;
        let accounts_bytes = (self.accounts.capacity() * size_of::<crate::Account>()) as u64
            + table(self.account_index.capacity(), size_of::<(u128, u32)>())
            + (self.account_transfers.capacity() * size_of::<Vec<u32>>()) as u64;
        let lists: usize = self.account_transfers.iter().map(|l| l.capacity() * 4).sum();
        let transfers_bytes = (self.transfers.capacity() * size_of::<crate::Transfer>()) as u64
            + self.transfer_index.bytes() as u64
            + lists as u64;
        let history: usize =
            self.history.values().map(|h| h.capacity() * size_of::<crate::BalanceAt>()).sum();
        let other_bytes =
            table(self.pending.capacity(), size_of::<(u32, crate::state::PendingState)>())
                + (self.expiries.len() * size_of::<(u64, u32)>() * 2) as u64
                + table(self.failed.capacity(), size_of::<(u128, u8)>())
                + history as u64;
        MemoryEstimate { accounts_bytes, transfers_bytes, other_bytes }
    }
}
