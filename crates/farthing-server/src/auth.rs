//! API keys and who may do what.
//!
//! A key is `fk_` + a 12-character public prefix + a secret (32 characters when Farthing makes
//! it). The server keeps only the prefix (to find the key) and SHA-256 of the whole key; the
//! key itself is shown once, when it is made. Each key has a role and, except for admin and
//! auditor keys, an owner (and optionally a list of that owner's accounts) it is bound to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::meta::{Meta, Table, Write};

/// What a key may do. See docs/API.md, "Keys and roles", for the full matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything: assets, any account, keys, any webhook.
    Admin,
    /// Its owner's accounts: create them, pay from them, capture and release holds placed
    /// on them, register webhooks, see their transfers and events.
    Merchant,
    /// Its owner's accounts: create them, pay from them, see their transfers and events.
    Payer,
    /// Reads everything (accounts, transfers, receipts, events); changes nothing.
    Auditor,
    /// Reads its owner's (or its listed) accounts and their transfers; changes nothing.
    ReadOnly,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Merchant => "merchant",
            Self::Payer => "payer",
            Self::Auditor => "auditor",
            Self::ReadOnly => "read_only",
        }
    }
    /// Roles that see every account.
    pub fn sees_all(self) -> bool {
        matches!(self, Self::Admin | Self::Auditor)
    }
    /// Roles that must be bound to an owner.
    pub fn needs_owner(self) -> bool {
        matches!(self, Self::Merchant | Self::Payer | Self::ReadOnly)
    }
}

/// A key as stored (never the key itself).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyRecord {
    pub prefix: String,
    /// SHA-256 of the whole key, hex.
    pub hash: String,
    pub role: Role,
    pub owner_id: Option<u128>,
    /// If not empty, the key is limited to these of its owner's accounts.
    pub accounts: Vec<u128>,
    /// Requests per second (0: the server's default).
    pub rate_limit_per_s: u32,
    pub label: String,
    pub created_unix_s: u64,
    pub revoked: bool,
}

/// The caller of a request, once its key checked out.
#[derive(Clone, Debug)]
pub struct Principal {
    pub prefix: String,
    pub role: Role,
    pub owner_id: Option<u128>,
    pub accounts: Vec<u128>,
}

