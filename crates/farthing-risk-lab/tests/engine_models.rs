//! The engine with models: scores explained by their top features, labels moving the
//! online model's scores the right way, shadow mode reporting disagreements, and an
//! opted-out payer judged without a score.

use farthing_risk::engine::{LoadedModel, Request, RiskEngine};
use farthing_risk::features::{Capacity, Payment, FEATURE_NAMES};
use farthing_risk::policy::Policy;
use farthing_risk_lab::train::{train, Dataset, TrainParams};
use std::sync::Arc;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_800_000_000 * S;

/// A model on the engine's own features where big amounts to new payees are fraud.
fn model(trees: usize) -> LoadedModel {
    let names: Vec<String> = FEATURE_NAMES.iter().map(|s| s.to_string()).collect();
    let amount = FEATURE_NAMES.iter().position(|n| *n == "amount_log").unwrap();
    let first = FEATURE_NAMES.iter().position(|n| *n == "first_to_payee").unwrap();
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    let mut seed = 12345u64;
    for _ in 0..4_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut x = vec![f64::NAN; FEATURE_NAMES.len()];
        x[amount] = (seed % 1_000) as f64 / 100.0;
        x[first] = (seed >> 20 & 1) as f64;
        labels.push(x[amount] > 6.0 && x[first] == 1.0);
        rows.push(x);
    }
    let data = Dataset::from_rows(names, &rows, labels).unwrap();
    let m = train(&data, &TrainParams { trees, ..TrainParams::default() }).unwrap();
    LoadedModel::new(m, format!("test-{trees}")).unwrap()
}

fn request(at_s: u64, payer: u128, payee: u128, amount: f64) -> Request {
    Request {
        payment: Payment {
            at_ns: T0 + at_s * S,
            payer,
            payee,
            amount,
            device: Some(1),
            ip: Some(2),
            channel: None,
            merchant_category: None,
            payer_since_ns: None,
            opted_out: false,
        },
        asset: 1,
        amount_minor: (amount * 100.0) as u128,
    }
}

fn engine() -> RiskEngine {
    let mut e = RiskEngine::new(Policy::parse("").unwrap(), 1, Capacity::default());
    e.register_asset(1, "EUR", 2);
    e
}

#[test]
fn a_risky_payment_is_explained_by_the_features_that_made_it_risky() {
    let mut e = engine();
    e.set_models(Some(Arc::new(model(40))), None);
    let small = e.assess(&request(0, 1, 100, 1.0));
    let big = e.assess(&request(1, 2, 200, 5_000.0));
    assert!(
        big.score.unwrap() > 0.9 && small.score.unwrap() < 0.1,
        "{:?} {:?}",
        big.score,
        small.score
    );
    assert_eq!(big.top[0].0, "amount_log", "{:?}", big.top);
    assert!(big.reasons.iter().any(|r| r == "score.decline"));
    assert_eq!(big.model.as_deref(), Some("test-40"));
}

#[test]
fn labels_move_scores_the_right_way() {
    let mut e = engine();
    e.set_models(Some(Arc::new(model(40))), None);
    let d = e.assess(&request(0, 1, 100, 20.0));
    let before = e.rescore(&d.features).unwrap();
    for _ in 0..20 {
        e.label(&d.features, d.base_raw, 20.0, T0, true);
    }
    let after_fraud = e.rescore(&d.features).unwrap();
    assert!(after_fraud > before + 0.05, "fraud labels raise the score: {before} -> {after_fraud}");
    for _ in 0..60 {
        e.label(&d.features, d.base_raw, 20.0, T0, false);
    }
    let after_legit = e.rescore(&d.features).unwrap();
    assert!(
        after_legit < after_fraud,
        "legitimate labels lower it: {after_fraud} -> {after_legit}"
    );
    assert_eq!(e.online().updates, 80);
    // The measured fraud rate counts fraud by value against approved volume.
    assert!(e.fraud_rate(T0).unwrap() > 0.0);
}

#[test]
fn shadow_mode_reports_where_a_candidate_disagrees() {
    let mut e = engine();
    e.set_models(Some(Arc::new(model(40))), Some(Arc::new(model(2))));
    for i in 0..200 {
        let amount = if i % 2 == 0 { 1.0 } else { 900.0 };
        let d = e.assess(&request(i, 1_000 + u128::from(i), 5_000 + u128::from(i), amount));
        assert!(d.shadow.is_some());
    }
    let r = e.shadow_report();
    assert_eq!(r.scored, 200);
    assert!(r.mean_abs_diff > 0.0);
    assert_eq!(r.matrix.values().sum::<u64>(), 200);
}

#[test]
fn an_opted_out_payer_is_judged_by_rules_alone() {
    let mut e = engine();
    e.set_models(Some(Arc::new(model(40))), None);
    e.set_opted_out(7, true);
    let d = e.assess(&request(0, 7, 100, 5_000.0));
    assert_eq!((d.score, d.action), (None, farthing_risk::policy::Action::Approve));
    assert!(d.reasons.iter().any(|r| r == "profiling_opted_out"));
}
