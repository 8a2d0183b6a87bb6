//! The trainer: it learns non-linear rules, missingness and rare positives well enough to
//! rank held-out rows; it is deterministic; its models survive LightGBM's text format; bad
//! data is refused with a reason.

use farthing_risk::gbdt::Model;
use farthing_risk_lab::train::{train, Dataset, TrainError, TrainParams};

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("f{i}")).collect()
}

/// Rows and labels from `make`; the first `train_rows` for training, the rest held out.
fn split_data(
    rows: usize,
    train_rows: usize,
    features: usize,
    mut make: impl FnMut() -> (Vec<f64>, bool),
) -> (Dataset, Vec<Vec<f64>>, Vec<bool>) {
    let (x, y): (Vec<Vec<f64>>, Vec<bool>) = (0..rows).map(|_| make()).unzip();
    let data = Dataset::from_rows(names(features), &x[..train_rows], y[..train_rows].to_vec())
        .expect("well-formed data");
    (data, x[train_rows..].to_vec(), y[train_rows..].to_vec())
}

/// Area under the ROC curve (ties count half), as `farthing risk eval` measures it.
fn auc(model: &Model, rows: &[Vec<f64>], labels: &[bool]) -> f64 {
    let scores: Vec<f64> = rows.iter().map(|r| model.raw_score(r)).collect();
    farthing_risk_lab::eval::quality(&scores, labels).roc_auc
}

fn quick() -> TrainParams {
    TrainParams { trees: 60, learning_rate: 0.2, max_leaves: 15, ..TrainParams::default() }
}

/// XOR of two features' signs, 2 % of labels flipped, three noise features: no single
/// feature tells anything, so only interactions (trees of depth two and more) do.
fn xor(rng: &mut Rng) -> (Vec<f64>, bool) {
    let x: Vec<f64> = (0..5).map(|_| rng.uniform() * 2.0 - 1.0).collect();
    let y = (x[0] > 0.0) != (x[1] > 0.0);
    (x, y != (rng.uniform() < 0.02))
}

#[test]
fn learns_a_non_linear_rule() {
    let mut rng = Rng(1);
    let (data, rows, labels) = split_data(6000, 4000, 5, || xor(&mut rng));
    let model = train(&data, &quick()).unwrap();
    let auc = auc(&model, &rows, &labels);
    assert!(auc > 0.95, "held-out AUC {auc}");
    // The explanation adds up, and the rule's features carry it.
    let e = model.explain(&[0.5, 0.5, 0.1, 0.1, 0.1]);
    assert!((e.raw - model.raw_score(&[0.5, 0.5, 0.1, 0.1, 0.1])).abs() < 1e-9);
    let strongest =
        (0..5).max_by(|&a, &b| e.contributions[a].abs().total_cmp(&e.contributions[b].abs()));
    assert!(matches!(strongest, Some(0 | 1)), "{:?}", e.contributions);
}

#[test]
fn learns_from_missing_values() {
    // f0 is missing on 20 % of rows, where 80 % are positive (else 2 %); when present it is
    // the same value on every row, so only its missingness can tell anything. f1 is noise
    // (and sometimes missing too).
    let mut rng = Rng(2);
    let (data, rows, labels) = split_data(8000, 5000, 2, || {
        let missing = rng.uniform() < 0.2;
        let y = rng.uniform() < if missing { 0.8 } else { 0.02 };
        let f1 = if rng.uniform() < 0.2 { f64::NAN } else { rng.normal() };
        (vec![if missing { f64::NAN } else { 1.0 }, f1], y)
    });
    let model = train(&data, &quick()).unwrap();
    let auc = auc(&model, &rows, &labels);
    assert!(auc > 0.88, "held-out AUC {auc} (0.93 at best)");
    // Mean predictions on held-out rows, with f0 missing and present: near the true rates.
    let mean = |missing: bool| {
        let scores: Vec<f64> =
            rows.iter().filter(|r| r[0].is_nan() == missing).map(|r| model.predict(r)).collect();
        scores.iter().sum::<f64>() / scores.len() as f64
    };
    let (p_missing, p_present) = (mean(true), mean(false));
    assert!((p_missing - 0.8).abs() < 0.05 && p_present < 0.04, "{p_missing} {p_present}");
    // The learned default branch survives LightGBM's format.
    let back = Model::from_lightgbm(&model.to_lightgbm()).unwrap();
    for r in &rows {
        assert_eq!(back.predict(r), model.predict(r));
    }
}

