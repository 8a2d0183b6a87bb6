//! Gradient-boosted trees trained in pure Rust, for a binary outcome (fraud or not). The
//! trainer returns the same [`Model`] that LightGBM's files load into, and
//! [`farthing_risk::gbdt::Model::to_lightgbm`] writes any model back in that format, which LightGBM itself loads.
//!
//! The method is LightGBM's. Each feature is cut once into at most 255 quantile bins (one
//! byte per value, one column per feature). Each tree grows leaf by leaf, always splitting
//! the leaf with the largest second-order gain
//! `G_L²/(H_L + λ) + G_R²/(H_R + λ) − G²/(H + λ)` (G, H: sums of the log-loss gradients and
//! hessians), and a leaf's output is its Newton step `−G/(H + λ)` times the learning rate.
//! Only the smaller child of a split has its histogram built from its rows; the larger
//! child's is its parent's minus the smaller's. Missing values (`NaN`) have a bin of their
//! own, and every split learns which way they go (LightGBM's missing type NaN). The first
//! tree also carries the log-odds of the base rate, as LightGBM's `boost_from_average` does,
//! so the text format needs no separate base score.
//!
//! Deterministic: the same data and parameters (seed included) give the same model, bit for
//! bit. Single-threaded.

use std::fmt;

use farthing_risk::gbdt::{Link, Missing, Model, Split, Tree};

/// Training data: one column of values per feature (`f64::NAN` is missing), a label per row
/// (`true` for the positive class: fraud), and optionally a weight per row.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub feature_names: Vec<String>,
    /// `columns[feature][row]`.
    pub columns: Vec<Vec<f64>>,
    pub labels: Vec<bool>,
    pub weights: Option<Vec<f64>>,
}

impl Dataset {
    /// From rows of feature values, each as long as `feature_names`.
    pub fn from_rows<R: AsRef<[f64]>>(
        feature_names: Vec<String>,
        rows: &[R],
        labels: Vec<bool>,
    ) -> Result<Self, TrainError> {
        if labels.len() != rows.len() {
            return Err(TrainError::Mismatch(format!(
                "{} rows for {} labels",
                rows.len(),
                labels.len()
            )));
        }
        let mut columns: Vec<Vec<f64>> =
            feature_names.iter().map(|_| Vec::with_capacity(rows.len())).collect();
        for (i, row) in rows.iter().enumerate() {
            let row = row.as_ref();
            if row.len() != feature_names.len() {
                return Err(TrainError::Mismatch(format!(
                    "row {i} has {} values for {} features",
                    row.len(),
                    feature_names.len()
                )));
            }
            for (column, &v) in columns.iter_mut().zip(row) {
                column.push(v);
            }
        }
        Ok(Self { feature_names, columns, labels, weights: None })
    }

    /// The same data with a weight per row.
    pub fn with_weights(mut self, weights: Vec<f64>) -> Self {
        self.weights = Some(weights);
        self
    }

    pub fn rows(&self) -> usize {
        self.labels.len()
    }
}

/// Training settings. The defaults suit fraud data: tens of features, up to millions of rows.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainParams {
    /// Boosting rounds, one tree each (fewer if no leaf can be split any more).
    pub trees: usize,
    /// Shrinkage applied to every leaf's Newton step.
    pub learning_rate: f64,
    /// Leaves per tree (at least 2).
    pub max_leaves: usize,
    /// Splits from the root to any leaf (at least 1).
    pub max_depth: usize,
    /// Rows each leaf must hold (at least 1).
    pub min_data_in_leaf: usize,
    /// Hessian (weighted) each leaf must hold.
    pub min_hessian: f64,
    /// L2 regularisation of leaf outputs (λ).
    pub lambda_l2: f64,
    /// A split must gain more than this.
    pub min_gain: f64,
    /// Quantile bins per feature, 2 to 255 (missing values get one more).
    pub bins: usize,
    /// The share of features each tree may split on, drawn per tree with `seed`; in (0, 1].
    pub feature_fraction: f64,
    /// Every positive row's weight is multiplied by this (for rare fraud, e.g. the ratio of
    /// negatives to positives, or less).
    pub scale_pos_weight: f64,
    pub seed: u64,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            trees: 200,
            learning_rate: 0.1,
            max_leaves: 31,
            max_depth: 8,
            min_data_in_leaf: 20,
            min_hessian: 1e-3,
            lambda_l2: 1.0,
            min_gain: 0.0,
            bins: 255,
            feature_fraction: 1.0,
            scale_pos_weight: 1.0,
            seed: 0,
        }
    }
}

