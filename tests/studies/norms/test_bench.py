"""The norm benchmark runs end to end on the CPU (tiny sizes) and writes its JSON."""

import json

from click.testing import CliRunner

from normtweak.studies.norms.commands import bench_norms


def test_bench_norms_cli_writes_json(tmp_path):
    out = tmp_path / "norms.json"
    result = CliRunner().invoke(bench_norms, ["--hiddens", "64", "--rows", "8", "--dtypes", "float32",
                                              "--impls", "ours,eager", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["copy_GBps"] > 0
    rows = report["rows"]
    assert {(r["norm"], r["impl"], r["mode"]) for r in rows} == {
        (k, i, m) for k in ("rms", "layer") for i in ("ours", "eager") for m in ("fwd", "bwd", "fwd+bwd")}
    for r in rows:
        # bytes counted once: 8x64 float32 tensors (2 fwd, 3 bwd, 4 both) + 64 floats per parameter
        params = 1 if r["norm"] == "rms" else 2
        k = {"fwd": 2, "bwd": 3, "fwd+bwd": 4}[r["mode"]]
        assert abs(r["GB/s"] * r["ms"] / 1e3 * 1e9 - (k * 8 * 64 * 4 + params * 64 * 4)) < 1e-3
        assert r["x_vs_eager" if r["impl"] == "ours" else "x_vs_ours"] > 0 and r["%_of_copy"] > 0
