"""Coverage: does meshdit lower every transformer class the installed diffusers exports?

    python bench/coverage.py                                  # every catalog class; rewrites docs/COVERAGE.md
    python bench/coverage.py WanTransformer3DModel ...        # a subset: updates those rows, keeps the others
    python bench/coverage.py --timeout 120 --no-mock ...      # shorter budget per mesh; skip the real-ttnn runs
    python bench/coverage.py --jobs 2                         # two classes at a time (one worker process each)

For each class of `meshdit.model_zoo.catalog` (a tiny seeded config and its pipeline's example inputs), one worker
process per mesh lowers it with `meshdit.lower(model, mesh, inputs, dtype="fp32", check="warn")` on "1x1" and on
"2x2 sp2@0 tp2@1", runs the program on the simulated mesh and compares it with the torch module
(`program.pcc_report()`, worst output), and counts ops on device and on host (`program.coverage()`). Each worker has
a time budget (`--timeout`, 300 s by default) and is killed past it, so a hang costs one row, not the sweep; every
exception is caught and recorded as its type and the first line of its message. Every 2x2 program that lowered is
then saved (program only) and run by the real ttnn 0.81.1 in mock mode (`meshdit.conformance.run_on_mock`, weights
allocated but not written: the mock computes no values), and the first line of ttnn's error is kept when it
rejects the program.

Results are cached per class in docs/coverage_results.json (a subset run replaces only its own classes), and
docs/COVERAGE.md is rendered from the whole cache.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's meshdit, also when another one is installed
DOCS = os.path.join(ROOT, "docs")
RESULTS = os.path.join(DOCS, "coverage_results.json")
TABLE = os.path.join(DOCS, "COVERAGE.md")
MESHES = {"1x1": "1x1", "2x2": "2x2 sp2@0 tp2@1"}
PCC_OK = 0.999
MOCK_TIMEOUT = 900


def one_line(error: BaseException | str) -> str:
    """'Type: first line of the message', whitespace collapsed, cut at 300 characters."""
    if isinstance(error, BaseException):
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        text = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    else:
        text = error
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= 300 else text[:297] + "..."


# --- worker: one class on one mesh, in its own process --------------------------------------------------------------

def worker(name: str, mesh_key: str, out_path: str, program_dir: str | None) -> None:
    """Lower `name` on `mesh_key`, write a JSON record to out_path after every stage (a kill keeps what was done)."""
    import warnings

    warnings.simplefilter("ignore")
    record = {"class": name, "mesh": MESHES[mesh_key], "stage": "build"}

    def save():
        with open(out_path, "w") as f:
            json.dump(record, f)

    save()
    start = time.perf_counter()
    try:
        import torch

        import meshdit
        from meshdit.model_zoo import catalog

        model = catalog.build(name)
        inputs = catalog.example_inputs(name, model=model)
        record["params"] = sum(p.numel() for p in model.parameters())
        record["stage"] = "lower"
        save()
        # check="warn": a program that disagrees with its golden is still measured (lower() raises by default);
        # the check's diagnosis (first diverging block and op) is kept for the table
        program = meshdit.lower(model, MESHES[mesh_key], inputs, dtype="fp32", check="warn")
        if program.divergence:
            record["divergence"] = program.divergence
        coverage = program.coverage()
        record["device_ops"] = sum(coverage.get("device", {}).values())
        record["host_ops"] = sum(coverage.get("host", {}).values())
        record["host_op_names"] = sorted(coverage.get("host", {}))
        record["lower_s"] = time.perf_counter() - start
        record["stage"] = "run"
        save()
        if program_dir:  # the program alone, for the real-ttnn mock run the parent does next
            program.save_program(program_dir)
            record["program_dir"] = program_dir
        report = program.pcc_report()
        values = [float(r.pcc) for r in report]
        record["pcc"] = min(values, key=lambda v: (v == v, v)) if values else None  # nan first: it is the worst
        record["outputs"] = len(values)
        record["stage"] = "done"
        save()
        if program_dir:  # the same mesh at bf16 activations (no golden: check=False), for a second mock run
            try:
                bf16 = meshdit.lower(model, MESHES[mesh_key], inputs, dtype="bf16", check=False)
                bf16.save_program(program_dir + "-bf16")
                record["program_dir_bf16"] = program_dir + "-bf16"
            except Exception as error:  # noqa: BLE001
                record["bf16_error"] = one_line(error)
    except BaseException as error:  # noqa: BLE001 - every failure is a result
        record["error"] = one_line(error)
        if isinstance(error, KeyboardInterrupt):
            raise
    record["seconds"] = time.perf_counter() - start
    save()


# --- parent: run the workers with a budget, then the mock runs ------------------------------------------------------

def run_worker(name: str, mesh_key: str, timeout: float, scratch: str) -> dict:
    out_path = os.path.join(scratch, f"{name}-{mesh_key}.json")
    program_dir = os.path.join(scratch, f"{name}-{mesh_key}-program") if mesh_key != "1x1" else ""
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, mesh_key, out_path, program_dir]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        timed_out = True
    record = {"class": name, "mesh": MESHES[mesh_key]}
    if os.path.exists(out_path):
        with open(out_path) as f:
            record = json.load(f)
    record["wall_s"] = time.perf_counter() - start
    if timed_out:
        record["error"] = f"timeout: killed after {timeout:.0f} s in stage '{record.get('stage', '?')}'"
    elif "error" not in record and record.get("stage") != "done":
        tail = [line for line in (stderr or "").splitlines() if line.strip()]
        record["error"] = one_line(f"worker died (exit {process.returncode}) in stage '{record.get('stage')}': "
                                   + (tail[-1] if tail else ""))
    return record


def run_mock(program_dir: str) -> dict:
    from meshdit import conformance

    start = time.perf_counter()
    try:
        report = conformance.run_on_mock(program_dir, weights=False, timeout=MOCK_TIMEOUT)
        return {"accepted": True, "device_ops": report.device_operations, "cluster": report.cluster,
                "seconds": time.perf_counter() - start}
    except BaseException as error:  # noqa: BLE001
        if isinstance(error, KeyboardInterrupt):
            raise
        return {"accepted": False, "error": mock_error(error), "seconds": time.perf_counter() - start}


def mock_error(error: BaseException) -> str:
    """The first line of ttnn's own error (TT_FATAL / TT_THROW / the Python exception), not the harness's preamble;
    source paths shortened to the file name."""
    text = re.sub(r"/[\w./-]+/([\w.-]+:\d+)", r"\1", str(error))
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    crash = re.search(r"\(exit -(\d+)\)", text.splitlines()[0] if text else "")
    if crash and not any(re.search(r"TT_FATAL|TT_THROW", line) for line in lines):
        number = int(crash.group(1))
        name = signal.Signals(number).name if number in {s.value for s in signal.Signals} else f"signal {number}"
        return f"real ttnn crashed ({name}) with no TT_FATAL"
    for pattern in (r"TT_FATAL|TT_THROW", r"^\w+(Error|Exception)\b", r"incompatible function arguments"):
        for line in lines:
            if re.search(pattern, line) and not line.startswith("File "):
                return one_line(line)
    return one_line(error if not lines else f"{type(error).__name__}: {lines[-1]}")


def measure(name: str, timeout: float, mock: bool, scratch: str) -> dict:
    from meshdit.model_zoo import catalog

    e = catalog.entry(name)
    row = {"class": name, "kind": e.kind, "pipeline": e.pipeline, "torch_failure": e.torch_failure}
    start = time.perf_counter()
    for key in MESHES:
        row[key] = run_worker(name, key, timeout, scratch)
        print(f"  {name} {MESHES[key]}: " + (row[key].get("error") or f"PCC {row[key].get('pcc')}"), flush=True)
    for key, field in (("mock", "program_dir"), ("mock_bf16", "program_dir_bf16")):
        program_dir = row["2x2"].get(field)
        if mock and program_dir and os.path.isdir(program_dir):
            row[key] = run_mock(program_dir)
            print(f"  {name} ttnn {key}: " + ("accepted" if row[key]["accepted"] else row[key]["error"]), flush=True)
    if mock and "bf16_error" in row["2x2"]:
        row["mock_bf16"] = {"accepted": False, "error": "bf16 lowering failed: " + row["2x2"]["bf16_error"]}
    row["seconds"] = time.perf_counter() - start
    return row


# --- the table -----------------------------------------------------------------------------------------------------

def pcc_ok(result: dict) -> bool:
    pcc = result.get("pcc")
    return "error" not in result and pcc is not None and pcc == pcc and pcc >= PCC_OK


def wrong_number(result: dict) -> bool:
    return "error" not in result and result.get("stage") == "done" and not pcc_ok(result)


def reason(result: dict) -> str:
    """One line: the stage that failed (build: the model or its inputs; lower: capture to program; run: the program
    on the simulated mesh) and the exception, or the wrong number."""
    if "error" in result:
        stage = result.get("stage", "?")
        return result["error"] if result["error"].startswith("timeout") else f"[{stage}] {result['error']}"
    if wrong_number(result):
        return f"PCC {fmt_pcc(result.get('pcc'))}" + (f": {result['divergence']}" if result.get("divergence") else "")
    return ""


def fmt_pcc(pcc) -> str:
    if pcc is None:
        return "-"
    if pcc != pcc:
        return "nan"
    return f"{pcc:.6f}" if pcc >= 0.999 else f"{pcc:.4f}"


def cause(text: str) -> str:
    """A failure reason with its particulars (quoted names, numbers, shapes, node names, source lines) blanked, so
    that the same cause in different classes groups together."""
    text = re.sub(r"\(([\w./-]+\.py):\d+[^)]*\)", "(...)", text)
    text = re.sub(r"`[^`]*`", "`...`", text)
    text = re.sub(r"'[^']*'", "'...'", text)
    text = re.sub(r'"[^"]*"', '"..."', text)
    text = re.sub(r"\[[^\]]*\]", "[...]", text)
    text = re.sub(r"\([\d, ]+\)", "(...)", text)
    text = re.sub(r"\b\d+(\.\d+)?\b", "N", text)
    text = re.sub(r"exported input \S+ has", "exported input ... has", text)
    return text[:160]


def failures(row: dict) -> list:
    """(where, cause) per distinct failure of a class: "both" when the two meshes fail alike."""
    causes = {key: cause(reason(row[key])) for key in MESHES if "error" in row[key]}
    if len(causes) == 2 and len(set(causes.values())) == 1:
        return [("both", causes["1x1"])]
    return [(key if len(causes) == 2 else f"{key} only", text) for key, text in causes.items()]


def mock_cell(result: dict | None) -> str:
    if result is None:
        return "-"
    return "yes" if result["accepted"] else f"no: {md(result['error'])}"


def render(rows: dict, meta: dict) -> str:
    names = sorted(rows)
    both_ok = [n for n in names if pcc_ok(rows[n]["1x1"]) and pcc_ok(rows[n]["2x2"])]
    wrong = [n for n in names if wrong_number(rows[n]["1x1"]) or wrong_number(rows[n]["2x2"])]
    dit = [n for n in names if rows[n]["kind"] == "dit"]
    failing = [n for n in names if any("error" in rows[n][key] for key in MESHES)]
    groups: dict = {}
    for n in names:
        for where, text in failures(rows[n]):
            groups.setdefault(text, []).append(f"{n}" + ("" if where == "both" else f" ({where})"))
    mock_summary, mock_groups = [], {}
    for key, label in (("mock", "fp32"), ("mock_bf16", "bf16")):
        ran = [n for n in names if key in rows[n]]
        ok = [n for n in ran if rows[n][key]["accepted"]]
        mock_summary.append(f"{len(ok)} of {len(ran)} at {label}")
        for n in ran:
            if not rows[n][key]["accepted"]:
                mock_groups.setdefault((label, cause(rows[n][key]["error"])), []).append(n)

    lines = [
        "# Coverage: every transformer class diffusers exports",
        "",
        "Generated by `python bench/coverage.py` (all classes; `python bench/coverage.py CLASS ...` reruns a subset "
        "and keeps the other rows). Each class is built from a tiny seeded config in "
        "`meshdit/model_zoo/catalog.py` (a few layers, 2-4 heads, a few dozen to a few hundred image/video tokens; "
        "random weights with every layer live) and called with the keyword arguments its diffusers pipeline passes. "
        f"Each is lowered with `meshdit.lower(model, mesh, inputs, dtype=\"fp32\", check=\"warn\")` on `1x1` and on "
        f"`{MESHES['2x2']}`, in a worker process with a {meta['timeout']:.0f} s budget per mesh, and run on the "
        "simulated mesh: PCC is the worst output of `program.pcc_report()` against the torch module. Every 2x2 "
        "program that lowered is run by the real ttnn 0.81.1 in mock mode (`meshdit.conformance.run_on_mock`, "
        "mocked T3K, weights allocated but not written; the mock checks every call and computes no values); so is "
        "the same class lowered on the same mesh at bf16 activations (`dtype=\"bf16\", check=False`), because ttnn's "
        "ring attention takes bf16/bfp8 only and rejects every fp32 program at its first attention.",
        "",
        f"- machine: {meta['machine']}",
        f"- date: {meta['date']}; sweep wall time {meta['wall']}",
        f"- meshdit {meta['meshdit']}, diffusers {meta['diffusers']}, torch {meta['torch']}, "
        f"ttnn {meta['ttnn']} (mock)",
        "",
        "## Summary",
        "",
        f"**{len(both_ok)} of {len(names)} classes lower at PCC >= {PCC_OK} on both meshes** "
        f"({len([n for n in both_ok if n in dit])} of the {len(dit)} DiT denoisers); "
        f"**{len(wrong)} give a wrong number** (PCC below {PCC_OK}; measured with `check=\"warn\"`, by default "
        f"`lower()` raises NumericsError naming the first diverging block and op) on at least one mesh"
        + (f" ({', '.join(wrong)})" if wrong else "")
        + f"; {len(failing)} raise on at least one mesh. Real ttnn (mock) accepts the 2x2 program "
        + f"{' and '.join(mock_summary)}.",
        "",
        on_device_line(rows, both_ok),
        "",
        "Failures grouped by cause (particulars blanked: names, numbers, shapes, source lines; a class is listed once "
        "when both meshes fail alike, else with the mesh):",
        "",
        "| cause | classes | which |",
        "|---|---|---|",
    ]
    for text, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines.append(f"| {md(text)} | {len(members)} | {', '.join(members)} |")
    if mock_groups:
        lines += ["", "Real ttnn (mock) rejections of the 2x2 programs, grouped by cause:", "",
                  "| activations | cause | classes | which |", "|---|---|---|---|"]
        for (label, text), members in sorted(mock_groups.items(), key=lambda kv: (kv[0][0], -len(kv[1]), kv[0])):
            lines.append(f"| {label} | {md(text)} | {len(members)} | {', '.join(members)} |")
    lines += ["", "## Per class", "",
              "ops = device / host op count of the program (`program.coverage()`). kind: dit = a "
              "diffusion-transformer denoiser; audio, protein, prior and block (a UNet building block) are not, "
              "and are tried anyway. PCC in bold: below the threshold with no error.",
              "",
              "| class | kind | params | 1x1 PCC | 2x2 PCC | ops 1x1 | ops 2x2 | host ops | ttnn accepts 2x2 fp32 "
              "| ttnn accepts 2x2 bf16 | failure reason |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        row = rows[n]
        r1, r2 = row["1x1"], row["2x2"]
        params = r1.get("params") or r2.get("params")
        reasons = []
        for key, r in (("1x1", r1), ("2x2", r2)):
            if reason(r):
                reasons.append((key, md(reason(r))))
        if len(reasons) == 2 and reasons[0][1] == reasons[1][1]:
            reasons = [("both", reasons[0][1])]
        host = sorted(set(r1.get("host_op_names", [])) | set(r2.get("host_op_names", [])))
        lines.append(
            f"| {n} | {row['kind']} | {f'{params / 1e6:.2f}M' if params else '-'} | {cell_pcc(r1)} | {cell_pcc(r2)} "
            f"| {ops(r1)} | {ops(r2)} | {md(', '.join(host)) or '-'} | {mock_cell(row.get('mock'))} "
            f"| {mock_cell(row.get('mock_bf16'))} | {'; '.join(f'{k}: {t}' for k, t in reasons) or '-'} |")
    return "\n".join(lines) + "\n"


def on_device_line(rows: dict, passing: list) -> str:
    """Ops on device over the passing classes' 2x2 programs, and the classes that keep more than 1% on host."""
    device = host = 0
    heavy = []
    for name in passing:
        result = rows[name]["2x2"]
        device, host = device + result.get("device_ops", 0), host + result.get("host_ops", 0)
        total = result.get("device_ops", 0) + result.get("host_ops", 0)
        if total and result.get("host_ops", 0) > 0.01 * total:
            heavy.append(f"{name} ({result['host_ops']} of {total}: {', '.join(result.get('host_op_names', []))})")
    return (f"Ops on device over those classes' 2x2 programs: {device:,} of {device + host:,} "
            f"({device / max(device + host, 1):.1%}). Classes with more than 1% of their ops on host (no lowering "
            f"yet; they run in numpy beside the device): {'; '.join(heavy) or 'none'}.")