/// About 1.3 % positive: a rare, non-linear pattern in four features of eight (the best
/// possible AUC is about 0.97).
fn rare(rng: &mut Rng) -> (Vec<f64>, bool) {
    let x: Vec<f64> = (0..8).map(|_| rng.normal()).collect();
    let logit = -8.5 + 2.5 * x[0] + 1.5 * (x[1] * x[2]) + 2.5 * f64::from(u8::from(x[3] > 1.0));
    (x, rng.uniform() < 1.0 / (1.0 + (-logit).exp()))
}

#[test]
fn imbalanced_data_still_ranks_well() {
    let mut rng = Rng(3);
    let (data, rows, labels) = split_data(40_000, 20_000, 8, || rare(&mut rng));
    let rate = data.labels.iter().filter(|&&y| y).count() as f64 / data.rows() as f64;
    assert!((0.005..0.02).contains(&rate), "positive rate {rate}");
    let plain = train(&data, &quick()).unwrap();
    let auc_plain = auc(&plain, &rows, &labels);
    assert!(auc_plain > 0.9, "held-out AUC {auc_plain}");
    // Weighting the positives up ranks about as well, and raises the scores.
    let weighted = train(&data, &TrainParams { scale_pos_weight: 20.0, ..quick() }).unwrap();
    let auc_weighted = auc(&weighted, &rows, &labels);
    assert!(auc_weighted > 0.9, "held-out AUC with scale_pos_weight {auc_weighted}");
    let mean = |m: &Model| rows.iter().map(|r| m.predict(r)).sum::<f64>() / rows.len() as f64;
    assert!(mean(&weighted) > 3.0 * mean(&plain), "{} {}", mean(&weighted), mean(&plain));
    // The plain model's mean prediction is near the base rate.
    assert!((mean(&plain) / rate - 1.0).abs() < 0.5, "{} vs {rate}", mean(&plain));
}

#[test]
fn a_weight_counts_as_repeated_rows() {
    // Few distinct values (so both sets get the same bins), no minimum rows per leaf: a row
    // of weight 2 trains like the same row twice.
    let mut rng = Rng(4);
    let (x, y): (Vec<Vec<f64>>, Vec<bool>) = (0..2000)
        .map(|_| {
            let x: Vec<f64> = (0..3).map(|_| (rng.uniform() * 40.0).floor() / 40.0).collect();
            let logit = 3.0 * x[0] - 2.0 * (x[1] - 0.5).abs() - 1.0;
            (x, rng.uniform() < 1.0 / (1.0 + (-logit).exp()))
        })
        .unzip();
    let weights: Vec<f64> = (0..x.len()).map(|i| if i % 3 == 0 { 2.0 } else { 1.0 }).collect();
    let weighted = Dataset::from_rows(names(3), &x, y.clone()).unwrap().with_weights(weights);
    let (mut xs, mut ys) = (x.clone(), y.clone());
    for i in (0..x.len()).step_by(3) {
        xs.push(x[i].clone());
        ys.push(y[i]);
    }
    let repeated = Dataset::from_rows(names(3), &xs, ys).unwrap();
    let params =
        TrainParams { trees: 20, min_data_in_leaf: 1, max_leaves: 8, ..TrainParams::default() };
    let (a, b) = (train(&weighted, &params).unwrap(), train(&repeated, &params).unwrap());
    for r in &x {
        assert!((a.raw_score(r) - b.raw_score(r)).abs() < 1e-9, "{r:?}");
    }
    // And weights move the model: weighting the positives up raises its scores.
    let up: Vec<f64> = y.iter().map(|&y| if y { 3.0 } else { 1.0 }).collect();
    let plain = Dataset::from_rows(names(3), &x, y.clone()).unwrap();
    let c = train(&plain.clone().with_weights(up), &params).unwrap();
    let d = train(&plain, &params).unwrap();
    let mean = |m: &Model| x.iter().map(|r| m.predict(r)).sum::<f64>() / x.len() as f64;
    assert!(mean(&c) > mean(&d) + 0.1, "{} {}", mean(&c), mean(&d));
}

