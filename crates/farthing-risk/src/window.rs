//! Sliding-window velocity features in bounded memory.
//!
//! A [`Window`] keeps a ring of time buckets; an event lands in the bucket of its time, and
//! the window's total is the sum of the buckets still inside the span. Events older than the
//! span are ignored; a bucket is reused (reset) when time comes round to it again. Memory is
//! fixed per window, whatever the traffic.

use std::collections::HashMap;
use std::hash::Hash;

/// Nanoseconds in a second.
const NS_PER_S: u64 = 1_000_000_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bucket {
    /// Which bucket of time this is (`time / bucket_ns`); `u32::MAX` for never used (10-s
    /// buckets of Unix time fit until the year 3331).
    epoch: u32,
    count: u32,
    sum: u64,
}

/// Count and sum of the events inside a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Total {
    pub count: u32,
    pub sum: u64,
}

/// Events over the last `span`, to within one bucket's width.
#[derive(Clone, Debug)]
pub struct Window {
    bucket_ns: u64,
    buckets: Box<[Bucket]>,
}

impl Window {
    /// A window of `buckets` buckets of `bucket_s` seconds each (span = their product).
    pub fn new(bucket_s: u64, buckets: usize) -> Self {
        assert!(bucket_s > 0 && buckets > 0, "a window has at least one non-empty bucket");
        let empty = Bucket { epoch: u32::MAX, ..Bucket::default() };
        Self { bucket_ns: bucket_s * NS_PER_S, buckets: vec![empty; buckets].into_boxed_slice() }
    }

    fn epoch(&self, at_ns: u64) -> u32 {
        u32::try_from(at_ns / self.bucket_ns).unwrap_or(u32::MAX - 1)
    }

    /// Is a bucket of `epoch` inside the window that ends at `now`'s bucket?
    fn live(&self, epoch: u32, now: u32) -> bool {
        epoch != u32::MAX && epoch <= now && ((now - epoch) as usize) < self.buckets.len()
    }

    /// Records an event at `at_ns` as seen at `now_ns` (an event older than the span, or
    /// from the future, is ignored: the answer is whether it was counted).
    pub fn add(&mut self, at_ns: u64, now_ns: u64, amount: u64) -> bool {
        let (epoch, now) = (self.epoch(at_ns), self.epoch(now_ns));
        if !self.live(epoch, now) {
            return false;
        }
        let slot = epoch as usize % self.buckets.len();
        let b = &mut self.buckets[slot];
        if b.epoch != epoch {
            *b = Bucket { epoch, count: 0, sum: 0 };
        }
        b.count = b.count.saturating_add(1);
        b.sum = b.sum.saturating_add(amount);
        true
    }

    /// The events inside the window that ends at `now_ns`.
    pub fn total(&self, now_ns: u64) -> Total {
        let now = self.epoch(now_ns);
        self.buckets.iter().filter(|b| self.live(b.epoch, now)).fold(Total::default(), |t, b| {
            Total { count: t.count.saturating_add(b.count), sum: t.sum.saturating_add(b.sum) }
        })
    }

    /// The time of the newest bucket with events, if any is still inside the window.
    fn last_epoch(&self) -> Option<u64> {
        self.buckets.iter().filter(|b| b.epoch != u32::MAX).map(|b| u64::from(b.epoch)).max()
    }

    /// The time of the newest event still inside the window, to within a bucket.
    pub fn last_active_ns(&self) -> Option<u64> {
        self.last_epoch().map(|e| e * self.bucket_ns)
    }
}

/// The three windows a key is judged by: 1 minute (6 × 10 s), 1 hour (6 × 10 min),
/// 24 hours (24 × 1 h): 36 buckets of 16 bytes a key.
#[derive(Clone, Debug)]
pub struct Velocity {
    pub minute: Window,
    pub hour: Window,
    pub day: Window,
}

/// Counts and sums over the three windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VelocityTotals {
    pub minute: Total,
    pub hour: Total,
    pub day: Total,
}

impl Default for Velocity {
    fn default() -> Self {
        Self { minute: Window::new(10, 6), hour: Window::new(600, 6), day: Window::new(3_600, 24) }
    }
}

impl Velocity {
    pub fn add(&mut self, at_ns: u64, now_ns: u64, amount: u64) {
        self.minute.add(at_ns, now_ns, amount);
        self.hour.add(at_ns, now_ns, amount);
        self.day.add(at_ns, now_ns, amount);
    }

    pub fn totals(&self, now_ns: u64) -> VelocityTotals {
        VelocityTotals {
            minute: self.minute.total(now_ns),
            hour: self.hour.total(now_ns),
            day: self.day.total(now_ns),
        }
    }
}

/// State kept per key in a [`BoundedTable`]: it knows when it was last active, so the
/// table can drop what has gone quiet first.
pub trait Activity {
    /// Latest activity in nanoseconds, if any is still remembered.
    fn last_active_ns(&self) -> Option<u64>;
}

impl Activity for Velocity {
    fn last_active_ns(&self) -> Option<u64> {
        self.day.last_active_ns()
    }
}

/// State per key (payer, payee, device, IP), at most `capacity` keys. When full, a key
/// with nothing left in its day window is dropped first; failing that, the least recently
/// active of a sample, so memory stays bounded under any traffic (an attacker cycling keys
/// evicts only stale ones first).
#[derive(Debug)]
pub struct BoundedTable<K, V> {
    capacity: usize,
    keys: HashMap<K, V>,
}

/// Velocity per key.
pub type VelocityTable<K> = BoundedTable<K, Velocity>;

/// Keys looked at to choose one to evict when the table is full.
const EVICTION_SAMPLE: usize = 64;

