//! Gradient-boosted trees, evaluated in pure Rust: models imported from LightGBM's text
//! format (the file `Booster.save_model` writes), each prediction explained by per-feature
//! contributions (the change of the node value along the path, per split feature).
//!
//! Missing values are `f64::NAN`. Numerical splits follow LightGBM's rules exactly: a
//! missing value takes the node's default branch when the node learned one (missing type
//! NaN), else counts as 0.0; with missing type Zero, zero itself takes the default branch.

use std::fmt;

/// Why a model file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError(pub String);

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "model: {}", self.0)
    }
}

impl std::error::Error for ModelError {}

fn err<T>(message: impl Into<String>) -> Result<T, ModelError> {
    Err(ModelError(message.into()))
}

/// How raw scores become probabilities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Link {
    /// `1 / (1 + exp(-sigmoid × raw))` (LightGBM's `binary sigmoid:k`).
    Sigmoid(f64),
    /// The raw score as it is.
    Identity,
}

/// One split of a tree.
#[derive(Clone, Debug)]
pub struct Split {
    pub feature: usize,
    pub threshold: f64,
    pub default_left: bool,
    pub missing: Missing,
    /// Child references: `>= 0` another split, `< 0` the leaf `!child`.
    pub left: i32,
    pub right: i32,
    /// The node's own value (the mean of what reaches it), for explanations.
    pub value: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    None,
    Zero,
    NaN,
}

#[derive(Clone, Debug)]
pub struct Tree {
    pub splits: Vec<Split>,
    pub leaves: Vec<f64>,
}

/// Below this, LightGBM treats a value as zero.
const ZERO_THRESHOLD: f64 = 1e-35;

/// The trees laid out for evaluation: every node of every tree in one array, 32 bytes
/// each, two to a cache line, a node's value with it (an explanation reads the value of
/// the node it goes to next, which the walk then reads anyway).
#[derive(Clone, Debug, Default)]
struct Flat {
    nodes: Vec<Node>,
    roots: Vec<u32>,
}

#[derive(Clone, Copy, Debug)]
#[repr(align(32))]
struct Node {
    threshold: f64,
    /// A leaf's output, or a split's mean (for explanations).
    value: f64,
    /// `LEAF` for a leaf.
    feature: u32,
    left: u32,
    right: u32,
    /// The branch for a missing value (or zero, with missing type Zero).
    default_left: bool,
    missing: Missing,
}

const LEAF: u32 = u32::MAX;

impl Node {
    /// The child a value goes to, with LightGBM's rules for missing values; written so
    /// the choice compiles to selects rather than jumps.
    #[inline(always)]
    fn next(&self, x: f64) -> u32 {
        let v = if x.is_nan() && self.missing != Missing::NaN { 0.0 } else { x };
        let take_default = match self.missing {
            Missing::Zero => v.abs() <= ZERO_THRESHOLD,
            Missing::NaN => v.is_nan(),
            Missing::None => false,
        };
        let left = if take_default { self.default_left } else { v <= self.threshold };
        if left {
            self.left
        } else {
            self.right
        }
    }
}

/// Trees walked side by side: their paths are independent, so the processor overlaps
/// the memory reads of one with the comparisons of the others.
const LANES: usize = 8;

impl Flat {
    fn new(trees: &[Tree]) -> Self {
        let mut f = Flat::default();
        for t in trees {
            let base = f.nodes.len() as u32;
            let leaf_base = base + t.splits.len() as u32;
            let at = |child: i32| {
                if child >= 0 {
                    base + child as u32
                } else {
                    leaf_base + (!child) as u32
                }
            };
            if t.splits.is_empty() {
                f.roots.push(base);
            } else {
                f.roots.push(base);
                for s in &t.splits {
                    f.nodes.push(Node {
                        threshold: s.threshold,
                        value: s.value,
                        feature: s.feature as u32,
                        left: at(s.left),
                        right: at(s.right),
                        default_left: s.default_left,
                        missing: s.missing,
                    });
                }
            }
            for leaf in &t.leaves {
                f.nodes.push(Node {
                    threshold: 0.0,
                    value: *leaf,
                    feature: LEAF,
                    left: 0,
                    right: 0,
                    default_left: false,
                    missing: Missing::None,
                });
            }
        }
        f
    }

    fn raw(&self, features: &[f64]) -> f64 {
        let mut raw = 0.0;
        for chunk in self.roots.chunks(LANES) {
            let mut cur = [0u32; LANES];
            cur[..chunk.len()].copy_from_slice(chunk);
            let lanes = &mut cur[..chunk.len()];
            loop {
                let mut moving = false;
                for c in lanes.iter_mut() {
                    let n = &self.nodes[*c as usize];
                    if n.feature != LEAF {
                        moving = true;
                        *c = n.next(features.get(n.feature as usize).copied().unwrap_or(f64::NAN));
                    }
                }
                if !moving {
                    break;
                }
            }
            raw += lanes.iter().map(|c| self.nodes[*c as usize].value).sum::<f64>();
        }
        raw
    }

