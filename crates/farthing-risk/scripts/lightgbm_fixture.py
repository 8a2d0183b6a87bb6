"""Makes the LightGBM fixture for farthing-risk's imported-model test.

Trains a small binary classifier on synthetic data (missing values included), saves the
model in LightGBM's text format and the library's own predictions on held-out rows, so the
Rust evaluator can be held to them. Run from the repository root:

    pip install lightgbm numpy
    python3 crates/farthing-risk/scripts/lightgbm_fixture.py
"""
import json
import numpy as np
import lightgbm as lgb

rng = np.random.default_rng(7)
n = 4000
x = rng.normal(size=(n, 5))
x[rng.random(n) < 0.1, 2] = np.nan  # missing values take the trees' default branches
logit = 1.5 * x[:, 0] - 2.0 * (x[:, 1] > 0.5) + np.nan_to_num(x[:, 2]) * x[:, 3]
y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
params = {"objective": "binary", "num_leaves": 15, "learning_rate": 0.1, "verbose": -1, "seed": 7}
model = lgb.train(params, lgb.Dataset(x[:3000], y[:3000]), num_boost_round=40)
out = "crates/farthing-risk/tests/data/"
model.save_model(out + "lightgbm_binary.txt")
rows = x[3000:3200]
raw = model.predict(rows, raw_score=True)
prob = model.predict(rows)
with open(out + "lightgbm_binary_expected.json", "w") as f:
    json.dump({
        "rows": [[None if np.isnan(v) else float(v) for v in r] for r in rows],
        "raw": [float(v) for v in raw],
        "probability": [float(v) for v in prob],
    }, f)
