//! XGBoost models, read from the JSON that `Booster.save_model("model.json")` writes
//! (XGBoost 1.0 and later), into the same [`Model`] as LightGBM's: evaluated and explained
//! the same way.
//!
//! XGBoost's rules, kept exactly: features are read as `f32` and a split goes left when the
//! value is strictly below its (`f32`) threshold; a missing value (`NAN`, or a feature past
//! the end of the slice) takes the node's default branch. Each threshold is turned once,
//! at import, into the largest `f64` that XGBoost would send left, so the shared walk
//! (`x <= threshold`) takes the same branches for every `f64` input.
//!
//! Node values (for [`Model::explain`]) are the cover-weighted means of the leaves below,
//! as XGBoost's own path-based contributions (`pred_contribs=True, approx_contribs=True`)
//! use; the stored `base_weights` are not: on inner nodes they lack the learning rate.
//!
//! The base score becomes a first, single-leaf tree (its margin), so [`Model::trees`]
//! counts one more tree than XGBoost does, and the explanation's bias includes it.

use serde_json::Value;

use crate::gbdt::{Link, Missing, Model, ModelError, Split, Tree};

fn err<T>(message: impl Into<String>) -> Result<T, ModelError> {
    Err(ModelError(message.into()))
}

impl Model {
    /// Reads XGBoost's JSON model format: tree boosters (`gbtree`, and `dart` with its
    /// tree weights), numerical splits, objectives `binary:logistic`, `reg:logistic`
    /// (probabilities), `binary:logitraw` and `reg:squarederror` (raw scores). Categorical
    /// splits, multi-class or multi-target models and linear boosters are refused with a
    /// clear error. All trees are used (as `Booster.predict` does without an
    /// `iteration_range`).
    pub fn from_xgboost_json(text: &str) -> Result<Self, ModelError> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| ModelError(format!("not an XGBoost JSON model: {e}")))?;
        let Some(learner) = root.get("learner").filter(|l| l.is_object()) else {
            return err("not an XGBoost JSON model (no \"learner\")");
        };
        let params = &learner["learner_model_param"];
        if count(params, "num_class")?.unwrap_or(0) > 1 {
            return err("multi-class models are not supported");
        }
        if count(params, "num_target")?.unwrap_or(1) > 1 {
            return err("multi-target models are not supported");
        }
        let Some(features) = count(params, "num_feature")? else {
            return err("no learner_model_param.num_feature");
        };
        let base_score = base_score(&params["base_score"])?;

        let Some(objective) = learner["objective"]["name"].as_str() else {
            return err("no objective.name");
        };
        let (link, bias) = match objective {
            "binary:logistic" | "reg:logistic" => {
                // The base score is a probability; XGBoost adds its logit to the margin.
                if !(base_score > 0.0 && base_score < 1.0) {
                    return err(format!(
                        "base_score {base_score} is not a probability strictly between 0 \
                         and 1"
                    ));
                }
                (Link::Sigmoid(1.0), -(1.0 / base_score - 1.0).ln())
            }
            "binary:logitraw" => {
                // From 1.4 on the base score is a margin here; older files may hold a
                // probability (whose logit was added).
                if version(&root) < (1, 4) {
                    return err("binary:logitraw models saved before XGBoost 1.4 are not \
                                supported (their base_score meant something else)");
                }
                (Link::Identity, base_score)
            }
            "reg:squarederror" => (Link::Identity, base_score),
            other => {
                return err(format!(
                    "objective {other:?} is not supported (binary:logistic, \
                     binary:logitraw, reg:logistic or reg:squarederror)"
                ));
            }
        };

        let booster = &learner["gradient_booster"];
        let (model, weights) = match booster["name"].as_str() {
            Some("gbtree") => (&booster["model"], None),
            Some("dart") => {
                let weights = booster["weight_drop"]
                    .as_array()
                    .ok_or_else(|| ModelError("dart: no weight_drop".into()))?
                    .iter()
                    .map(|w| w.as_f64().ok_or_else(|| ModelError("dart: bad weight_drop".into())))
                    .collect::<Result<Vec<_>, _>>()?;
                (&booster["gbtree"]["model"], Some(weights))
            }
            Some("gblinear") => return err("linear boosters (gblinear) are not supported"),
            Some(other) => return err(format!("booster {other:?} is not supported")),
            None => return err("no gradient_booster.name"),
        };
        let Some(json_trees) = model["trees"].as_array() else {
            return err("no gradient_booster trees");
        };
        if json_trees.is_empty() {
            return err("the model has no trees");
        }
        if let Some(w) = &weights {
            if w.len() != json_trees.len() {
                return err(format!("dart: {} weights for {} trees", w.len(), json_trees.len()));
            }
        }
        if let Some(info) = model["tree_info"].as_array() {
            if info.iter().any(|g| g.as_u64() != Some(0)) {
                return err("trees for more than one class or target are not supported");
            }
        }

        let feature_names: Vec<String> = match learner["feature_names"].as_array() {
            Some(names) if !names.is_empty() => names
                .iter()
                .map(|n| n.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| ModelError("feature_names are not all strings".into()))?,
            _ => (0..features).map(|i| format!("f{i}")).collect(),
        };
        if feature_names.len() != features {
            return err(format!(
                "{} feature_names for num_feature {features}",
                feature_names.len()
            ));
        }

        let mut trees = vec![Tree { splits: Vec::new(), leaves: vec![bias] }];
        for (i, t) in json_trees.iter().enumerate() {
            let weight = weights.as_ref().map_or(1.0, |w| w[i]);
            trees.push(parse_tree(t, i, features, weight)?);
        }
        Ok(Self::new(trees, link, feature_names))
    }
}

