//! Every bound of the ledger, in one place, with its unit in its name.

/// Events in one batch: a 1 MiB message of 128-byte events less its header, as in the
/// engine's WAL records.
pub const BATCH_EVENTS_MAX: usize = 8_190;

/// Bytes of one encoded account or transfer.
pub const EVENT_BYTES: usize = 128;

/// Bytes of one encoded asset.
pub const ASSET_BYTES: usize = 32;

/// Transfers one account-history or balance-history query may return.
pub const QUERY_LIMIT_MAX: u32 = 8_190;

/// Ids one lookup may name.
pub const LOOKUP_IDS_MAX: usize = 8_190;

/// Assets a ledger may register. Small on purpose: assets are reference data (and a new
/// asset's code is checked against every other).
pub const ASSETS_MAX: usize = 4_096;

/// Transfers a ledger may hold: indexes are `u32`.
pub const TRANSFERS_MAX: usize = u32::MAX as usize - 1;

/// Accounts a ledger may hold: indexes are `u32`.
pub const ACCOUNTS_MAX: usize = u32::MAX as usize - 1;

/// Nanoseconds per second, for `timeout_s`.
pub const NS_PER_S: u64 = 1_000_000_000;
