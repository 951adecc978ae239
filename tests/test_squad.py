"""SQuAD: windows and character offsets, labels, version checks, post-processing
on hand-set logits, the span loss, and a few fine-tuning updates of an exported
child on a tiny SQuAD v2.0 set written here (the file's one fairseq-train launch)."""

import json
import math
import os
import random
import shutil

import pytest

from conftest import cli_in_process, make_text
from test_glue import SPEC, child_export  # noqa: F401  (child_export: a fixture)

from fairseq_magic.core import squad as S
from fairseq_magic.core import squad_metrics
from fairseq_magic.core.space import MagicConfigError

OFFICIAL_V2_KEYS = ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
                    "NoAns_exact", "NoAns_f1", "NoAns_total", "best_exact",
                    "best_exact_thresh", "best_f1", "best_f1_thresh"]

# hand-made contexts: unicode (ligature, full-width, combining accent, emoji,
# curly quotes), non-breaking spaces, tabs, newlines, leading/trailing blanks
CONTEXTS = [
    "  In the\u00a0beginning \ufb01ve  \uff26\uff55\uff4c\uff4c caf\u00e9\tna\u00efve \u2014 "
    "\u201cquoted\u201d e\u0301 \U0001F600 end.\n\nNew para  ",
    "the king went to israel . his son saw the city .\tmy servant smote them .",
    "x",
    "",
]


@pytest.fixture(scope="module")
def spm_tokenize(tmp_path_factory):
    """A small BPE sentencepiece model (default NFKC normalisation) trained on the
    toy grammar plus the unicode contexts."""
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("squad-spm")
    make_text(root / "corpus.txt", 300, 5)
    with open(root / "corpus.txt", "a", encoding="utf-8") as f:
        f.write("\n".join(c for c in CONTEXTS if c.strip()) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(root / "corpus.txt"), model_prefix=str(root / "spm"), model_type="bpe",
        vocab_size=120, hard_vocab_limit=False, minloglevel=2)
    return S.spm_tokenizer(spm.SentencePieceProcessor(model_file=str(root / "spm.model")))


def check_offsets(text, tokens):
    """Spans in order, never overlapping, trimmed, and every visible character
    of ``text`` in exactly one token."""
    covered = [0] * len(text)
    prev_end = 0
    for t in tokens:
        assert prev_end <= t.start <= t.end <= len(text), (t, text)
        prev_end = t.end
        if t.end > t.start:
            assert not text[t.start].isspace() and not text[t.end - 1].isspace()
        for i in range(t.start, t.end):
            covered[i] += 1
    for i, ch in enumerate(text):
        assert covered[i] == (0 if ch.isspace() else 1), (i, ch, text)


@pytest.mark.parametrize("which", ["whitespace", "sentencepiece"])
def test_offsets_map_spans_back_to_exact_characters(which, spm_tokenize):
    tokenize = S.whitespace_tokenizer if which == "whitespace" else spm_tokenize
    for ctx in CONTEXTS:
        tokens = tokenize(ctx)
        check_offsets(ctx, tokens)
        visible = [i for i, t in enumerate(tokens) if t.end > t.start]
        # every span of tokens maps to the exact original characters, and
        # token_span finds the same tokens back from those characters
        for a in visible:
            for b in visible:
                if b < a:
                    continue
                text = ctx[tokens[a].start:tokens[b].end]
                assert text == text.strip() and text
                first, last = S.token_span(tokens, tokens[a].start, tokens[b].end)
                assert ctx[tokens[first].start:tokens[last].end] == text
    if which == "sentencepiece":  # NFKC changes the pieces, never the offsets
        ctx = CONTEXTS[0]
        tokens = tokenize(ctx)
        assert "".join(ctx[t.start:t.end] for t in tokens) == "".join(ctx.split())
        assert any(ctx[t.start:t.end] != t.piece.lstrip("\u2581") for t in tokens)