/// A count from a parameter block (XGBoost writes them as strings); `None` if absent.
fn count(params: &Value, name: &str) -> Result<Option<usize>, ModelError> {
    let bad = || ModelError(format!("{name} is not a count"));
    match &params[name] {
        Value::Null => Ok(None),
        Value::String(s) => s.trim().parse().map(Some).map_err(|_| bad()),
        Value::Number(n) => n.as_u64().map(|n| Some(n as usize)).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// The base score, as XGBoost keeps it (an `f32`): `"5E-1"`, or `"[5E-1]"` since 3.0.
fn base_score(v: &Value) -> Result<f64, ModelError> {
    let bad = || ModelError(format!("base_score {v} is not a number"));
    let value = match v {
        Value::Number(n) => n.as_f64().ok_or_else(bad)?,
        Value::String(s) => {
            let s = s.trim();
            let inner = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(s);
            if inner.contains(',') {
                return err("a base_score per target (multi-target) is not supported");
            }
            inner.trim().parse::<f64>().map_err(|_| bad())?
        }
        Value::Null => return err("no learner_model_param.base_score"),
        _ => return Err(bad()),
    };
    let value = f64::from(value as f32);
    if !value.is_finite() {
        return Err(bad());
    }
    Ok(value)
}

/// The (major, minor) version that saved the file; (0, 0) if it does not say.
fn version(root: &Value) -> (u64, u64) {
    let part = |i: usize| root["version"][i].as_u64().unwrap_or(0);
    (part(0), part(1))
}

fn parse_tree(t: &Value, id: usize, features: usize, weight: f64) -> Result<Tree, ModelError> {
    let array =
        |name: &str| t[name].as_array().ok_or_else(|| ModelError(format!("tree {id}: no {name}")));
    let ints = |name: &str| -> Result<Vec<i64>, ModelError> {
        array(name)?
            .iter()
            .map(|v| v.as_i64().ok_or_else(|| ModelError(format!("tree {id}: bad {name} {v}"))))
            .collect()
    };
    let floats = |name: &str| -> Result<Vec<f64>, ModelError> {
        array(name)?
            .iter()
            .map(|v| v.as_f64().ok_or_else(|| ModelError(format!("tree {id}: bad {name} {v}"))))
            .collect()
    };
    if count(&t["tree_param"], "size_leaf_vector")?.unwrap_or(1) > 1 {
        return err(format!("tree {id}: vector leaves (multi-target) are not supported"));
    }
    let categorical = match &t["split_type"] {
        Value::Null => false, // older files have no split_type: all numerical
        _ => ints("split_type")?.iter().any(|&s| s != 0),
    };
    if categorical || t["categories_nodes"].as_array().is_some_and(|c| !c.is_empty()) {
        return err(format!("tree {id}: categorical splits are not supported"));
    }
    let left = ints("left_children")?;
    let right = ints("right_children")?;
    let split_feature = ints("split_indices")?;
    let condition = floats("split_conditions")?;
    let cover = floats("sum_hessian")?;
    let default_left: Vec<bool> = array("default_left")?
        .iter()
        .map(|v| match v {
            Value::Bool(b) => Some(*b),
            _ => v.as_u64().filter(|&d| d <= 1).map(|d| d == 1),
        })
        .collect::<Option<_>>()
        .ok_or_else(|| ModelError(format!("tree {id}: bad default_left")))?;
    let n = left.len();
    if n == 0 {
        return err(format!("tree {id}: no nodes"));
    }
    for (name, len) in [
        ("right_children", right.len()),
        ("split_indices", split_feature.len()),
        ("split_conditions", condition.len()),
        ("sum_hessian", cover.len()),
        ("default_left", default_left.len()),
    ] {
        if len != n {
            return err(format!("tree {id}: {name} has {len} values for {n} nodes"));
        }
    }

    // The nodes reachable from the root, parents before children (pre-order), each once:
    // so the renumbered children always point forwards and every walk ends at a leaf.
    let mut order = Vec::with_capacity(n);
    let mut seen = vec![false; n];
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            return err(format!("tree {id}: node {i} is reached twice (not a tree)"));
        }
        order.push(i);
        match (left[i], right[i]) {
            (-1, -1) => {}
            (l, r) => {
                for c in [r, l] {
                    if c < 0 || c as usize >= n {
                        return err(format!("tree {id}: node {i} has child {c}, out of range"));
                    }
                    stack.push(c as usize);
                }
            }
        }
    }
    let is_leaf = |i: usize| left[i] == -1;

    // Node values: a leaf's own value, else the cover-weighted mean of its children's.
    let mut mean = vec![0.0; n];
    for &i in order.iter().rev() {
        mean[i] = if is_leaf(i) {
            condition[i]
        } else {
            let (l, r) = (left[i] as usize, right[i] as usize);
            if cover[i] > 0.0 {
                (mean[l] * cover[l] + mean[r] * cover[r]) / cover[i]
            } else {
                (mean[l] + mean[r]) / 2.0
            }
        };
    }

    // New references: splits and leaves numbered in pre-order.
    let mut reference = vec![0i32; n];
    let (mut splits_seen, mut leaves_seen) = (0i32, 0i32);
    for &i in &order {
        if is_leaf(i) {
            reference[i] = !leaves_seen;
            leaves_seen += 1;
        } else {
            reference[i] = splits_seen;
            splits_seen += 1;
        }
    }
    let mut splits = Vec::with_capacity(splits_seen as usize);
    let mut leaves = Vec::with_capacity(leaves_seen as usize);
    for &i in &order {
        if is_leaf(i) {
            leaves.push(weight * condition[i]);
            continue;
        }
        let feature =
            usize::try_from(split_feature[i]).ok().filter(|&f| f < features).ok_or_else(|| {
                ModelError(format!(
                    "tree {id}: split on feature {} of {features}",
                    split_feature[i]
                ))
            })?;
        let threshold = condition[i] as f32;
        if !threshold.is_finite() {
            return err(format!("tree {id}: threshold {} is not a finite f32", condition[i]));
        }
        splits.push(Split {
            feature,
            threshold: left_bound(threshold),
            default_left: default_left[i],
            missing: Missing::NaN,
            left: reference[left[i] as usize],
            right: reference[right[i] as usize],
            value: weight * mean[i],
        });
    }
    Ok(Tree { splits, leaves })
}