impl Principal {
    /// May the caller see this account (and the transfers touching it)?
    pub fn sees_account(&self, account_id: u128, owner_id: u128) -> bool {
        self.role.sees_all() || self.owns(account_id, owner_id)
    }
    /// Is the account the caller's own (its owner, and in its list if it has one)?
    pub fn owns(&self, account_id: u128, owner_id: u128) -> bool {
        self.owner_id == Some(owner_id)
            && (self.accounts.is_empty() || self.accounts.contains(&account_id))
    }
    /// May the caller move money out of this account?
    pub fn may_debit(&self, account_id: u128, owner_id: u128) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Merchant | Role::Payer => self.owns(account_id, owner_id),
            Role::Auditor | Role::ReadOnly => false,
        }
    }
    pub fn writes(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Merchant | Role::Payer)
    }
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(ApiError::forbidden("Only an admin key may do this.")),
        }
    }
    pub fn require_writer(&self) -> Result<(), ApiError> {
        match self.writes() {
            true => Ok(()),
            false => Err(ApiError::forbidden(format!(
                "Keys of role {} cannot change anything.",
                self.role.name()
            ))),
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Entry {
    record: KeyRecord,
    /// SHA-256 of the key, as bytes, for the check on every request.
    hash: [u8; 32],
    /// What a request with this key is, made once.
    principal: Arc<Principal>,
    bucket: Mutex<Bucket>,
}

/// Every key, cached in memory (keys are few and checked on every request).
pub struct Keys {
    meta: Meta,
    revoking: tokio::sync::Mutex<()>,
    by_prefix: RwLock<HashMap<String, Arc<Entry>>>,
    default_rate: u32,
    burst: u32,
}

pub const KEY_PREFIX_CHARS: usize = 12;
const KEY_SECRET_CHARS: usize = 32;
/// Shortest key accepted through `FARTHING_ADMIN_KEY`: `fk_` + prefix + 20 more.
const KEY_CHARS_MIN: usize = 3 + KEY_PREFIX_CHARS + 20;

fn random_text(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..n).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

pub fn now_unix_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn key_hash(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

pub use farthing_tlog::note::to_hex as hex;

/// The public prefix of a well-formed key.
pub fn key_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("fk_")?;
    if key.len() < KEY_CHARS_MIN || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    Some(&rest[..KEY_PREFIX_CHARS])
}

/// What a new key may be.
pub struct NewKey {
    pub role: Role,
    pub owner_id: Option<u128>,
    pub accounts: Vec<u128>,
    pub rate_limit_per_s: u32,
    pub label: String,
}

impl Keys {
    pub fn load(meta: Meta, default_rate: u32, burst: u32) -> Result<Self, String> {
        let mut by_prefix = HashMap::new();
        for (_, value) in meta.scan(Table::Keys, b"")? {
            let record: KeyRecord = serde_json::from_slice(&value).map_err(|e| e.to_string())?;
            by_prefix.insert(record.prefix.clone(), Arc::new(Entry::new(record, burst)));
        }
        Ok(Self {
            meta,
            revoking: Default::default(),
            by_prefix: RwLock::new(by_prefix),
            default_rate,
            burst,
        })
    }

    /// Is there an admin key that works? (None: this is the first start, or every admin
    /// key was revoked: a new one is made and printed.)
    pub fn has_admin(&self) -> bool {
        self.by_prefix
            .read()
            .unwrap()
            .values()
            .any(|e| e.record.role == Role::Admin && !e.record.revoked)
    }

    /// Was this a merchant key, since revoked? (Its webhooks stop with it.)
    pub fn revoked_merchant(&self, prefix: &str) -> bool {
        self.by_prefix
            .read()
            .unwrap()
            .get(prefix)
            .is_some_and(|e| e.record.revoked && e.record.role == Role::Merchant)
    }

    /// Is this key known and not revoked?
    pub fn is_active(&self, prefix: &str) -> bool {
        self.by_prefix.read().unwrap().get(prefix).is_some_and(|e| !e.record.revoked)
    }

    /// Makes a key (or adopts `chosen`, which must be well formed and unused); returns the
    /// key, to be shown once, and its record.
    pub async fn create(
        &self,
        new: NewKey,
        chosen: Option<&str>,
    ) -> Result<(String, KeyRecord), ApiError> {
        if new.role.needs_owner() && new.owner_id.is_none() {
            return Err(ApiError::invalid(
                "owner_id",
                format!("Keys of role {} must be bound to an owner.", new.role.name()),
            ));
        }
        if !new.role.needs_owner() && (new.owner_id.is_some() || !new.accounts.is_empty()) {
            return Err(ApiError::invalid(
                "owner_id",
                format!("Keys of role {} see every account: they take no owner.", new.role.name()),
            ));
        }
        let key = match chosen {
            Some(k) => {
                if key_prefix(k).is_none() {
                    return Err(ApiError::bad_request(
                        "invalid_key",
                        format!(
                            "A chosen key must be fk_ followed by at least {} letters, digits \
                             or underscores.",
                            KEY_CHARS_MIN - 3
                        ),
                    ));
                }
                k.to_string()
            }
            None => {
                format!("fk_{}{}", random_text(KEY_PREFIX_CHARS), random_text(KEY_SECRET_CHARS))
            }
        };
        let prefix = key_prefix(&key).expect("well formed").to_string();
        if self.by_prefix.read().unwrap().contains_key(&prefix) {
            return Err(ApiError::new(StatusCode::CONFLICT, "key_exists", "That key is in use."));
        }
        let record = KeyRecord {
            prefix: prefix.clone(),
            hash: key_hash(&key),
            role: new.role,
            owner_id: new.owner_id,
            accounts: new.accounts,
            rate_limit_per_s: new.rate_limit_per_s,
            label: new.label,
            created_unix_s: now_unix_s(),
            revoked: false,
        };
        self.save(&record).await?;
        Ok((key, record))
    }

    async fn save(&self, record: &KeyRecord) -> Result<(), ApiError> {
        let value = serde_json::to_vec(record).expect("json");
        self.meta
            .write(vec![Write::Put(Table::Keys, record.prefix.as_bytes().to_vec(), value)])
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e))?;
        self.by_prefix
            .write()
            .unwrap()
            .insert(record.prefix.clone(), Arc::new(Entry::new(record.clone(), self.burst)));
        Ok(())
    }

    /// Revokes a key at once; it cannot be used again.
    pub async fn revoke(&self, prefix: &str) -> Result<KeyRecord, ApiError> {
        // One revocation at a time: two admins revoking each other cannot both succeed.
        let _one_at_a_time = self.revoking.lock().await;
        let entry = self.by_prefix.read().unwrap().get(prefix).cloned();
        let mut record = entry
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "No key has this prefix (the 12 characters after fk_ of the key).",
                )
            })?
            .record
            .clone();
        let other_admins = self.by_prefix.read().unwrap().values().any(|e| {
            e.record.role == Role::Admin && !e.record.revoked && e.record.prefix != prefix
        });
        if record.role == Role::Admin && !other_admins {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "last_admin",
                "This is the last working admin key: make another before revoking it.",
            ));
        }
        record.revoked = true;
        self.save(&record).await?;
        Ok(record)
    }

    pub fn list(&self) -> Vec<KeyRecord> {
        let mut all: Vec<KeyRecord> =
            self.by_prefix.read().unwrap().values().map(|e| e.record.clone()).collect();
        all.sort_by(|a, b| (a.created_unix_s, &a.prefix).cmp(&(b.created_unix_s, &b.prefix)));
        all
    }

    /// Checks the request's `Authorization: Bearer <key>` and the key's rate limit.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Principal>, ApiError> {
        let value = headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("Send your API key: Authorization: Bearer <key>.")
        })?;
        // The scheme's name is case-insensitive (RFC 9110).
        let key = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, k)| k.trim())
            .ok_or_else(|| {
                ApiError::unauthorized("The Authorization header must be Bearer <key>.")
            })?;
        let invalid = || ApiError::unauthorized("This API key is not valid.");
        let prefix = key_prefix(key).ok_or_else(invalid)?;
        let entry = self.by_prefix.read().unwrap().get(prefix).cloned().ok_or_else(invalid)?;
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if !bool::from(hash.ct_eq(&entry.hash)) {
            return Err(invalid());
        }
        if entry.record.revoked {
            return Err(ApiError::unauthorized("This API key was revoked."));
        }
        // A key's own limit allows a burst of one second's worth; the default, the
        // server's burst setting.
        let (rate, burst) = match entry.record.rate_limit_per_s {
            0 => (self.default_rate, self.burst),
            r => (r, r),
        };
        if rate > 0 {
            entry.take(rate, burst)?;
        }
        Ok(entry.principal.clone())
    }
}