def test_byte_offsets_become_character_offsets():
    text = "a\u00e9\U0001F600b"
    assert S.byte_to_char(text) == [0, 1, 1, 2, 2, 2, 2, 3, 4]
    assert S.trim_span(" \t ab \n", 0, 7) == (3, 5)
    assert S.trim_span("a   b", 1, 4) == (4, 4)
    assert S.safe_piece("ab") == "ab" and S.safe_piece("a\u2028") == "<unk>" \
        and S.safe_piece("") == "<unk>"


@pytest.mark.parametrize("n, window, stride", [(0, 5, 2), (1, 5, 2), (5, 5, 2), (6, 5, 2),
                                               (17, 5, 2), (17, 5, 5), (17, 5, 9),
                                               (100, 7, 3), (13, 1, 1), (40, 12, 12)])
def test_windows_cover_every_context_token(n, window, stride):
    spans = S.window_spans(n, window, stride)
    seen = set()
    for offset, length in spans:
        assert 0 < length <= window or (n == 0 and length == 0)
        seen.update(range(offset, offset + length))
    assert seen == set(range(n))
    assert spans[-1][0] + spans[-1][1] == n
    starts = [o for o, _ in spans]
    assert starts == sorted(set(starts)) and starts[0] == 0
    assert all(b - a == min(stride, window) for a, b in zip(starts, starts[1:-1]))


def example(context, answer=None, at=None, qid="q", question="who", impossible=False):
    answers = () if answer is None else ((answer, context.index(answer) if at is None else at),)
    return S.SquadExample(qid, question, context, answers, impossible)


def test_labels_and_windows_of_a_long_context():
    words = [f"w{i}" for i in range(50)]
    ctx = "  ".join(words[:20]) + "\n" + " ".join(words[20:])
    cfg = S.WindowConfig(max_length=16, doc_stride=4, max_query_length=3)
    ex = example(ctx, "w21 w22 w23", question="what is it about w22")
    enc = S.encode(ex, S.whitespace_tokenizer, cfg)
    assert [t.piece for t in enc.question] == ["what", "is", "it"]  # cut to 3
    assert enc.answer == (21, 23)
    per_window = 16 - 3 - S.SPECIAL_TOKENS
    covered = set()
    for w in enc.windows:
        assert w.length <= per_window and w.seq_len <= 16 and w.context_start == 6
        covered.update(range(w.offset, w.offset + w.length))
        inside = w.offset <= 21 and 23 < w.offset + w.length
        if inside:  # relative to the window's context
            assert (w.start, w.end) == (21 - w.offset, 23 - w.offset)
            q, c, lab = S.window_lines(enc, w)
            assert c.split()[w.start:w.end + 1] == ["w21", "w22", "w23"]
            assert q == "what is it" and lab == f"{w.start} {w.end}"
        else:  # the answer is outside (or cut by) this window: CLS
            assert (w.start, w.end) == (S.CLS, S.CLS)
    assert covered == set(range(50))
    # windows of 9 context tokens every 4: only those at 16 and 20 hold tokens 21..23
    assert [w.offset for w in enc.windows] == list(range(0, 48, 4))
    assert [w.offset for w in enc.windows if w.start != S.CLS] == [16, 20]
    # an unanswerable question: every window CLS
    enc = S.encode(example(ctx, impossible=True), S.whitespace_tokenizer, cfg)
    assert {(w.start, w.end) for w in enc.windows} == {(S.CLS, S.CLS)}
    # an answer_start off by a few characters: the nearest occurrence
    ex = example("a b a b", "a b", at=3)
    assert ex.answer_chars() == (4, 7)
    # an answer that is not in the context is lost (training skips the question)
    enc = S.encode(example("a b c", "zz", at=0), S.whitespace_tokenizer, cfg)
    assert enc.answer_lost and {(w.start, w.end) for w in enc.windows} == {(-1, -1)}
    with pytest.raises(MagicConfigError, match="--max-length 10 leaves no room.*"
                                               "--max-query-length 6"):
        S.WindowConfig(10, 2, 6).check()
    with pytest.raises(MagicConfigError, match="--max-length 40 exceeds the model's "
                                               "max_positions 32"):
        S.WindowConfig(40, 2, 6).check(32)