    /// Adds each feature's share to `out` (the change of the node value along the path);
    /// returns the raw score and the bias (the roots' values).
    fn explain(&self, features: &[f64], out: &mut [f64]) -> (f64, f64) {
        let (mut raw, mut bias) = (0.0, 0.0);
        for chunk in self.roots.chunks(LANES) {
            let mut cur = [0u32; LANES];
            cur[..chunk.len()].copy_from_slice(chunk);
            let lanes = &mut cur[..chunk.len()];
            bias += lanes.iter().map(|c| self.nodes[*c as usize].value).sum::<f64>();
            loop {
                let mut moving = false;
                for c in lanes.iter_mut() {
                    let n = &self.nodes[*c as usize];
                    if n.feature == LEAF {
                        continue;
                    }
                    moving = true;
                    *c = n.next(features.get(n.feature as usize).copied().unwrap_or(f64::NAN));
                    if let Some(o) = out.get_mut(n.feature as usize) {
                        *o += self.nodes[*c as usize].value - n.value;
                    }
                }
                if !moving {
                    break;
                }
            }
            raw += lanes.iter().map(|c| self.nodes[*c as usize].value).sum::<f64>();
        }
        (raw, bias)
    }
}

/// A gradient-boosted tree model.
#[derive(Clone, Debug)]
pub struct Model {
    pub trees: Vec<Tree>,
    pub link: Link,
    pub feature_names: Vec<String>,
    flat: Flat,
}

/// A prediction and why: the bias plus each feature's contribution make the raw score.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    pub raw: f64,
    pub bias: f64,
    pub contributions: Vec<f64>,
}

impl Model {
    /// The raw score (log-odds for a binary model). Missing features are `NAN`.
    pub fn raw_score(&self, features: &[f64]) -> f64 {
        self.flat.raw(features)
    }

    /// A model of these trees (each tree's splits and leaves as the importers and the
    /// trainer build them).
    pub fn new(trees: Vec<Tree>, link: Link, feature_names: Vec<String>) -> Self {
        let flat = Flat::new(&trees);
        Self { trees, link, feature_names, flat }
    }

    /// The score through the model's link (a probability for a binary model).
    pub fn predict(&self, features: &[f64]) -> f64 {
        let raw = self.raw_score(features);
        match self.link {
            Link::Sigmoid(k) => 1.0 / (1.0 + (-k * raw).exp()),
            Link::Identity => raw,
        }
    }

    /// The raw score with each feature's share of it.
    pub fn explain(&self, features: &[f64]) -> Explanation {
        let mut contributions = vec![0.0; self.feature_names.len()];
        let (raw, bias) = self.explain_into(features, &mut contributions);
        Explanation { raw, bias, contributions }
    }

    /// Adds each feature's share of the raw score to `out` (as long as the model's
    /// features, zeroed by the caller), in the same walk that scores; returns the raw
    /// score and the bias.
    pub fn explain_into(&self, features: &[f64], out: &mut [f64]) -> (f64, f64) {
        self.flat.explain(features, out)
    }

    pub fn trees(&self) -> usize {
        self.trees.len()
    }

    /// Reads LightGBM's text model format (binary and regression objectives, numerical
    /// splits; categorical splits and linear trees are refused with a clear error).
    pub fn from_lightgbm(text: &str) -> Result<Self, ModelError> {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some("tree") {
            return err("not a LightGBM text model (it does not start with \"tree\")");
        }
        let mut header = std::collections::HashMap::new();
        for line in text.lines().take_while(|l| !l.starts_with("Tree=")) {
            if let Some((k, v)) = line.split_once('=') {
                header.insert(k.trim(), v.trim());
            }
        }
        if header.get("num_class").is_some_and(|n| *n != "1") {
            return err("multi-class models are not supported");
        }
        let max_feature: usize = header
            .get("max_feature_idx")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ModelError("no max_feature_idx".into()))?;
        let feature_names: Vec<String> = match header.get("feature_names") {
            Some(names) => names.split_whitespace().map(str::to_string).collect(),
            None => (0..=max_feature).map(|i| format!("f{i}")).collect(),
        };
        if feature_names.len() != max_feature + 1 {
            return err("feature_names does not match max_feature_idx");
        }
        let objective = header.get("objective").copied().unwrap_or("regression");
        let link = if objective.starts_with("binary") {
            let k = objective
                .split_whitespace()
                .find_map(|p| p.strip_prefix("sigmoid:"))
                .map_or(Ok(1.0), |k| {
                    k.parse::<f64>().map_err(|_| ModelError("bad sigmoid".into()))
                })?;
            Link::Sigmoid(k)
        } else if objective.starts_with("regression") {
            Link::Identity
        } else {
            return err(format!("objective {objective:?} is not supported (binary or regression)"));
        };
        let mut trees = Vec::new();
        for block in text.split("\nTree=").skip(1) {
            let block = block.split("\nend of trees").next().unwrap_or(block);
            trees.push(parse_tree(block, feature_names.len())?);
        }
        if trees.is_empty() {
            return err("the model has no trees");
        }
        Ok(Self::new(trees, link, feature_names))
    }
}