/// Why training was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrainError {
    /// No rows, or no features.
    Empty(String),
    /// Lengths that must agree do not (labels, columns, weights, feature names).
    Mismatch(String),
    /// All the rows (or all the weight) are in one class: there is nothing to tell apart.
    OneClass,
    /// A parameter, weight or feature name is out of range.
    Invalid(String),
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty(what) => write!(f, "training data: {what}"),
            Self::Mismatch(what) => write!(f, "training data: {what}"),
            Self::OneClass => {
                write!(f, "training data: every row (or all the weight) is in one class")
            }
            Self::Invalid(what) => write!(f, "training: {what}"),
        }
    }
}

impl std::error::Error for TrainError {}

fn invalid<T>(message: impl Into<String>) -> Result<T, TrainError> {
    Err(TrainError::Invalid(message.into()))
}

fn check_params(p: &TrainParams) -> Result<(), TrainError> {
    if p.trees == 0 {
        return invalid("trees must be at least 1");
    }
    if !(p.learning_rate > 0.0 && p.learning_rate.is_finite()) {
        return invalid(format!("learning_rate must be positive, not {}", p.learning_rate));
    }
    if p.max_leaves < 2 {
        return invalid("max_leaves must be at least 2");
    }
    if p.max_depth == 0 {
        return invalid("max_depth must be at least 1");
    }
    if p.min_data_in_leaf == 0 {
        return invalid("min_data_in_leaf must be at least 1");
    }
    for (name, v) in
        [("min_hessian", p.min_hessian), ("lambda_l2", p.lambda_l2), ("min_gain", p.min_gain)]
    {
        if !(v >= 0.0 && v.is_finite()) {
            return invalid(format!("{name} must be zero or more, not {v}"));
        }
    }
    if !(2..=255).contains(&p.bins) {
        return invalid(format!("bins must be 2 to 255, not {}", p.bins));
    }
    if !(p.feature_fraction > 0.0 && p.feature_fraction <= 1.0) {
        return invalid(format!("feature_fraction must be in (0, 1], not {}", p.feature_fraction));
    }
    if !(p.scale_pos_weight > 0.0 && p.scale_pos_weight.is_finite()) {
        return invalid(format!("scale_pos_weight must be positive, not {}", p.scale_pos_weight));
    }
    Ok(())
}

