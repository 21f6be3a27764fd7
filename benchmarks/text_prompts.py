"""Text prompts measured: how often the shipped classifier agrees with the class a prompt names, for
samples of `text-ddpm` at several guidance scales (issue 17).

For each dataset a text-ddpm trains with its defaults (or --steps) and the --encoder; then for each
class k, --n samples are drawn from the prompt "a <class k>" (--seen: a caption template of the
training) and from "a drawing of a <class k>" (--unseen: wording it never saw) at each guidance
scale w; the shipped extractor's classifier (mnist, fashion_mnist) labels them, and the agreement is
the share labelled k, averaged over the classes (chance: 1 / 10).

    .bench-venv/bin/python benchmarks/text_prompts.py --data-root ../shared/datasets --threads 2   # needs genlab[text]
    .venv/bin/python benchmarks/text_prompts.py --quick --encoder hashing                          # a smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import genlab  # noqa: E402
from genlab.metrics.features import compute_features, get_extractor  # noqa: E402
from genlab.models.diffusion.text import class_phrase  # noqa: E402
from _common import add_run_options, environment, format_table, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="fashion_mnist,mnist")
    parser.add_argument("--data-root", default="../shared/datasets")
    parser.add_argument("--encoder", default="minilm", help="the text encoder (minilm needs genlab[text]; hashing: none)")
    parser.add_argument("--scales", default="0,1,2,4", help="guidance scales w, comma-separated")
    parser.add_argument("--seen", default="a {}", help="a training caption template")
    parser.add_argument("--unseen", default="a drawing of a {}", help="a template never seen in training")
    parser.add_argument("-n", type=int, default=100, help="samples per class, prompt and scale (default 100)")
    add_run_options(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    scales = [float(w) for w in args.scales.split(",")]
    results: dict[str, Any] = {}
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        data = genlab.data.load("digits" if args.quick else name, root=args.data_root, seed=0)
        torch.manual_seed(0)
        model = genlab.create("text-ddpm", data=data, text_encoder=args.encoder)
        options = {"max_steps": 20} if args.quick else ({"max_steps": args.steps} if args.steps else {})
        start = time.perf_counter()
        model = genlab.fit(model, data, progress=False, sample_every=0, checkpoint_every=0, tensorboard=False,
                           **options).sampling_model.eval()
        fit_s = time.perf_counter() - start
        classifier = get_extractor(data.spec.name)
        n = 4 if args.quick else args.n
        rows = {}
        for label, template in (("seen", args.seen), ("unseen", args.unseen)):
            for w in scales:
                agree = []
                for k, class_name in enumerate(data.spec.class_names):
                    prompt = template.format(class_phrase(class_name))
                    e = model.prompt_embeddings([prompt]).expand(n, -1)
                    x = model.sample(n, cond=e, generator=torch.Generator().manual_seed(k), guidance_scale=w)
                    predicted = compute_features(classifier, x, output="logits").argmax(1).cpu()
                    agree.append(float((predicted == k).float().mean()))
                rows[f"{label} '{template}', w={w:g}"] = {"agreement": sum(agree) / len(agree), "per_class": agree}
                print(f"{name}: {label} template, w={w:g}: agreement {sum(agree) / len(agree):.3f}", flush=True)
        results[name] = {"fit_s": fit_s, "rows": rows}
        print(f"\n{name}: text-ddpm ({args.encoder}) trained in {fit_s:.0f} s; {n} samples per class and setting")
        print(format_table(["prompt, guidance", "agreement"], [[k, r["agreement"]] for k, r in rows.items()]))
    write_json(args.json, {"settings": vars(args), "environment": environment(), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
