"""Run the tiny SD3-shaped pipeline twice, in torch and with its transformer lowered onto a simulated 2x4 mesh
(cfg2 sp2 tp2), and write both images side by side as a PNG, with their PCC.

    python examples/pipeline_png.py [--out out/sd3_pipeline.png] [--mesh "2x4 cfg2@1 sp2@0 tp2@1"] [--steps 8]

The weights are random (nothing is downloaded), so the picture is noise shaped by a VAE; what to look at is that
the two halves are the same picture.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch
from PIL import Image

import meshdit
from meshdit.model_zoo import pipelines
from meshdit.runtime.pcc import pcc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/sd3_pipeline.png")
    parser.add_argument("--mesh", default="2x4 cfg2@1 sp2@0 tp2@1")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--scale", type=int, default=8, help="nearest-neighbour upscaling of the 32x32 images")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as vocab_dir:
        pipe = pipelines.tiny_pipeline("sd3", vocab_dir)
        reference = pipe(**pipelines.call_arguments("sd3", args.steps)).images[0]
        pipe.transformer = meshdit.compile_transformer(pipe.transformer, args.mesh, dtype=args.dtype)
        lowered = pipe(**pipelines.call_arguments("sd3", args.steps)).images[0]
    figure = pcc(torch.as_tensor(reference), torch.as_tensor(lowered))

    def picture(image):
        pixels = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
        return Image.fromarray(pixels).resize((pixels.shape[1] * args.scale, pixels.shape[0] * args.scale),
                                              Image.NEAREST)

    left, right = picture(reference), picture(lowered)
    gap = 8
    sheet = Image.new("RGB", (left.width + gap + right.width, left.height), (255, 255, 255))
    sheet.paste(left, (0, 0))
    sheet.paste(right, (left.width + gap, 0))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}: left torch, right meshdit on the simulated {args.mesh} mesh ({args.dtype}), "
          f"{args.steps} steps; image PCC {figure:.6f}")
    return figure


if __name__ == "__main__":
    main()