def windowed_logits(enc, marks):
    """Logits of every window: -100 everywhere, then marks[(window, position)] =
    (start, end) logits."""
    out = []
    for w_i, w in enumerate(enc.windows):
        s, e = [-100.0] * w.seq_len, [-100.0] * w.seq_len
        for (wi, pos), (ls, le) in marks.items():
            if wi == w_i:
                s[pos] = ls if ls is not None else s[pos]
                e[pos] = le if le is not None else e[pos]
        out.append((s, e))
    return out


def test_best_span_across_windows_on_hand_set_logits():
    ctx = " \u00c0 b\u00a0c\td  \u00e9 f\ng h "  # tokens a..h at their characters
    cfg = S.WindowConfig(max_length=9, doc_stride=2, max_query_length=1)
    enc = S.encode(example(ctx, question="q"), S.whitespace_tokenizer, cfg)
    assert [(w.offset, w.length) for w in enc.windows] == [(0, 4), (2, 4), (4, 4)]
    cs = enc.windows[0].context_start  # position of a window's first context token
    assert cs == 4
    marks = {
        (0, 0): (1.0, 1.0),  # CLS: null score of window 0 = 2
        (1, 0): (0.0, 0.5),  # window 1: 0.5, the smallest: the question's null score
        (2, 0): (3.0, 3.0),
        (0, 1): (50.0, 50.0),  # a question token: never an answer
        (0, cs + 0): (2.0, None), (0, cs + 1): (None, 2.0),  # window 0: "\u00c0 b" = 4
        (1, cs + 1): (5.0, None), (1, cs + 2): (None, 4.0),  # window 1: "d  \u00e9" = 9
        (2, cs + 3): (30.0, None), (2, cs + 0): (None, 30.0),  # end before start: invalid
    }
    logits = windowed_logits(enc, marks)
    p = S.best_span(enc, logits, n_best=20, max_answer_length=30, with_null=True)
    assert (p.text, p.score, p.null_score) == ("d  \u00e9", 9.0, 0.5)
    assert ctx[p.start:p.end] == p.text and p.na == 0.5 - 9.0
    # a better span in the last window, longer than max_answer_length allows
    marks[(2, cs + 0)] = (8.0, None)
    marks[(2, cs + 3)] = (None, 8.0)  # "\u00e9 f\ng h": 4 tokens, score 16
    logits = windowed_logits(enc, marks)
    assert S.best_span(enc, logits, max_answer_length=4).text == "\u00e9 f\ng h"
    assert S.best_span(enc, logits, max_answer_length=3).text == "d  \u00e9"
    # n_best 1 keeps only the top start and end of each window
    assert S.best_span(enc, logits, n_best=1, max_answer_length=4).text == "\u00e9 f\ng h"
    # v1.1 never answers "" and has no na; v2.0 answers "" above the threshold
    preds, spans, na = S.predict([enc], logits, "1.1", max_answer_length=3)
    assert preds == spans == {"q": "d  \u00e9"} and na is None
    preds, spans, na = S.predict([enc], logits, "2.0", max_answer_length=3)
    assert preds == spans == {"q": "d  \u00e9"} and na == {"q": -8.5}
    preds, _, _ = S.predict([enc], logits, "2.0", max_answer_length=3,
                            null_score_threshold=-9.0)
    assert preds == {"q": ""}
    with pytest.raises(MagicConfigError, match="2 windows of logits, expected 3"):
        S.predict([enc], logits[:2], "2.0")


