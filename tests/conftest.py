"""Shared fixtures: tiny zoo models (built once per session), one export per model and input signature, and a PCC
log printed at the end of the run."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import warnings

import pytest
import torch

import meshdit
from meshdit import model_zoo

TINY = ["sd3-tiny", "flux-tiny", "mochi-tiny"]
PCC_LOG: list = []
CONFORMANCE_LOG: list = []  # one line per program run on the real ttnn (mock cluster)


@functools.lru_cache(maxsize=None)
def tiny_model(name: str):
    return model_zoo.build(name)


def tiny_inputs(name: str) -> dict:
    return model_zoo.example_inputs(name)


@functools.lru_cache(maxsize=None)
def lowered(name: str, dtype: str = "fp32", weight_dtype: str | None = None, mesh: str = "1x1"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return meshdit.lower(tiny_model(name), mesh, tiny_inputs(name), dtype=dtype, weight_dtype=weight_dtype,
                             static_inputs=model_zoo.entry(name).static_inputs)


@pytest.fixture(scope="session", autouse=True)
def one_export_per_signature():
    """torch.export is most of the time it takes to lower a tiny model (3 to 7 s of it), and the tests lower the same
    tiny models on dozens of meshes. An exported graph depends on the module and on the shapes, dtypes and non-tensor
    values of the example inputs, not on tensor values, so lowerings of one model with one input signature share
    one export; every other stage runs each time, on the call's own example values (static inputs, masks, position
    ids are read from those). capture() itself is tested on its own (test_passes.py)."""
    original = meshdit.capture
    with_return_dict = importlib.import_module("meshdit.capture")._with_return_dict  # the module, not the function
    exports: dict = {}

    def shared(module, example_inputs):
        signature = tuple(sorted((k, (tuple(v.shape), v.dtype, v.device.type) if isinstance(v, torch.Tensor)
                                  else repr(v)) for k, v in example_inputs.items()))
        key = (id(module), signature)
        if key not in exports:  # the module is kept with its export, so its id is not reused while cached
            exports[key] = (module, original(module, example_inputs))
        return dataclasses.replace(exports[key][1],
                                   example_inputs=with_return_dict(module, example_inputs))

    meshdit.capture = shared
    yield
    meshdit.capture = original


@pytest.fixture
def pcc_log(request):
    def record(model, config, result):
        PCC_LOG.append((request.node.name, model, config, result))

    return record


def pytest_terminal_summary(terminalreporter):
    if PCC_LOG:
        terminalreporter.section("PCC against the torch golden (simulated mesh)")
        for test, model, config, result in PCC_LOG:
            terminalreporter.write_line(f"{model:11s} {config:28s} {result}")
    if CONFORMANCE_LOG:
        terminalreporter.section("real ttnn 0.81.1, mock clusters (no values computed, untraced)")
        for line in CONFORMANCE_LOG:
            terminalreporter.write_line(line)