/// Checks the data; returns each row's weight (`scale_pos_weight` applied) and the weighted
/// base rate.
fn check_data(data: &Dataset, p: &TrainParams) -> Result<(Vec<f64>, f64), TrainError> {
    let n = data.labels.len();
    if n == 0 {
        return Err(TrainError::Empty("no rows".into()));
    }
    if data.columns.is_empty() {
        return Err(TrainError::Empty("no features".into()));
    }
    if n >= u32::MAX as usize {
        return invalid(format!("{n} rows is too many (under 2^32)"));
    }
    if data.feature_names.len() != data.columns.len() {
        return Err(TrainError::Mismatch(format!(
            "{} feature names for {} columns",
            data.feature_names.len(),
            data.columns.len()
        )));
    }
    for (name, column) in data.feature_names.iter().zip(&data.columns) {
        if column.len() != n {
            return Err(TrainError::Mismatch(format!(
                "column {name} has {} values for {n} labels",
                column.len()
            )));
        }
        if name.is_empty() || name.contains(char::is_whitespace) {
            return invalid(format!("feature name {name:?}: empty or with spaces"));
        }
    }
    let weights: Vec<f64> = match &data.weights {
        Some(w) if w.len() != n => {
            return Err(TrainError::Mismatch(format!("{} weights for {n} labels", w.len())))
        }
        Some(w) => w.clone(),
        None => vec![1.0; n],
    };
    let (mut positive, mut total) = (0.0, 0.0);
    let mut weights = weights;
    for (w, &y) in weights.iter_mut().zip(&data.labels) {
        if !(*w >= 0.0 && w.is_finite()) {
            return invalid(format!("weights must be zero or more, not {w}"));
        }
        if y {
            *w *= p.scale_pos_weight;
            positive += *w;
        }
        total += *w;
    }
    if positive <= 0.0 || positive >= total {
        return Err(TrainError::OneClass);
    }
    Ok((weights, positive / total))
}

/// Trains a binary classifier (log-loss) by gradient boosting. See the module documentation.
pub fn train(data: &Dataset, params: &TrainParams) -> Result<Model, TrainError> {
    check_params(params)?;
    let (weights, base_rate) = check_data(data, params)?;
    let hist_bytes = params.max_leaves * data.columns.len() * std::mem::size_of::<Hist>();
    if hist_bytes > MAX_HIST_BYTES {
        return invalid(format!(
            "{} leaves × {} features need {} MiB of histograms (at most {}): fewer leaves",
            params.max_leaves,
            data.columns.len(),
            hist_bytes >> 20,
            MAX_HIST_BYTES >> 20
        ));
    }
    let binned = Binned::new(&data.columns, params.bins);
    let bias = (base_rate / (1.0 - base_rate)).ln();
    let n = data.labels.len();
    let mut scores = vec![bias; n];
    let mut grower = Grower::new(&binned, params);
    let mut rng = Rng(params.seed);
    let mut trees: Vec<Tree> = Vec::with_capacity(params.trees);
    for _ in 0..params.trees {
        for (((gh, &s), &y), &w) in
            grower.grad.iter_mut().zip(&scores).zip(&data.labels).zip(&weights)
        {
            let p = 1.0 / (1.0 + (-s).exp());
            *gh = [(p - f64::from(u8::from(y))) * w, (p * (1.0 - p)).max(1e-16) * w];
        }
        let all_features = grower.choose_features(&mut rng);
        let tree = grower.grow();
        if tree.splits.is_empty() && !trees.is_empty() {
            if all_features {
                break; // no leaf can be split any more
            }
            continue;
        }
        grower.update_scores(&tree, &mut scores);
        trees.push(tree);
    }
    // The base rate's log-odds go into the first tree, every leaf and node value.
    let first = &mut trees[0];
    first.leaves.iter_mut().for_each(|v| *v += bias);
    first.splits.iter_mut().for_each(|s| s.value += bias);
    Ok(Model::new(trees, Link::Sigmoid(1.0), data.feature_names.clone()))
}

