//! `farthing risk ...` and `farthing simulate`: train, import and evaluate fraud models on
//! labelled data, list the features, and make synthetic labelled traffic.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use farthing_risk::engine::LoadedModel;
use farthing_risk::features::FEATURE_NAMES;
use farthing_risk::policy::{Action, Policy};
use farthing_risk_lab::eval::{self, Report};
use farthing_risk_lab::train::TrainParams;

#[derive(Subcommand)]
pub enum RiskCommand {
    /// Train on the earlier part of labelled data, test on the later part (time-ordered),
    /// and report AUPRC, ROC AUC, recall at 1 % and 0.1 % false-positive rate and the
    /// decisions under a policy. Reads the generic CSV layout or PaySim's.
    Eval(EvalArgs),
    /// Train a fraud model (gradient-boosted trees, in Rust) on all of a labelled CSV and
    /// write it in LightGBM's text format (the server and LightGBM both read it).
    Train(TrainArgs),
    /// List the features every model sees, in order (what a model trained elsewhere must
    /// name its inputs).
    Features,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Labelled transactions (CSV; see docs/RISK.md for the layouts).
    #[arg(long)]
    data: PathBuf,
    /// Evaluate this model (LightGBM text or XGBoost JSON) instead of training one.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The policy for the decisions [default: the shipped one].
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The share of rows (earliest first) to train on.
    #[arg(long, default_value_t = 0.7)]
    train_fraction: f64,
    /// Write the model trained on the earlier part here.
    #[arg(long)]
    save_model: Option<PathBuf>,
    /// Write every row's features (as the engine computed them, in time order) with its
    /// label, for training in Python.
    #[arg(long)]
    export: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TrainArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 200)]
    trees: usize,
    /// Leaves per tree at most (fewer: a smaller, faster model).
    #[arg(long, default_value_t = 15)]
    leaves: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
pub struct SimulateArgs {
    /// The CSV to write (generic layout, with a `pattern` column).
    #[arg(long)]
    out: PathBuf,
    /// The seed (the same seed, the same bytes). The shipped model was trained on seed 1:
    /// evaluate it on another.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Payers [default: 20,000].
    #[arg(long)]
    payers: Option<usize>,
    /// Days of traffic [default: 14].
    #[arg(long)]
    days: Option<u32>,
}

pub fn run(what: &RiskCommand) -> Result<(), String> {
    match what {
        RiskCommand::Eval(args) => run_eval(args),
        RiskCommand::Train(args) => run_train(args),
        RiskCommand::Features => {
            let mut out = std::io::stdout().lock();
            for (i, name) in FEATURE_NAMES.iter().enumerate() {
                let _ = writeln!(out, "{i:>2}  {name}");
            }
            Ok(())
        }
    }
}

fn read_data(path: &Path) -> Result<eval::Dataset, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    eval::read_csv(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_policy(path: Option<&Path>) -> Result<Policy, String> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Policy::parse(&text).map_err(|e| format!("{}: {e}", p.display()))
        }
        None => Ok(Policy::default_policy()),
    }
}

fn read_model(path: &Path) -> Result<LoadedModel, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path.file_name().map_or("model".into(), |n| n.to_string_lossy().into_owned());
    LoadedModel::parse(&text, &name).map_err(|e| format!("{}: {e}", path.display()))
}

