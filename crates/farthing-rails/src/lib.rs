//! Farthing's micropayment rails: the rules, with no I/O — values in,
//! values out, time as an argument.
//!
//! - [`channel`]: payment channels. A payer locks funds for a payee; thousands of tiny
//!   payments then travel as Ed25519-signed *cumulative* vouchers that the payee checks
//!   without the ledger; the latest one settles in one ledger transfer. Closing is
//!   cooperative, or unilateral with a dispute window in which a higher voucher wins;
//!   signatures are checked one by one or in batches by one rule (ZIP 215);
//! - [`payword`]: hash-chain streams — one signature per stream, one SHA-256 per tick,
//!   n ticks redeemed in one transfer;
//! - [`hex`]: the hex keys, signatures and chain values travel in.

pub mod channel;
pub mod hex;
pub mod payword;
