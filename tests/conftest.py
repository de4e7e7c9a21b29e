"""Shared fixtures: tiny zoo models (built once per session) and a PCC log printed at the end of the run."""

from __future__ import annotations

import functools
import warnings

import pytest

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
