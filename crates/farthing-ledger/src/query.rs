//! Read queries: an account's transfers and balance history, in time order, paged.

use crate::limits::QUERY_LIMIT_MAX;
use crate::state::StateMachine;
use crate::types::{BalanceAt, Transfer};

/// Which slice of an account's history to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountFilter {
    pub account_id: u128,
    /// Inclusive lower bound on timestamps (0: none).
    pub timestamp_min: u64,
    /// Inclusive upper bound on timestamps (0: none).
    pub timestamp_max: u64,
    /// Rows at most, 1..=`QUERY_LIMIT_MAX`.
    pub limit: u32,
    /// Include transfers debiting the account (both false: both sides).
    pub debits: bool,
    /// Include transfers crediting the account.
    pub credits: bool,
    /// Newest first.
    pub reverse: bool,
}

impl AccountFilter {
    pub fn new(account_id: u128, limit: u32) -> Self {
        Self {
            account_id,
            timestamp_min: 0,
            timestamp_max: 0,
            limit,
            debits: false,
            credits: false,
            reverse: false,
        }
    }

    /// The filter for the page after one that ended at `cursor` (`Page::next_cursor`).
    pub fn after(mut self, cursor: u64) -> Self {
        if self.reverse {
            self.timestamp_max = cursor;
        } else {
            self.timestamp_min = cursor;
        }
        self
    }

    fn range(&self) -> (u64, u64) {
        let max = if self.timestamp_max == 0 { u64::MAX } else { self.timestamp_max };
        (self.timestamp_min, max)
    }
}

/// Why a query was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryError {
    AccountNotFound,
    LimitOutOfRange,
    TimestampRangeInvalid,
    HistoryNotEnabled,
}

impl QueryError {
    pub fn code(self) -> &'static str {
        match self {
            Self::AccountNotFound => "account_not_found",
            Self::LimitOutOfRange => "limit_out_of_range",
            Self::TimestampRangeInvalid => "timestamp_range_invalid",
            Self::HistoryNotEnabled => "history_not_enabled",
        }
    }
    pub fn message(self) -> &'static str {
        match self {
            Self::AccountNotFound => "No account has this id.",
            Self::LimitOutOfRange => "The page size must be between 1 and 8190.",
            Self::TimestampRangeInvalid => "timestamp_min must not be after timestamp_max.",
            Self::HistoryNotEnabled => {
                "Balance history is kept only for accounts created \
                                        with the history flag."
            }
        }
    }
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for QueryError {}

/// One page of rows and, if more may follow, the cursor for [`AccountFilter::after`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<u64>,
}

impl StateMachine {
    /// The earliest timestamp at which a pending transfer expires, if any is due ever.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiries.first().map(|(at, _)| *at)
    }

    fn checked_filter(&self, f: &AccountFilter) -> Result<usize, QueryError> {
        if f.limit == 0 || f.limit > QUERY_LIMIT_MAX {
            return Err(QueryError::LimitOutOfRange);
        }
        let (min, max) = f.range();
        if min > max {
            return Err(QueryError::TimestampRangeInvalid);
        }
        let index = self.account_index.get(&f.account_id).ok_or(QueryError::AccountNotFound)?;
        Ok(*index as usize)
    }

    /// Transfers that debit or credit an account, in time order, within a time range.
    pub fn get_account_transfers(&self, f: &AccountFilter) -> Result<Page<Transfer>, QueryError> {
        let account = self.checked_filter(f)?;
        let rows = &self.account_transfers[account];
        let (min, max) = f.range();
        let ts = |i: &u32| self.transfers[*i as usize].timestamp;
        let start = rows.partition_point(|i| ts(i) < min);
        let end = rows.partition_point(|i| ts(i) <= max);
        let both = f.debits == f.credits;
        let wanted = |t: &Transfer| {
            both || (f.debits && t.debit_account_id == f.account_id)
                || (f.credits && t.credit_account_id == f.account_id)
        };
        let candidates = rows[start..end].iter().map(|i| &self.transfers[*i as usize]);
        let selected: Box<dyn Iterator<Item = &Transfer>> = if f.reverse {
            Box::new(candidates.rev().filter(|t| wanted(t)))
        } else {
            Box::new(candidates.filter(|t| wanted(t)))
        };
        Ok(page(selected.copied(), f, |t| t.timestamp))
    }

    /// Balances of a `history` account after each of its transfers, in time order.
    pub fn get_account_balances(&self, f: &AccountFilter) -> Result<Page<BalanceAt>, QueryError> {
        let account = self.checked_filter(f)?;
        let rows = self.history.get(&(account as u32)).ok_or(QueryError::HistoryNotEnabled)?;
        let (min, max) = f.range();
        let start = rows.partition_point(|r| r.timestamp < min);
        let end = rows.partition_point(|r| r.timestamp <= max);
        let slice = &rows[start..end];
        let selected: Box<dyn Iterator<Item = &BalanceAt>> =
            if f.reverse { Box::new(slice.iter().rev()) } else { Box::new(slice.iter()) };
        Ok(page(selected.copied(), f, |r| r.timestamp))
    }
}

/// Takes up to `limit` rows; if more exist, the cursor continues just past the last.
/// Balance-history rows can share a timestamp (expiries at one instant): a page never splits
/// such a group, since a timestamp cursor could not resume inside it. It ends before the group
/// or, if the group alone exceeds the page, takes the whole group.
fn page<T>(rows: impl Iterator<Item = T>, f: &AccountFilter, ts: impl Fn(&T) -> u64) -> Page<T> {
    let mut rows = rows.peekable();
    let mut items: Vec<T> = rows.by_ref().take(f.limit as usize).collect();
    let Some(next) = rows.peek() else {
        return Page { items, next_cursor: None };
    };
    let last_ts = ts(items.last().expect("limit is at least 1"));
    if ts(next) == last_ts {
        let group_start = items.iter().rposition(|r| ts(r) != last_ts).map_or(0, |p| p + 1);
        if group_start > 0 {
            items.truncate(group_start);
        } else {
            while rows.peek().is_some_and(|r| ts(r) == last_ts) {
                items.push(rows.next().expect("peeked"));
            }
            if rows.peek().is_none() {
                return Page { items, next_cursor: None };
            }
        }
    }
    let last_ts = ts(items.last().expect("non-empty"));
    let next_cursor = Some(if f.reverse { last_ts - 1 } else { last_ts + 1 });
    Page { items, next_cursor }
}
