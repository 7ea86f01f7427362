"""Benchmark: ModelPilot's drift engine vs Evidently's DataDriftPreset on the same data.

Both engines read the same two NPZ files (reference and current, one array per feature) and
each runs in its own subprocess, so the reported peak RSS (VmHWM) belongs to that engine alone.

Engines measured:
  ours-stream     build_reference_profile + profile_window straight from the NPZ files (columns
                  are read one at a time: the production path) + detect_drift
  ours-in-memory  the same after loading both datasets fully into memory, as Evidently needs
  evidently       Report([DataDriftPreset()]).run(current_df, reference_df) on pandas frames
  stream-rate     DatasetProfile.update throughput on 10k-row batches (values per second)

Usage:
  .venv/bin/python bench/drift_vs_evidently.py                 # 1,000,000 rows x 50 features
  .venv/bin/python bench/drift_vs_evidently.py --rows 100000   # quick run
Evidently lives in its own venv (see bench/requirements-drift.txt); point at its python with
--evidently-python or EVIDENTLY_PYTHON (default: .venv-bench/bin/python in the repository).
This file must import only the standard library and numpy at top level: the Evidently child
runs it with the other venv's interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_EVIDENTLY_PYTHON = REPO / ".venv-bench" / "bin" / "python"
STREAM_BATCH_ROWS = (10_000, 1_000)


# ---------------------------------------------------------------- data


def feature_names(count: int) -> list[str]:
    return [f"f{index:02d}" for index in range(count)]


def write_npz_columns(path: Path, columns) -> None:
    """Write (name, array) pairs into an uncompressed NPZ one at a time (bounded memory)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in columns:
            with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, array, allow_pickle=False)


def generate(workdir: Path, rows: int, features: int, shifted: int, seed: int) -> dict:
    """Reference and current data; the first ``shifted`` features drift (mean, then variance)."""
    rng = np.random.default_rng(seed)
    names = feature_names(features)
    locations = rng.uniform(-5, 5, features)
    scales = rng.uniform(0.5, 3.0, features)
    skewed = rng.random(features) < 0.2

    def draw(index: int, mean_shift: float, scale_factor: float) -> np.ndarray:
        if skewed[index]:
            values = rng.gamma(2.0, scales[index] * scale_factor, rows) + locations[index]
        else:
            values = rng.normal(locations[index], scales[index] * scale_factor, rows)
        return values + mean_shift * scales[index]

    drift = {}
    for index in range(shifted):
        drift[index] = (0.5, 1.0) if index % 2 == 0 else (0.0, 1.5)
    write_npz_columns(workdir / "reference.npz", ((n, draw(i, 0.0, 1.0)) for i, n in enumerate(names)))
    write_npz_columns(
        workdir / "current.npz",
        ((n, draw(i, *drift.get(i, (0.0, 1.0)))) for i, n in enumerate(names)),
    )
    return {"rows": rows, "features": features, "shifted": [names[i] for i in drift]}


# ---------------------------------------------------------------- measurement helpers


