//! Evaluation: labelled transactions in, the model's quality out, measured the way the
//! live engine would have seen them.
//!
//! Two CSV layouts are read (the header tells which):
//! - **generic**: `timestamp,payer,payee,amount,label` and optionally `device`, `ip`,
//!   `channel`, `merchant_category`, `pattern`, in any order. `timestamp` is RFC 3339 UTC
//!   (`2026-11-01T08:15:02.125Z`) or Unix seconds (fractions allowed); `amount` a decimal in
//!   major units; `label` 1/0 (or true/false, fraud/legit). `pattern` names the kind of
//!   fraud (reported per pattern).
//! - **PaySim**: `step,type,amount,nameOrig,oldbalanceOrg,newbalanceOrig,nameDest,
//!   oldbalanceDest,newbalanceDest,isFraud,isFlaggedFraud`. A step is an hour; rows of one
//!   step are spread evenly across it in file order; `type` becomes the merchant category.
//!   The balance columns are not used: they are not known before a payment is made (and
//!   leak the label).
//!
//! Rows are sorted by time (stable), features replayed in that order (each from what came
//! before it), the earlier part trains and the later part tests.

use crate::train::{train, Dataset as TrainData, TrainParams};
use farthing_risk::engine::{LoadedModel, Request, RiskEngine};
use farthing_risk::features::{Capacity, Channel, FeatureState, Payment, Vector, FEATURE_NAMES};
use farthing_risk::gbdt::Model;
use farthing_risk::policy::{Action, Policy};
use std::collections::HashMap;
use std::fmt;

/// Why a data file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError(pub String);

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DataError {}

/// One labelled transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct Txn {
    pub at_ns: u64,
    pub payer: u128,
    pub payee: u128,
    pub amount: f64,
    pub label: bool,
    pub device: Option<u64>,
    pub ip: Option<u64>,
    pub channel: Option<Channel>,
    pub merchant_category: Option<u16>,
    /// The fraud pattern's index in [`Dataset::patterns`] (0: none given).
    pub pattern: u16,
}

/// Transactions, time-ordered, with the names of their patterns.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub txns: Vec<Txn>,
    /// Pattern names; index 0 is "" (none).
    pub patterns: Vec<String>,
    pub layout: &'static str,
}

/// Which column is which.
enum Layout {
    Generic {
        ts: usize,
        payer: usize,
        payee: usize,
        amount: usize,
        label: usize,
        device: Option<usize>,
        ip: Option<usize>,
        channel: Option<usize>,
        mcc: Option<usize>,
        pattern: Option<usize>,
    },
    PaySim {
        step: usize,
        kind: usize,
        amount: usize,
        orig: usize,
        dest: usize,
        fraud: usize,
    },
}

fn layout(header: &[&str]) -> Result<Layout, DataError> {
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    if let (Some(step), Some(kind), Some(amount), Some(orig), Some(dest), Some(fraud)) =
        (col("step"), col("type"), col("amount"), col("nameOrig"), col("nameDest"), col("isFraud"))
    {
        return Ok(Layout::PaySim { step, kind, amount, orig, dest, fraud });
    }
    let need = |name: &str| {
        col(name).ok_or_else(|| {
            DataError(format!(
                "the header has no {name:?} column: expected the generic layout \
                 (timestamp,payer,payee,amount,label[,device,ip,channel,merchant_category,pattern]) \
                 or PaySim's (step,type,amount,nameOrig,...,isFraud,isFlaggedFraud)"
            ))
        })
    };
    Ok(Layout::Generic {
        ts: need("timestamp")?,
        payer: need("payer")?,
        payee: need("payee")?,
        amount: need("amount")?,
        label: need("label")?,
        device: col("device"),
        ip: col("ip"),
        channel: col("channel"),
        mcc: col("merchant_category"),
        pattern: col("pattern"),
    })
}

