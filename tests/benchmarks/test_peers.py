"""benchmarks/peers.py helpers: configs, run names, the table, finding a peer's environment."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peers = _load("peers")


peer_runner = _load("peer_runner")


def _args(**kw):
    base = {"model": "smollm2-135m", "text": "wikipedia", "calib_samples": 128, "calib_len": 512, "seed": 0,
            "max_windows": 8, "window": 1024, "threads": 1}
    return SimpleNamespace(**{**base, **kw})


def test_parse_configs_and_labels():
    assert peers.parse_configs("4:64,3:64,4:-1") == [(4, 64, False), (3, 64, False), (4, -1, False)]
    assert peers.parse_configs("4:64:sym,3:64:asym,4:-1:sym") == [
        (4, 64, True), (3, 64, False), (4, -1, True)]
    assert peers.config_label(4, -1) == "W4 per-channel asym"
    assert peers.config_label(4, 64, True) == "W4 g64 sym"
    assert peers.config_tag(3, 64) == "w3g64"
    assert peers.config_tag(4, -1, False) == "w4pc"
    assert peers.config_tag(4, 64, True) == "w4g64sym"
    for bad in ("4-64", "4:64:symmetric", "4:64:sym:x", "4", "a:64"):
        with pytest.raises(ValueError, match="bits:group_size"):
            peers.parse_configs(bad)


def test_run_tag_changes_with_every_setting():
    args = _args()
    base = peers.run_tag(args, "llmc-gptq", 4, 64)
    assert base == "smollm2-135m_wikipedia_llmc-gptq_w4g64_c128x512s0_e8x1024pd_t1"
    assert peers.run_tag(args, "llmc-gptq", 4, 64, False) == base
    assert peers.run_tag(args, "autoround-200", 4, 64, True) == \
        "smollm2-135m_wikipedia_autoround-200_w4g64sym_c128x512s0_e8x1024pd_t1"
    for field, value in [("model", "other"), ("text", "austen"), ("calib_samples", 64),
                         ("calib_len", 2048), ("seed", 1), ("max_windows", 0), ("threads", 2)]:
        other = SimpleNamespace(**{**vars(args), field: value})
        assert peers.run_tag(other, "llmc-gptq", 4, 64) != base
    # normtweak rows: every field of the resolved specs is in the name
    from normtweak.config import QuantSpec, TweakSpec

    a = peers.run_tag(args, "normtweak-default", 4, 64, True, (QuantSpec(), TweakSpec()))
    b = peers.run_tag(args, "normtweak-default", 4, 64, True, (QuantSpec(), TweakSpec(iters=4)))
    c = peers.run_tag(args, "normtweak-default", 4, 64, True, (QuantSpec(damp=0.02), TweakSpec()))
    assert len({a, b, c}) == 3


def test_model_dir_name_keeps_old_names_and_separates_seeds():
    assert peers.model_dir_name(_args(), "llmc-gptq", 4, 64) == "wikipedia-llmc-gptq-w4g64-128x512"
    assert peers.model_dir_name(_args(), "autoround-200", 4, 64, True) == \
        "wikipedia-autoround-200-w4g64sym-128x512"
    assert peers.model_dir_name(_args(seed=1), "llmc-gptq", 4, 64) == \
        "wikipedia-llmc-gptq-w4g64-128x512s1"


def test_peer_command_passes_scheme_and_seed(tmp_path):
    args = _args(seed=3)
    cmd = peers.peer_command("autoround-fast", 4, 64, True, Path("py"), tmp_path / "c",
                             tmp_path / "o.json", args)
    assert "--sym" in cmd and "--asym" not in cmd
    assert cmd[cmd.index("--seed") + 1] == "3"
    assert cmd[cmd.index("--iters") + 1] == "200" and cmd[cmd.index("--batch-size") + 1] == "4"
    cmd = peers.peer_command("llmc-gptq", 3, -1, False, Path("py"), tmp_path / "c",
                             tmp_path / "o.json", args)
    assert "--asym" in cmd and cmd[cmd.index("--group-size") + 1] == "-1"
    # AutoRound's default recipe: 200 iterations at batch 8, its own lr and amp
    extra = peers.PEERS["autoround-200"][1]
    assert extra[extra.index("--iters") + 1] == "200" and extra[extra.index("--batch-size") + 1] == "8"
    assert "--lr" not in extra and "--no-amp" not in extra
    assert {"autoround-50", "llmc-gptq"} <= set(peers.PEERS)


def test_runner_parses_scheme_batch_and_seed():
    a = peer_runner.parse(["--peer", "autoround", "--calib", "x", "--output", "o.json"])
    assert (a.sym, a.batch_size, a.seed) == (False, 8, 42)
    a = peer_runner.parse(["--peer", "llmc", "--calib", "x", "--output", "o.json", "--sym",
                           "--batch-size", "4", "--seed", "0"])
    assert (a.sym, a.batch_size, a.seed) == (True, 4, 0)
    assert peer_runner.parse(["--peer", "llmc", "--calib", "x", "--output", "o", "--asym"]).sym is False
    with pytest.raises(SystemExit):
        peer_runner.parse(["--peer", "llmc", "--calib", "x", "--output", "o", "--sym", "--asym"])


def test_normtweak_variants_follow_the_scheme():
    from normtweak.config import QuantSpec, TweakSpec

    for sym in (False, True):
        rows = peers.normtweak_variants(SimpleNamespace(bits=3, group_size=64, symmetric=sym))
        assert rows[0][0] == "normtweak-rtn" and rows[0][2] is None  # the gap's reference
        assert all(q.symmetric is sym and q.bits == 3 and q.group_size == 64 for _, q, _ in rows)
        # the default grid: full range where symmetric; there each variant has a GPTQ-grid twin
        plain = {n: (q, t) for n, q, t in rows if not n.endswith("-gptqgrid")}
        twins = {n[: -len("-gptqgrid")]: (q, t) for n, q, t in rows if n.endswith("-gptqgrid")}
        assert all(q.full_range is sym for q, _ in plain.values())
        assert set(twins) == (set(plain) if sym else set())
        for name, (q, t) in twins.items():
            assert not q.full_range and t == plain[name][1]
            assert q == QuantSpec(**{**plain[name][0].as_dict(), "full_range": False})
    by = {n: (q, t) for n, q, t in peers.normtweak_variants(SimpleNamespace(bits=4, group_size=64))}
    assert all(not q.symmetric for q, _ in by.values())  # no scheme given: asymmetric
    joint = TweakSpec.preset("joint")
    q, t = by["normtweak-default"]
    assert q.method == "rtn" and t == joint
    q, t = by["normtweak-joint-equal-compute"]
    assert q.method == "rtn" and t.iters == 13 and t.batch_size == 8
    assert t == TweakSpec.preset("joint", iters=13)
    q, t = by["normtweak-joint-frozen-norms"]
    assert t.lr == 0.0 and t.quant_params == joint.quant_params and t.enabled
    gptq_tweak = by["normtweak-gptq+tweak"][1]
    assert (gptq_tweak.iters, gptq_tweak.batch_size, gptq_tweak.loss, gptq_tweak.quant_params) == \
        (1, 1, "dist", "none")


def test_parse_rejects_unknown_variants_and_peers():
    with pytest.raises(SystemExit):
        peers.parse(["--variants", "normtweak-nope"])
    with pytest.raises(SystemExit):
        peers.parse(["--peers", "autoround-9"])
    a = peers.parse(["--configs", "4:64:sym", "--peers", "autoround-200,autoround-fast",
                     "--variants", "normtweak-default"])
    assert a.config_list == [(4, 64, True)] and a.peer_list == ["autoround-200", "autoround-fast"]


def test_seed_mismatch_only_where_the_seed_matters():
    args = _args()
    tuned = {"args": {"peer": "autoround", "iters": 50, "seed": 42}}
    assert peers.seed_mismatch(tuned, args) == "AutoRound seed 42"
    assert peers.seed_mismatch({"args": {"peer": "autoround", "iters": 50, "seed": 0}}, args) is None
    assert peers.seed_mismatch({"args": {"peer": "autoround", "iters": 0, "seed": 42}}, args) is None
    assert peers.seed_mismatch({"args": {"peer": "llmc", "seed": 42}}, args) is None
    assert peers.seed_mismatch({"method": "normtweak-rtn"}, args) is None


def _run(method, config, val, test, seconds=1.0):
    return {"method": method, "config": config, "quantize_s": seconds, "peak_rss_mb": 100.0,
            "eval": {"validation": {"ppl": val}, "test": {"ppl": test}}}


def test_table_gap_is_against_normtweak_rtn_of_the_same_config():
    float_run = {"eval": {"validation": {"ppl": 20.0}, "test": {"ppl": 10.0}}}
    runs = [_run("normtweak-rtn", "W4 g64 asym", 30.0, 20.0),
            _run("llmc-gptq", "W4 g64 asym", 25.0, 15.0),  # (20 - 15) / (20 - 10) = 50 %
            _run("autoround-rtn", "W3 g64 asym", 60.0, 50.0)]  # no RTN reference for W3
    rows = peers.table_rows(float_run, runs)
    by = {(r["method"], r["config"]): r for r in rows}
    assert by[("float", "-")]["test_ppl"] == 10.0
    assert by[("llmc-gptq", "W4 g64 asym")]["gap_recovered_%"] == pytest.approx(50.0)
    assert by[("normtweak-rtn", "W4 g64 asym")]["gap_recovered_%"] is None
    assert by[("autoround-rtn", "W3 g64 asym")]["gap_recovered_%"] is None
    table = peers.markdown(rows)
    assert "| llmc-gptq | W4 g64 asym | 25.00 | 15.00 | 50.0 |" in table


def test_table_names_a_cached_run_of_another_seed():
    float_run = {"eval": {"validation": {"ppl": 20.0}, "test": {"ppl": 10.0}}}
    run = {**_run("autoround-50", "W4 g64 sym", 25.0, 15.0), "seed_note": "AutoRound seed 42"}
    rows = peers.table_rows(float_run, [_run("normtweak-rtn", "W4 g64 sym", 30.0, 20.0), run])
    assert rows[-1]["method"] == "autoround-50 (AutoRound seed 42)"
    assert rows[-1]["gap_recovered_%"] == pytest.approx(50.0)


def test_peer_python_missing_environment_and_package(tmp_path):
    args = SimpleNamespace(venv_llmc=str(tmp_path / "nowhere"), venv_autoround=str(tmp_path))
    if importlib.util.find_spec("llmcompressor") is None:
        assert peers.peer_python("llmc", args) is None
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    args.venv_llmc = str(venv)
    found = peers.peer_python("llmc", args)
    assert found == (venv / "bin" / "python" if importlib.util.find_spec("llmcompressor")
                     else None)


def test_a_normtweak_run_resumes_from_its_checkpoints(tiny_llama, tmp_path):
    """--checkpoints-dir: the first run writes a checkpoint per block; a second run over the
    same folder restores every block from it, says so, and scores the same model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from normtweak.config import QuantSpec, TweakSpec
    from normtweak.testing import tiny_batch

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).float().eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    texts = {"validation": ["the cat sat on the mat and looked at the dog " * 4]}
    quant = QuantSpec(bits=4, group_size=16, symmetric=True)
    tweak = TweakSpec.preset("joint", iters=1, batch_size=2)
    args = _args(max_windows=1, window=32)
    ckpt = tmp_path / "run"
    first = peers.run_normtweak("normtweak-default", quant, tweak, model, tokenizer,
                                tiny_batch(4, 16), texts, args, ckpt)
    assert first["resumed_blocks"] == 0 and (ckpt / "run.json").is_file()
    blocks = len(model.model.layers)
    assert len(list(ckpt.glob("block_*.safetensors"))) == blocks
    again = peers.run_normtweak("normtweak-default", quant, tweak, model, tokenizer,
                                tiny_batch(4, 16), texts, args, ckpt)
    assert again["resumed_blocks"] == blocks
    assert again["eval"]["validation"]["ppl"] == first["eval"]["validation"]["ppl"]
    fresh = peers.run_normtweak("normtweak-default", quant, tweak, model, tokenizer,
                                tiny_batch(4, 16), texts, _args(max_windows=1, window=32, fresh=True),
                                ckpt)
    assert fresh["resumed_blocks"] == 0  # --fresh starts over
    assert fresh["eval"]["validation"]["ppl"] == first["eval"]["validation"]["ppl"]