fn parse_tree(block: &str, features: usize) -> Result<Tree, ModelError> {
    let mut fields = std::collections::HashMap::new();
    for line in block.lines().skip(1) {
        if let Some((k, v)) = line.split_once('=') {
            fields.insert(k.trim(), v.trim());
        }
    }
    let id = block.lines().next().unwrap_or("?").trim();
    let get = |name: &str| {
        fields.get(name).copied().ok_or_else(|| ModelError(format!("tree {id}: no {name}")))
    };
    let list = |name: &str| -> Result<Vec<&str>, ModelError> {
        Ok(get(name)?.split_whitespace().collect())
    };
    let num = |name: &str, s: &str| -> Result<f64, ModelError> {
        s.parse::<f64>().map_err(|_| ModelError(format!("tree {id}: {name} has {s:?}")))
    };
    if fields.get("is_linear").is_some_and(|v| *v != "0") {
        return err(format!("tree {id}: linear trees are not supported"));
    }
    if fields.get("num_cat").is_some_and(|v| *v != "0") {
        return err(format!("tree {id}: categorical splits are not supported"));
    }
    let num_leaves: usize =
        get("num_leaves")?.parse().map_err(|_| ModelError(format!("tree {id}: bad num_leaves")))?;
    let leaves: Vec<f64> =
        list("leaf_value")?.iter().map(|v| num("leaf_value", v)).collect::<Result<_, _>>()?;
    if leaves.len() != num_leaves || num_leaves == 0 {
        return err(format!(
            "tree {id}: leaf_value has {} values for {num_leaves} leaves",
            leaves.len()
        ));
    }
    if num_leaves == 1 {
        return Ok(Tree { splits: Vec::new(), leaves });
    }
    let n = num_leaves - 1;
    let split_feature = list("split_feature")?;
    let threshold = list("threshold")?;
    let decision_type = list("decision_type")?;
    let left = list("left_child")?;
    let right = list("right_child")?;
    let values = list("internal_value")?;
    for (name, l) in [
        ("split_feature", &split_feature),
        ("threshold", &threshold),
        ("decision_type", &decision_type),
        ("left_child", &left),
        ("right_child", &right),
        ("internal_value", &values),
    ] {
        if l.len() != n {
            return err(format!("tree {id}: {name} has {} values for {n} splits", l.len()));
        }
    }
    let child = |name: &str, s: &str| -> Result<i32, ModelError> {
        let c: i32 = s.parse().map_err(|_| ModelError(format!("tree {id}: bad {name} {s:?}")))?;
        let ok = if c >= 0 { (c as usize) < n } else { (!c as usize) < num_leaves };
        match ok {
            true => Ok(c),
            false => err(format!("tree {id}: {name} {c} is out of range")),
        }
    };
    let mut splits = Vec::with_capacity(n);
    for i in 0..n {
        let feature: usize = split_feature[i]
            .parse()
            .map_err(|_| ModelError(format!("tree {id}: bad split_feature")))?;
        if feature >= features {
            return err(format!("tree {id}: split on feature {feature} of {features}"));
        }
        let dt: u8 = decision_type[i]
            .parse()
            .map_err(|_| ModelError(format!("tree {id}: bad decision_type")))?;
        if dt & 1 != 0 {
            return err(format!("tree {id}: categorical splits are not supported"));
        }
        let missing = match (dt >> 2) & 3 {
            0 => Missing::None,
            1 => Missing::Zero,
            2 => Missing::NaN,
            _ => return err(format!("tree {id}: unknown missing type in decision_type {dt}")),
        };
        splits.push(Split {
            feature,
            threshold: num("threshold", threshold[i])?,
            default_left: dt & 2 != 0,
            missing,
            left: child("left_child", left[i])?,
            right: child("right_child", right[i])?,
            value: num("internal_value", values[i])?,
        });
    }
    // Every path must end at a leaf: children point only forwards, so walks terminate.
    for (i, s) in splits.iter().enumerate() {
        for c in [s.left, s.right] {
            if c >= 0 && c as usize <= i {
                return err(format!("tree {id}: split {i} points back to split {c}"));
            }
        }
    }
    Ok(Tree { splits, leaves })
}

