//! The directory of assets and accounts: the immutable facts about them (owner, asset,
//! code, whether bounded) cached for authorization and the risk engine, read without
//! asking the engine. Below every service: it depends on nothing but the ledger's types.

use std::collections::HashMap;
use std::sync::RwLock;

use farthing_ledger::{Account, AccountFlags, Asset};

use crate::error::ApiError;

/// The account code of channels' escrow accounts (no payer or merchant may make one).
pub const CODE_ESCROW: u16 = 0x7200;

/// An asset as the API names it.
#[derive(Clone, Debug)]
pub struct AssetInfo {
    pub id: u32,
    pub code: String,
    pub scale: u8,
}

/// The facts about an account that never change.
#[derive(Clone, Copy, Debug)]
pub struct AccountInfo {
    pub owner: u128,
    pub asset: u32,
    /// The account can never be debited past its credits (`debits_must_not_exceed_credits`,
    /// fixed at creation): the only kind a non-admin key may pay from.
    pub bounded: bool,
    /// The operator's code for the account; for a merchant's account, its merchant
    /// category (what the risk policy's blocked categories name).
    pub code: u16,
    /// When the account was made (engine nanoseconds).
    pub created_ns: u64,
}

#[derive(Default)]
struct DirectoryInner {
    assets: HashMap<u32, AssetInfo>,
    codes: HashMap<String, u32>,
    accounts: HashMap<u128, AccountInfo>,
    /// Per owner, account ids in creation order.
    by_owner: HashMap<u128, Vec<u128>>,
}

/// Assets and accounts by id. Filled from the ledger at start and by every create after
/// (this server is the ledger's only writer while it runs).
#[derive(Default)]
pub struct Directory {
    inner: RwLock<DirectoryInner>,
}

impl Directory {
    pub fn load(assets: &[Asset], accounts: &[Account]) -> Self {
        let d = Self::default();
        for a in assets {
            d.add_asset(a);
        }
        for a in accounts {
            d.add_account(a);
        }
        d
    }

    pub fn add_asset(&self, a: &Asset) {
        let mut d = self.inner.write().unwrap();
        let info = AssetInfo { id: a.id, code: a.code_str().to_string(), scale: a.scale };
        d.codes.insert(info.code.clone(), a.id);
        d.assets.insert(a.id, info);
    }

    pub fn add_account(&self, a: &Account) {
        let mut d = self.inner.write().unwrap();
        if d.accounts
            .insert(
                a.id,
                AccountInfo {
                    owner: a.owner_id,
                    asset: a.asset,
                    bounded: a.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
                    code: a.code,
                    created_ns: a.timestamp,
                },
            )
            .is_none()
        {
            d.by_owner.entry(a.owner_id).or_default().push(a.id);
        }
    }

    pub fn assets(&self) -> Vec<AssetInfo> {
        self.inner.read().unwrap().assets.values().cloned().collect()
    }

    pub fn asset(&self, id: u32) -> Option<AssetInfo> {
        self.inner.read().unwrap().assets.get(&id).cloned()
    }

    pub fn asset_by_code(&self, code: &str) -> Result<AssetInfo, ApiError> {
        let d = self.inner.read().unwrap();
        d.codes.get(code).and_then(|id| d.assets.get(id)).cloned().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "asset_not_found",
                format!("No asset has the code {code:?}."),
            )
        })
    }

    pub fn next_asset_id(&self) -> u32 {
        self.inner.read().unwrap().assets.keys().max().copied().unwrap_or(0) + 1
    }

    pub fn account(&self, id: u128) -> Option<AccountInfo> {
        self.inner.read().unwrap().accounts.get(&id).copied()
    }

    /// Several accounts under one lock.
    pub fn accounts<const N: usize>(&self, ids: [u128; N]) -> [Option<AccountInfo>; N] {
        let d = self.inner.read().unwrap();
        ids.map(|id| d.accounts.get(&id).copied())
    }

    /// An owner's account ids after position `after` (creation order), at most `limit`.
    pub fn owner_accounts(&self, owner: u128, after: usize, limit: usize) -> (Vec<u128>, bool) {
        let d = self.inner.read().unwrap();
        let all = d.by_owner.get(&owner).map(Vec::as_slice).unwrap_or(&[]);
        let start = after.min(all.len());
        let end = (start + limit).min(all.len());
        (all[start..end].to_vec(), end < all.len())
    }

    /// The asset code and scale of an asset id (unknown ids read as "?" with scale 0).
    pub fn asset_text(&self, id: u32) -> (String, u8) {
        self.asset(id).map_or(("?".to_string(), 0), |a| (a.code, a.scale))
    }
}