impl<K: Hash + Eq + Clone, V: Activity + Default> BoundedTable<K, V> {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a table holds at least one key");
        Self { capacity, keys: HashMap::new() }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.keys.get(key)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.keys.get_mut(key)
    }

    /// The key's state, made (evicting another key if the table is full) if absent.
    pub fn entry(&mut self, key: &K, now_ns: u64) -> &mut V {
        if !self.keys.contains_key(key) && self.keys.len() >= self.capacity {
            self.evict(now_ns);
        }
        self.keys.entry(key.clone()).or_default()
    }

    /// Forgets a key (a payer who opted out of profiling, or erased).
    pub fn forget(&mut self, key: &K) {
        self.keys.remove(key);
    }

    fn evict(&mut self, now_ns: u64) {
        let day_ns = 24 * 3_600 * NS_PER_S;
        let stale = |v: &V| v.last_active_ns().is_none_or(|t| now_ns.saturating_sub(t) > day_ns);
        let victim = self
            .keys
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|(_, v)| (!stale(v), v.last_active_ns().unwrap_or(0)))
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.keys.remove(&k);
        }
    }
}

impl<K: Hash + Eq + Clone> BoundedTable<K, Velocity> {
    /// Records an event for `key`.
    pub fn add(&mut self, key: &K, at_ns: u64, now_ns: u64, amount: u64) {
        self.entry(key, now_ns).add(at_ns, now_ns, amount);
    }

    /// The key's totals (all zero for a key never seen, or evicted).
    pub fn totals(&self, key: &K, now_ns: u64) -> VelocityTotals {
        self.get(key).map(|v| v.totals(now_ns)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NS_PER_S;

    #[test]
    fn a_window_counts_what_is_inside_its_span() {
        let mut w = Window::new(10, 6); // one minute
        let t0 = 1_000 * S;
        assert!(w.add(t0, t0, 5));
        assert!(w.add(t0 + 30 * S, t0 + 30 * S, 7));
        assert_eq!(w.total(t0 + 30 * S), Total { count: 2, sum: 12 });
        // 59 s after t0's bucket began, both are in; 60 s after, the first has left.
        assert_eq!(w.total(t0 + 59 * S).count, 2);
        assert_eq!(w.total(t0 + 60 * S), Total { count: 1, sum: 7 });
        assert_eq!(w.total(t0 + 90 * S), Total::default());
    }

    #[test]
    fn old_and_future_events_are_not_counted() {
        let mut w = Window::new(10, 6);
        let now = 10_000 * S;
        assert!(!w.add(now - 61 * S, now, 1));
        assert!(!w.add(now + 20 * S, now, 1));
        assert!(w.add(now - 50 * S, now, 1), "late but inside the span");
        assert_eq!(w.total(now).count, 1);
    }

    #[test]
    fn a_reused_bucket_starts_from_zero() {
        let mut w = Window::new(10, 6);
        let t0 = 0;
        w.add(t0, t0, 100);
        // The same slot, one lap (60 s) later.
        w.add(t0 + 60 * S, t0 + 60 * S, 1);
        assert_eq!(w.total(t0 + 60 * S), Total { count: 1, sum: 1 });
    }

    #[test]
    fn velocity_has_three_horizons() {
        let mut v = Velocity::default();
        let t0 = 100_000 * S;
        v.add(t0, t0, 10);
        v.add(t0 + 120 * S, t0 + 120 * S, 20);
        let at = v.totals(t0 + 120 * S);
        assert_eq!((at.minute.count, at.hour.count, at.day.count), (1, 2, 2));
        let later = v.totals(t0 + 2 * 3_600 * S);
        assert_eq!((later.minute.count, later.hour.count, later.day.count), (0, 0, 2));
        assert_eq!(v.totals(t0 + 25 * 3_600 * S).day, Total::default());
    }

    #[test]
    fn the_table_stays_bounded_and_evicts_stale_keys_first() {
        let mut t: VelocityTable<u32> = VelocityTable::new(3);
        let day = 24 * 3_600 * S;
        t.add(&1, 0, 0, 1); // stale by the time the table fills
        t.add(&2, 2 * day, 2 * day, 1);
        t.add(&3, 2 * day, 2 * day, 1);
        t.add(&4, 2 * day, 2 * day, 1);
        assert_eq!(t.len(), 3);
        assert_eq!(t.totals(&1, 2 * day).day.count, 0, "the stale key went");
        assert_eq!(t.totals(&2, 2 * day).day.count, 1);
        for k in 5..1_000 {
            t.add(&k, 2 * day, 2 * day, 1);
        }
        assert_eq!(t.len(), 3);
        t.forget(&999);
        assert_eq!(t.totals(&999, 2 * day), VelocityTotals::default());
    }

    proptest::proptest! {
        /// Whatever the order of arrival, a window's total equals the events whose bucket is
        /// inside the span, counted exactly.
        #[test]
        fn totals_match_a_direct_count(events in proptest::collection::vec((0u64..600, 1u64..1_000), 1..200), now in 0u64..700) {
            let mut w = Window::new(10, 6);
            let now_ns = now * S;
            let mut expected = Total::default();
            for (at, amount) in &events {
                let at_ns = at * S;
                let counted = w.add(at_ns, now_ns, *amount);
                let inside = at / 10 <= now / 10 && now / 10 - at / 10 < 6;
                proptest::prop_assert_eq!(counted, inside);
                if inside {
                    expected.count += 1;
                    expected.sum += *amount;
                }
            }
            proptest::prop_assert_eq!(w.total(now_ns), expected);
        }
    }
}
