"""`normtweak report`: the per-block losses a tweak recorded, as a table and a PNG."""

from click.testing import CliRunner

from normtweak.cli import main
from normtweak.evaluate.blocks import block_table
from normtweak.testing import tiny_corpus


def test_report_of_a_tweaked_folder(tmp_path, make_tiny, tokenizer):
    make_tiny("llama").save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    corpus = tiny_corpus(tmp_path / "c.txt")
    r = CliRunner().invoke(main, ["tweak", "--model", str(tmp_path / "tiny"), "--from-text",
                                  str(corpus), "--num-samples", "4", "--seq-len", "16",
                                  "--eval-windows", "0", "--save-dir", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["report", str(tmp_path / "t"), "--plot", str(tmp_path / "b.png")])
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if line.startswith("| 0 ") or
            line.startswith("| 1 ")]
    assert len(rows) == 2 and "2 blocks;" in r.output
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(main, ["report", str(tmp_path / "tiny")])
    assert r.exit_code == 1 and "no normtweak_quantization.json" in r.output


def test_block_table_marks_what_keep_better_put_back():
    blocks = [{"index": 0, "lr": 1e-4, "loss_before": 2.0, "loss_after": 1.0},
              {"index": 1, "lr": 2e-4, "loss_before": 1.0, "loss_after": 1.0, "kept_start": True}]
    table = block_table(blocks)
    assert "| 0 | 0.0001 | 2 | 1 | -50.0 |  |" in table
    assert "| 1 | 0.0002 | 1 | 1 | +0.0 | put back (training raised its loss) |" in table
