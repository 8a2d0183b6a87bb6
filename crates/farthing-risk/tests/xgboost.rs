//! An imported XGBoost model predicts what XGBoost itself predicted, on held-out rows with
//! missing values and on rows at the edge of splits, and explains each prediction as
//! XGBoost's path-based contributions do (fixtures made by `scripts/xgboost_fixture.py`).

use farthing_risk::gbdt::Model;
use serde_json::{json, Value};

const MODEL: &str = include_str!("data/xgboost_binary.json");

fn rows(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect())
        .collect()
}

#[test]
fn predictions_match_the_training_library() {
    let model = Model::from_xgboost_json(MODEL).unwrap();
    assert_eq!(model.trees(), 41, "40 trees and the base score");
    assert_eq!(model.feature_names, ["x0", "x1", "x2", "x3", "x4"]);
    let expected: Value = serde_json::from_str(include_str!("data/xgboost_expected.json")).unwrap();
    let rows = rows(&expected["rows"]);
    let (mut worst_raw, mut worst_prob, mut worst_contribution) = (0f64, 0f64, 0f64);
    for (i, x) in rows.iter().enumerate() {
        let raw = expected["margin"][i].as_f64().unwrap();
        let prob = expected["probability"][i].as_f64().unwrap();
        worst_raw = worst_raw.max((model.raw_score(x) - raw).abs());
        worst_prob = worst_prob.max((model.predict(x) - prob).abs());
        assert!(
            (model.raw_score(x) - raw).abs() < 1e-6,
            "row {i}: {} vs {raw}",
            model.raw_score(x)
        );
        assert!((model.predict(x) - prob).abs() < 1e-6, "row {i}");

        // The explanation adds up to the score, feature by feature as XGBoost's.
        let e = model.explain(x);
        assert!((e.raw - raw).abs() < 1e-6, "row {i}: explanation {} vs {raw}", e.raw);
        let theirs: Vec<f64> = expected["contributions"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let (bias, per_feature) = theirs.split_last().unwrap();
        for (f, (ours, theirs)) in e.contributions.iter().zip(per_feature).enumerate() {
            worst_contribution = worst_contribution.max((ours - theirs).abs());
            assert!((ours - theirs).abs() < 1e-5, "row {i} feature {f}: {ours} vs {theirs}");
        }
        assert!((e.bias - bias).abs() < 1e-5, "row {i}: bias {} vs {bias}", e.bias);
    }
    let missing = rows.iter().filter(|x| x.iter().any(|v| v.is_nan())).count();
    assert!(missing > 5, "the fixture exercises missing values");
    assert_eq!(expected["edge_rows"], 40, "and values on the edge of splits");
    println!("max |diff|: raw {worst_raw:e}, probability {worst_prob:e}, contributions {worst_contribution:e}");
}

#[test]
fn other_objectives_and_dart() {
    let fixture: Value =
        serde_json::from_str(include_str!("data/xgboost_objectives.json")).unwrap();
    let rows = rows(&fixture["rows"]);
    for case in fixture["models"].as_array().unwrap() {
        let name = format!("{} ({})", case["objective"], case["booster"]);
        let model = Model::from_xgboost_json(&case["model"].to_string()).unwrap();
        for (i, x) in rows.iter().enumerate() {
            let raw = case["margin"][i].as_f64().unwrap();
            let prediction = case["prediction"][i].as_f64().unwrap();
            assert!((model.raw_score(x) - raw).abs() < 1e-6, "{name} row {i}");
            assert!((model.predict(x) - prediction).abs() < 1e-6, "{name} row {i}");
            assert!((model.explain(x).raw - raw).abs() < 1e-6, "{name} row {i}");
        }
    }
}

/// The fixture model with one change.
fn edited(edit: impl FnOnce(&mut Value)) -> String {
    let mut model: Value = serde_json::from_str(MODEL).unwrap();
    edit(&mut model);
    model.to_string()
}

fn refusal(text: &str) -> String {
    Model::from_xgboost_json(text).unwrap_err().0
}

#[test]
fn malformed_and_unsupported_models_are_refused_with_a_reason() {
    assert!(refusal("hello").contains("not an XGBoost JSON model"));
    assert!(refusal("{\"tree\": 1}").contains("no \"learner\""));
    assert!(refusal(include_str!("data/lightgbm_binary.txt")).contains("not an XGBoost"));

    let learner = "/learner";
    let tree0 = "/learner/gradient_booster/model/trees/0";
    let set = |path: &str, key: &str, v: Value| {
        let (path, key) = (path.to_string(), key.to_string());
        edited(move |m| m.pointer_mut(&path).unwrap()[key] = v)
    };
    let cases = [
        (set(&format!("{learner}/learner_model_param"), "num_class", json!("3")), "multi-class"),
        (
            set(&format!("{learner}/learner_model_param"), "base_score", json!("[0.5,0.5]")),
            "multi-target",
        ),
        (set(&format!("{learner}/learner_model_param"), "base_score", json!("1")), "probability"),
        (set(&format!("{learner}/objective"), "name", json!("multi:softprob")), "not supported"),
        (set(&format!("{learner}/objective"), "name", json!("rank:pairwise")), "not supported"),
        (set(&format!("{learner}/gradient_booster"), "name", json!("gblinear")), "gblinear"),
        (set(&format!("{learner}/gradient_booster/model"), "trees", json!([])), "no trees"),
        (
            set(tree0, "split_type", json!([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            "categorical",
        ),
        (
            set(
                tree0,
                "left_children",
                json!([1, 0, 5, 7, 9, 11, 13, -1, -1, -1, -1, -1, -1, -1, -1]),
            ),
            "reached twice",
        ),
        (
            set(
                tree0,
                "left_children",
                json!([1, 99, 5, 7, 9, 11, 13, -1, -1, -1, -1, -1, -1, -1, -1]),
            ),
            "out of range",
        ),
        (
            set(tree0, "split_indices", json!([9, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            "feature 9 of 5",
        ),
        (set(tree0, "sum_hessian", json!([1.0])), "sum_hessian has 1 values"),
        (
            edited(
                |m| m["learner"]["gradient_booster"] = json!({"name": "dart", "gbtree": m["learner"]["gradient_booster"].clone(), "weight_drop": [1.0]}),
            ),
            "dart: 1 weights for 40 trees",
        ),
        (set(learner, "feature_names", json!(["a", "b"])), "2 feature_names"),
    ];
    for (text, reason) in &cases {
        let got = refusal(text);
        assert!(got.contains(reason), "expected {reason:?}, got {got:?}");
    }
    // And the unedited model is fine: the edits above are what was refused.
    assert!(Model::from_xgboost_json(&edited(|_| {})).is_ok());
}
