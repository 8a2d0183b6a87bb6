"""Checks that LightGBM loads a model trained by farthing-risk and predicts what the crate
predicted, on held-out rows with missing values. Run by hand from the repository root (it
is not part of the Rust tests, which need no Python):

    pip install lightgbm numpy
    cargo run --release -p farthing-risk --example train_synthetic -- 200000 30 100 /tmp/trained
    python3 crates/farthing-risk/scripts/check_trained_model.py /tmp/trained

The directory holds `model.txt` (LightGBM's text format, from `Model::to_lightgbm`) and
`rows.csv` (feature values, then the crate's raw score and probability per row).
"""
import sys

import lightgbm as lgb
import numpy as np

directory = sys.argv[1] if len(sys.argv) > 1 else "/tmp/trained"
booster = lgb.Booster(model_file=f"{directory}/model.txt")
table = np.genfromtxt(f"{directory}/rows.csv", delimiter=",", names=True)
columns = table.dtype.names
features = [c for c in columns if c not in ("raw", "probability")]
assert features == booster.feature_name(), (features, booster.feature_name())
x = np.column_stack([table[c] for c in features])
raw = booster.predict(x, raw_score=True)
probability = booster.predict(x)
raw_error = float(np.max(np.abs(raw - table["raw"])))
probability_error = float(np.max(np.abs(probability - table["probability"])))
missing_rows = int(np.isnan(x).any(axis=1).sum())
print(
    f"{booster.num_trees()} trees, {len(x)} rows ({missing_rows} with missing values): "
    f"largest difference {raw_error:.3g} in raw score, {probability_error:.3g} in probability"
)
# LightGBM also re-saves the model it loaded; the trees must come back unchanged.
again = lgb.Booster(model_str=booster.model_to_string())
assert np.array_equal(again.predict(x, raw_score=True), raw)
if raw_error > 1e-9 or probability_error > 1e-9 or missing_rows == 0:
    sys.exit("MISMATCH")
print("ok")
