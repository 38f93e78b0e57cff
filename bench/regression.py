"""``python -m bench.regression``: softgrad's regressors beside scikit-learn's on the diabetes data.

The same split, the same standardised features and targets, the same
network and optimizer settings on both sides: a linear model (softgrad: Adam
on the MSE until it settles on the least-squares solution; scikit-learn:
``LinearRegression``, closed form) and a small MLP (10-32-1 ReLU, Adam lr
1e-3, batch 32, no weight decay, 200 epochs on both sides). Test RMSE, MAE
and R² in the data's units (disease progression), averaged over ``--seeds``
initialisations for the MLPs.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np
from softgrad import datasets
from softgrad.training import fit, predict
from softgrad.training.metrics import regression_metrics
from softgrad.training.models import MLP

HIDDEN, MLP_LR, MLP_EPOCHS, BATCH = 32, 1e-3, 200, 32


def _original(data, y):
    return np.asarray(y, np.float64) * np.asarray(data.target_std) + np.asarray(data.target_mean)


def softgrad_linear(data, backend: str) -> dict[str, float]:
    model = MLP([data.num_features, 1], seed=0, dtype=np.float64)
    fit(model, data, backend=backend, optimizer="adam", lr=0.1, epochs=3000, batch_size=len(data.y_train),
        progress=False, log=None)
    return regression_metrics(_original(data, data.y_test), predict(model, data.x_test, loss="mse",
                                                                    target_mean=data.target_mean,
                                                                    target_std=data.target_std))


def softgrad_mlp(data, backend: str, seed: int) -> dict[str, float]:
    model = MLP([data.num_features, HIDDEN, 1], seed=seed, dtype=np.float32)
    fit(model, data, backend=backend, optimizer="adam", lr=MLP_LR, epochs=MLP_EPOCHS, batch_size=BATCH,
        lr_schedule="constant", seed=seed, progress=False, log=None)
    return regression_metrics(_original(data, data.y_test), predict(model, data.x_test, loss="mse",
                                                                    target_mean=data.target_mean,
                                                                    target_std=data.target_std))


def sklearn_linear(data) -> dict[str, float]:
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(data.x_train.astype(np.float64), _original(data, data.y_train)[:, 0])
    return regression_metrics(_original(data, data.y_test)[:, 0], model.predict(data.x_test.astype(np.float64)))


def sklearn_mlp(data, seed: int) -> dict[str, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    model = MLPRegressor(hidden_layer_sizes=(HIDDEN,), activation="relu", solver="adam", alpha=0.0,
                         learning_rate_init=MLP_LR, batch_size=BATCH, max_iter=MLP_EPOCHS, tol=0.0,
                         n_iter_no_change=10**9, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(data.x_train, data.y_train[:, 0])
    return regression_metrics(_original(data, data.y_test)[:, 0], _original(data, model.predict(data.x_test)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.regression", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", nargs="+", default=["numpy", "torch"], help="softgrad backends (default: numpy torch)")
    parser.add_argument("--seeds", type=int, default=3, help="MLP initialisations averaged (default 3)")
    args = parser.parse_args(argv)
    data = datasets.load("diabetes")
    print(f"{data.source}: {len(data.y_train)} train / {len(data.y_test)} test")
    rows: list[tuple[str, dict[str, float]]] = []
    for backend in args.backend:
        rows.append((f"softgrad {backend}: linear (Adam on MSE)", softgrad_linear(data, backend)))
    try:
        rows.append(("scikit-learn LinearRegression", sklearn_linear(data)))
    except ImportError:
        print("scikit-learn is not installed: its rows are left out", file=sys.stderr)
    for backend in args.backend:
        runs = [softgrad_mlp(data, backend, seed) for seed in range(args.seeds)]
        rows.append((f"softgrad {backend}: MLP 10-{HIDDEN}-1", {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}))
    try:
        runs = [sklearn_mlp(data, seed) for seed in range(args.seeds)]
        rows.append((f"scikit-learn MLPRegressor (10-{HIDDEN}-1)", {k: float(np.mean([r[k] for r in runs]))
                                                                    for k in runs[0]}))
    except ImportError:
        pass
    print(f"{'model':<42} {'test RMSE':>10} {'MAE':>8} {'R²':>8}")
    for name, figures in rows:
        print(f"{name:<42} {figures['rmse']:>10.2f} {figures['mae']:>8.2f} {figures['r2']:>8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