/// The one place a trained split is made (all trained splits learn a default branch for
/// missing values).
fn new_split(
    feature: usize,
    threshold: f64,
    default_left: bool,
    left: i32,
    right: i32,
    value: f64,
) -> Split {
    Split { feature, threshold, default_left, missing: Missing::NaN, left, right, value }
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        crate::simulate::splitmix(&mut self.0)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Each leaf keeps a histogram per feature until it is split (6 KiB each).
const MAX_HIST_BYTES: usize = 2 << 30;

/// Bin boundaries are chosen from at most this many rows (evenly spaced).
const BIN_SAMPLE: usize = 200_000;

/// The values cut into bins, once: `bins[f * rows + r]` is row `r`'s bin for feature `f`.
/// Bin `b` holds the values up to `uppers[f][b]` (above the previous bound); the last value
/// bin's bound is infinite, and bin `uppers[f].len()` holds the missing values.
struct Binned {
    rows: usize,
    bins: Vec<u8>,
    uppers: Vec<Vec<f64>>,
}

impl Binned {
    fn new(columns: &[Vec<f64>], max_bins: usize) -> Self {
        let rows = columns[0].len();
        let mut bins = Vec::with_capacity(rows * columns.len());
        let mut uppers = Vec::with_capacity(columns.len());
        for column in columns {
            let u = bin_uppers(column, max_bins);
            bins.extend(column.iter().map(|&x| {
                if x.is_nan() {
                    u.len() as u8
                } else {
                    u.partition_point(|&b| b < x) as u8
                }
            }));
            uppers.push(u);
        }
        Self { rows, bins, uppers }
    }

    fn column(&self, feature: usize) -> &[u8] {
        &self.bins[feature * self.rows..(feature + 1) * self.rows]
    }
}

/// Upper bounds of a feature's bins, quantiles of its present values: a distinct value per
/// bin when there are few enough, else about equal counts per bin (a value never spans two).
fn bin_uppers(column: &[f64], max_bins: usize) -> Vec<f64> {
    let step = column.len().div_ceil(BIN_SAMPLE).max(1);
    let mut values: Vec<f64> =
        column.iter().step_by(step).copied().filter(|x| !x.is_nan()).collect();
    values.sort_unstable_by(f64::total_cmp);
    let mut distinct: Vec<(f64, usize)> = Vec::new();
    for &x in &values {
        match distinct.last_mut() {
            Some((d, count)) if *d == x => *count += 1,
            _ => distinct.push((x, 1)),
        }
    }
    let mut uppers = Vec::with_capacity(max_bins);
    let total = values.len();
    let mut seen = 0;
    let mut next_quantile = 1;
    for pair in distinct.windows(2) {
        seen += pair[0].1;
        let cut = if distinct.len() <= max_bins {
            true
        } else {
            seen * max_bins >= next_quantile * total
        };
        if cut {
            if let Some(m) = between(pair[0].0, pair[1].0) {
                uppers.push(m);
            }
            next_quantile = seen * max_bins / total + 1;
            if uppers.len() == max_bins - 1 {
                break;
            }
        }
    }
    uppers.push(f64::INFINITY);
    uppers
}

/// A finite bound `m` with `a <= m < b`, near the middle.
fn between(a: f64, b: f64) -> Option<f64> {
    let m = a / 2.0 + b / 2.0;
    let m = if a <= m && m < b { m } else { a };
    m.is_finite().then_some(m)
}

/// Sums of gradients, hessians and rows.
#[derive(Clone, Copy, Debug, Default)]
struct Acc {
    g: f64,
    h: f64,
    n: f64,
}

impl Acc {
    fn add(&mut self, o: &Acc) {
        self.g += o.g;
        self.h += o.h;
        self.n += o.n;
    }

    fn minus(&self, o: &Acc) -> Acc {
        Acc { g: self.g - o.g, h: self.h - o.h, n: self.n - o.n }
    }
}

/// A feature's histogram, indexed by bin (bins are bytes, so no bounds checks).
type Hist = [Acc; 256];

const EMPTY: Hist = [Acc { g: 0.0, h: 0.0, n: 0.0 }; 256];

/// A leaf of the tree being grown: its rows are `indices[begin..end]`.
struct Leaf {
    begin: usize,
    end: usize,
    sum: Acc,
    depth: usize,
    /// Its histograms: `hists[slot * features ..][..active features]`.
    slot: usize,
    /// The split that leads here, and on which side.
    parent: Option<(usize, bool)>,
    best: Option<Candidate>,
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    gain: f64,
    /// Position in the active features.
    position: usize,
    /// Bins up to this one go left.
    bin: usize,
    default_left: bool,
    left: Acc,
}

/// Buffers reused from tree to tree: nothing is allocated per node.
struct Grower<'a> {
    data: &'a Binned,
    params: &'a TrainParams,
    features: usize,
    /// The features this tree may split on, ascending.
    active: Vec<usize>,
    /// Gradient and hessian of each row.
    grad: Vec<[f64; 2]>,
    /// The same, gathered in a leaf's row order.
    ordered: Vec<[f64; 2]>,
    /// Rows grouped by leaf.
    indices: Vec<u32>,
    scratch: Vec<u32>,
    hists: Vec<Hist>,
    leaves: Vec<Leaf>,
}

