//! Trains on synthetic fraud-like data and reports the time taken (the trainer's benchmark):
//!
//!     cargo run --release -p farthing-risk --example train_synthetic -- [rows] [features] [trees] [out_dir]
//!
//! Defaults: 1,000,000 rows, 30 features, 200 trees. About 2 % of rows are positive; the
//! signal is non-linear and partly in which values are missing. With `out_dir`, writes the
//! model (`model.txt`, LightGBM's text format) and held-out rows with this crate's scores
//! (`rows.csv`), for `scripts/check_trained_model.py`.

use std::time::Instant;

use farthing_risk_lab::train::{train, Dataset, TrainParams};

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

/// Row `features` long: normal, integer-valued, binary and sometimes-missing columns.
fn row(rng: &mut Rng, features: usize) -> (Vec<f64>, bool) {
    let x: Vec<f64> = (0..features)
        .map(|f| match f % 5 {
            0 | 1 => rng.normal(),
            2 => (rng.uniform() * 6.0).floor(),
            3 => f64::from(u8::from(rng.uniform() < 0.3)),
            _ if rng.uniform() < 0.15 => f64::NAN,
            _ => rng.normal() * 100.0,
        })
        .collect();
    let at = |i: usize| x.get(i).copied().unwrap_or(0.0);
    let missing = x.get(4).is_some_and(|v| v.is_nan());
    let logit = -6.2 + 1.2 * at(0) + 0.8 * at(1) * at(5) + 0.6 * (at(2) - 2.5).abs() - 1.5 * at(3)
        + if missing { 2.0 } else { 0.004 * at(4) };
    let y = rng.uniform() < 1.0 / (1.0 + (-logit).exp());
    (x, y)
}

fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    farthing_risk_lab::eval::quality(scores, labels).roc_auc
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg =
        |i: usize, default: usize| args.get(i).map_or(default, |a| a.parse().expect("a number"));
    let (rows, features, trees) = (arg(0, 1_000_000), arg(1, 30), arg(2, 200));
    let out_dir = args.get(3);
    let mut rng = Rng(42);
    let names: Vec<String> = (0..features).map(|f| format!("f{f}")).collect();
    let (x, y): (Vec<_>, Vec<_>) = (0..rows).map(|_| row(&mut rng, features)).unzip();
    let (held_x, held_y): (Vec<_>, Vec<_>) = (0..20_000).map(|_| row(&mut rng, features)).unzip();
    let data = Dataset::from_rows(names, &x, y).expect("data");
    drop(x);
    let params = TrainParams { trees, ..TrainParams::default() };
    let positives = data.labels.iter().filter(|&&y| y).count();
    println!(
        "{rows} rows ({:.2} % positive) × {features} features, {trees} trees",
        100.0 * positives as f64 / rows as f64
    );
    let start = Instant::now();
    let model = train(&data, &params).expect("trained");
    let secs = start.elapsed().as_secs_f64();
    let scores: Vec<f64> = held_x.iter().map(|r| model.raw_score(r)).collect();
    println!(
        "trained {} trees in {secs:.2} s; held-out AUC {:.4}",
        model.trees(),
        auc(&scores, &held_y)
    );
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir).expect("out dir");
        std::fs::write(format!("{dir}/model.txt"), model.to_lightgbm()).expect("model");
        let mut csv = (0..features).map(|f| format!("f{f},")).collect::<String>();
        csv.push_str("raw,probability\n");
        for r in held_x.iter().take(5000) {
            for v in r {
                csv.push_str(&format!("{v:?},"));
            }
            csv.push_str(&format!("{:?},{:?}\n", model.raw_score(r), model.predict(r)));
        }
        std::fs::write(format!("{dir}/rows.csv"), csv).expect("rows");
        println!("wrote {dir}/model.txt and {dir}/rows.csv");
    }
}