impl Model {
    /// The model in LightGBM's text format (what `Booster.save_model` writes), which
    /// [`Model::from_lightgbm`] and LightGBM itself read back to the same predictions.
    ///
    /// Numbers are written in full (shortest round-trip form). The model keeps no training
    /// statistics, so `split_gain`, `*_weight` and `*_count` are written as zeros (LightGBM
    /// predicts without them; its SHAP values and gain importances need them), and
    /// `feature_infos` gives the range of each feature's thresholds (`none` if unused)
    /// rather than of its training values.
    pub fn to_lightgbm(&self) -> String {
        use std::fmt::Write as _;
        let features = self.feature_names.len();
        let mut ranges = vec![(f64::INFINITY, f64::NEG_INFINITY); features];
        // (f64::MAX only separates the missing values from all others.)
        for s in self.trees.iter().flat_map(|t| &t.splits).filter(|s| s.threshold < f64::MAX) {
            if let Some(r) = ranges.get_mut(s.feature) {
                *r = (r.0.min(s.threshold), r.1.max(s.threshold));
            }
        }
        let infos: Vec<String> = ranges
            .iter()
            .map(|&(lo, hi)| if lo <= hi { format!("[{lo:?}:{hi:?}]") } else { "none".into() })
            .collect();
        let blocks: Vec<String> =
            self.trees.iter().enumerate().map(|(i, t)| tree_text(i, t)).collect();
        let objective = match self.link {
            Link::Sigmoid(k) => format!("binary sigmoid:{k}"),
            Link::Identity => "regression".to_string(),
        };
        let mut out = String::new();
        out.push_str("tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\n");
        let _ = writeln!(out, "max_feature_idx={}", features.saturating_sub(1));
        let _ = writeln!(out, "objective={objective}");
        let _ = writeln!(out, "feature_names={}", self.feature_names.join(" "));
        let _ = writeln!(out, "feature_infos={}", infos.join(" "));
        let sizes: Vec<String> = blocks.iter().map(|b| b.len().to_string()).collect();
        let _ = writeln!(out, "tree_sizes={}\n", sizes.join(" "));
        for block in &blocks {
            out.push_str(block);
        }
        out.push_str("end of trees\n");
        out
    }
}

/// One `Tree=i` block, with the two blank lines LightGBM puts after it (`tree_sizes`
/// counts them).
fn tree_text(i: usize, t: &Tree) -> String {
    use std::fmt::Write as _;
    fn join<T>(items: impl Iterator<Item = T>, f: impl Fn(T) -> String) -> String {
        items.map(f).collect::<Vec<_>>().join(" ")
    }
    let s = &t.splits;
    let zeros = |n: usize| vec!["0"; n].join(" ");
    let decision = |s: &Split| {
        let missing = match s.missing {
            Missing::None => 0u8,
            Missing::Zero => 1,
            Missing::NaN => 2,
        };
        (u8::from(s.default_left) << 1 | missing << 2).to_string()
    };
    let mut out = String::new();
    let _ = writeln!(out, "Tree={i}");
    let _ = writeln!(out, "num_leaves={}", t.leaves.len());
    out.push_str("num_cat=0\n");
    let _ = writeln!(out, "split_feature={}", join(s.iter(), |s| s.feature.to_string()));
    let _ = writeln!(out, "split_gain={}", zeros(s.len()));
    let _ = writeln!(out, "threshold={}", join(s.iter(), |s| format!("{:?}", s.threshold)));
    let _ = writeln!(out, "decision_type={}", join(s.iter(), decision));
    let _ = writeln!(out, "left_child={}", join(s.iter(), |s| s.left.to_string()));
    let _ = writeln!(out, "right_child={}", join(s.iter(), |s| s.right.to_string()));
    let _ = writeln!(out, "leaf_value={}", join(t.leaves.iter(), |v| format!("{v:?}")));
    let _ = writeln!(out, "leaf_weight={}", zeros(t.leaves.len()));
    let _ = writeln!(out, "leaf_count={}", zeros(t.leaves.len()));
    let _ = writeln!(out, "internal_value={}", join(s.iter(), |s| format!("{:?}", s.value)));
    let _ = writeln!(out, "internal_weight={}", zeros(s.len()));
    let _ = writeln!(out, "internal_count={}", zeros(s.len()));
    out.push_str("is_linear=0\nshrinkage=1\n\n\n");
    out
}