/// The largest `f64` that XGBoost sends left of the threshold `t` (finite): XGBoost reads
/// the feature as `f32` and goes left when it is strictly below, so for every non-NaN `x`,
/// `x <= left_bound(t)` exactly when `(x as f32) < t` (rounding to `f32` is monotonic).
pub(crate) fn left_bound(t: f32) -> f64 {
    // f64s as integers in the same order (the map behind `f64::total_cmp`).
    fn key(x: f64) -> i64 {
        let b = x.to_bits() as i64;
        b ^ (((b >> 63) as u64) >> 1) as i64
    }
    fn value(k: i64) -> f64 {
        f64::from_bits((k ^ (((k >> 63) as u64) >> 1) as i64) as u64)
    }
    let left = |k: i64| (value(k) as f32) < t;
    // Bisection between -inf (always left) and t itself (never left).
    let (mut lo, mut hi) = (key(f64::NEG_INFINITY), key(f64::from(t)));
    while i128::from(hi) - i128::from(lo) > 1 {
        let mid = ((i128::from(lo) + i128::from(hi)) / 2) as i64;
        if left(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    value(lo)
}

#[cfg(test)]
mod tests {
    use super::left_bound;
    use proptest::prelude::*;

    fn holds(t: f32) {
        let b = left_bound(t);
        assert!((b as f32) < t, "{t}: {b} should go left");
        assert!((b.next_up() as f32) >= t, "{t}: {} should go right", b.next_up());
    }

    #[test]
    fn edges() {
        for t in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::from_bits(1),
            -f32::from_bits(1),
            f32::MAX,
            f32::MIN,
            0.1,
            -0.1,
            1e30,
            -1e-30,
        ] {
            holds(t);
        }
        // On the threshold goes right; the f32 just below goes left; x = t - tiny rounds
        // up to t in f32, so it goes right too (plain f64 comparison would send it left).
        let t = 0.1f32;
        let below = f32::from_bits(t.to_bits() - 1);
        assert!(f64::from(t) > left_bound(t));
        assert!(f64::from(below) <= left_bound(t));
        assert!(f64::from(t) - 1e-12 > left_bound(t));
    }

    proptest! {
        #[test]
        fn every_finite_threshold(bits in any::<u32>()) {
            let t = f32::from_bits(bits);
            prop_assume!(t.is_finite());
            holds(t);
        }
    }
}
