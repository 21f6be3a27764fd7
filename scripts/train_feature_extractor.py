"""Train the small CNN classifier whose penultimate layer genlab uses as a feature space for FID,
KID and precision/recall on datasets where Inception-v3 features make little sense.

    python scripts/train_feature_extractor.py --data digits
        -> src/genlab/metrics/weights/digits.safetensors (the file shipped with genlab)
    python scripts/train_feature_extractor.py --data mnist --root ~/data --out mnist-features.safetensors
        -> a file to pass as `--extractor mnist-features.safetensors` / get_extractor(path)
    python scripts/train_feature_extractor.py --data digits --check
        -> retrain and verify the shipped file's recorded test accuracy is reproduced
    python scripts/train_feature_extractor.py --data cifar10 --root ~/data --batch-norm --hflip \\
            --widths 32,64,128,128,256 --pool-after 0,1,3 --max-shift 2 --epochs 12
        -> a deeper network with batch norm and mirrored training images, for natural images

Trains on the dataset's seeded "train" split, keeps the epoch with the best "val" accuracy and
reports the accuracy on the "test" split, which is stored in the file's metadata. Training is
deterministic on the CPU for a given --seed (with the default --threads 1). The default 40 epochs
suit digits; for larger datasets use fewer and --device cuda where there is one. The README's
"Evaluation" section gives the command that built each shipped file, its time and its accuracy;
the same command with --check rebuilds a file and compares.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import genlab.data
from genlab.errors import ConfigError
from genlab.metrics.features import ClassifierFeatures, train_feature_classifier

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "src" / "genlab" / "metrics" / "weights"
SHIPPED = {"digits", "mnist", "fashion_mnist", "cifar10"}


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 32,64,64, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset name or path understood by genlab.data.load")
    parser.add_argument("--root", default=None, help="folder of standard datasets (mnist, cifar10, ...)")
    parser.add_argument(
        "--out", default=None, help="output .safetensors (default: the shipped file for digits, else ./<data>-features.safetensors)"
    )
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="seeds the data splits and the training")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--feature-dim", type=int, default=128)
    parser.add_argument("--max-shift", type=int, default=1, help="random translations of up to this many pixels")
    parser.add_argument("--hflip", action="store_true", help="random left-right mirroring (natural images, not digits)")
    parser.add_argument("--widths", type=_ints, default=(32, 64, 64), help="channels of each conv3x3, e.g. 32,64,64")
    parser.add_argument("--pool-after", type=_ints, default=(1,), help="indices of the convs followed by 2x2 max pooling, e.g. 1")
    parser.add_argument("--batch-norm", action="store_true", help="batch norm after each conv")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="CPU threads; 1 (default) fixes the order of float sums, so the same seed gives the same bits",
    )
    parser.add_argument("--check", action="store_true", help="do not write; compare with the accuracy recorded in --out")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    data = genlab.data.load(args.data, root=args.root, seed=args.seed)
    # a catalog dataset goes by its spec's name (aliases such as fashion-mnist -> fashion_mnist),
    # the name genlab eval looks the shipped extractor up by
    name = Path(str(args.data)).stem if Path(str(args.data)).exists() else data.spec.name
    if args.out:
        out = Path(args.out)
    elif name in SHIPPED:
        out = SHIPPED_DIR / f"{name}.safetensors"
    else:
        out = Path(f"{name}-features.safetensors")
    if data.spec.kind != "image" or data.labels is None:
        labels = "yes" if data.labels is not None else "no"
        print(f"error: {name!r} must be a labelled image dataset (kind={data.spec.kind}, labels={labels})", file=sys.stderr)
        return 2
    x_train, y_train = data.split("train").tensors()
    val = data.split("val").tensors() if "val" in data.split_names else None
    test = data.split("test").tensors() if "test" in data.split_names else None

    start = time.perf_counter()
    try:
        model, accuracy = train_feature_classifier(
            x_train,
            y_train,
            epochs=args.epochs,
            seed=args.seed,
            batch_size=args.batch_size,
            lr=args.lr,
            max_shift=args.max_shift,
            hflip=args.hflip,
            feature_dim=args.feature_dim,
            widths=args.widths,
            pool_after=args.pool_after,
            batch_norm=args.batch_norm,
            num_classes=data.spec.num_classes,
            val=val,
            test=test,
            info={"dataset": name, "source": data.source, "input_shape": list(data.spec.shape)},
            device=args.device,
            log=None if args.quiet else print,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    print(f"{name}: test accuracy {accuracy:.4f} on {0 if test is None else len(test[1])} images ({elapsed:.1f} s)")

    if args.check:
        shipped = ClassifierFeatures.load(out)
        recorded = shipped.info.get("test_accuracy")
        pairs = zip(shipped.state_dict().values(), model.cpu().state_dict().values(), strict=True)
        same_weights = all(torch.equal(a, b) for a, b in pairs)
        same = recorded == accuracy
        print(f"{out}: recorded test accuracy {recorded}; retrained {accuracy}: {'reproduced' if same else 'DIFFERENT'}; "
              f"weights {'bit-identical' if same_weights else 'differ (another torch version or CPU?)'}")
        return 0 if same else 1
    model.cpu().save(out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
