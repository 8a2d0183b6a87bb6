//! Farthing's micropayment rails (issue 6, started): the rules, with no I/O — values in,
//! values out, time as an argument.
//!
//! - [`channel`]: payment channels. A payer locks funds for a payee; thousands of tiny
//!   payments then travel as Ed25519-signed *cumulative* vouchers that the payee checks
//!   without the ledger; the latest one settles in one ledger transfer. Closing is
//!   cooperative, or unilateral with a dispute window in which a higher voucher wins;
//! - [`payword`]: hash-chain streams — one signature per stream, one SHA-256 per tick,
//!   n ticks redeemed in one transfer.

pub mod channel;
pub mod hex;
pub mod payword;