#[test]
fn same_seed_same_model() {
    let mut rng = Rng(5);
    let (data, _, _) = split_data(3000, 3000, 5, || xor(&mut rng));
    let params = TrainParams { feature_fraction: 0.6, seed: 11, ..quick() };
    let a = train(&data, &params).unwrap().to_lightgbm();
    let b = train(&data, &params).unwrap().to_lightgbm();
    assert_eq!(a, b);
    let c = train(&data, &TrainParams { seed: 12, ..params }).unwrap().to_lightgbm();
    assert_ne!(a, c, "the seed draws the features");
}

#[test]
fn round_trip_through_lightgbm_text() {
    let mut rng = Rng(6);
    let (data, rows, _) = split_data(5000, 3000, 5, || {
        let (mut x, y) = xor(&mut rng);
        if rng.uniform() < 0.1 {
            x[1] = f64::NAN;
        }
        (x, y)
    });
    let model = train(&data, &quick()).unwrap();
    let text = model.to_lightgbm();
    let back = Model::from_lightgbm(&text).unwrap();
    assert_eq!(back.trees(), model.trees());
    assert_eq!(back.feature_names, model.feature_names);
    assert_eq!(back.link, model.link);
    for r in &rows {
        assert_eq!(back.raw_score(r).to_bits(), model.raw_score(r).to_bits());
        assert_eq!(back.explain(r), model.explain(r));
    }
    // Written again, the same text.
    assert_eq!(back.to_lightgbm(), text);
    // LightGBM's header and per-tree sizes.
    assert!(text.starts_with("tree\nversion=v4\nnum_class=1\n"));
    assert!(text.contains("\nobjective=binary sigmoid:1\n"));
    let sizes: Vec<usize> = text
        .lines()
        .find_map(|l| l.strip_prefix("tree_sizes="))
        .unwrap()
        .split(' ')
        .map(|s| s.parse().unwrap())
        .collect();
    let first = text.find("Tree=0\n").unwrap();
    let blocks = &text[first..text.find("end of trees").unwrap()];
    assert_eq!(sizes.iter().sum::<usize>(), blocks.len());
    assert!(blocks[sizes[0]..].starts_with("Tree=1\n"));
}

#[test]
fn a_model_from_lightgbm_writes_back_the_same() {
    // Missing types None and NaN, default left and right: all kept.
    let model =
        Model::from_lightgbm(include_str!("../../farthing-risk/tests/data/lightgbm_binary.txt"))
            .unwrap();
    let back = Model::from_lightgbm(&model.to_lightgbm()).unwrap();
    let expected: serde_json::Value = serde_json::from_str(include_str!(
        "../../farthing-risk/tests/data/lightgbm_binary_expected.json"
    ))
    .unwrap();
    for row in expected["rows"].as_array().unwrap() {
        let x: Vec<f64> =
            row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect();
        assert_eq!(back.raw_score(&x).to_bits(), model.raw_score(&x).to_bits());
    }
}