impl<'a> Grower<'a> {
    fn new(data: &'a Binned, params: &'a TrainParams) -> Self {
        let features = data.uppers.len();
        let n = data.rows;
        Self {
            data,
            params,
            features,
            active: (0..features).collect(),
            grad: vec![[0.0; 2]; n],
            ordered: vec![[0.0; 2]; n],
            indices: vec![0; n],
            scratch: vec![0; n],
            hists: vec![EMPTY; params.max_leaves * features],
            leaves: Vec::with_capacity(params.max_leaves),
        }
    }

    /// Draws this tree's features; true if that is all of them.
    fn choose_features(&mut self, rng: &mut Rng) -> bool {
        let k = ((self.features as f64 * self.params.feature_fraction).round() as usize)
            .clamp(1, self.features);
        self.active.clear();
        self.active.extend(0..self.features);
        if k == self.features {
            return true;
        }
        for i in 0..k {
            let j = i + rng.below(self.features - i);
            self.active.swap(i, j);
        }
        self.active.truncate(k);
        self.active.sort_unstable();
        false
    }

    fn output(&self, sum: &Acc) -> f64 {
        let d = sum.h + self.params.lambda_l2;
        if d > 0.0 {
            -sum.g / d * self.params.learning_rate
        } else {
            0.0
        }
    }

    fn grow(&mut self) -> Tree {
        let n = self.data.rows;
        for (i, r) in self.indices.iter_mut().enumerate() {
            *r = i as u32;
        }
        let mut sum = Acc::default();
        for gh in &self.grad {
            sum.g += gh[0];
            sum.h += gh[1];
        }
        sum.n = n as f64;
        self.leaves.clear();
        self.leaves.push(Leaf {
            begin: 0,
            end: n,
            sum,
            depth: 0,
            slot: 0,
            parent: None,
            best: None,
        });
        self.build_hist(0, 0, n);
        self.find_best(0);
        let mut splits: Vec<Split> = Vec::with_capacity(self.params.max_leaves - 1);
        while self.leaves.len() < self.params.max_leaves {
            // The leaf with the largest gain (the first, on ties).
            let mut pick: Option<(usize, f64)> = None;
            for (i, leaf) in self.leaves.iter().enumerate() {
                if let Some(c) = &leaf.best {
                    if pick.is_none_or(|(_, g)| c.gain > g) {
                        pick = Some((i, c.gain));
                    }
                }
            }
            let Some((l, _)) = pick else { break };
            self.split(l, &mut splits);
        }
        let leaves = self.leaves.iter().map(|leaf| self.output(&leaf.sum)).collect();
        Tree { splits, leaves }
    }