/// Parses `2026-11-01T08:15:02.125Z` (UTC, `Z` or `+00:00`) or Unix seconds.
/// The first code given to merchant categories named rather than numbered: names are
/// numbered from here in order of first appearance (ISO 18245 codes are four digits, below).
pub const CATEGORY_NAMES_FIRST: u16 = 50_000;

/// The code of a merchant category given by name; `None` past the last code.
fn category_code(categories: &mut HashMap<String, u16>, name: &str) -> Option<u16> {
    if let Some(code) = categories.get(name) {
        return Some(*code);
    }
    let code = CATEGORY_NAMES_FIRST.checked_add(u16::try_from(categories.len()).ok()?)?;
    categories.insert(name.to_string(), code);
    Some(code)
}

pub fn parse_time_ns(text: &str) -> Option<u64> {
    let t = text.trim();
    if let Ok(s) = t.parse::<f64>() {
        return (s.is_finite() && s >= 0.0).then(|| (s * 1e9).round() as u64);
    }
    let t = t.strip_suffix('Z').or_else(|| t.strip_suffix("+00:00"))?;
    let (date, time) = t.split_once('T').or_else(|| t.split_once(' '))?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut h = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32)
    };
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days).ok()? * 86_400 + hh * 3_600 + mm * 60 + ss;
    Some(secs * 1_000_000_000 + nanos)
}

