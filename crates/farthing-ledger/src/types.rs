//! The ledger's values: assets, accounts, transfers and their flags.
//!
//! Every event has a fixed size (`Account` and `Transfer` are 128 bytes on the wire, see
//! [`crate::codec`]) so that batches can be written and read without allocation per event.

use std::fmt;

/// Defines a `u16` flag set with named bits, `contains`, `|` and a mask of the known bits.
macro_rules! flag_set {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $flag:ident = $bit:expr, $label:literal;)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct $name(pub u16);

        impl $name {
            $($(#[$fmeta])* pub const $flag: Self = Self(1 << $bit);)*
            /// Every bit with a meaning; any other bit set is `reserved_flag`.
            pub const KNOWN: Self = Self(0 $(| (1 << $bit))*);
            /// The flags by name, in bit order, for parsing and display.
            pub const NAMED: &'static [(&'static str, Self)] = &[$(($label, Self::$flag)),*];

            pub const fn empty() -> Self {
                Self(0)
            }
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }
            pub const fn has_reserved(self) -> bool {
                self.0 & !Self::KNOWN.0 != 0
            }
            pub fn set(&mut self, other: Self, on: bool) {
                if on {
                    self.0 |= other.0
                } else {
                    self.0 &= !other.0
                }
            }
            /// Parses a comma-separated list of flag names (empty string: no flags).
            pub fn parse(text: &str) -> Option<Self> {
                let mut flags = Self(0);
                for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                    let (_, flag) = Self::NAMED.iter().find(|(name, _)| *name == word)?;
                    flags.0 |= flag.0;
                }
                Some(flags)
            }
        }

        impl From<$name> for u16 {
            fn from(flags: $name) -> u16 {
                flags.0
            }
        }

        impl std::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let names: Vec<&str> = Self::NAMED
                    .iter()
                    .filter(|(_, flag)| self.contains(*flag))
                    .map(|(name, _)| *name)
                    .collect();
                write!(f, "{}({})", stringify!($name), names.join("|"))
            }
        }
    };
}

flag_set! {
    /// Account flags.
    AccountFlags {
        /// This event and the next succeed or fail together.
        LINKED = 0, "linked";
        /// Debits (pending + posted) may never exceed posted credits: a payer's wallet.
        DEBITS_MUST_NOT_EXCEED_CREDITS = 1, "debits_must_not_exceed_credits";
        /// Credits (pending + posted) may never exceed posted debits: a capped liability.
        CREDITS_MUST_NOT_EXCEED_DEBITS = 2, "credits_must_not_exceed_debits";
        /// Keep the balance after every transfer, for `get_account_balances`.
        HISTORY = 3, "history";
        /// No transfer may debit or credit the account.
        CLOSED = 4, "closed";
    }
}

flag_set! {
    /// Transfer flags.
    TransferFlags {
        /// This event and the next succeed or fail together.
        LINKED = 0, "linked";
        /// Reserve the amount (two-phase): it moves only when posted.
        PENDING = 1, "pending";
        /// Post (all or part of) the pending transfer named by `pending_id`.
        POST_PENDING = 2, "post_pending";
        /// Release the pending transfer named by `pending_id`.
        VOID_PENDING = 3, "void_pending";
        /// Debit at most what the debit account has: `amount` is an upper bound.
        BALANCING_DEBIT = 4, "balancing_debit";
        /// Credit at most what the credit account may take: `amount` is an upper bound.
        BALANCING_CREDIT = 5, "balancing_credit";
        /// Close the debit account once this pending transfer is accepted (void reopens it).
        CLOSING_DEBIT = 6, "closing_debit";
        /// Close the credit account once this pending transfer is accepted (void reopens it).
        CLOSING_CREDIT = 7, "closing_credit";
        /// A pending transfer held for approval (by the risk engine): only a post or void
        /// flagged `release_hold` may settle it; it still expires by itself.
        HELD = 8, "held";
        /// A post or void that settles a `held` pending transfer: the approval or rejection
        /// itself, recorded with the transfer that carries it.
        RELEASE_HOLD = 9, "release_hold";
    }
}

/// What kind of money an asset is. Kept for reporting and policy; the ledger treats all alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AssetKind {
    Fiat = 1,
    Stablecoin = 2,
    Cbdc = 3,
    Token = 4,
}

impl AssetKind {
    pub const ALL: [AssetKind; 4] = [Self::Fiat, Self::Stablecoin, Self::Cbdc, Self::Token];

    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == value)
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Fiat => "fiat",
            Self::Stablecoin => "stablecoin",
            Self::Cbdc => "cbdc",
            Self::Token => "token",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == text)
    }
}

/// Upper bound of an asset's decimal scale (minor units per major unit = 10^scale).
pub const ASSET_SCALE_MAX: u8 = 18;
/// Bytes in an asset code (ASCII, left-aligned, zero padded).
pub const ASSET_CODE_BYTES: usize = 12;

