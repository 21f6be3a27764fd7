"""Features for other tasks: a linear probe on the codes of genlab's encoder models against raw pixels
and PCA of the same size (issue 17).

Each model (ae, vae, vq-vae) trains on the training split with its defaults (or --steps), its codes
come from `genlab.apps.encode` (the VAE's posterior mean, the autoencoder's code, the VQ-VAE's
pre-quantisation grid z_e flattened), and a multinomial logistic regression on standardised
features (scikit-learn, lbfgs) trains on the training split's codes and is scored by accuracy on
the test split. The references: the raw pixels, and PCA fitted on the training pixels with as many
components as the code has dimensions (capped at the pixels').

    .venv/bin/python benchmarks/features.py --data mnist --data-root ../shared/datasets --threads 2
    .venv/bin/python benchmarks/features.py --quick     # digits, tiny budgets: a smoke run, numbers mean nothing
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import genlab  # noqa: E402
from genlab.apps import encode  # noqa: E402
from _common import add_run_options, environment, format_table, write_json  # noqa: E402

MODELS = ("ae", "vae", "vq-vae")


def probe(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray) -> dict[str, float]:
    """Test accuracy of a multinomial logistic regression on standardised features, and its fit time."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs's ConvergenceWarning on raw pixels at max_iter
        classifier.fit(train, train_labels)
    return {"accuracy": float((classifier.predict(test) == test_labels).mean()), "probe_s": time.perf_counter() - start,
            "dims": int(train.shape[1])}


def pca_features(train: np.ndarray, test: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(dims, train.shape[1], len(train)), random_state=0).fit(train)
    return pca.transform(train), pca.transform(test)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist", help="an image dataset with labels (default mnist)")
    parser.add_argument("--data-root", default="../shared/datasets", help="where mnist/ and fashion-mnist/ are")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    add_run_options(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = genlab.data.load("digits" if args.quick else args.data, root=args.data_root, seed=0)
    train, test = data.split("train"), data.split("test")
    x_train, y_train = train.tensors()
    x_test, y_test = test.tensors()
    pixels_train, pixels_test = x_train.flatten(1).numpy(), x_test.flatten(1).numpy()
    labels_train, labels_test = y_train.numpy(), y_test.numpy()
    model_options = dict(item.split("=", 1) for item in args.set)
    train_options: dict[str, Any] = {"max_steps": 20} if args.quick else ({"max_steps": args.steps} if args.steps else {})
    if args.batch_size:
        train_options["batch_size"] = args.batch_size
    rows: dict[str, dict[str, Any]] = {"raw pixels": probe(pixels_train, labels_train, pixels_test, labels_test)}
    print(f"raw pixels: accuracy {rows['raw pixels']['accuracy']:.4f}", flush=True)
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        torch.manual_seed(0)
        start = time.perf_counter()
        model = genlab.create(name, data=train, **model_options)
        run = genlab.fit(model, train, progress=False, sample_every=0, checkpoint_every=0, tensorboard=False, **train_options)
        fit_s = time.perf_counter() - start
        model = run.sampling_model.eval()
        codes_train = encode(model, x_train).codes.flatten(1).numpy()
        codes_test = encode(model, x_test).codes.flatten(1).numpy()
        rows[f"{name} codes"] = {**probe(codes_train, labels_train, codes_test, labels_test), "fit_s": fit_s,
                                 "steps": run.step}
        dims = codes_train.shape[1]
        key = f"PCA, {min(dims, pixels_train.shape[1])} components"
        if key not in rows:
            pca_train, pca_test = pca_features(pixels_train, pixels_test, dims)
            rows[key] = probe(pca_train, labels_train, pca_test, labels_test)
        print(f"{name}: codes {dims} dims, accuracy {rows[f'{name} codes']['accuracy']:.4f}; {key}: {rows[key]['accuracy']:.4f}",
              flush=True)
    print(f"\nlinear probe on {data.spec.name}: {len(x_train)} training and {len(x_test)} test images")
    print(format_table(["features", "dims", "test accuracy", "model fit s", "probe s"],
                       [[k, r["dims"], r["accuracy"], r.get("fit_s", ""), r["probe_s"]] for k, r in rows.items()]))
    write_json(args.json, {"settings": vars(args), "environment": environment(), "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
