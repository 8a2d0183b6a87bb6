"""Makes the XGBoost fixtures for farthing-risk's imported-model test.

Trains a small binary:logistic model on synthetic data (missing values included), saves it
in XGBoost's JSON format with the library's own margins, probabilities and path-based
per-feature contributions (`pred_contribs=True, approx_contribs=True`) on held-out rows,
so the Rust evaluator can be held to them. Some rows put a feature exactly on, or within
float32 rounding of, a root split's threshold: XGBoost reads features as float32 and goes
left only when strictly below. A few tiny models cover the other objectives and dart.
Run from the repository root:

    pip install xgboost-cpu numpy
    python3 crates/farthing-risk/scripts/xgboost_fixture.py
"""
import json
import numpy as np
import xgboost as xgb

out = "crates/farthing-risk/tests/data/"
names = ["x0", "x1", "x2", "x3", "x4"]
rng = np.random.default_rng(7)
n = 4000
x = rng.normal(size=(n, 5))
x[rng.random(n) < 0.1, 2] = np.nan  # missing values take the trees' default branches
logit = 1.5 * x[:, 0] - 2.0 * (x[:, 1] > 0.5) + np.nan_to_num(x[:, 2]) * x[:, 3]
y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
train = xgb.DMatrix(x[:3000], label=y[:3000], feature_names=names)
params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.1, "seed": 7}
model = xgb.train(params, train, num_boost_round=40)
model.save_model(out + "xgboost_binary.json")

# Held-out rows, then rows on the edge of the first trees' root splits.
rows = [list(r) for r in x[3000:3200]]
trees = json.loads(model.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
f32 = np.float32
for i, tree in enumerate(trees[:10]):
    feature, t = tree["split_indices"][0], f32(tree["split_conditions"][0])
    below = np.nextafter(t, f32(-np.inf))
    for v in [
        float(t),  # on the threshold: right
        float(t) - float(t - below) / 4,  # below in f64, rounds to t in f32: right
        (float(t) + float(below)) / 2,  # half way: rounds to the even one
        float(below),  # the float32 just below: left
    ]:
        r = list(x[3200 + i])
        r[feature] = v
        rows.append(r)
rows = np.array(rows)
test = xgb.DMatrix(rows, feature_names=names)
margin = model.predict(test, output_margin=True)
prob = model.predict(test)
contribs = model.predict(test, pred_contribs=True, approx_contribs=True)


def cells(r):
    return [None if np.isnan(v) else float(v) for v in r]


with open(out + "xgboost_expected.json", "w") as f:
    json.dump({
        "xgboost": xgb.__version__,
        "rows": [cells(r) for r in rows],
        "edge_rows": 40,
        "margin": [float(v) for v in margin],
        "probability": [float(v) for v in prob],
        # One column per feature, then the bias (base score and the trees' root values).
        "contributions": [[float(v) for v in c] for c in contribs],
    }, f)

# Tiny models for the other objectives, each with its predictions on a few rows.
reg_y = logit + rng.normal(size=n)
cases = [
    ("binary:logitraw", y, {}),
    ("reg:logistic", y, {}),
    ("reg:squarederror", reg_y, {}),
    ("binary:logistic", y, {"booster": "dart", "rate_drop": 0.3, "skip_drop": 0.0}),
    ("binary:logistic", y, {"base_score": 0.3}),
]
small = []
rows = x[3200:3220]
for objective, label, extra in cases:
    d = xgb.DMatrix(x[:3000], label=label[:3000])
    m = xgb.train({"objective": objective, "max_depth": 2, "eta": 0.3, "seed": 7, **extra},
                  d, num_boost_round=5)
    test = xgb.DMatrix(rows)
    small.append({
        "objective": objective,
        "booster": extra.get("booster", "gbtree"),
        "model": json.loads(m.save_raw("json")),
        "margin": [float(v) for v in m.predict(test, output_margin=True)],
        "prediction": [float(v) for v in m.predict(test)],
    })
with open(out + "xgboost_objectives.json", "w") as f:
    json.dump({"rows": [cells(r) for r in rows], "models": small}, f)
