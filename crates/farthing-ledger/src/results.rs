//! Result codes: one per reason an event can be refused, each with a stable name and a sentence.
//!
//! **Precedence.** For each event the state machine runs its checks in the order of the codes'
//! numbers and reports the first that fails, so a given event in a given state always gets the
//! same code. `exists*` codes come after validation of the event's own fields and before any
//! check that depends on other accounts or balances, so a retried event is recognised even when
//! balances have since changed.

/// Defines a result enum with stable numbers, snake_case names and sentences.
macro_rules! result_codes {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $num:expr, $code:literal, $text:literal;)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name {
            $($variant = $num,)*
        }

        impl $name {
            /// Every code, in order of precedence.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The stable machine-readable name (`exceeds_credits`).
            pub const fn code(self) -> &'static str {
                match self { $(Self::$variant => $code,)* }
            }
            /// A sentence a person understands.
            pub const fn message(self) -> &'static str {
                match self { $(Self::$variant => $text,)* }
            }
            pub fn from_u8(value: u8) -> Option<Self> {
                Self::ALL.iter().copied().find(|c| *c as u8 == value)
            }
            pub fn from_code(code: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|c| c.code() == code)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.code())
            }
        }
    };
}

result_codes! {
    /// Outcome of creating an asset.
    CreateAssetResult {
        Ok = 0, "ok", "The asset was created.";
        TimestampMustBeZero = 1, "timestamp_must_be_zero",
            "The timestamp is assigned by the ledger; submit zero.";
        IdMustNotBeZero = 2, "id_must_not_be_zero", "Asset id 0 is reserved.";
        CodeInvalid = 3, "code_invalid",
            "An asset code is 1 to 12 characters of A-Z, 0-9, '-', '_' or '.'.";
        ScaleExceedsMax = 4, "scale_exceeds_max", "An asset's scale is at most 18 decimals.";
        KindInvalid = 5, "kind_invalid",
            "An asset's kind is fiat, stablecoin, cbdc or token.";
        ExistsWithDifferentCode = 6, "exists_with_different_code",
            "An asset with this id exists with a different code.";
        ExistsWithDifferentScale = 7, "exists_with_different_scale",
            "An asset with this id exists with a different scale.";
        ExistsWithDifferentKind = 8, "exists_with_different_kind",
            "An asset with this id exists with a different kind.";
        Exists = 9, "exists", "This asset already exists, identical: nothing was changed.";
        CodeAlreadyUsed = 10, "code_already_used", "Another asset already uses this code.";
        AssetsFull = 11, "assets_full",
            "The ledger holds the most assets it may (4,096); no more can be registered.";
    }
}

result_codes! {
    /// Outcome of creating an account.
    CreateAccountResult {
        Ok = 0, "ok", "The account was created.";
        LinkedEventFailed = 1, "linked_event_failed",
            "Another event in this linked chain failed, so this one was not applied.";
        LinkedEventChainOpen = 2, "linked_event_chain_open",
            "The last event of the batch is flagged linked: the chain never closes.";
        TimestampMustBeZero = 3, "timestamp_must_be_zero",
            "The timestamp is assigned by the ledger; submit zero.";
        ReservedFlag = 4, "reserved_flag", "A flag bit without a meaning is set.";
        IdMustNotBeZero = 5, "id_must_not_be_zero", "Account id 0 is reserved.";
        IdMustNotBeIntMax = 6, "id_must_not_be_int_max", "Account id 2^128-1 is reserved.";
        FlagsAreMutuallyExclusive = 7, "flags_are_mutually_exclusive",
            "debits_must_not_exceed_credits and credits_must_not_exceed_debits exclude each other.";
        DebitsPendingMustBeZero = 8, "debits_pending_must_be_zero",
            "A new account starts with zero balances.";
        DebitsPostedMustBeZero = 9, "debits_posted_must_be_zero",
            "A new account starts with zero balances.";
        CreditsPendingMustBeZero = 10, "credits_pending_must_be_zero",
            "A new account starts with zero balances.";
        CreditsPostedMustBeZero = 11, "credits_posted_must_be_zero",
            "A new account starts with zero balances.";
        AssetMustNotBeZero = 12, "asset_must_not_be_zero", "An account must name its asset.";
        CodeMustNotBeZero = 13, "code_must_not_be_zero", "An account must have a non-zero code.";
        ExistsWithDifferentFlags = 14, "exists_with_different_flags",
            "An account with this id exists with different flags.";
        ExistsWithDifferentOwnerId = 15, "exists_with_different_owner_id",
            "An account with this id exists with a different owner.";
        ExistsWithDifferentUserData64 = 16, "exists_with_different_user_data_64",
            "An account with this id exists with different user_data_64.";
        ExistsWithDifferentAsset = 17, "exists_with_different_asset",
            "An account with this id exists in a different asset.";
        ExistsWithDifferentCode = 18, "exists_with_different_code",
            "An account with this id exists with a different code.";
        Exists = 19, "exists", "This account already exists, identical: nothing was changed.";
        IdRepeatedInChain = 20, "id_repeated_in_chain",
            "An earlier event of this linked chain used the same id; the chain was rolled back, \
             so neither exists.";
        AssetNotFound = 21, "asset_not_found", "No asset has this id.";
    }
}

