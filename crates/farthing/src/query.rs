//! `farthing query`: read accounts, transfers and histories from a data directory, offline.
//!
//! Prints one JSON object per line. Amounts are strings in the asset's decimal units (a
//! transfer also gives `amount_minor`); ids and timestamps are decimal strings.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use farthing_ledger::amount::format_amount;
use farthing_ledger::limits::QUERY_LIMIT_MAX;
use farthing_ledger::{
    Account, AccountFilter, AccountFlags, BalanceAt, Balances, StateMachine, Transfer,
    TransferFlags,
};
use farthing_store::{recover, DataDir};
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct QueryArgs {
    #[arg(long, default_value = "./farthing-data", global = true)]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub what: QueryWhat,
}

#[derive(Subcommand, Debug)]
pub enum QueryWhat {
    /// Accounts by id, with balances.
    Accounts { ids: Vec<u128> },
    /// Transfers by id.
    Transfers { ids: Vec<u128> },
    /// An account's transfers in time order, a page at a time.
    History(PageArgs),
    /// A `history` account's balances after each change, a page at a time.
    Balances(PageArgs),
}

#[derive(Args, Debug)]
pub struct PageArgs {
    #[arg(long)]
    pub account: u128,
    /// Earliest timestamp (ns), inclusive.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Latest timestamp (ns), inclusive (0: none).
    #[arg(long, default_value_t = 0)]
    pub to: u64,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// The `next_cursor` printed by the previous page.
    #[arg(long)]
    pub cursor: Option<u64>,
    /// Newest first.
    #[arg(long)]
    pub reverse: bool,
    /// Only transfers debiting the account.
    #[arg(long)]
    pub debits: bool,
    /// Only transfers crediting the account.
    #[arg(long)]
    pub credits: bool,
}

pub fn run(args: &QueryArgs) -> Result<(), String> {
    if !args.data_dir.join("FORMAT").exists() {
        return Err(format!("{} is not a Farthing data directory", args.data_dir.display()));
    }
    let dir = DataDir::open(&args.data_dir).map_err(|e| e.to_string())?;
    let (sm, _) = recover(&dir, false).map_err(|e| e.to_string())?;
    match &args.what {
        QueryWhat::Accounts { ids } | QueryWhat::Transfers { ids } if ids.is_empty() => {
            return Err("name at least one id".into());
        }
        QueryWhat::Accounts { ids } => {
            for id in ids {
                let found = sm.account(*id).map(|a| account_json(&sm, a));
                println!("{}", found.unwrap_or_else(|| not_found(*id)));
            }
        }
        QueryWhat::Transfers { ids } => {
            for id in ids {
                let found = sm.transfer(*id).map(|t| transfer_json(&sm, t));
                println!("{}", found.unwrap_or_else(|| not_found(*id)));
            }
        }
        QueryWhat::History(p) => {
            let page = sm.get_account_transfers(&filter(p)?).map_err(|e| e.to_string())?;
            for t in &page.items {
                println!("{}", transfer_json(&sm, t));
            }
            println!("{}", json!({ "next_cursor": page.next_cursor.map(|c| c.to_string()) }));
        }
        QueryWhat::Balances(p) => {
            let scale = scale_of(&sm, sm.account(p.account).map_or(0, |a| a.asset));
            let page = sm.get_account_balances(&filter(p)?).map_err(|e| e.to_string())?;
            for BalanceAt { timestamp, balances } in &page.items {
                let mut row = balances_json(balances, scale);
                row["timestamp"] = json!(timestamp.to_string());
                println!("{row}");
            }
            println!("{}", json!({ "next_cursor": page.next_cursor.map(|c| c.to_string()) }));
        }
    }
    Ok(())
}

fn filter(p: &PageArgs) -> Result<AccountFilter, String> {
    if p.limit == 0 || p.limit > QUERY_LIMIT_MAX {
        return Err(format!("--limit must be 1..={QUERY_LIMIT_MAX}"));
    }
    let f = AccountFilter {
        account_id: p.account,
        timestamp_min: p.from,
        timestamp_max: p.to,
        limit: p.limit,
        debits: p.debits,
        credits: p.credits,
        reverse: p.reverse,
    };
    Ok(match p.cursor {
        Some(c) => f.after(c),
        None => f,
    })
}

/// Flag names as `farthing` and the ledger spell them.
pub use farthing_server::receipt::flag_names;

fn not_found(id: u128) -> Value {
    json!({ "id": id.to_string(), "error": "not_found" })
}

fn scale_of(sm: &StateMachine, asset: u32) -> u8 {
    sm.asset(asset).map_or(0, |a| a.scale)
}

fn amount(minor: u128, scale: u8) -> Value {
    json!(format_amount(minor, scale))
}

fn balances_json(b: &Balances, scale: u8) -> Value {
    json!({
        "debits_pending": amount(b.debits_pending, scale),
        "debits_posted": amount(b.debits_posted, scale),
        "credits_pending": amount(b.credits_pending, scale),
        "credits_posted": amount(b.credits_posted, scale),
    })
}

fn account_json(sm: &StateMachine, a: &Account) -> Value {
    let scale = scale_of(sm, a.asset);
    json!({
        "id": a.id.to_string(),
        "asset": sm.asset(a.asset).map(|x| x.code_str().to_string()),
        "owner_id": a.owner_id.to_string(),
        "code": a.code,
        "flags": flag_names(AccountFlags::NAMED, a.flags.0),
        "balances": balances_json(&a.balances, scale),
        "timestamp": a.timestamp.to_string(),
    })
}

fn transfer_json(sm: &StateMachine, t: &Transfer) -> Value {
    let scale = scale_of(sm, t.asset);
    json!({
        "id": t.id.to_string(),
        "debit_account_id": t.debit_account_id.to_string(),
        "credit_account_id": t.credit_account_id.to_string(),
        "amount": amount(t.amount, scale),
        "amount_minor": t.amount.to_string(),
        "asset": sm.asset(t.asset).map(|x| x.code_str().to_string()),
        "pending_id": t.pending_id.to_string(),
        "pending_status": sm.pending_status(t.id).map(|s| format!("{s:?}").to_lowercase()),
        "code": t.code,
        "flags": flag_names(TransferFlags::NAMED, t.flags.0),
        "timeout_s": t.timeout_s,
        "timestamp": t.timestamp.to_string(),
    })
}