#[test]
fn the_first_tree_carries_the_base_rate() {
    // Features with nothing to tell: a single-leaf tree at the log-odds of the base rate.
    let rows: Vec<Vec<f64>> = (0..1000).map(|_| vec![1.0]).collect();
    let labels: Vec<bool> = (0..1000).map(|i| i % 10 == 0).collect();
    let data = Dataset::from_rows(names(1), &rows, labels).unwrap();
    let model = train(&data, &TrainParams::default()).unwrap();
    assert_eq!(model.trees(), 1, "training stops when nothing can be split");
    assert!((model.predict(&[1.0]) - 0.1).abs() < 1e-9, "{}", model.predict(&[1.0]));
    let text = model.to_lightgbm();
    assert!(text.contains("num_leaves=1\n"));
    assert_eq!(Model::from_lightgbm(&text).unwrap().predict(&[1.0]), model.predict(&[1.0]));
}

#[test]
fn bad_data_is_refused_with_a_reason() {
    let p = TrainParams::default();
    let rows = vec![vec![1.0, 2.0], vec![3.0, 4.0]];
    let ok = Dataset::from_rows(names(2), &rows, vec![true, false]).unwrap();
    let empty = Dataset::from_rows(names(2), &Vec::<Vec<f64>>::new(), vec![]).unwrap();
    assert!(matches!(train(&empty, &p), Err(TrainError::Empty(_))));
    let no_features = Dataset { feature_names: vec![], columns: vec![], ..ok.clone() };
    assert!(matches!(train(&no_features, &p), Err(TrainError::Empty(_))));
    let short_labels = Dataset { labels: vec![true], ..ok.clone() };
    let e = train(&short_labels, &p).unwrap_err();
    assert!(matches!(e, TrainError::Mismatch(_)), "{e}");
    assert!(e.to_string().contains("2 values for 1 labels"), "{e}");
    assert!(matches!(
        Dataset::from_rows(names(2), &[vec![1.0]], vec![true]),
        Err(TrainError::Mismatch(_))
    ));
    assert!(matches!(
        Dataset::from_rows(names(2), &rows, vec![true]),
        Err(TrainError::Mismatch(_))
    ));
    let few_names = Dataset { feature_names: names(1), ..ok.clone() };
    assert!(matches!(train(&few_names, &p), Err(TrainError::Mismatch(_))));
    let weights = ok.clone().with_weights(vec![1.0]);
    assert!(matches!(train(&weights, &p), Err(TrainError::Mismatch(_))));
    let one_class = Dataset { labels: vec![true, true], ..ok.clone() };
    let e = train(&one_class, &p).unwrap_err();
    assert_eq!(e, TrainError::OneClass);
    assert!(e.to_string().contains("one class"));
    let weightless = ok.clone().with_weights(vec![0.0, 1.0]);
    assert_eq!(train(&weightless, &p).unwrap_err(), TrainError::OneClass);
    let negative = ok.clone().with_weights(vec![-1.0, 1.0]);
    assert!(matches!(train(&negative, &p), Err(TrainError::Invalid(_))));
    let spaced = Dataset { feature_names: vec!["a b".into(), "c".into()], ..ok.clone() };
    assert!(matches!(train(&spaced, &p), Err(TrainError::Invalid(_))));
    for bad in [
        TrainParams { bins: 256, ..p.clone() },
        TrainParams { trees: 0, ..p.clone() },
        TrainParams { learning_rate: 0.0, ..p.clone() },
        TrainParams { max_leaves: 1, ..p.clone() },
        TrainParams { feature_fraction: 0.0, ..p.clone() },
        TrainParams { lambda_l2: f64::NAN, ..p.clone() },
        TrainParams { max_leaves: 1 << 20, ..p.clone() },
    ] {
        assert!(matches!(train(&ok, &bad), Err(TrainError::Invalid(_))), "{bad:?}");
    }
    assert!(train(&ok, &p).is_ok(), "two rows, one of each class, are enough");
}