def squad_json(version, n_paragraphs, seed, impossible=True):
    """A tiny SQuAD file in the official format, from the toy grammar of
    conftest.make_text: "SUBJECT VERB what" asks for the sentence's object."""
    subj = ["the king", "a man", "the people", "his son", "the lord", "my servant"]
    verb = ["spake unto", "went to", "saw", "blessed", "smote", "gave bread to"]
    obj = ["the city", "israel", "the priest", "her daughter", "the house", "them"]
    rng = random.Random(seed)
    data = []
    for p in range(n_paragraphs):
        sents = [(rng.choice(subj), rng.choice(verb), rng.choice(obj)) for _ in range(3)]
        context, qas = "", []
        for k, (s, v, o) in enumerate(sents):
            start = len(context) + len(s) + len(v) + 2
            context += f"{s} {v} {o} . "
            qa = {"id": f"{seed}-{p}-{k}", "question": f"{s} {v} what",
                  "answers": [{"text": o, "answer_start": start}]}
            if version == "2.0":
                qa["is_impossible"] = False
            qas.append(qa)
        if version == "2.0" and impossible:
            pairs = {(s, v) for s, v, _ in sents}
            s, v = next((s, v) for s in subj for v in verb if (s, v) not in pairs)
            qas.append({"id": f"{seed}-{p}-x", "question": f"{s} {v} what", "answers": [],
                        "plausible_answers": [{"text": "them", "answer_start": 0}],
                        "is_impossible": True})
        data.append({"title": f"t{p}", "paragraphs": [{"context": context.strip(),
                                                       "qas": qas}]})
    obj = {"data": data}
    if version == "2.0":
        obj["version"] = "v2.0"
    return obj


def write_squad(folder, version, n_train=12, n_dev=4):
    os.makedirs(folder, exist_ok=True)
    for name, n, seed in (("train", n_train, 1), ("dev", n_dev, 2)):
        with open(os.path.join(folder, f"{name}-v{version}.json"), "w") as f:
            json.dump(squad_json(version, n, seed), f)


