//! `farthing bench risk`: the risk engine's cost per payment, in process — features, the
//! live model, the policy's rules, the explanation and the reservation — timed one payment
//! at a time over synthetic traffic, with the state (windows, profiles) as it builds up.

use std::time::Instant;

use clap::Args;
use farthing_risk::engine::{LoadedModel, Request, RiskEngine};
use farthing_risk::features::Capacity;
use farthing_risk::policy::Policy;
use serde_json::json;

#[derive(Args, Debug)]
pub struct RiskBenchArgs {
    /// Payers in the simulated traffic (about 20 payments each).
    #[arg(long, default_value_t = 20_000)]
    pub payers: usize,
    /// Days of traffic.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    /// Also score with a shadow model (the same model again): the cost of shadow mode.
    #[arg(long)]
    pub shadow: bool,
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn run(args: &RiskBenchArgs) -> Result<(), String> {
    let params = farthing_risk_lab::simulate::SimParams {
        seed: args.seed,
        payers: args.payers,
        days: args.days,
        ..Default::default()
    };
    let txns = farthing_risk_lab::simulate::simulate(&params);
    let csv = {
        let mut buf = Vec::new();
        farthing_risk_lab::simulate::write_csv(&txns, &mut buf).map_err(|e| e.to_string())?;
        String::from_utf8(buf).map_err(|e| e.to_string())?
    };
    let data = farthing_risk_lab::eval::read_csv(&csv).map_err(|e| e.to_string())?;
    let model = if farthing_risk::DEFAULT_MODEL.is_empty() {
        return Err("no shipped model to score with".into());
    } else {
        LoadedModel::parse(farthing_risk::DEFAULT_MODEL, "farthing-default")
            .map_err(|e| e.to_string())?
    };
    let trees = model.model.trees();
    let model = std::sync::Arc::new(model);
    let mut engine = RiskEngine::new(Policy::default_policy(), 1, Capacity::default());
    engine.register_asset(1, "EUR", 6);
    engine.set_models(Some(model.clone()), args.shadow.then_some(model));
    let mut took = Vec::with_capacity(data.txns.len());
    let started = Instant::now();
    for t in &data.txns {
        let r = Request {
            payment: t.payment(),
            asset: 1,
            amount_minor: (t.amount * 1e6).round() as u128,
        };
        let at = Instant::now();
        let d = engine.assess(&r);
        took.push(at.elapsed().as_nanos() as u64);
        std::hint::black_box(d);
    }
    let total = started.elapsed();
    took.sort_unstable();
    let (p50, p99, p999, max) = (
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        percentile(&took, 0.999),
        *took.last().unwrap_or(&0),
    );
    let per_s = took.len() as f64 / total.as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({
                "payments": took.len(), "trees": trees, "shadow": args.shadow,
                "p50_us": p50 as f64 / 1e3, "p99_us": p99 as f64 / 1e3, "p999_us": p999 as f64 / 1e3,
                "max_us": max as f64 / 1e3, "payments_per_second": per_s,
                "tracked": engine.feature_state().sizes(),
            })
        );
    } else {
        println!(
            "risk engine, one thread: {} payments, model of {trees} trees{}\n  \
             per payment p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.1} µs\n  \
             {:.0} payments/s",
            took.len(),
            if args.shadow { " (and a shadow model)" } else { "" },
            p50 as f64 / 1e3,
            p99 as f64 / 1e3,
            p999 as f64 / 1e3,
            max as f64 / 1e3,
            per_s
        );
    }
    Ok(())
}
