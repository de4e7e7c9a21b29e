"""Command line: `python -m meshdit demo` and `python -m meshdit plan`.

    python -m meshdit demo                       lower the tiny SD3 model on a simulated 2x4 mesh (its seed config
                                                 cfg2 sp2 tp2), print the plan and PCC per dtype
    python -m meshdit demo --model flux-tiny --save out/flux   also write the standalone program and run it
    python -m meshdit demo --model sd3-tiny-tt --ttnn-mock    also run the program on the real ttnn (mock cluster)
    python -m meshdit plan --model sd35-large    plan a full-size model on meta (no weights), with timings
    python -m meshdit plan --model sd35-large --mesh "2x4 cfg2@1 sp2@0 tp2@1" --weight-dtype bfp8 --ttnn-mock
                                                 ... and check it on the real ttnn allocator (does it fit?)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings

import torch

import meshdit
from meshdit import model_zoo

DTYPE_RUNS = [("fp32", None), ("bf16", None), ("bf16", "bfp8")]


def demo(args) -> int:
    if args.mesh is None:
        args.mesh = str(meshdit.MeshConfig.from_tuples((2, 4), model_zoo.entry(args.model).parallel["2x4"]))
    print(f"meshdit {meshdit.__version__}: {args.model} ({model_zoo.entry(args.model).description}) "
          f"on a simulated {args.mesh} mesh")
    model = model_zoo.build(args.model, seed=args.seed)
    batch = meshdit.MeshConfig.parse(args.mesh).cfg.factor  # with cfg, the uncond + cond halves
    inputs = model_zoo.example_inputs(args.model, seed=args.seed, batch=batch)
    static = model_zoo.entry(args.model).static_inputs
    failures = 0
    program = None
    rows = []
    for dtype, weight_dtype in DTYPE_RUNS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = meshdit.lower(model, args.mesh, inputs, dtype=dtype, weight_dtype=weight_dtype,
                                    static_inputs=static)
        if dtype == "fp32":
            print()
            print(program.plan())
            print()
        for result in program.pcc_report():
            rows.append((dtype, weight_dtype or dtype, result))
            failures += not result.ok
    print("PCC against the torch module (simulated mesh, same inputs):")
    for dtype, weight_dtype, result in rows:
        print(f"  activations {dtype:4s} weights {weight_dtype:4s}  {result}")
    if args.save:
        path = program.save(args.save)
        print(f"\nwrote {path} (+ weights, inputs, golden); running it as a standalone script:")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd()] + sys.path))
        subprocess.run([sys.executable, path], check=True, env=env)
    if args.ttnn_mock:
        from meshdit import conformance

        print("\nreal ttnn on a mocked cluster (validates every call, real allocator, computes no values):")
        print("  " + conformance.run_on_mock(program).summary())
    return 1 if failures else 0


def plan(args) -> int:
    entry = model_zoo.entry(args.model)
    model = model_zoo.build(args.model, device="meta")
    batch = meshdit.MeshConfig.parse(args.mesh).cfg.factor
    inputs = model_zoo.example_inputs(args.model, device="meta", batch=batch)
    if args.compare_export:
        from meshdit.capture import _meta_safe_autocast

        start = time.perf_counter()
        with torch.no_grad(), _meta_safe_autocast():
            torch.export.export(model, (), {**inputs, "return_dict": False}, strict=False)
        export_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(model, args.mesh, inputs, dtype=args.dtype, weight_dtype=args.weight_dtype,
                                static_inputs=model_zoo.static_inputs(args.model))
    total = time.perf_counter() - start
    print(f"{args.model}: {entry.description}; {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters "
          "on meta (none allocated)")
    print(program.plan())
    line = f"meshdit.lower total {total:.1f}s"
    if args.compare_export:
        line += f"; plain torch.export of the same model {export_seconds:.1f}s"
    print(line)
    if args.ttnn_mock:
        import tempfile

        from meshdit import conformance

        with tempfile.TemporaryDirectory() as directory:
            program.save_program(directory)
            print("real ttnn on a mocked cluster, weights allocated but not written:")
            print("  " + conformance.run_on_mock(directory, weights=False).summary())
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshdit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="lower a small model on the simulated mesh, print the plan and PCC")
    d.add_argument("--model", default="sd3-tiny", choices=[n for n in model_zoo.names() if "-tiny" in n])
    d.add_argument("--mesh", default=None, help="mesh config; default: the model's seed config on 2x4")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--save", help="write the emitted program and its weights here, then run it standalone")
    d.add_argument("--ttnn-mock", action="store_true",
                   help="also run the program on the real ttnn library in mock-cluster mode (builds its venv once)")
    p = sub.add_parser("plan", help="plan a full-size model on the meta device")
    p.add_argument("--model", default="sd35-large", choices=model_zoo.names())
    p.add_argument("--mesh", default="1x1")
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--weight-dtype", default=None)
    p.add_argument("--compare-export", action="store_true", help="also time plain torch.export of the model")
    p.add_argument("--ttnn-mock", action="store_true",
                   help="run the planned program on the real ttnn allocator in mock-cluster mode (fit check)")
    args = parser.parse_args(argv)
    try:
        return demo(args) if args.command == "demo" else plan(args)
    except meshdit.MeshditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