def test_version_detection_and_file_errors(tmp_path):
    write_squad(tmp_path / "sq", "1.1")
    write_squad(tmp_path / "sq", "2.0")
    v1 = str(tmp_path / "sq" / "dev-v1.1.json")
    v2 = str(tmp_path / "sq" / "dev-v2.0.json")
    ex1, ex2 = S.read_squad(v1, "1.1"), S.read_squad(v2, "2.0")
    assert len(ex1) == 12 and len(ex2) == 16 and sum(e.is_impossible for e in ex2) == 4
    e = ex1[0]
    assert e.context[e.answers[0][1]:].startswith(e.answers[0][0])
    with pytest.raises(MagicConfigError, match=f"{v1}: a SQuAD v1.1 file .*no \"version\".*"
                                               "expected v2.0"):
        S.read_squad(v1, "2.0")
    with pytest.raises(MagicConfigError, match=f"{v2}: a SQuAD v2.0 file \\(its \"version\" "
                                               "is 'v2.0'\\), expected v1.1"):
        S.read_squad(v2, "1.1")
    # no "version" key: is_impossible marks v2.0
    obj = squad_json("2.0", 2, 3)
    del obj["version"]
    (tmp_path / "noversion.json").write_text(json.dumps(obj))
    with pytest.raises(MagicConfigError, match="a SQuAD v2.0 file \\(it marks questions "
                                               "with \"is_impossible\"\\), expected v1.1"):
        S.read_squad(str(tmp_path / "noversion.json"), "1.1")
    obj = squad_json("1.1", 1, 3)
    obj["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = "7"
    (tmp_path / "bad.json").write_text(json.dumps(obj))
    with pytest.raises(MagicConfigError, match="bad.json: question '3-0-1': answers\\[0\\]: "
                                               "expected an integer 'answer_start'.*'7'"):
        S.read_squad(str(tmp_path / "bad.json"), "1.1")
    with pytest.raises(MagicConfigError, match="nope.json: cannot read it"):
        S.read_squad(str(tmp_path / "nope.json"), "1.1")
    with pytest.raises(MagicConfigError, match="SQuAD version '3': expected 1.1 or 2.0"):
        S.parse_version("3")
    assert S.parse_version("v2.0") == "2.0" and S.parse_version("1.1") == "1.1"
    # a subsampled dev set's data file keeps only the chosen questions
    kept = S.subsample(ex2, 5, 0)
    small = S.restrict_file(json.loads(open(v2).read()), [e.qid for e in kept])
    parsed = squad_metrics.parse_squad(small)
    assert [q.qid for q in parsed.questions] == [e.qid for e in kept]
    assert parsed.version == "2.0"


# windows shorter than the export's 32 positions (its position table is kept whole)
FINETUNE = ["--batch-size", "16", "--epochs", "1", "--max-length", "30",
            "--max-query-length", "12", "--doc-stride", "6", "--log-interval", "1", "--cpu",
            "--max-dev-examples", "14"]


@pytest.fixture(scope="module")
def finetuned(child_export, tmp_path_factory):  # noqa: F811
    root, export = child_export
    tmp = tmp_path_factory.mktemp("squad-run")
    write_squad(tmp / "squad", "2.0")
    out = tmp / "out"
    res = cli_in_process("fairseq_magic.cli.squad", "magic-squad", "2.0", export,
                         tmp / "squad", out, *FINETUNE)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return export, tmp / "squad", out, res


def test_finetunes_squad_v2_from_an_exported_child(finetuned):
    export, data, out, res = finetuned
    run = out / "v2.0"
    result = json.loads((run / "result.json").read_text())
    # 48 train questions; windows of 30 tokens: 12 question chars + 4 specials
    # leave 14 context characters per window, one every 6
    assert result["train_questions"] == 48 and result["train_questions_skipped"] == 0
    assert result["arch"] == SPEC
    assert (result["max_length"], result["doc_stride"], result["max_query_length"]) == \
        (30, 6, 12)
    n_win = result["train_windows"]
    assert n_win > 48 * 5 and result["updates"] == math.ceil(n_win / 16)
    assert f"{n_win} windows" in res.stdout
    log = (run / "train.log").read_text()
    assert f"Loaded checkpoint {export / 'model.pt'}" in log
    assert f"num_updates {result['updates']}" in log
    # the export has no span head: it starts from its initialisation
    assert "new span head: span_head.out_proj.weight starts from its initialisation" in log

    dev = squad_metrics.load_squad(str(run / "dev.json"))
    assert len(dev.questions) == 14 == result["dev_questions"]
    contexts = {qa["id"]: para["context"]
                for art in json.loads((run / "dev.json").read_text())["data"]
                for para in art["paragraphs"] for qa in para["qas"]}
    preds = json.loads((run / "predictions.json").read_text())
    spans = json.loads((run / "predictions_best_span.json").read_text())
    na = json.loads((run / "na_probs.json").read_text())
    qids = [q.qid for q in dev.questions]
    assert list(preds) == list(spans) == list(na) == qids
    for qid in qids:  # best spans are exact pieces of their context
        assert spans[qid] and spans[qid] in contexts[qid] and spans[qid] == spans[qid].strip()
        assert preds[qid] == ("" if na[qid] > 0.0 else spans[qid])

    # the scores: the official keys, and what magic-squad-eval says of the files
    scores = json.loads((run / "scores.json").read_text())
    assert list(scores) == OFFICIAL_V2_KEYS and scores == result["scores"]
    assert result["eval_command"][0] == "magic-squad-eval"
    ev = cli_in_process("fairseq_magic.cli.squad_eval", "magic-squad-eval",
                        *result["eval_command"][1:])
    assert ev.returncode == 0 and ev.json == scores
    plain = squad_metrics.evaluate(dev, preds)  # predictions.json scored alone
    assert (plain["exact"], plain["f1"]) == (scores["exact"], scores["f1"])
    assert scores["NoAns_total"] == sum(1 for q in dev.questions if not q.has_answer) > 0
    table = (out / "results.md").read_text()
    assert f"| this child | - | - | {scores['exact']:.1f} | {scores['f1']:.1f} |" in table
    assert "| MAGIC-AT (paper, Table 4 dev) | 82.7 | 90.0 | 76.6 | 80.4 |" in table
    assert json.loads((out / "results.json").read_text())["v2.0"]["scores"] == scores

    # a rerun skips the finished version (no second fairseq-train)
    mtime = os.path.getmtime(run / "train.log")
    again = cli_in_process("fairseq_magic.cli.squad", "magic-squad", "2.0", export, data,
                           out, *FINETUNE)
    assert again.returncode == 0 and "[v2.0] done already" in again.stdout
    assert os.path.getmtime(run / "train.log") == mtime


def test_span_head_and_loss_of_the_checkpoint(finetuned):
    """The fine-tuned checkpoint loads with its span head; the criterion's loss is
    0.5 x (CE start + CE end) over the context and CLS positions, recomputed here."""
    import torch
    import torch.nn.functional as F
    from fairseq import checkpoint_utils

    from fairseq_magic.tasks.squad_task import span_logits

    export, _, out, _ = finetuned
    run = out / "v2.0"
    ckpt = run / "checkpoints" / "checkpoint_last.pt"
    state = torch.load(ckpt, weights_only=False)
    assert state["model"]["span_head.out_proj.weight"].shape == (2, 32)
    exported = torch.load(export / "model.pt", weights_only=False)["model"]
    key = "encoder.sentence_encoder.embed_tokens.weight"
    assert not torch.equal(state["model"][key], exported[key])  # fine-tuned, not only the head
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(ckpt)], arg_overrides={"data": str(run / "bin")})
    model = models[0].eval()
    task.load_dataset("valid")
    crit = task.build_criterion(cfg.criterion)
    batch = next(task.get_batch_iterator(dataset=task.dataset("valid"), max_sentences=8)
                 .next_epoch_itr(shuffle=False))
    with torch.no_grad():
        loss, n, log = crit(model, batch)
        logits = span_logits(model, batch["net_input"]["src_tokens"])
    labels = [ln.split() for ln in (run / "text" / "valid.label").read_text().splitlines()]
    want = 0.0
    for b, i in enumerate(batch["id"].tolist()):
        cs, ce = int(batch["context_start"][b]), int(batch["context_end"][b])
        toks = batch["net_input"]["src_tokens"][b]
        assert toks[0] == task.dictionary.bos() and toks[cs - 1] == toks[cs - 2] == \
            task.dictionary.eos() and toks[ce] == task.dictionary.eos()
        s, e = (int(x) for x in labels[i])
        target = (0, 0) if s < 0 else (cs + s, cs + e)
        assert (int(batch["start_positions"][b]), int(batch["end_positions"][b])) == target
        keep = [0] + list(range(cs, ce))
        for k, t in enumerate(target):
            row = logits[b, keep, k].float()
            want += 0.5 * float(F.cross_entropy(row[None], torch.tensor([keep.index(t)])))
    assert n == len(batch["id"]) and float(loss) == pytest.approx(want, rel=1e-5)

    # the task itself refuses a super-net (before any training)
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    from conftest import TINY_MODEL, USER_DIR
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(run / "bin"), "--user-dir", USER_DIR, "--task", "magic_squad", "--criterion",
        "squad_span", "--arch", "magic_supernet", *TINY_MODEL, "--max-positions", "32",
        "--cpu"])
    cfg = convert_namespace_to_omegaconf(args)
    with pytest.raises(MagicConfigError, match="--task magic_squad fine-tunes one fixed "
                                               "child .*got --arch 'magic_supernet'"):
        tasks.setup_task(cfg.task).build_model(cfg.model)