fn parse_label(text: &str) -> Option<bool> {
    match text.trim() {
        "1" | "true" | "fraud" | "True" | "TRUE" => Some(true),
        "0" | "false" | "legit" | "legitimate" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Interns names as small ids (and hashes for devices and IPs).
#[derive(Default)]
struct Names(HashMap<String, u128>);

impl Names {
    fn id(&mut self, name: &str) -> u128 {
        let next = self.0.len() as u128 + 1;
        *self.0.entry(name.to_string()).or_insert(next)
    }
}

fn hash(text: &str) -> u64 {
    farthing_risk::engine::fnv1a(text.as_bytes())
}

/// Reads a CSV file's text (either layout). Bad rows are refused with their line number.
pub fn read_csv(text: &str) -> Result<Dataset, DataError> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| DataError("the file is empty".into()))?;
    let header: Vec<&str> = header.split(',').collect();
    let layout = layout(&header)?;
    let mut names = Names::default();
    let mut patterns: Vec<String> = vec![String::new()];
    // Merchant categories given as names ("grocery", "gas_transport"), numbered in order of
    // first appearance from CATEGORY_NAMES_FIRST.
    let mut categories: HashMap<String, u16> = HashMap::new();
    let mut data = Dataset { txns: Vec::new(), patterns: Vec::new(), layout: "" };
    let mut step_rows: Vec<(u64, usize)> = Vec::new();
    for (n, line) in lines {
        let f: Vec<&str> = line.split(',').collect();
        let bad = |what: &str| DataError(format!("line {}: {what}", n + 1));
        let get = |i: usize| f.get(i).map(|s| s.trim()).ok_or_else(|| bad("too few columns"));
        let amount = |i: usize| -> Result<f64, DataError> {
            get(i)?
                .parse::<f64>()
                .ok()
                .filter(|a| a.is_finite() && *a >= 0.0)
                .ok_or_else(|| bad("amount is not a non-negative number"))
        };
        match &layout {
            Layout::Generic {
                ts,
                payer,
                payee,
                amount: a,
                label,
                device,
                ip,
                channel,
                mcc,
                pattern,
            } => {
                let opt = |i: &Option<usize>| {
                    i.and_then(|i| f.get(i)).map(|s| s.trim()).filter(|s| !s.is_empty())
                };
                let pattern = match opt(pattern) {
                    None | Some("legit") => 0,
                    Some(p) => match patterns.iter().position(|q| q == p) {
                        Some(i) => i as u16,
                        None => {
                            patterns.push(p.to_string());
                            (patterns.len() - 1) as u16
                        }
                    },
                };
                data.txns.push(Txn {
                    at_ns: parse_time_ns(get(*ts)?)
                        .ok_or_else(|| bad("timestamp is neither RFC 3339 UTC nor Unix seconds"))?,
                    payer: names.id(get(*payer)?),
                    payee: names.id(get(*payee)?),
                    amount: amount(*a)?,
                    label: parse_label(get(*label)?).ok_or_else(|| bad("label is not 1/0"))?,
                    device: opt(device).map(hash),
                    ip: opt(ip).map(hash),
                    channel: match opt(channel) {
                        Some(c) => Some(
                            Channel::parse(c)
                                .ok_or_else(|| bad("channel is not web, app, api or iot"))?,
                        ),
                        None => None,
                    },
                    merchant_category: match opt(mcc) {
                        Some(c) if c.bytes().all(|b| b.is_ascii_digit()) => Some(
                            c.parse()
                                .map_err(|_| bad("merchant_category is a number over 65535"))?,
                        ),
                        Some(name) => {
                            Some(category_code(&mut categories, name).ok_or_else(|| {
                                bad("more merchant category names than codes for them")
                            })?)
                        }
                        None => None,
                    },
                    pattern,
                });
            }
            Layout::PaySim { step, kind, amount: a, orig, dest, fraud } => {
                let step: u64 = get(*step)?.parse().map_err(|_| bad("step is not a number"))?;
                let kind = match get(*kind)? {
                    "PAYMENT" => 1,
                    "TRANSFER" => 2,
                    "CASH_OUT" => 3,
                    "DEBIT" => 4,
                    "CASH_IN" => 5,
                    _ => return Err(bad("type is not one of PaySim's")),
                };
                step_rows.push((step, data.txns.len()));
                data.txns.push(Txn {
                    at_ns: step * 3_600_000_000_000,
                    payer: names.id(get(*orig)?),
                    payee: names.id(get(*dest)?),
                    amount: amount(*a)?,
                    label: parse_label(get(*fraud)?).ok_or_else(|| bad("isFraud is not 1/0"))?,
                    device: None,
                    ip: None,
                    channel: None,
                    merchant_category: Some(kind),
                    pattern: 0,
                });
            }
        }
    }
    if let Layout::PaySim { .. } = layout {
        data.layout = "paysim";
        // Spread each step's rows evenly over its hour, in file order.
        let mut counts: HashMap<u64, (usize, usize)> = HashMap::new();
        for (s, _) in &step_rows {
            counts.entry(*s).or_default().0 += 1;
        }
        for (s, i) in &step_rows {
            let c = counts.get_mut(s).expect("counted");
            data.txns[*i].at_ns += (c.1 as u64) * (3_600_000_000_000 / c.0 as u64);
            c.1 += 1;
        }
    } else {
        data.layout = "generic";
    }
    if data.txns.is_empty() {
        return Err(DataError("the file has a header but no rows".into()));
    }
    data.txns.sort_by_key(|t| t.at_ns);
    data.patterns = patterns;
    Ok(data)
}

impl Txn {
    pub fn payment(&self) -> Payment {
        Payment {
            at_ns: self.at_ns,
            payer: self.payer,
            payee: self.payee,
            amount: self.amount,
            device: self.device,
            ip: self.ip,
            channel: self.channel,
            merchant_category: self.merchant_category,
            payer_since_ns: None,
            opted_out: false,
        }
    }
}

/// Each transaction's features, replayed in order: from what came before it only.
pub fn featurize(txns: &[Txn]) -> Vec<Vector> {
    let mut state = FeatureState::new(Capacity::default());
    txns.iter()
        .map(|t| {
            let p = t.payment();
            let x = state.features(&p);
            state.record(&p);
            x
        })
        .collect()
}

/// How well scores separate fraud from the rest.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Quality {
    pub auprc: f64,
    pub roc_auc: f64,
    pub recall_at_1pct_fpr: f64,
    pub recall_at_0_1pct_fpr: f64,
    /// The lowest score flagged while the false-positive rate stays within 1 %.
    pub threshold_at_1pct_fpr: f64,
}