/// A currency, stablecoin, CBDC token or other unit of value, registered once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asset {
    /// Chosen by the operator, never zero; accounts and transfers refer to it.
    pub id: u32,
    /// "USD", "USDC", "EUR-CBDC"...: 1 to 12 of `A-Z 0-9 - _ .`, zero padded.
    pub code: [u8; ASSET_CODE_BYTES],
    /// Decimal places of the minor unit, 0..=18 (USD at scale 6: one micro-dollar).
    pub scale: u8,
    /// Raw [`AssetKind`] (validated by the state machine).
    pub kind: u8,
    /// Assigned by the engine; must be zero when submitted.
    pub timestamp: u64,
}

impl Asset {
    /// Builds an asset from a textual code; the code is validated by the state machine.
    pub fn new(id: u32, code: &str, scale: u8, kind: AssetKind) -> Self {
        let mut bytes = [0u8; ASSET_CODE_BYTES];
        let n = code.len().min(ASSET_CODE_BYTES + 1);
        // A code that is too long keeps a non-zero byte we cannot store: mark it invalid.
        if n > ASSET_CODE_BYTES {
            bytes = [0xff; ASSET_CODE_BYTES];
        } else {
            bytes[..n].copy_from_slice(&code.as_bytes()[..n]);
        }
        Self { id, code: bytes, scale, kind: kind as u8, timestamp: 0 }
    }

    /// The code as text (up to the first zero byte).
    pub fn code_str(&self) -> &str {
        let end = self.code.iter().position(|b| *b == 0).unwrap_or(ASSET_CODE_BYTES);
        std::str::from_utf8(&self.code[..end]).unwrap_or("?")
    }

    /// Valid codes: 1..=12 bytes of `A-Z 0-9 - _ .`, then only zero bytes.
    pub fn code_is_valid(&self) -> bool {
        let end = self.code.iter().position(|b| *b == 0).unwrap_or(ASSET_CODE_BYTES);
        end > 0
            && self.code[..end]
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_.".contains(b))
            && self.code[end..].iter().all(|b| *b == 0)
    }
}

/// The four balances of an account, in the asset's minor units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Balances {
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
}

/// An account: the only place balances live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// Chosen by the client; neither 0 nor `u128::MAX`.
    pub id: u128,
    /// Must be zero when created; maintained by the ledger.
    pub balances: Balances,
    /// Pseudonymous owner id (never personal data); 0 for house accounts.
    pub owner_id: u128,
    /// Free for the client (an external reference, a group id).
    pub user_data_64: u64,
    /// The asset this account holds; all its transfers are in that asset.
    pub asset: u32,
    /// The operator's chart-of-accounts code (wallet, fees, settlement...); not zero.
    pub code: u16,
    pub flags: AccountFlags,
    /// Assigned by the engine; must be zero when submitted.
    pub timestamp: u64,
}

/// A transfer of `amount` from the debit account to the credit account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Chosen by the client; the idempotency key of the ledger.
    pub id: u128,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    /// Minor units of `asset`. For balancing transfers an upper bound; for a post the amount
    /// to post (`u128::MAX`: all of it).
    pub amount: u128,
    /// For post/void: the pending transfer concerned. Otherwise zero.
    pub pending_id: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// For pending transfers: seconds after which it expires by itself (0: never).
    pub timeout_s: u32,
    pub asset: u32,
    pub code: u16,
    pub flags: TransferFlags,
    /// Assigned by the engine; must be zero when submitted.
    pub timestamp: u64,
}

/// Bytes of a decision's body.
pub const DECISION_BODY_BYTES: usize = 112;

/// A decision about one transfer, made before it was submitted and kept with it: the risk
/// engine's verdict (action, score, reasons, versions). It travels in the same WAL record
/// as its transfer and is kept only if the transfer is committed, so a committed transfer
/// and its decision are durable together or not at all. The body is the deciding layer's
/// encoding; the ledger stores it and never interprets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The transfer decided on; zero in a judged batch means "no decision for this one".
    pub transfer_id: u128,
    pub body: [u8; DECISION_BODY_BYTES],
}

impl Default for Decision {
    fn default() -> Self {
        Self { transfer_id: 0, body: [0; DECISION_BODY_BYTES] }
    }
}

impl Decision {
    /// No decision: the transfer at this place in a judged batch was not judged.
    pub const NONE: Self = Self { transfer_id: 0, body: [0; DECISION_BODY_BYTES] };

    pub fn is_none(&self) -> bool {
        self.transfer_id == 0
    }
}

/// What happened to a pending transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PendingStatus {
    Pending = 1,
    Posted = 2,
    Voided = 3,
    Expired = 4,
}

impl PendingStatus {
    pub fn from_u8(value: u8) -> Option<Self> {
        [Self::Pending, Self::Posted, Self::Voided, Self::Expired]
            .into_iter()
            .find(|s| *s as u8 == value)
    }
}

/// One row of an account's balance history (accounts with the `history` flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalanceAt {
    /// Timestamp of the transfer (or expiry) that produced these balances.
    pub timestamp: u64,
    pub balances: Balances,
}