def test_bad_input_fails_before_training(child_export, trained_supernet, tmp_path):  # noqa: F811
    root, export = child_export
    data = tmp_path / "squad"
    write_squad(data, "2.0", n_train=2, n_dev=1)
    out = tmp_path / "out"

    def run(*argv):
        res = cli_in_process("fairseq_magic.cli.squad", "magic-squad", *argv)
        assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
        assert not (out / "v2.0").exists() and not (out / "v1.1").exists()
        return res.stderr.strip().splitlines()[-1]

    # a v2.0 file named as v1.1 (and the reverse)
    shutil.copy(data / "train-v2.0.json", data / "train-v1.1.json")
    shutil.copy(data / "dev-v2.0.json", data / "dev-v1.1.json")
    err = run("1.1", export, data, out)
    assert err.startswith("magic-squad: error: ") and "train-v1.1.json: a SQuAD v2.0 file" in err
    with open(data / "dev-v2.0.json", "w") as f:
        json.dump(squad_json("1.1", 1, 2), f)
    err = run("2.0", export, data, out)
    assert "dev-v2.0.json: a SQuAD v1.1 file" in err and "expected v2.0" in err
    os.remove(data / "dev-v2.0.json")
    err = run("2.0", export, data, out)
    assert "SQuAD v2.0: no file" in err and "dev-v2.0.json" in err
    write_squad(data, "2.0", n_train=2, n_dev=1)
    # a super-net checkpoint is not an exported child
    notchild = tmp_path / "supernet"
    notchild.mkdir()
    shutil.copy(trained_supernet, notchild / "model.pt")
    shutil.copy(export / "dict.txt", notchild / "dict.txt")
    err = run("2.0", notchild, data, out, "--spm", export / "spm.model")
    assert "supernet/model.pt" in err and "not an exported child" in err \
        and "'magic_supernet'" in err
    err = run("2.0", export, data, out, "--max-length", "64")
    assert "--max-length 64 exceeds the model's max_positions 32" in err
    err = run("2.0", export, data, out, "--n-best", "0")
    assert "--n-best 0 and --max-answer-length 30: expected >= 1" in err
    err = run("3", export, data, out)
    assert "SQuAD version '3'" in err


