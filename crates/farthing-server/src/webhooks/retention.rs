//! Pruning: finished deliveries older than `webhook_deliveries_retention_s` are deleted, and
//! so are removed webhooks once their deliveries are gone, by a background task, a batch per
//! transaction. Pending deliveries are kept, however old, until they finish.

use std::time::Duration;

use super::{now_ms, Delivery};
use crate::auth::now_unix_s;
use crate::meta::{Table, Write};
use crate::state::AppState;

/// Records deleted in one transaction.
const PRUNE_BATCH_MAX: usize = 1_000;
/// The longest wait between two passes (shorter retentions are pruned more often).
const PRUNE_INTERVAL_S_MAX: u64 = 3_600;

/// Prunes every `min(retention, 1 h)`.
pub async fn prune_task(s: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every_s = s.config.webhook_deliveries_retention_s.min(PRUNE_INTERVAL_S_MAX);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(every_s)) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = prune(&s).await {
            tracing::warn!(error = %e, "pruning webhook deliveries");
        }
    }
}

/// One pass; answers how many records it deleted.
pub async fn prune(s: &AppState) -> Result<usize, String> {
    let retention_s = s.config.webhook_deliveries_retention_s;
    let cutoff_ms = now_ms().saturating_sub(retention_s.saturating_mul(1_000));
    let hooks: Vec<_> = s.webhooks.hooks.lock().unwrap().clone();
    let mut deleted = 0;
    for hook in hooks {
        let (pruned, kept) = prune_deliveries(s, &hook.id, cutoff_ms).await?;
        deleted += pruned;
        let removed_long_ago =
            !hook.enabled && hook.disabled_unix_s.saturating_add(retention_s) <= now_unix_s();
        if removed_long_ago && kept == 0 {
            let key = hook.id.as_bytes().to_vec();
            s.meta.write(vec![Write::Delete(Table::Webhooks, key)]).await?;
            s.webhooks.hooks.lock().unwrap().retain(|h| h.id != hook.id);
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Deletes a webhook's finished deliveries made before `cutoff_ms` (its keys run in the
/// order they were made); answers how many it deleted and how many it kept.
async fn prune_deliveries(
    s: &AppState,
    webhook_id: &str,
    cutoff_ms: u64,
) -> Result<(usize, usize), String> {
    let prefix = format!("{webhook_id}/").into_bytes();
    let mut start = prefix.clone();
    let (mut deleted, mut kept) = (0, 0);
    loop {
        let rows = s.meta.range(Table::Deliveries, &start, PRUNE_BATCH_MAX)?;
        let mut done = rows.len() < PRUNE_BATCH_MAX;
        let mut deletes = Vec::new();
        for (key, value) in rows {
            if !key.starts_with(&prefix) {
                done = true;
                break;
            }
            let d = serde_json::from_slice::<Delivery>(&value).ok();
            if d.as_ref().is_some_and(|d| d.created_unix_ms >= cutoff_ms) {
                // The rest are newer still.
                kept += 1;
                done = true;
                break;
            }
            if d.is_some_and(|d| d.state == "pending") {
                kept += 1;
            } else {
                deletes.push(Write::Delete(Table::Deliveries, key.clone()));
            }
            start = key;
            start.push(0);
        }
        deleted += deletes.len();
        if !deletes.is_empty() {
            s.meta.write(deletes).await?;
        }
        if done {
            return Ok((deleted, kept));
        }
    }
}