impl Entry {
    fn new(record: KeyRecord, burst: u32) -> Self {
        let burst = match record.rate_limit_per_s {
            0 => burst,
            r => r,
        };
        let mut hash = [0u8; 32];
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = record
                .hash
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
        }
        let principal = Arc::new(Principal {
            prefix: record.prefix.clone(),
            role: record.role,
            owner_id: record.owner_id,
            accounts: record.accounts.clone(),
        });
        Self {
            record,
            hash,
            principal,
            bucket: Mutex::new(Bucket { tokens: f64::from(burst), at: Instant::now() }),
        }
    }

    /// Token bucket: `rate` a second, up to `burst` (at least one second's worth) saved up.
    fn take(&self, rate: u32, burst: u32) -> Result<(), ApiError> {
        let capacity = f64::from(burst.max(1));
        let mut b = self.bucket.lock().unwrap();
        let now = Instant::now();
        b.tokens =
            (b.tokens + now.duration_since(b.at).as_secs_f64() * f64::from(rate)).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait_s = ((1.0 - b.tokens) / f64::from(rate)).ceil().max(1.0) as u64;
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("This key may make {rate} requests a second; retry after {wait_s} s."),
        );
        e.retry_after_s = Some(u32::try_from(wait_s).unwrap_or(u32::MAX));
        Err(e)
    }
}