def first_update(log, key):
    """``key``'s value on the first train_inner line of a fairseq-train log."""
    line = next(ln for ln in log.splitlines() if " | train_inner | " in ln)
    return float(line.split(f" {key}=")[1].split(",")[0])


def test_squad_fine_tuning_distillation(finetuned, tmp_path):
    """magic-squad --kd-teacher OUT: the plain run of this file is the teacher;
    the distilled run (squad_span_kd) goes to OUT/v2.0-kd beside it, the plain
    run untouched. Bad distillation input fails before anything is written."""
    import torch

    export, data, out, _ = finetuned
    plain = out / "v2.0"
    teacher = plain / "checkpoints" / "checkpoint_last.pt"  # the checkpoint magic-squad scores
    plain_result = (plain / "result.json").read_bytes()
    plain_entry = json.loads((out / "results.json").read_text())["v2.0"]
    plain_mtime = os.path.getmtime(teacher)
    kd_dir = out / "v2.0-kd"

    def squad_cli(*argv):
        return cli_in_process("fairseq_magic.cli.squad", "magic-squad", "2.0", export, data,
                              out, *FINETUNE, *argv)

    def error(*argv):
        res = squad_cli(*argv)
        assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
        assert not kd_dir.exists()
        err = res.stderr.strip().splitlines()[-1]
        assert err.startswith("magic-squad: error: ")
        return err

    missing = tmp_path / "no-teacher"
    assert f"--kd-teacher {str(missing)!r} does not exist" in error("--kd-teacher", missing)
    (tmp_path / "empty").mkdir()  # a folder without a v2.0 run
    err = error("--kd-teacher", tmp_path / "empty")
    assert f"no {str(tmp_path / 'empty' / 'v2.0' / 'checkpoints' / 'checkpoint_last.pt')!r}" \
        in err and "magic-squad output folder with v2.0 fine-tuned" in err
    assert "--kd-alpha 1.5: expected a value in [0, 1]" in error(
        "--kd-teacher", out, "--kd-alpha", "1.5")
    assert "--kd-temperature 0.0: expected a finite value > 0" in error(
        "--kd-teacher", out, "--kd-temperature", "0")
    # an unfinished teacher run: its checkpoint_last.pt may be of any epoch
    unfinished = tmp_path / "unfinished" / "v2.0" / "checkpoints"
    unfinished.mkdir(parents=True)
    shutil.copy(teacher, unfinished / "checkpoint_last.pt")
    assert "the teacher's v2.0 run has no result.json yet" in error(
        "--kd-teacher", tmp_path / "unfinished")
    # the export itself: the right dictionary, no span head
    err = error("--kd-teacher", export / "model.pt")
    assert str(export / "model.pt") in err and "has no SQuAD span head" in err
    # the teacher beside a dict.txt with one symbol renamed: another dictionary
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    shutil.copy(teacher, renamed / "checkpoint_last.pt")
    lines = (export / "dict.txt").read_text().splitlines()
    lines[5] = "renamed 1"
    (renamed / "dict.txt").write_text("\n".join(lines) + "\n")
    err = error("--kd-teacher", renamed)  # a checkpoints folder: its checkpoint_last.pt
    assert f"--kd-teacher {str(renamed / 'checkpoint_last.pt')!r}" in err \
        and "at symbol 9: 'renamed' (teacher)" in err

    res = squad_cli("--kd-teacher", out, "--kd-alpha", "0.4", "--kd-temperature", "2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "[v2.0-kd] " in res.stdout
    result = json.loads((kd_dir / "result.json").read_text())
    assert result["kd"] == {"teacher": str(teacher), "alpha": 0.4, "temperature": 2.0}
    cmd = result["command"]
    assert cmd[cmd.index("--criterion") + 1] == "squad_span_kd"
    assert cmd[cmd.index("--kd-teacher") + 1] == str(teacher)
    assert cmd[cmd.index("--kd-alpha") + 1] == "0.4"
    assert cmd[cmd.index("--kd-temperature") + 1] == "2.0"
    plain_run = json.loads(plain_result)
    assert (result["train_windows"], result["updates"]) == \
        (plain_run["train_windows"], plain_run["updates"])
    log = (kd_dir / "train.log").read_text()
    assert f"KD teacher {teacher}" in log and f"num_updates {result['updates']}" in log
    # the first update's gold-label loss is the plain run's first loss: the same
    # start, data order and dropout (the frozen teacher draws no random numbers)
    plain_log = (plain / "train.log").read_text()
    assert first_update(log, "span_loss") == first_update(plain_log, "loss")
    # loss = 0.6 x gold + 0.4 x distillation (the teacher, fine-tuned from the same
    # export for a few updates, is close to the student: kd_loss is small)
    span, kd = first_update(log, "span_loss"), first_update(log, "kd_loss")
    assert math.isfinite(kd) and kd >= 0
    assert first_update(log, "loss") == pytest.approx(0.6 * span + 0.4 * kd, abs=2e-3)
    # the teacher is the fine-tuned checkpoint: on the same first batch its own
    # loss (eval mode) is below the student's, which starts from the export
    assert first_update(log, "teacher_loss") < span
    assert "teacher_accuracy=" in log
    state = torch.load(kd_dir / "checkpoints" / "checkpoint_last.pt", weights_only=False)
    assert state["cfg"]["criterion"]["kd_teacher"] == str(teacher)
    assert state["criterion"] is None and not any(k.startswith("teacher") for k in state["model"])
    assert json.loads((kd_dir / "scores.json").read_text()) == result["scores"]

    # the plain run untouched, both rows in the results
    assert (plain / "result.json").read_bytes() == plain_result
    assert os.path.getmtime(teacher) == plain_mtime
    results = json.loads((out / "results.json").read_text())
    assert results["v2.0"] == plain_entry and results["v2.0-kd"]["kd"] == result["kd"]
    table = (out / "results.md").read_text()
    ps, ks = plain_entry["scores"], result["scores"]
    assert f"| this child | - | - | {ps['exact']:.1f} | {ps['f1']:.1f} |" in table
    assert f"| this child (kd) | - | - | {ks['exact']:.1f} | {ks['f1']:.1f} |" in table
    # a rerun skips it
    again = squad_cli("--kd-teacher", out, "--kd-alpha", "0.4", "--kd-temperature", "2")
    assert again.returncode == 0 and "[v2.0-kd] done already" in again.stdout
