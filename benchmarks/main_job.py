"""The README's main job, timed as a user meets it: `normtweak run` with its defaults, from an
empty cache (the offline SmolLM2 is converted, the calibration windows cut), in a subprocess.

    python benchmarks/main_job.py                       # torch's default threads (the user's)
    OMP_NUM_THREADS=1 python benchmarks/main_job.py --threads 1

Records wall seconds, CPU seconds (user + system of the subprocess and its children, from
getrusage) and peak RSS, the load average before and after (other work on the machine
inflates wall time, not much CPU time), the three perplexities `run` prints (float vs the Q4
reference, plain W4A16 quantization, tweaked) and the revision. Extra arguments after `--`
go to `normtweak run`. Prints a Markdown table and writes --output (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runinfo import cpuinfo, revision  # noqa: E402

from normtweak.config import QuantSpec  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS for the run [default: unset, torch's default]")
    p.add_argument("--keep-cache", action="store_true",
                   help="use the normal cache (a converted model and calibration set are reused)")
    p.add_argument("--output", default="results/main_job.json")
    p.add_argument("run_args", nargs="*", help="after --: more options for `normtweak run`")
    args = p.parse_args(argv)
    command = "python benchmarks/main_job.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cache = [] if args.keep_cache else ["--cache-dir", str(Path(tmp) / "cache")]
        save = Path(tmp) / "model"
        cmd = [sys.executable, "-m", "normtweak", *cache, "run", "--save-dir", str(save),
               *args.run_args]
        load_before = os.getloadavg()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, text=True, capture_output=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_after = os.getloadavg()
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise SystemExit(f"normtweak run failed (exit {proc.returncode})")
        report = json.loads((save.parent / f"{save.name}.run.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    res = report["results"]
    f, q, t = (res[k]["ppl"] for k in ("float", "quant", "tweaked"))
    row = {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": after.ru_maxrss / 1024,
           "threads": args.threads or "default", "fresh_cache": not args.keep_cache,
           "load_before": load_before, "load_after": load_after,
           "ppl_float": f, "ppl_quant": q, "ppl_tweaked": t,
           "gap_recovered_pct": 100 * (q - t) / (q - f), "tweak_s": report["tweak_seconds"],
           "windows": res["float"]["windows"], "window": res["float"]["window"]}
    summary = (f"{report['model']}, {report['quant']['bits']}-bit group {report['quant']['group_size']}"
               f" {QuantSpec.from_record(report['quant']).grid}, "
               f"{report['calibration']['method']} calibration "
               f"{report['calibration']['num_samples']}x{report['calibration']['seq_len']}, "
               f"perplexity on {row['windows']} x {row['window']} tokens of Wikipedia test")
    table = "\n".join([
        "| | float (the Q4 reference) | W4A16, plain RTN | W4A16, tweaked | gap recovered | wall "
        "| CPU | peak RSS |", "|---|---|---|---|---|---|---|---|",
        f"| perplexity | {f:.2f} | {q:.2f} | {t:.2f} | {row['gap_recovered_pct']:.0f} % | "
        f"{wall / 60:.1f} min | {cpu / 60:.1f} min | {row['peak_rss_mb'] / 1024:.1f} GiB |"])
    print(f"\n{summary}\n\n{table}\n\nreproduce: {command}")
    result = {"command": command, "revision": revision(), "summary": summary, "row": row,
              "table": table, "run_report_table": report["table"],
              "cpu_model": _cpu_model(), "cores": os.cpu_count()}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    tmp_out.replace(out)
    return result


def _cpu_model() -> str:
    return cpuinfo()[0]


if __name__ == "__main__":
    main()
