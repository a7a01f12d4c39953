"""benchmarks/main_job.py: the summary line names the grid the run recorded."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("main_job", ROOT / "benchmarks" / "main_job.py")
main_job = importlib.util.module_from_spec(spec)
spec.loader.exec_module(main_job)


def test_summary_names_the_grid_a_run_recorded():
    assert main_job.grid_words({"symmetric": True, "full_range": True}) == "symmetric (full range)"
    # a run recorded before full_range existed was quantized on GPTQ's grid
    assert main_job.grid_words({"symmetric": True}) == "symmetric (GPTQ grid)"
    assert main_job.grid_words({"symmetric": False, "full_range": False}) == "asymmetric"