/// AUPRC (average precision), ROC AUC (ties counted half), and recall at 1 % and 0.1 %
/// false-positive rate (the best recall of any threshold within it).
pub fn quality(scores: &[f64], labels: &[bool]) -> Quality {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let pos = labels.iter().filter(|l| **l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return Quality::default();
    }
    let (mut tp, mut fp) = (0.0, 0.0);
    let (mut ap, mut auc) = (0.0, 0.0);
    let (mut r1, mut r01, mut t1) = (0.0, 0.0, f64::INFINITY);
    let mut i = 0;
    while i < idx.len() {
        // A group of equal scores moves together.
        let s = scores[idx[i]];
        let (mut gp, mut gn) = (0.0, 0.0);
        while i < idx.len() && scores[idx[i]] == s {
            if labels[idx[i]] {
                gp += 1.0;
            } else {
                gn += 1.0;
            }
            i += 1;
        }
        auc += gn * (tp + gp / 2.0);
        tp += gp;
        fp += gn;
        if gp > 0.0 {
            ap += gp / pos * (tp / (tp + fp));
        }
        let (fpr, recall) = (fp / neg, tp / pos);
        if fpr <= 0.01 && recall >= r1 {
            r1 = recall;
            t1 = s;
        }
        if fpr <= 0.001 {
            r01 = recall;
        }
    }
    Quality {
        auprc: ap,
        roc_auc: auc / (pos * neg),
        recall_at_1pct_fpr: r1,
        recall_at_0_1pct_fpr: r01,
        threshold_at_1pct_fpr: t1,
    }
}

/// The model's training settings for fraud data: many shallow-ish trees, a floor on leaf
/// size so rare patterns are learned from more than a handful of rows.
pub fn fraud_params() -> TrainParams {
    TrainParams {
        trees: 200,
        learning_rate: 0.08,
        max_leaves: 15,
        min_data_in_leaf: 40,
        ..TrainParams::default()
    }
}

/// Trains a model on featurized rows.
pub fn train_model(
    rows: &[Vector],
    labels: &[bool],
    params: &TrainParams,
) -> Result<Model, DataError> {
    let names = FEATURE_NAMES.iter().map(|n| n.to_string()).collect();
    let data =
        TrainData::from_rows(names, rows, labels.to_vec()).map_err(|e| DataError(e.to_string()))?;
    train(&data, params).map_err(|e| DataError(e.to_string()))
}

/// What an evaluation found.
#[derive(Clone, Debug)]
pub struct Report {
    pub layout: &'static str,
    pub rows: usize,
    pub train_rows: usize,
    pub test_rows: usize,
    pub test_fraud: usize,
    /// "trained" or the imported model's version.
    pub model: String,
    pub quality: Quality,
    /// Decisions under the policy: rows fraud, legitimate; columns approve, step_up,
    /// review, decline.
    pub confusion: [[u64; 4]; 2],
    pub policy: String,
    /// Per fraud pattern (when the data names them): payments in the test part, and the
    /// share caught at the 1 % false-positive threshold, and the share not approved by
    /// the policy.
    pub patterns: Vec<(String, usize, f64, f64)>,
    /// Why payments were not approved: (reason, fraud payments, legitimate payments),
    /// most frequent first.
    pub reasons: Vec<(String, u64, u64)>,
    pub train_seconds: f64,
}