result_codes! {
    /// Outcome of creating a transfer.
    CreateTransferResult {
        Ok = 0, "ok", "The transfer was committed.";
        LinkedEventFailed = 1, "linked_event_failed",
            "Another event in this linked chain failed, so this one was not applied.";
        LinkedEventChainOpen = 2, "linked_event_chain_open",
            "The last event of the batch is flagged linked: the chain never closes.";
        TimestampMustBeZero = 3, "timestamp_must_be_zero",
            "The timestamp is assigned by the ledger; submit zero.";
        ReservedFlag = 4, "reserved_flag", "A flag bit without a meaning is set.";
        IdMustNotBeZero = 5, "id_must_not_be_zero", "Transfer id 0 is reserved.";
        IdMustNotBeIntMax = 6, "id_must_not_be_int_max", "Transfer id 2^128-1 is reserved.";
        FlagsAreMutuallyExclusive = 7, "flags_are_mutually_exclusive",
            "These flags cannot be combined (pending, post_pending and void_pending exclude \
             each other; balancing and closing apply only to new transfers; held only to \
             pending ones, release_hold only to posts and voids).";
        DebitAccountIdMustNotBeZero = 8, "debit_account_id_must_not_be_zero",
            "The debit account id is missing.";
        DebitAccountIdMustNotBeIntMax = 9, "debit_account_id_must_not_be_int_max",
            "Account id 2^128-1 is reserved.";
        CreditAccountIdMustNotBeZero = 10, "credit_account_id_must_not_be_zero",
            "The credit account id is missing.";
        CreditAccountIdMustNotBeIntMax = 11, "credit_account_id_must_not_be_int_max",
            "Account id 2^128-1 is reserved.";
        AccountsMustBeDifferent = 12, "accounts_must_be_different",
            "A transfer must move money between two different accounts.";
        PendingIdMustBeZero = 13, "pending_id_must_be_zero",
            "Only post_pending and void_pending transfers name a pending transfer.";
        PendingIdMustNotBeZero = 14, "pending_id_must_not_be_zero",
            "post_pending and void_pending must name the pending transfer.";
        PendingIdMustNotBeIntMax = 15, "pending_id_must_not_be_int_max",
            "Transfer id 2^128-1 is reserved.";
        PendingIdMustBeDifferent = 16, "pending_id_must_be_different",
            "A transfer cannot post or void itself.";
        TimeoutReservedForPendingTransfer = 17, "timeout_reserved_for_pending_transfer",
            "Only pending transfers can time out.";
        ClosingTransferMustBePending = 18, "closing_transfer_must_be_pending",
            "Closing an account is done by a pending transfer, so a void can reopen it.";
        AmountMustNotBeZero = 19, "amount_must_not_be_zero",
            "The amount must be at least one minor unit.";
        AssetMustNotBeZero = 20, "asset_must_not_be_zero", "A transfer must name its asset.";
        CodeMustNotBeZero = 21, "code_must_not_be_zero", "A transfer must have a non-zero code.";
        ExistsWithDifferentFlags = 22, "exists_with_different_flags",
            "A transfer with this id exists with different flags.";
        ExistsWithDifferentPendingId = 23, "exists_with_different_pending_id",
            "A transfer with this id exists with a different pending_id.";
        ExistsWithDifferentTimeout = 24, "exists_with_different_timeout",
            "A transfer with this id exists with a different timeout.";
        ExistsWithDifferentDebitAccountId = 25, "exists_with_different_debit_account_id",
            "A transfer with this id exists with a different debit account.";
        ExistsWithDifferentCreditAccountId = 26, "exists_with_different_credit_account_id",
            "A transfer with this id exists with a different credit account.";
        ExistsWithDifferentAmount = 27, "exists_with_different_amount",
            "A transfer with this id exists with a different amount.";
        ExistsWithDifferentUserData128 = 28, "exists_with_different_user_data_128",
            "A transfer with this id exists with different user_data_128.";
        ExistsWithDifferentUserData64 = 29, "exists_with_different_user_data_64",
            "A transfer with this id exists with different user_data_64.";
        ExistsWithDifferentUserData32 = 30, "exists_with_different_user_data_32",
            "A transfer with this id exists with different user_data_32.";
        ExistsWithDifferentAsset = 31, "exists_with_different_asset",
            "A transfer with this id exists in a different asset.";
        ExistsWithDifferentCode = 32, "exists_with_different_code",
            "A transfer with this id exists with a different code.";
        Exists = 33, "exists",
            "This transfer was already committed, identical: money moved once, not twice.";
        IdRepeatedInChain = 34, "id_repeated_in_chain",
            "An earlier event of this linked chain used the same id; the chain was rolled back, \
             so neither exists.";
        IdAlreadyFailed = 35, "id_already_failed",
            "A transfer with this id was refused before for a reason that depended on balances; \
             ids are never reused, so retry with a new id.";
        DebitAccountNotFound = 36, "debit_account_not_found", "No account has the debit id.";
        CreditAccountNotFound = 37, "credit_account_not_found", "No account has the credit id.";
        AccountsMustHaveTheSameAsset = 38, "accounts_must_have_the_same_asset",
            "Both accounts must hold the same asset.";
        TransferMustHaveTheSameAssetAsAccounts = 39,
            "transfer_must_have_the_same_asset_as_accounts",
            "The transfer's asset must be the accounts' asset.";
        PendingTransferNotFound = 40, "pending_transfer_not_found",
            "No transfer has this pending_id.";
        PendingTransferNotPending = 41, "pending_transfer_not_pending",
            "The transfer named by pending_id was not created as pending.";
        PendingTransferHasDifferentDebitAccountId = 42,
            "pending_transfer_has_different_debit_account_id",
            "The debit account differs from the pending transfer's (submit 0 to inherit it).";
        PendingTransferHasDifferentCreditAccountId = 43,
            "pending_transfer_has_different_credit_account_id",
            "The credit account differs from the pending transfer's (submit 0 to inherit it).";
        PendingTransferHasDifferentAsset = 44, "pending_transfer_has_different_asset",
            "The asset differs from the pending transfer's (submit 0 to inherit it).";
        PendingTransferHasDifferentCode = 45, "pending_transfer_has_different_code",
            "The code differs from the pending transfer's (submit 0 to inherit it).";
        ExceedsPendingTransferAmount = 46, "exceeds_pending_transfer_amount",
            "A post cannot move more than the pending transfer reserved.";
        PendingTransferHasDifferentAmount = 47, "pending_transfer_has_different_amount",
            "A void releases the whole pending amount: submit that amount, 0 or 2^128-1.";
        PendingTransferAlreadyPosted = 48, "pending_transfer_already_posted",
            "The pending transfer was already posted.";
        PendingTransferAlreadyVoided = 49, "pending_transfer_already_voided",
            "The pending transfer was already voided.";
        PendingTransferExpired = 50, "pending_transfer_expired",
            "The pending transfer timed out and its amount was released.";
        DebitAccountClosed = 51, "debit_account_closed", "The debit account is closed.";
        CreditAccountClosed = 52, "credit_account_closed", "The credit account is closed.";
        OverflowsDebitsPending = 53, "overflows_debits_pending",
            "The debit account's pending debits would overflow.";
        OverflowsCreditsPending = 54, "overflows_credits_pending",
            "The credit account's pending credits would overflow.";
        OverflowsDebitsPosted = 55, "overflows_debits_posted",
            "The debit account's posted debits would overflow.";
        OverflowsCreditsPosted = 56, "overflows_credits_posted",
            "The credit account's posted credits would overflow.";
        OverflowsDebits = 57, "overflows_debits",
            "The debit account's pending plus posted debits would overflow.";
        OverflowsCredits = 58, "overflows_credits",
            "The credit account's pending plus posted credits would overflow.";
        OverflowsTimeout = 59, "overflows_timeout", "The expiry time would overflow.";
        ExceedsCredits = 60, "exceeds_credits",
            "Insufficient funds: the debit account's debits would exceed its credits.";
        ExceedsDebits = 61, "exceeds_debits",
            "The credit account's credits would exceed its debits (its limit).";
        PendingTransferHeld = 62, "pending_transfer_held",
            "The pending transfer is held for approval: only its approval or rejection \
             (a post or void flagged release_hold) may settle it.";
        PendingTransferNotHeld = 63, "pending_transfer_not_held",
            "release_hold settles only a held pending transfer; this one is not held.";
    }
}