def test_a_normtweak_run_records_each_blocks_losses(tiny_llama):
    """The run's per-block record: block 0's loss before training is the token-relative MSE
    of the RTN block against the float block on the embeddings, recomputed here in float64
    from the two models' hidden states; training kept only where it lowered the loss."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from normtweak.config import QuantSpec, TweakSpec
    from normtweak.quant.model import quantize_model
    from normtweak.testing import tiny_batch

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).float().eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    quant = QuantSpec(bits=3, group_size=16, symmetric=True)
    ids = tiny_batch(4, 16)
    tweak = TweakSpec.preset("joint", iters=2, batch_size=2)
    run = peers.run_normtweak("normtweak-default", quant, tweak, model, tokenizer, ids, {}, _args(),
                              None)
    blocks = run["blocks"]
    assert [b["index"] for b in blocks] == list(range(len(model.model.layers)))
    for b in blocks:
        assert not b["resumed"] and b["seconds"] > 0
        if b["kept_start"]:
            assert b["loss_after"] == b["loss_before"]
        else:
            assert b["loss_after"] < b["loss_before"]

    rtn = quantize_model(copy.deepcopy(model), quant)
    with torch.no_grad():
        y_f = model(ids, output_hidden_states=True).hidden_states[1].double()
        y_q = rtn(ids, output_hidden_states=True).hidden_states[1].double()
    by_token = ((y_q - y_f) ** 2).sum(-1) / (y_f ** 2).sum(-1)
    assert blocks[0]["loss_before"] == pytest.approx(by_token.mean().item(), rel=1e-4)


def _hash(path: Path) -> str:
    return path.stem.rsplit("_", 1)[1]


def test_every_cached_normtweak_run_keeps_its_name():
    """A run's file name hashes its specs as they were when it ran, fields added since left
    out at the value every earlier run had. Recomputed from the specs each run recorded, the
    hash is the file's own (the renames of the full-range switch kept them); and the variants
    as defined today find the runs made with today's specs, the renamed full-range ones
    included."""
    import hashlib
    import json

    from normtweak.config.quant import RECORDED_BEFORE

    runs = sorted((ROOT / "results" / "peers_runs").glob("*_normtweak-*pd_t1_*.json"))
    assert len(runs) > 30
    for path in runs:
        run = json.loads(path.read_text())
        recorded = [None if d is None else
                    {k: v for k, v in d.items() if not (k in RECORDED_BEFORE and v == RECORDED_BEFORE[k])}
                    for d in (run["quant"], run.get("tweak"))]
        blob = json.dumps(recorded, sort_keys=True)
        assert hashlib.sha256(blob.encode()).hexdigest()[:8] == _hash(path), path.name
        assert run["method"] == path.stem.split("_")[2]
        # a symmetric run's name says its grid
        if run["quant"]["symmetric"]:
            assert path.stem.split("_")[2].endswith("-gptqgrid") != bool(
                run["quant"].get("full_range", False)), path.name
    # today's variants at W4 g64 sym, seed 0, find the cached runs (the Wikipedia GPTQ-grid
    # default ran before TweakSpec.train_dtype existed: the Austen one is today's spec)
    for text, wanted in (("wikipedia", ("normtweak-default", "normtweak-rtn",
                                        "normtweak-rtn-gptqgrid")),
                         ("austen", ("normtweak-default-gptqgrid",))):
        args = _args(bits=4, group_size=64, symmetric=True, text=text)
        names = {n: peers.run_tag(args, n, 4, 64, True, (q, t))
                 for n, q, t in peers.normtweak_variants(args)}
        for name in wanted:
            path = ROOT / "results" / "peers_runs" / f"{names[name]}.json"
            assert path.is_file(), name
            assert json.loads(path.read_text())["quant"].get("full_range", False) is (
                not name.endswith("-gptqgrid"))