/// Splits by time, trains (unless a model is given), scores the later part, and replays
/// it through the engine under `policy` for the decisions.
pub fn evaluate(
    data: &Dataset,
    model: Option<LoadedModel>,
    policy: &Policy,
    train_fraction: f64,
    params: &TrainParams,
) -> Result<(Report, Option<Model>), DataError> {
    if !(0.05..=0.95).contains(&train_fraction) {
        return Err(DataError("the training fraction is between 0.05 and 0.95".into()));
    }
    let n = data.txns.len();
    let split = ((n as f64) * train_fraction).round() as usize;
    if split == 0 || split >= n {
        return Err(DataError(format!("{n} rows are too few to split")));
    }
    let x = featurize(&data.txns);
    let labels: Vec<bool> = data.txns.iter().map(|t| t.label).collect();
    let started = std::time::Instant::now();
    let (live, trained) = match model {
        Some(m) => (m, None),
        None => {
            let m = train_model(&x[..split], &labels[..split], params)?;
            let loaded = LoadedModel::new(m.clone(), "trained".into())
                .map_err(|e| DataError(e.to_string()))?;
            (loaded, Some(m))
        }
    };
    let train_seconds = started.elapsed().as_secs_f64();
    let scores: Vec<f64> = x[split..].iter().map(|v| sigmoid(live.raw(v))).collect();
    let test_labels = &labels[split..];
    let quality = quality(&scores, test_labels);

    // The same payments through the engine, as live: the earlier part replayed, the later
    // part decided.
    let mut engine = RiskEngine::new(policy.clone(), 1, Capacity::default());
    let asset_code = policy.tiers.first().map_or("EUR".to_string(), |t| t.asset.clone());
    engine.register_asset(1, &asset_code, 6);
    let model_name = live.version.clone();
    engine.set_models(Some(std::sync::Arc::new(live)), None);
    let request = |t: &Txn| Request {
        payment: t.payment(),
        asset: 1,
        amount_minor: (t.amount * 1e6).round() as u128,
    };
    for t in &data.txns[..split] {
        engine.replay(&request(t));
    }
    let mut confusion = [[0u64; 4]; 2];
    let mut per_pattern: HashMap<u16, (usize, usize, usize)> = HashMap::new();
    let mut reasons: HashMap<String, (u64, u64)> = HashMap::new();
    for (k, t) in data.txns[split..].iter().enumerate() {
        let d = engine.assess(&request(t));
        let col = Action::ALL.iter().position(|a| *a == d.action).unwrap_or(0);
        confusion[usize::from(!t.label)][col] += 1;
        if d.action != Action::Approve {
            for r in &d.reasons {
                let e = reasons.entry(r.to_string()).or_default();
                if t.label {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
        }
        if t.label && t.pattern != 0 {
            let e = per_pattern.entry(t.pattern).or_default();
            e.0 += 1;
            e.1 += usize::from(scores[k] >= quality.threshold_at_1pct_fpr);
            e.2 += usize::from(d.action != Action::Approve);
        }
    }
    let mut patterns: Vec<(String, usize, f64, f64)> = per_pattern
        .into_iter()
        .map(|(p, (n, caught, stopped))| {
            (
                data.patterns[usize::from(p)].clone(),
                n,
                caught as f64 / n as f64,
                stopped as f64 / n as f64,
            )
        })
        .collect();
    patterns.sort_by(|a, b| a.0.cmp(&b.0));
    let mut reasons: Vec<(String, u64, u64)> =
        reasons.into_iter().map(|(r, (f, l))| (r, f, l)).collect();
    reasons.sort_by(|a, b| (b.1 + b.2).cmp(&(a.1 + a.2)).then_with(|| a.0.cmp(&b.0)));
    Ok((
        Report {
            layout: data.layout,
            rows: n,
            train_rows: split,
            test_rows: n - split,
            test_fraud: test_labels.iter().filter(|l| **l).count(),
            model: model_name,
            quality,
            confusion,
            policy: policy.name.clone(),
            patterns,
            reasons,
            train_seconds,
        },
        trained,
    ))
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x.clamp(-35.0, 35.0)).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_of_perfect_random_and_reversed_scores() {
        let labels = [true, true, false, false, false, false];
        let q = quality(&[0.9, 0.8, 0.3, 0.2, 0.1, 0.0], &labels);
        assert_eq!((q.auprc, q.roc_auc, q.recall_at_1pct_fpr), (1.0, 1.0, 1.0));
        let q = quality(&[0.5; 6], &labels);
        assert_eq!(q.roc_auc, 0.5);
        assert!((q.auprc - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(q.recall_at_1pct_fpr, 0.0);
        let q = quality(&[0.0, 0.1, 0.3, 0.4, 0.5, 0.6], &labels);
        assert_eq!(q.roc_auc, 0.0);
    }

    #[test]
    fn recall_at_a_false_positive_rate() {
        // 1,000 legit with scores 0..1, 10 fraud: 9 above every legit, 1 in the middle.
        let mut scores: Vec<f64> = (0..1_000).map(|i| f64::from(i) / 1_000.0).collect();
        let mut labels = vec![false; 1_000];
        scores.extend([2.0; 9]);
        scores.push(0.5);
        labels.extend([true; 10]);
        let q = quality(&scores, &labels);
        assert!((q.recall_at_0_1pct_fpr - 0.9).abs() < 1e-12);
        assert!((q.recall_at_1pct_fpr - 0.9).abs() < 1e-12);
    }

    #[test]
    fn times_parse_in_both_forms() {
        assert_eq!(parse_time_ns("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(parse_time_ns("2000-02-29T00:00:00.5Z"), Some(951_782_400_500_000_000));
        assert_eq!(parse_time_ns("951782400.5"), Some(951_782_400_500_000_000));
        assert_eq!(parse_time_ns("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_time_ns("yesterday"), None);
    }

    #[test]
    fn both_layouts_read_and_sort_by_time() {
        let generic = "timestamp,payer,payee,amount,label,device,pattern\n\
                       2026-11-01T00:00:02Z,a,m,0.0025,0,d1,legit\n\
                       2026-11-01T00:00:01Z,b,m,5,1,d2,card_testing\n";
        let d = read_csv(generic).unwrap();
        assert_eq!((d.layout, d.txns.len()), ("generic", 2));
        assert!(d.txns[0].label && d.txns[0].at_ns < d.txns[1].at_ns);
        assert_eq!(d.patterns[usize::from(d.txns[0].pattern)], "card_testing");
        let paysim = "step,type,amount,nameOrig,oldbalanceOrg,newbalanceOrig,nameDest,oldbalanceDest,newbalanceDest,isFraud,isFlaggedFraud\n\
                      1,PAYMENT,9839.64,C1231006815,170136.0,160296.36,M1979787155,0.0,0.0,0,0\n\
                      1,TRANSFER,181.0,C1305486145,181.0,0.0,C553264065,0.0,0.0,1,0\n";
        let d = read_csv(paysim).unwrap();
        assert_eq!((d.layout, d.txns.len()), ("paysim", 2));
        assert_eq!(d.txns[1].at_ns - d.txns[0].at_ns, 1_800_000_000_000, "spread over the hour");
        assert!(read_csv("a,b\n1,2\n").unwrap_err().0.contains("no \"timestamp\" column"));
        assert!(read_csv("timestamp,payer,payee,amount,label\nnow,a,b,1,0\n")
            .unwrap_err()
            .0
            .contains("line 2"));
        assert!(read_csv("timestamp,payer,payee,amount,label\n1,a,b,-1,0\n").is_err());
    }

    #[test]
    fn merchant_categories_may_be_codes_or_names() {
        let csv = "timestamp,payer,payee,amount,label,merchant_category\n\
                   1,a,m,1,0,5994\n2,a,n,1,0,grocery_pos\n3,b,n,1,0,gas_transport\n\
                   4,b,m,1,0,grocery_pos\n5,b,m,1,0,\n";
        let d = read_csv(csv).unwrap();
        let codes: Vec<Option<u16>> = d.txns.iter().map(|t| t.merchant_category).collect();
        let first = CATEGORY_NAMES_FIRST;
        assert_eq!(codes, [Some(5994), Some(first), Some(first + 1), Some(first), None]);
        let over = "timestamp,payer,payee,amount,label,merchant_category\n1,a,m,1,0,70000\n";
        assert!(read_csv(over).unwrap_err().0.contains("over 65535"));
    }
}