fn run_eval(args: &EvalArgs) -> Result<(), String> {
    let data = read_data(&args.data)?;
    let policy = read_policy(args.policy.as_deref())?;
    let model = args.model.as_deref().map(read_model).transpose()?;
    if let Some(path) = &args.export {
        export(&data, path)?;
    }
    let (report, trained) =
        eval::evaluate(&data, model, &policy, args.train_fraction, &eval::fraud_params())
            .map_err(|e| e.to_string())?;
    if let (Some(path), Some(m)) = (&args.save_model, &trained) {
        std::fs::write(path, m.to_lightgbm()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let _ = writeln!(out, "{}", report_json(&report));
    } else {
        let _ = write!(out, "{}", report_table(&report));
    }
    Ok(())
}

fn export(data: &eval::Dataset, path: &Path) -> Result<(), String> {
    let x = eval::featurize(&data.txns);
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    writeln!(w, "{},label", FEATURE_NAMES.join(",")).map_err(io)?;
    for (row, t) in x.iter().zip(&data.txns) {
        let cells: Vec<String> = row
            .iter()
            .map(|v| if v.is_finite() { format!("{v}") } else { String::new() })
            .collect();
        writeln!(w, "{},{}", cells.join(","), u8::from(t.label)).map_err(io)?;
    }
    w.flush().map_err(io)
}

fn report_json(r: &Report) -> serde_json::Value {
    let row = |i: usize| {
        let mut m = serde_json::Map::new();
        for (a, n) in Action::ALL.iter().zip(r.confusion[i]) {
            m.insert(a.as_str().into(), n.into());
        }
        serde_json::Value::Object(m)
    };
    serde_json::json!({
        "layout": r.layout,
        "rows": r.rows,
        "train_rows": r.train_rows,
        "test_rows": r.test_rows,
        "test_fraud": r.test_fraud,
        "model": r.model,
        "policy": r.policy,
        "auprc": r.quality.auprc,
        "roc_auc": r.quality.roc_auc,
        "recall_at_1pct_fpr": r.quality.recall_at_1pct_fpr,
        "recall_at_0_1pct_fpr": r.quality.recall_at_0_1pct_fpr,
        "threshold_at_1pct_fpr": r.quality.threshold_at_1pct_fpr,
        "confusion": { "fraud": row(0), "legitimate": row(1) },
        "patterns": r.patterns.iter().map(|(name, n, caught, stopped)| serde_json::json!({
            "pattern": name, "payments": n, "recall_at_1pct_fpr": caught, "stopped_by_policy": stopped,
        })).collect::<Vec<_>>(),
        "reasons": r.reasons.iter().map(|(reason, fraud, legit)| serde_json::json!({
            "reason": reason, "fraud": fraud, "legitimate": legit,
        })).collect::<Vec<_>>(),
        "train_seconds": r.train_seconds,
    })
}

fn report_table(r: &Report) -> String {
    let q = &r.quality;
    let mut s = format!(
        "data: {} rows ({} layout); trained on the first {}, tested on the last {} ({} fraud)\n\
         model: {}{}\n\n\
         AUPRC                      {:.4}\n\
         ROC AUC                    {:.4}\n\
         recall at 1% FPR           {:.4}   (threshold {:.4})\n\
         recall at 0.1% FPR         {:.4}\n\n\
         decisions under policy {:?}:\n\
         {:<12}{:>10}{:>10}{:>10}{:>10}\n",
        r.rows,
        r.layout,
        r.train_rows,
        r.test_rows,
        r.test_fraud,
        r.model,
        if r.model == "trained" { format!(" ({:.1} s)", r.train_seconds) } else { String::new() },
        q.auprc,
        q.roc_auc,
        q.recall_at_1pct_fpr,
        q.threshold_at_1pct_fpr,
        q.recall_at_0_1pct_fpr,
        r.policy,
        "",
        "approve",
        "step_up",
        "review",
        "decline",
    );
    for (name, row) in [("fraud", r.confusion[0]), ("legitimate", r.confusion[1])] {
        s += &format!("{name:<12}{:>10}{:>10}{:>10}{:>10}\n", row[0], row[1], row[2], row[3]);
    }
    if !r.patterns.is_empty() {
        s += &format!(
            "\n{:<20}{:>10}{:>16}{:>18}\n",
            "fraud pattern", "payments", "recall@1%FPR", "not approved"
        );
        for (name, n, caught, stopped) in &r.patterns {
            s += &format!("{name:<20}{n:>10}{:>15.1}%{:>17.1}%\n", caught * 100.0, stopped * 100.0);
        }
    }
    if !r.reasons.is_empty() {
        s += &format!("\n{:<36}{:>10}{:>12}\n", "why not approved", "fraud", "legitimate");
        for (reason, fraud, legit) in &r.reasons {
            s += &format!("{reason:<36}{fraud:>10}{legit:>12}\n");
        }
    }
    s
}

fn run_train(args: &TrainArgs) -> Result<(), String> {
    let data = read_data(&args.data)?;
    let x = eval::featurize(&data.txns);
    let labels: Vec<bool> = data.txns.iter().map(|t| t.label).collect();
    let params = TrainParams {
        trees: args.trees,
        max_leaves: args.leaves,
        seed: args.seed,
        ..eval::fraud_params()
    };
    let started = std::time::Instant::now();
    let model = eval::train_model(&x, &labels, &params).map_err(|e| e.to_string())?;
    std::fs::write(&args.out, model.to_lightgbm())
        .map_err(|e| format!("{}: {e}", args.out.display()))?;
    println!(
        "farthing: trained {} trees on {} rows ({} fraud) in {:.1} s; wrote {}",
        model.trees(),
        x.len(),
        labels.iter().filter(|l| **l).count(),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

pub fn run_simulate(args: &SimulateArgs) -> Result<(), String> {
    let mut params =
        farthing_risk_lab::simulate::SimParams { seed: args.seed, ..Default::default() };
    if let Some(p) = args.payers {
        params.payers = p;
    }
    if let Some(d) = args.days {
        params.days = d;
    }
    if params.payers == 0 || params.days == 0 {
        return Err("--payers and --days must be at least 1".into());
    }
    let txns = farthing_risk_lab::simulate::simulate(&params);
    let file =
        std::fs::File::create(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    farthing_risk_lab::simulate::write_csv(&txns, &mut w)
        .map_err(|e| format!("{}: {e}", args.out.display()))?;
    w.flush().map_err(|e| e.to_string())?;
    let fraud = txns.iter().filter(|t| t.label).count();
    println!(
        "farthing: wrote {} payments ({} fraud, {:.2}%) to {}",
        txns.len(),
        fraud,
        fraud as f64 * 100.0 / txns.len().max(1) as f64,
        args.out.display()
    );
    Ok(())
}