    /// Splits leaf `l` by its best candidate: the left child keeps the number `l`, the right
    /// one is a new leaf.
    fn split(&mut self, l: usize, splits: &mut Vec<Split>) {
        let params = self.params;
        let leaf = &mut self.leaves[l];
        let c = leaf.best.take().expect("a candidate");
        let (begin, end, sum, depth, parent_slot) =
            (leaf.begin, leaf.end, leaf.sum, leaf.depth, leaf.slot);
        let feature = self.active[c.position];
        let nb = self.data.uppers[feature].len();
        let mut goes_left = [false; 256];
        goes_left[..=c.bin].fill(true);
        goes_left[nb] = c.default_left;
        let rows = &mut self.indices[begin..end];
        let kept = partition(self.data.column(feature), &goes_left, rows, &mut self.scratch);
        let mid = begin + kept;
        debug_assert_eq!(kept as f64, c.left.n);
        // The tree: a split where the leaf was.
        let s = splits.len();
        let r = self.leaves.len();
        // All present values left, missing ones right: the threshold is the largest finite
        // value (so only +inf, which trained on the left, would go right).
        let threshold = if c.bin + 1 == nb { f64::MAX } else { self.data.uppers[feature][c.bin] };
        splits.push(new_split(
            feature,
            threshold,
            c.default_left,
            !(l as i32),
            !(r as i32),
            self.output(&sum),
        ));
        if let Some((p, is_left)) = self.leaves[l].parent {
            if is_left {
                splits[p].left = s as i32;
            } else {
                splits[p].right = s as i32;
            }
        }
        // Histograms, only for children that may be split: build the smaller child's into
        // a free slot, subtract it from the parent's for the larger child.
        let may_split = |rows: usize| {
            r + 1 < params.max_leaves
                && depth + 1 < params.max_depth
                && rows >= 2 * params.min_data_in_leaf
        };
        let (left_may, right_may) = (may_split(kept), may_split(end - mid));
        let left_smaller = kept <= end - mid;
        let (small_slot, large_slot) = (r, parent_slot);
        if left_may || right_may {
            let (small_begin, small_end) = if left_smaller { (begin, mid) } else { (mid, end) };
            self.build_hist(small_slot, small_begin, small_end);
            let active = self.active.len();
            let f = self.features;
            let (large, small) = {
                let (a, b) = self.hists.split_at_mut(small_slot * f);
                (&mut a[large_slot * f..large_slot * f + active], &b[..active])
            };
            for (lh, sh) in large.iter_mut().zip(small) {
                for (le, se) in lh.iter_mut().zip(sh) {
                    *le = le.minus(se);
                }
            }
        }
        let (left_slot, right_slot) =
            if left_smaller { (small_slot, large_slot) } else { (large_slot, small_slot) };
        let right_sum = sum.minus(&c.left);
        self.leaves[l] = Leaf {
            begin,
            end: mid,
            sum: c.left,
            depth: depth + 1,
            slot: left_slot,
            parent: Some((s, true)),
            best: None,
        };
        self.leaves.push(Leaf {
            begin: mid,
            end,
            sum: right_sum,
            depth: depth + 1,
            slot: right_slot,
            parent: Some((s, false)),
            best: None,
        });
        if left_may {
            self.find_best(l);
        }
        if right_may {
            self.find_best(r);
        }
    }

    /// Builds the histograms of rows `indices[begin..end]` into `slot`.
    fn build_hist(&mut self, slot: usize, begin: usize, end: usize) {
        let active = self.active.len();
        let hists = &mut self.hists[slot * self.features..slot * self.features + active];
        hists.fill(EMPTY);
        let all = begin == 0 && end == self.data.rows;
        let (rows, grad) = if all {
            (None, &self.grad[..])
        } else {
            let rows = &self.indices[begin..end];
            let ordered = &mut self.ordered[..rows.len()];
            for (o, &r) in ordered.iter_mut().zip(rows) {
                *o = self.grad[r as usize];
            }
            (Some(rows), &*ordered)
        };
        let (data, active_features) = (self.data, &self.active[..]);
        let mut j = 0;
        while j < active {
            let k = [8, 4, 2, 1].into_iter().find(|&k| k <= active - j).unwrap_or(1);
            let (features, h) = (&active_features[j..j + k], &mut hists[j..j + k]);
            match k {
                8 => accumulate::<8>(data, features, h, rows, grad),
                4 => accumulate::<4>(data, features, h, rows, grad),
                2 => accumulate::<2>(data, features, h, rows, grad),
                _ => accumulate::<1>(data, features, h, rows, grad),
            }
            j += k;
        }
    }