def peak_rss_mb() -> float:
    """Peak resident set of this process (VmHWM), falling back to getrusage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def load_matrix(path: Path) -> tuple[list[str], np.ndarray]:
    """All columns of an NPZ into one column-major matrix, without a transient second copy."""
    with np.load(path) as archive:
        names = list(archive.files)
        first = archive[names[0]]
        matrix = np.empty((first.size, len(names)), dtype=np.float64, order="F")
        matrix[:, 0] = first
        del first
        for index, name in enumerate(names[1:], start=1):
            matrix[:, index] = archive[name]
    return names, matrix


# ---------------------------------------------------------------- children (one engine each)


def child_ours(workdir: Path, in_memory: bool) -> dict:
    from modelpilot.drift import build_reference_profile, detect_drift, load_npz, profile_window

    baseline = current_rss_mb()
    started = time.perf_counter()
    if in_memory:
        names, reference_matrix = load_matrix(workdir / "reference.npz")
        _, current_matrix = load_matrix(workdir / "current.npz")
        reference_source = {n: reference_matrix[:, i] for i, n in enumerate(names)}
        current_source = {n: current_matrix[:, i] for i, n in enumerate(names)}
    else:
        reference_source = load_npz(workdir / "reference.npz")
        current_source = load_npz(workdir / "current.npz")
    loaded = time.perf_counter()
    reference = build_reference_profile(reference_source)
    referenced = time.perf_counter()
    window = profile_window(reference, current_source)
    windowed = time.perf_counter()
    report = detect_drift(reference, window)
    finished = time.perf_counter()
    profile_bytes = len(json.dumps(reference.to_dict()))
    return {
        "wall_s": finished - started,
        "load_s": loaded - started,
        "reference_profile_s": referenced - loaded,
        "current_profile_s": windowed - referenced,
        "detect_s": finished - windowed,
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline,
        "drifted": list(report.drifted_features),
        "drift_share": report.drift_share,
        "dataset_drifted": report.drifted,
        "values": {f.name: f.metrics["wasserstein"].statistic for f in report.features if f.metrics},
        "methods": sorted({f.method for f in report.features if f.method}),
        "reference_profile_json_bytes": profile_bytes,
    }


def child_stream_rate(workdir: Path) -> dict:
    from modelpilot.drift import ProfileConfig, build_reference_profile

    with np.load(workdir / "reference.npz") as archive:
        names = list(archive.files)
        sample_rows = min(200_000, archive[names[0]].size)
        # copy(): a slice would keep each full column alive through its base array
        reference_data = {name: archive[name][:sample_rows].copy() for name in names}
    with np.load(workdir / "current.npz") as archive:
        rows = max(STREAM_BATCH_ROWS)
        live = np.column_stack([archive[name][:rows] for name in names])
    results = {}
    for pca in (True, False):
        reference = build_reference_profile(reference_data, config=ProfileConfig(pca=pca))
        for batch_rows in STREAM_BATCH_ROWS:
            batch = np.ascontiguousarray(live[:batch_rows])
            window = reference.new_window()
            window.update(batch)  # warm-up
            batches, started = 0, time.perf_counter()
            while time.perf_counter() - started < 3.0:
                window.update(batch)
                batches += 1
            elapsed = time.perf_counter() - started
            key = f"batch_{batch_rows}_rows{'_with_pca' if pca else ''}"
            results[key] = {
                "values_per_s": batches * batch_rows * len(names) / elapsed,
                "rows_per_s": batches * batch_rows / elapsed,
                "ms_per_batch": 1000 * elapsed / batches,
            }
    results["peak_rss_mb"] = peak_rss_mb()
    return results


def child_evidently(workdir: Path) -> dict:
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    baseline = current_rss_mb()
    started = time.perf_counter()
    names, reference_matrix = load_matrix(workdir / "reference.npz")
    _, current_matrix = load_matrix(workdir / "current.npz")
    reference = pd.DataFrame(reference_matrix, columns=names, copy=False)
    current = pd.DataFrame(current_matrix, columns=names, copy=False)
    loaded = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(current, reference)
    result = snapshot.dict()
    finished = time.perf_counter()
    values, drifted, share = {}, [], None
    for metric in result["metrics"]:
        metric_name = metric["metric_name"]
        if metric_name.startswith("ValueDrift("):
            column = metric["config"]["column"]
            threshold = metric["config"].get("threshold") or 0.1
            values[column] = float(metric["value"])
            if values[column] >= threshold:
                drifted.append(column)
        elif metric_name.startswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    return {
        "wall_s": finished - started,
        "load_s": loaded - started,
        "compute_s": finished - loaded,
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline,
        "drifted": sorted(drifted),
        "drift_share": share,
        "values": values,
        "evidently_version": __import__("evidently").__version__,
        "pandas_version": pd.__version__,
    }


CHILDREN = {
    "ours-stream": lambda workdir: child_ours(workdir, in_memory=False),
    "ours-in-memory": lambda workdir: child_ours(workdir, in_memory=True),
    "stream-rate": child_stream_rate,
    "evidently": child_evidently,
}


# ---------------------------------------------------------------- parent


THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def run_child(python: str, mode: str, workdir: Path, timeout: float, threads: int) -> dict:
    env = dict(os.environ)
    if threads > 0:
        # Same BLAS/OpenMP thread count for every engine; on a small shared box, oversubscribed
        # BLAS threads make small matrix products tens of times slower.
        env.update({variable: str(threads) for variable in THREAD_VARIABLES})
    command = [python, str(Path(__file__).resolve()), "--child", mode, "--workdir", str(workdir)]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{mode} failed (rc={completed.returncode}):\n{completed.stderr[-4000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = elapsed
    return result


def evidently_python(explicit: str | None) -> str | None:
    candidate = explicit or os.environ.get("EVIDENTLY_PYTHON") or str(DEFAULT_EVIDENTLY_PYTHON)
    if not shutil.which(candidate) and not Path(candidate).exists():
        return None
    probe = subprocess.run([candidate, "-c", "import evidently, pandas"], capture_output=True, check=False)
    return candidate if probe.returncode == 0 else None


def summarise(results: dict, meta: dict) -> list[str]:
    lines = [f"data: {meta['rows']:,} rows x {meta['features']} float features (reference and current)"]
    lines.append(
        f"BLAS/OpenMP threads per engine: {meta.get('threads') or 'default'}; cpus: {os.cpu_count()}"
    )
    lines.append(f"drift injected in: {', '.join(meta['shifted']) or 'none'}")
    header = f"{'engine':<16}{'wall s':>10}{'peak RSS MB':>14}{'drifted':>9}"
    lines += [header, "-" * len(header)]
    for engine in ("ours-stream", "ours-in-memory", "evidently"):
        if engine in results:
            r = results[engine]
            lines.append(f"{engine:<16}{r['wall_s']:>10.2f}{r['peak_rss_mb']:>14.0f}{len(r['drifted']):>9}")
    evidently = results.get("evidently")
    for engine in ("ours-stream", "ours-in-memory"):
        if evidently and engine in results:
            ours = results[engine]
            lines.append(
                f"{engine} vs evidently: {evidently['wall_s'] / ours['wall_s']:.1f}x faster, "
                f"{evidently['peak_rss_mb'] / ours['peak_rss_mb']:.1f}x less peak memory"
            )
    if evidently and "ours-stream" in results:
        ours = results["ours-stream"]
        shared = sorted(set(ours["values"]) & set(evidently["values"]))
        gaps = [abs(ours["values"][name] - evidently["values"][name]) for name in shared]
        same = set(ours["drifted"]) == set(evidently["drifted"])
        lines.append(
            f"agreement: same drifted set={same}; max |normed Wasserstein ours - evidently| = {max(gaps):.2e}"
        )
    if "stream-rate" in results:
        for key, value in results["stream-rate"].items():
            if isinstance(value, dict):
                lines.append(f"streaming update {key}: {value['values_per_s'] / 1e6:.1f} M values/s")
    if "ours-stream" in results:
        size = results["ours-stream"]["reference_profile_json_bytes"]
        lines.append(f"reference profile JSON: {size / 1e6:.2f} MB")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--shifted", type=int, default=10, help="features with injected drift")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evidently-python", default=None, help="python with evidently installed")
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data here (default: temp)")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS/OpenMP threads for every engine (0: leave as is)"
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(CHILDREN[args.child](args.workdir)))
        return 0

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="drift-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(f"generating data in {workdir} ...", flush=True)
        meta = generate(workdir, args.rows, args.features, args.shifted, args.seed)
        meta["threads"] = args.threads
        results: dict = {}
        for mode in ("ours-stream", "ours-in-memory", "stream-rate"):
            print(f"running {mode} ...", flush=True)
            results[mode] = run_child(sys.executable, mode, workdir, args.timeout, args.threads)
        peer = None if args.skip_evidently else evidently_python(args.evidently_python)
        if peer is None:
            print(
                "evidently: SKIPPED (no python with evidently; create .venv-bench with "
                "bench/requirements-drift.txt or pass --evidently-python / EVIDENTLY_PYTHON)",
                flush=True,
            )
        else:
            print(f"running evidently with {peer} ...", flush=True)
            results["evidently"] = run_child(peer, "evidently", workdir, args.timeout, args.threads)
        report = {"meta": meta, "results": results, "cpu_count": os.cpu_count(), "threads": args.threads}
        print("\n".join(summarise(results, meta)))
        if args.json_out:
            args.json_out.write_text(json.dumps(report, indent=2))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
