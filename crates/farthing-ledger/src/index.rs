//! The transfer id index: an open-addressing hash table from `u128` id to log position.
//!
//! Why not a general hash map: a ledger of ten million transfers makes every id lookup a
//! cache miss, and the hot path does one per transfer. This table keeps 8 bytes per slot (a
//! 32-bit tag of the hash and the position + 1), so a miss costs one cache line, and it lets
//! a batch prefetch every slot it will touch before executing. Ids live only in the transfer
//! log; a tag match is confirmed there. The hash is seeded per process (ids are chosen by
//! clients), which changes slot order but never results.

use std::hash::BuildHasher;

use crate::types::Transfer;

const LOAD_FACTOR_MAX_PERCENT: usize = 50;
const CAPACITY_MIN: usize = 1024;

#[derive(Clone, Debug)]
pub(crate) struct IdIndex {
    /// `tag << 32 | (position + 1)`; 0 is an empty slot.
    slots: Vec<u64>,
    len: usize,
    hasher: foldhash::fast::RandomState,
}

impl Default for IdIndex {
    fn default() -> Self {
        Self { slots: vec![0; CAPACITY_MIN], len: 0, hasher: Default::default() }
    }
}

impl IdIndex {
    fn hash(&self, id: u128) -> u64 {
        self.hasher.hash_one(id)
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes held by the table.
    pub fn bytes(&self) -> usize {
        self.slots.len() * 8
    }

    /// Hints the CPU to load the slot `id` hashes to; no effect on results.
    #[inline]
    pub fn prefetch(&self, id: u128) {
        let slot = self.hash(id) as usize & self.mask();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults and does not dereference; the address is in bounds.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(self.slots.as_ptr().add(slot) as *const i8);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// The position of `id`, confirming tag matches with `id_at(position)`.
    #[inline]
    pub fn get(&self, id: u128, id_at: impl Fn(u32) -> u128) -> Option<u32> {
        let h = self.hash(id);
        let tag = h >> 32;
        let mask = self.mask();
        let mut slot = h as usize & mask;
        loop {
            let s = self.slots[slot];
            if s == 0 {
                return None;
            }
            let position = (s as u32).wrapping_sub(1);
            if s >> 32 == tag && id_at(position) == id {
                return Some(position);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Adds `id` at `position`; the caller guarantees `id` is absent and that `log` holds
    /// every transfer already indexed, in case the table must grow.
    #[inline]
    pub fn insert(&mut self, id: u128, position: u32, log: &[Transfer]) {
        if (self.len + 1) * 100 > self.slots.len() * LOAD_FACTOR_MAX_PERCENT {
            self.rebuild(self.slots.len() * 2, log);
        }
        self.place(id, position);
        self.len += 1;
    }

    fn place(&mut self, id: u128, position: u32) {
        assert!(position < u32::MAX, "position out of range");
        let h = self.hash(id);
        let mask = self.mask();
        let mut slot = h as usize & mask;
        while self.slots[slot] != 0 {
            slot = (slot + 1) & mask;
        }
        self.slots[slot] = (h >> 32) << 32 | (position as u64 + 1);
    }

    fn rebuild(&mut self, capacity: usize, log: &[Transfer]) {
        assert_eq!(log.len(), self.len, "index out of step with the log");
        self.slots = vec![0; capacity];
        for (position, t) in log.iter().enumerate() {
            self.place(t.id, position as u32);
        }
    }

    /// Reserves room for `additional` more ids without growing again.
    pub fn reserve(&mut self, additional: usize, log: &[Transfer]) {
        let needed = (self.len + additional) * 100 / LOAD_FACTOR_MAX_PERCENT + 1;
        if needed > self.slots.len() {
            self.rebuild(needed.next_power_of_two(), log);
        }
    }

    /// Touches every page of the table so later inserts do not fault.
    pub fn prefault(&mut self) {
        for i in (0..self.slots.len()).step_by(512) {
            // SAFETY: in bounds; volatile so the store of an existing value is not elided.
            unsafe { std::ptr::write_volatile(self.slots.as_mut_ptr().add(i), self.slots[i]) }
        }
    }

    /// Removes `id` (rollback of a chain), shifting later entries of its cluster back so
    /// that lookups never stop early at the hole.
    pub fn remove(&mut self, id: u128, id_at: impl Fn(u32) -> u128) {
        let mask = self.mask();
        let Some(position) = self.get(id, &id_at) else { panic!("removing an id not indexed") };
        let mut hole = self.hash(id) as usize & mask;
        while (self.slots[hole] as u32).wrapping_sub(1) != position {
            hole = (hole + 1) & mask;
        }
        self.slots[hole] = 0;
        self.len -= 1;
        let mut next = (hole + 1) & mask;
        while self.slots[next] != 0 {
            let s = self.slots[next];
            let home = self.hash(id_at((s as u32).wrapping_sub(1))) as usize & mask;
            // Move the entry back if the hole lies cyclically between its home and it.
            let distance_to_hole = hole.wrapping_sub(home) & mask;
            let distance_to_next = next.wrapping_sub(home) & mask;
            if distance_to_hole < distance_to_next {
                self.slots[hole] = s;
                self.slots[next] = 0;
                hole = next;
            }
            next = (next + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_inserts_and_removes_with_growth() {
        let mut log: Vec<Transfer> = Vec::new();
        let mut index = IdIndex::default();
        for i in 0..10_000u128 {
            let id = i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
            index.insert(id, log.len() as u32, &log);
            log.push(Transfer { id, ..Default::default() });
        }
        let id_at = |log: &[Transfer], q: u32| log.get(q as usize).map_or(0, |t| t.id);
        for (p, t) in log.iter().enumerate() {
            assert_eq!(index.get(t.id, |q| id_at(&log, q)), Some(p as u32));
        }
        assert_eq!(index.get(12345, |q| id_at(&log, q)), None);
        // Remove the newest half (as rollbacks do) and check every other lookup still works.
        for _ in 0..5_000 {
            let id = log.last().unwrap().id;
            index.remove(id, |q| id_at(&log, q));
            log.pop();
            assert_eq!(index.get(id, |q| id_at(&log, q)), None);
        }
        for (p, t) in log.iter().enumerate() {
            assert_eq!(index.get(t.id, |q| id_at(&log, q)), Some(p as u32));
        }
        assert_eq!(index.len(), 5_000);
    }
}