impl CreateAccountResult {
    /// `exists` and every `exists_with_different_*`.
    pub fn is_exists(self) -> bool {
        (Self::ExistsWithDifferentFlags as u8..=Self::Exists as u8).contains(&(self as u8))
    }
}

impl CreateTransferResult {
    /// `exists` and every `exists_with_different_*`.
    pub fn is_exists(self) -> bool {
        (Self::ExistsWithDifferentFlags as u8..=Self::Exists as u8).contains(&(self as u8))
    }

    /// Failures that depend on the ledger's state at the time (balances, expiry, closed
    /// accounts) rather than on the event alone. Their ids are remembered so that a retry
    /// answers `id_already_failed` instead of moving money later, unexpectedly.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::DebitAccountNotFound
                | Self::CreditAccountNotFound
                | Self::PendingTransferNotFound
                | Self::PendingTransferExpired
                | Self::DebitAccountClosed
                | Self::CreditAccountClosed
                | Self::OverflowsDebitsPending
                | Self::OverflowsCreditsPending
                | Self::OverflowsDebitsPosted
                | Self::OverflowsCreditsPosted
                | Self::OverflowsDebits
                | Self::OverflowsCredits
                | Self::ExceedsCredits
                | Self::ExceedsDebits
        )
    }
}

/// The outcome of one event: its code and, when it was applied or already existed, the
/// timestamp the ledger gave it (for `exists`, the original one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventResult<C> {
    pub code: C,
    pub timestamp: u64,
}
