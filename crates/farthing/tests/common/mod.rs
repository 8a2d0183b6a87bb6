//! What the binary's tests share.
#![allow(dead_code)]

use farthing_client::Client;
use serde_json::json;

/// USD (scale 6), a house account 1, and a wallet (`debits_must_not_exceed_credits`) per
/// id in `wallets`, owned by itself; the first funded with 10 USD.
pub async fn seed_usd(admin: &Client, wallets: &[&str]) {
    admin.create_asset("USD", 6).await.unwrap();
    admin.create_account(&json!({"id": "1", "owner_id": "0", "asset": "USD"})).await.unwrap();
    for id in wallets {
        admin
            .create_account(&json!({"id": id, "owner_id": id, "asset": "USD",
                                    "flags": ["debits_must_not_exceed_credits"]}))
            .await
            .unwrap();
    }
    let fund = json!({"debit_account_id": "1", "credit_account_id": wallets[0], "amount": "10"});
    admin.post("/v1/transfers", &fund, None).await.unwrap();
}
