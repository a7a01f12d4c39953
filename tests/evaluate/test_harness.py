"""lm-eval's local tasks run offline; the rolling one on a tiny model agrees with our own perplexity."""

import json

import pytest

from normtweak.evaluate import perplexity
from normtweak.evaluate.harness import (
    HarnessSpec,
    results_rows,
    rolling_loglikelihoods,
    run_tasks,
)
from normtweak.evaluate.taskdata import prepare_local_tasks, rotten_tomatoes_examples
from normtweak.testing import _SAMPLE_TEXT

LINES = [line.strip() for line in _SAMPLE_TEXT.strip().splitlines()]
DOCS = [" ".join(LINES[:4]) * 2, " ".join(LINES[4:7]), LINES[7]]


@pytest.mark.slow  # over 10 s on 2 cores
def test_local_rolling_task_matches_our_perplexity(make_tiny, tokenizer, tmp_path):
    model = make_tiny("llama")
    results = run_tasks(model, tokenizer, ["nt_wikipedia", "nt_rotten_tomatoes"],
                        cache_dir=tmp_path,
                        spec=HarnessSpec(limit=6, max_length=24, log_samples=True),
                        documents=lambda name: DOCS)
    lls = rolling_loglikelihoods(results, "nt_wikipedia")
    ours = [perplexity(model, tokenizer, d, window=24) for d in DOCS]
    assert len(lls) == len(DOCS)
    for ll, r in zip(lls, ours):
        assert -ll == pytest.approx(r.nll_sum, rel=1e-4)
    total = perplexity(model, tokenizer, DOCS, window=24)
    metrics = {r["metric"]: r["value"] for r in results_rows(results)}
    assert metrics["word_perplexity"] == pytest.approx(total.word_ppl, rel=1e-4)
    assert metrics["bits_per_byte"] == pytest.approx(total.bits_per_byte, rel=1e-4)
    # the sentiment task ran offline on the same model: 6 reviews, accuracy in sixths
    sentiment = results["results"]["nt_rotten_tomatoes"]
    assert len(results["samples"]["nt_rotten_tomatoes"]) == 6
    assert round(sentiment["acc,none"] * 6, 6).is_integer()


def test_prepared_task_points_at_generated_data(tmp_path):
    include = prepare_local_tasks(tmp_path, ["nt_austen"], documents=lambda name: DOCS)
    yaml_text = (include / "nt_austen.yaml").read_text()
    assert "__DATA__" not in yaml_text and str(tmp_path.resolve()) in yaml_text
    rows = [json.loads(l) for l in (include / "austen_test.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == DOCS
    with pytest.raises(ValueError, match="unknown local task"):
        prepare_local_tasks(tmp_path, ["nt_nope"])


def test_rotten_tomatoes_subset_is_fixed_and_balanced():
    rows = rotten_tomatoes_examples(per_class=20, seed=0)
    assert rows == rotten_tomatoes_examples(per_class=20, seed=0)
    assert sum(r["label"] for r in rows) == 20 and len(rows) == 40
    assert len({r["text"] for r in rows}) == 40