    /// Finds leaf `l`'s best split, if it has one worth making.
    fn find_best(&mut self, l: usize) {
        let p = self.params;
        let leaf = &self.leaves[l];
        let sum = leaf.sum;
        if sum.n < 2.0 * p.min_data_in_leaf as f64 {
            return;
        }
        let lambda = p.lambda_l2;
        let min_n = p.min_data_in_leaf as f64;
        let score = |a: &Acc| a.g * a.g / (a.h + lambda);
        let parent = score(&sum);
        let hists = &self.hists[leaf.slot * self.features..];
        let mut best: Option<Candidate> = None;
        let mut best_gain = p.min_gain;
        for (position, (&feature, hist)) in self.active.iter().zip(hists).enumerate() {
            let nb = self.data.uppers[feature].len();
            let missing = hist[nb];
            let mut left = Acc::default();
            for (bin, entry) in hist[..nb].iter().enumerate() {
                left.add(entry);
                if sum.n - left.n < min_n {
                    break;
                }
                for missing_left in [false, true] {
                    if missing_left && missing.n == 0.0 {
                        continue;
                    }
                    let mut l = left;
                    if missing_left {
                        l.add(&missing);
                    }
                    let r = sum.minus(&l);
                    if l.n < min_n || r.n < min_n || l.h < p.min_hessian || r.h < p.min_hessian {
                        continue;
                    }
                    let gain = score(&l) + score(&r) - parent;
                    if gain > best_gain {
                        best_gain = gain;
                        // With no missing values here, they follow the larger side.
                        let default_left = missing_left || (missing.n == 0.0 && l.n >= r.n);
                        best = Some(Candidate { gain, position, bin, default_left, left: l });
                    }
                }
            }
        }
        self.leaves[l].best = best;
    }

    fn update_scores(&self, tree: &Tree, scores: &mut [f64]) {
        for (leaf, &value) in self.leaves.iter().zip(&tree.leaves) {
            for &r in &self.indices[leaf.begin..leaf.end] {
                scores[r as usize] += value;
            }
        }
    }
}

/// Moves the rows going left to the front, stably (rows stay ascending, so reads stay near
/// each other); returns how many. Branch-free: where a row goes is a coin toss near the root.
#[inline(never)]
fn partition(
    column: &[u8],
    goes_left: &[bool; 256],
    rows: &mut [u32],
    scratch: &mut [u32],
) -> usize {
    let (mut kept, mut moved) = (0, 0);
    for i in 0..rows.len() {
        let r = rows[i];
        let left = usize::from(goes_left[column[r as usize] as usize]);
        rows[kept] = r;
        scratch[moved] = r;
        kept += left;
        moved += 1 - left;
    }
    rows[kept..].copy_from_slice(&scratch[..moved]);
    kept
}

/// Adds rows into the histograms of `K` features at once: one read of each row's gradient
/// serves them all, and their additions are independent, so they overlap (eight histograms
/// of 6 KiB still fit the first-level cache). `rows`: the rows, in `grad`'s order; `None`:
/// all rows, in order.
fn accumulate<const K: usize>(
    data: &Binned,
    features: &[usize],
    hists: &mut [Hist],
    rows: Option<&[u32]>,
    grad: &[[f64; 2]],
) {
    let columns: [&[u8]; K] = std::array::from_fn(|k| data.column(features[k]));
    let hists: &mut [Hist; K] = hists.try_into().expect("K histograms");
    let mut add = |r: usize, gh: &[f64; 2]| {
        for k in 0..K {
            let e = &mut hists[k][columns[k][r] as usize];
            e.g += gh[0];
            e.h += gh[1];
            e.n += 1.0;
        }
    };
    match rows {
        None => grad.iter().enumerate().for_each(|(r, gh)| add(r, gh)),
        Some(rows) => rows.iter().zip(grad).for_each(|(&r, gh)| add(r as usize, gh)),
    }
}
