//! An imported LightGBM model predicts what LightGBM itself predicted, on held-out rows
//! with missing values (fixture made by `scripts/lightgbm_fixture.py`).

use farthing_risk::gbdt::Model;

#[test]
fn predictions_match_the_training_library() {
    let model = Model::from_lightgbm(include_str!("data/lightgbm_binary.txt")).unwrap();
    assert_eq!(model.trees(), 40);
    let expected: serde_json::Value =
        serde_json::from_str(include_str!("data/lightgbm_binary_expected.json")).unwrap();
    let rows = expected["rows"].as_array().unwrap();
    let mut missing_rows = 0;
    for (i, row) in rows.iter().enumerate() {
        let x: Vec<f64> =
            row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect();
        missing_rows += usize::from(x.iter().any(|v| v.is_nan()));
        let raw = expected["raw"][i].as_f64().unwrap();
        let prob = expected["probability"][i].as_f64().unwrap();
        assert!(
            (model.raw_score(&x) - raw).abs() < 1e-9,
            "row {i}: {} vs {raw}",
            model.raw_score(&x)
        );
        assert!((model.predict(&x) - prob).abs() < 1e-9, "row {i}");
        // The explanation adds up to the score.
        let e = model.explain(&x);
        assert!((e.raw - raw).abs() < 1e-9, "row {i}: explanation {} vs {raw}", e.raw);
    }
    assert!(missing_rows > 5, "the fixture exercises missing values");
}

#[test]
fn malformed_models_are_refused_with_a_reason() {
    let good = include_str!("data/lightgbm_binary.txt");
    assert!(Model::from_lightgbm("hello").unwrap_err().0.contains("not a LightGBM"));
    let broken = good.replacen("left_child=2 5 6", "left_child=0 5 6", 1);
    assert!(Model::from_lightgbm(&broken).unwrap_err().0.contains("points back"));
    let far = good.replacen("left_child=2 5 6", "left_child=99 5 6", 1);
    assert!(Model::from_lightgbm(&far).unwrap_err().0.contains("out of range"));
    let categorical = good.replacen("num_cat=0", "num_cat=1", 1);
    assert!(Model::from_lightgbm(&categorical).unwrap_err().0.contains("categorical"));
}