def cell_pcc(result: dict) -> str:
    if "error" in result:
        return "error" if not result["error"].startswith("timeout") else "timeout"
    text = fmt_pcc(result.get("pcc"))
    return text if pcc_ok(result) else f"**{text}**"


def ops(result: dict) -> str:
    return f"{result['device_ops']} / {result['host_ops']}" if "device_ops" in result else "-"


def md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def commit() -> str:
    """The checkout's commit (and "+changes" when the tree has uncommitted edits): which code the figures are of."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs"],
                               cwd=root, capture_output=True, text=True).stdout.strip()  # docs/: what it writes
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = models[0] if models else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores available, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def main(argv) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("classes", nargs="*", help="catalog class names (default: all)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per class per mesh (default 300)")
    parser.add_argument("--no-mock", action="store_true", help="skip the real-ttnn mock runs")
    parser.add_argument("--jobs", type=int, default=1, help="classes measured at once (default 1)")
    parser.add_argument("--render", action="store_true", help="only rewrite docs/COVERAGE.md from the cached results")
    args = parser.parse_args(argv)
    if args.render:
        with open(RESULTS) as f:
            cache = json.load(f)
        with open(TABLE, "w") as f:
            f.write(render(cache["rows"], cache["meta"]))
        print(f"wrote {os.path.relpath(TABLE, ROOT)} from {os.path.relpath(RESULTS, ROOT)}")
        return

    import diffusers
    import torch

    import meshdit
    from meshdit.conformance.environment import TTNN_VERSION
    from meshdit.model_zoo import catalog

    names = args.classes or catalog.names()
    unknown = [n for n in names if n not in catalog.ENTRIES]
    if unknown:
        raise SystemExit(f"not in the catalog: {unknown}")
    os.makedirs(DOCS, exist_ok=True)
    cache = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            cache = json.load(f)
    rows = {n: r for n, r in cache.get("rows", {}).items() if n in catalog.ENTRIES}
    start = time.perf_counter()
    lock = threading.Lock()

    def one(i_name):
        i, name = i_name
        print(f"[{i + 1}/{len(names)}] {name}", flush=True)
        row = measure(name, args.timeout, not args.no_mock, scratch)
        for key in MESHES:
            row[key].pop("program_dir", None)
            row[key].pop("program_dir_bf16", None)
        with lock:
            rows[name] = row
            cache["rows"] = rows
            with open(RESULTS, "w") as f:  # after every class: an interrupted sweep keeps what it measured
                json.dump(cache, f, indent=1, sort_keys=True)

    with tempfile.TemporaryDirectory(prefix="meshdit-coverage-") as scratch:
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            list(pool.map(one, enumerate(names)))  # list(): re-raises a parent-side failure
    wall = time.perf_counter() - start
    full = not args.classes
    if full or "meta" not in cache:
        cache["meta"] = {"machine": machine(), "date": f"{datetime.date.today().isoformat()} (commit {commit()})",
                         "wall": f"{wall / 60:.1f} min" + ("" if full else " (subset)"),
                         "meshdit": meshdit.__version__, "diffusers": diffusers.__version__,
                         "torch": torch.__version__, "ttnn": TTNN_VERSION, "timeout": args.timeout}
    else:  # a subset keeps the full sweep's header, noting the later partial rerun
        cache["meta"]["date"] = cache["meta"]["date"].split(";")[0].rstrip(")") + \
            f"; rows {', '.join(names)} rerun {datetime.date.today().isoformat()} at commit {commit()})"
    with open(RESULTS, "w") as f:
        json.dump(cache, f, indent=1, sort_keys=True)
    missing = [n for n in catalog.names() if n not in rows]
    if missing:
        print(f"not yet measured (no rows in the table): {missing}")
    text = render(rows, cache["meta"])
    with open(TABLE, "w") as f:
        f.write(text)
    print(text)
    print(f"{len(names)} classes in {wall:.0f} s; wrote {os.path.relpath(TABLE, ROOT)}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] or None)
    else:
        main(sys.argv[1:])
