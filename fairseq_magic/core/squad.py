"""SQuAD v1.1 / v2.0 span extraction without fairseq (and without torch).

The pieces ``magic-squad`` (fairseq_magic/cli/squad.py) puts together:

* ``read_squad``: the official JSON files, checked for the expected version
  (``squad_metrics.parse_squad`` detects it: the ``"version"`` key, else the
  presence of ``is_impossible``), every field the pipeline reads checked, one
  ``SquadExample`` per question.
* ``spm_tokenizer``: a sentencepiece model's pieces with the CHARACTER offsets
  of the original text each piece came from (sentencepiece reports byte offsets
  into the un-normalised input; whitespace is trimmed off a piece's span, so a
  span starts and ends on a visible character, or is empty for a piece with no
  visible text such as a lone ``\u2581``).
* ``encode``: question and context tokenised; the question cut to
  ``max_query_length`` tokens; the context cut into windows of at most
  ``max_length - len(question) - 4`` tokens (``<s> question </s> </s>
  context </s>``, RoBERTa's pair layout) starting every ``doc_stride`` tokens
  (BERT's meaning of the stride: the step between window starts), the last
  window ending on the last token, so every context token is in some window.
  Each window is labelled with the answer's first and last token relative to
  its context, or ``-1`` (= the CLS position ``<s>``) when the question is
  unanswerable or the answer is not wholly inside the window (BERT's rule, in
  v1.1 too: the window learns "not here").
* ``predict``: per window, the ``n_best`` highest start and end logits over the
  window's context tokens; a span is valid when end >= start and it has at most
  ``max_answer_length`` tokens and some visible text; its score is start + end
  logit; the best valid span over all windows of the question is mapped back to
  the exact characters of the original context. For v2.0 the null score is the
  smallest start + end logit at CLS over the windows (BERT's), ``na`` = null
  score - best span score is the no-answer score magic-squad-eval's threshold
  search takes, and the official prediction is "" when ``na`` exceeds the
  threshold (default 0.0). v1.1 never predicts "no answer".

Bad input raises ``MagicConfigError`` naming the file, the question and what
was expected.
"""

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import squad_metrics
from .space import MagicConfigError

VERSIONS = ("1.1", "2.0")
# the official file names, as SQuAD's site distributes them
FILES = {v: (f"train-v{v}.json", f"dev-v{v}.json") for v in VERSIONS}

# <s> question </s> </s> context </s>: RoBERTa's pair layout (sentence_prediction's
# --init-token 0 --separator-token 2); the context starts after 3 + len(question)
SPECIAL_TOKENS = 4
CLS = -1  # a window's label: no answer here (the <s> position)

# The recipe (downstream-facts.md: a fairseq span head elsewhere, COCO-LM's
# fork; windows as BERT/RoBERTa's run_squad: 384 tokens, stride 128, 64 for the question).
RECIPE = dict(lr=2e-5, batch_size=32, epochs=3, warmup_frac=0.1, weight_decay=0.01,
              n_best=20, max_answer_length=30, max_length=384, doc_stride=128,
              max_query_length=64, null_score_threshold=0.0)

# The paper's Table 4 (dev set), (EM, F1); None = not reported.
PAPER_TABLE4_DEV = {
    "BERT-base": {"1.1": (80.5, 88.5), "2.0": None},
    "RoBERTa-base": {"1.1": (82.1, 89.3), "2.0": (74.9, 78.2)},
    "ELECTRA-base": {"1.1": (84.5, 90.8), "2.0": (80.5, 83.3)},
    "MAGIC-AT": {"1.1": (82.7, 90.0), "2.0": (76.6, 80.4)},
    "E-MAGIC-AT": {"1.1": (84.8, 91.4), "2.0": (80.8, 83.9)},
}


def parse_version(text: str) -> str:
    v = str(text).strip().lower().lstrip("v")
    if v not in VERSIONS:
        raise MagicConfigError(f"SQuAD version {text!r}: expected 1.1 or 2.0 (v1.1, v2.0)")
    return v


# ---------------------------------------------------------------- data

@dataclass(frozen=True)
class SquadExample:
    qid: str
    question: str
    context: str
    answers: Tuple[Tuple[str, int], ...]  # (text, answer_start) as in the file
    is_impossible: bool = False

    def answer_chars(self) -> Optional[Tuple[int, int]]:
        """[start, end) characters of the first answer found in the context: at its
        answer_start, else its occurrence nearest to answer_start (a few official
        answers are off by some characters); None when none is found."""
        for text, start in self.answers:
            if text.strip() and self.context[start:start + len(text)] == text:
                return start, start + len(text)
        best = None
        for text, start in self.answers:
            if not text.strip():
                continue
            at = self.context.find(text)
            while at >= 0:
                if best is None or abs(at - start) < abs(best[0] - start):
                    best = (at, at + len(text))
                at = self.context.find(text, at + 1)
        return best


def _evidence(obj, version: str) -> str:
    v = obj.get("version")
    if isinstance(v, str) and squad_metrics._version(obj) is not None:
        return f"its \"version\" is {v!r}"
    if version == "2.0":
        return "it marks questions with \"is_impossible\""
    return "it has no \"version\" of 2.x and no \"is_impossible\" field"


def read_squad(path: str, version: str) -> List[SquadExample]:
    """The questions of an official SQuAD file of ``version`` ("1.1" or "2.0")."""
    obj = squad_metrics.read_json(path)
    found = squad_metrics.parse_squad(obj, source=path).version  # checks the structure
    if found != version:
        raise MagicConfigError(f"{path}: a SQuAD v{found} file ({_evidence(obj, found)}), "
                               f"expected v{version}")
    out = []
    for i, article in enumerate(obj["data"]):
        for j, para in enumerate(article["paragraphs"]):
            context = para.get("context")
            if not isinstance(context, str):
                raise MagicConfigError(f"{path}: data[{i}].paragraphs[{j}]: expected a string "
                                       f"'context', got {squad_metrics._type(context)}")
            for qa in para["qas"]:
                where = f"{path}: question {qa['id']!r}"
                if not isinstance(qa.get("question"), str):
                    raise MagicConfigError(f"{where}: expected a string 'question', got "
                                           f"{squad_metrics._type(qa.get('question'))}")
                answers = []
                for n, a in enumerate(qa["answers"]):
                    start = a.get("answer_start")
                    if isinstance(start, bool) or not isinstance(start, int) or not (
                            0 <= start <= len(context)):
                        raise MagicConfigError(
                            f"{where}: answers[{n}]: expected an integer 'answer_start' in "
                            f"0..{len(context)} (the context's length), got {start!r}")
                    answers.append((a["text"], start))
                out.append(SquadExample(qa["id"], qa["question"], context, tuple(answers),
                                        bool(qa.get("is_impossible", False))))
    return out


def subsample(examples: List[SquadExample], n: Optional[int], seed: int) -> List[SquadExample]:
    """``n`` questions drawn with ``seed``, in file order (all when n is None or larger)."""
    if n is None or n >= len(examples):
        return list(examples)
    keep = set(random.Random(seed).sample(range(len(examples)), n))
    return [ex for i, ex in enumerate(examples) if i in keep]


def restrict_file(obj, qids) -> dict:
    """The official JSON object ``obj`` with only the questions ``qids`` (and the
    paragraphs and articles holding them): the data file of a subsampled dev set."""
    qids = set(qids)
    data = []
    for article in obj["data"]:
        paras = []
        for para in article["paragraphs"]:
            qas = [qa for qa in para["qas"] if qa["id"] in qids]
            if qas:
                paras.append({**para, "qas": qas})
        if paras:
            data.append({**article, "paragraphs": paras})
    return {**obj, "data": data}


# ---------------------------------------------------------------- tokens

@dataclass(frozen=True, slots=True)  # millions of them for the official train set
class Token:
    piece: str
    start: int  # [start, end): characters of the original text, whitespace trimmed
    end: int


Tokenizer = Callable[[str], List[Token]]


def trim_span(text: str, start: int, end: int) -> Tuple[int, int]:
    """[start, end) without its leading and trailing whitespace; a span of
    whitespace only becomes the empty span at its end."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def byte_to_char(text: str) -> List[int]:
    """For every UTF-8 byte offset of ``text`` (and its end) the character index."""
    out = []
    for i, ch in enumerate(text):
        out.extend([i] * len(ch.encode("utf-8")))
    out.append(len(text))
    return out


def spm_tokenizer(sp) -> Tokenizer:
    """A ``Tokenizer`` from a ``sentencepiece.SentencePieceProcessor``: its pieces,
    each with the characters of the original text it came from."""
    def tokenize(text: str) -> List[Token]:
        proto = sp.encode(text, out_type="proto")
        b2c = byte_to_char(text)
        out = []
        for p in proto.pieces:
            s, e = trim_span(text, b2c[p.begin], b2c[p.end])
            out.append(Token(p.piece, s, e))
        return out
    return tokenize


def whitespace_tokenizer(text: str) -> List[Token]:
    """Whitespace-separated words with their offsets (tests, and any caller with
    pre-tokenised text)."""
    out, i = [], 0
    for word in text.split():
        i = text.index(word, i)
        out.append(Token(word, i, i + len(word)))
        i += len(word)
    return out


def safe_piece(piece: str) -> str:
    """A piece as one whitespace-free word of a fairseq text line (fairseq-preprocess
    splits lines on whitespace: a piece that is empty or holds a whitespace
    character would shift every later token), else ``<unk>``."""
    if not piece or any(ch.isspace() for ch in piece):
        return "<unk>"
    return piece


def token_span(tokens: Sequence[Token], start: int, end: int) -> Optional[Tuple[int, int]]:
    """First and last token of the characters [start, end), or None."""
    first = next((i for i, t in enumerate(tokens) if t.end > start), None)
    last = next((i for i in range(len(tokens) - 1, -1, -1) if tokens[i].start < end), None)
    if first is None or last is None or last < first:
        return None
    return first, last


# ---------------------------------------------------------------- windows

@dataclass(frozen=True)
class WindowConfig:
    max_length: int = field(default=384, metadata={"help": "tokens per window, the "
                                                   f"{SPECIAL_TOKENS} special ones included"})
    doc_stride: int = field(default=128, metadata={"help": "tokens between window starts"})
    max_query_length: int = field(default=64, metadata={"help": "question tokens kept"})

    def check(self, max_positions: Optional[int] = None) -> "WindowConfig":
        if max_positions is not None and self.max_length > max_positions:
            raise MagicConfigError(f"--max-length {self.max_length} exceeds the model's "
                                   f"max_positions {max_positions}")
        if self.max_query_length < 1 or self.doc_stride < 1:
            raise MagicConfigError(f"--max-query-length {self.max_query_length} and "
                                   f"--doc-stride {self.doc_stride}: expected >= 1")
        if self.max_length - self.max_query_length - SPECIAL_TOKENS < 1:
            raise MagicConfigError(
                f"--max-length {self.max_length} leaves no room for context after "
                f"--max-query-length {self.max_query_length} and {SPECIAL_TOKENS} special "
                f"tokens: expected max-length > max-query-length + {SPECIAL_TOKENS}")
        return self


def window_spans(n_tokens: int, max_tokens: int, stride: int) -> List[Tuple[int, int]]:
    """(offset, length) of the windows over ``n_tokens`` context tokens: starts
    0, stride, 2 x stride, ... (a stride longer than a window steps one window),
    the last window ending on the last token; one empty window for no tokens."""
    if n_tokens == 0:
        return [(0, 0)]
    out, start = [], 0
    while True:
        length = min(n_tokens - start, max_tokens)
        out.append((start, length))
        if start + length >= n_tokens:
            return out
        start += min(length, stride)


@dataclass(frozen=True)
class Window:
    offset: int  # first context token in the window
    length: int  # context tokens in the window
    question_length: int
    start: int = CLS  # answer tokens relative to the window's context; CLS = none here
    end: int = CLS

    @property
    def context_start(self) -> int:
        """Position of the window's first context token in its sequence."""
        return self.question_length + 3

    @property
    def seq_len(self) -> int:
        return self.context_start + self.length + 1


@dataclass(frozen=True)
class Encoded:
    example: SquadExample
    question: Tuple[Token, ...]  # cut to max_query_length
    tokens: Tuple[Token, ...]  # the context's (shared by the questions of a paragraph)
    answer: Optional[Tuple[int, int]]  # token span of the answer, None: none / not found
    windows: Tuple[Window, ...]

    @property
    def answer_lost(self) -> bool:
        """An answerable question whose answer text was not found in the context."""
        return bool(self.example.answers) and self.answer is None


def encode(ex: SquadExample, tokenize: Tokenizer, cfg: WindowConfig,
           context_tokens: Optional[Sequence[Token]] = None) -> Encoded:
    """``context_tokens``: ``tokenize(ex.context)`` when the caller has it already."""
    question = tuple(tokenize(ex.question)[:cfg.max_query_length])
    tokens = tuple(tokenize(ex.context) if context_tokens is None else context_tokens)
    answer = None
    if ex.answers and not ex.is_impossible:
        chars = ex.answer_chars()
        answer = token_span(tokens, *chars) if chars else None
    max_tokens = cfg.max_length - len(question) - SPECIAL_TOKENS
    windows = []
    for offset, length in window_spans(len(tokens), max_tokens, cfg.doc_stride):
        start = end = CLS
        if answer is not None and offset <= answer[0] and answer[1] < offset + length:
            start, end = answer[0] - offset, answer[1] - offset
        windows.append(Window(offset, length, len(question), start, end))
    return Encoded(ex, question, tokens, answer, tuple(windows))


def encode_all(examples: Sequence[SquadExample], tokenize: Tokenizer,
               cfg: WindowConfig) -> List[Encoded]:
    # the questions of one paragraph share its context: tokenise it once (and
    # hold its tokens once: SQuAD's train set has about 5 questions per paragraph)
    cache: Dict[str, Tuple[Token, ...]] = {}
    out = []
    for ex in examples:
        if ex.context not in cache:
            cache[ex.context] = tuple(tokenize(ex.context))
        out.append(encode(ex, tokenize, cfg, cache[ex.context]))
    return out


def window_lines(enc: Encoded, window: Window) -> Tuple[str, str, str]:
    """The three text lines of one window: question pieces, context pieces, label."""
    q = " ".join(safe_piece(t.piece) for t in enc.question)
    ctx = enc.tokens[window.offset:window.offset + window.length]
    c = " ".join(safe_piece(t.piece) for t in ctx)
    return q, c, f"{window.start} {window.end}"


def schedule(n_windows: int, batch_size: int, epochs: int, warmup_frac: float):
    """(total updates, warm-up updates): epochs x ceil(windows / batch), warm-up a fraction."""
    total = epochs * math.ceil(n_windows / batch_size)
    return total, int(round(warmup_frac * total))


# ---------------------------------------------------------------- prediction

NO_SPAN_NA = 1e6  # the no-answer score of a question without any valid span


@dataclass(frozen=True)
class Prediction:
    qid: str
    text: str  # the best span's exact characters; "" when no span is valid
    start: int  # [start, end) in the context; -1 without a span
    end: int
    score: Optional[float]  # start + end logit of the span
    null_score: Optional[float]  # v2.0: min over windows of the CLS start + end logits

    @property
    def na(self) -> Optional[float]:
        """v2.0 no-answer score: null score - best span score (higher = no answer)."""
        if self.null_score is None:
            return None
        if self.score is None:
            return NO_SPAN_NA
        return self.null_score - self.score


def _top(values: Sequence[float], lo: int, hi: int, n: int) -> List[int]:
    return sorted(range(lo, hi), key=lambda i: (-values[i], i))[:n]


def best_span(enc: Encoded, logits: Sequence[Tuple[Sequence[float], Sequence[float]]],
              n_best: int = 20, max_answer_length: int = 30,
              with_null: bool = False) -> Prediction:
    """The best valid span of one question over its windows. ``logits[w]`` holds
    the (start, end) logits of window w at every position of its sequence."""
    if len(logits) != len(enc.windows):
        raise MagicConfigError(f"question {enc.example.qid!r}: {len(logits)} windows of "
                               f"logits, expected {len(enc.windows)}")
    ctx = enc.example.context
    best = None  # (score, start char, end char)
    null = None
    for win, (start_logits, end_logits) in zip(enc.windows, logits):
        if len(start_logits) < win.seq_len or len(end_logits) < win.seq_len:
            raise MagicConfigError(f"question {enc.example.qid!r}: {len(start_logits)} "
                                   f"logits for a window of {win.seq_len} tokens")
        # plain floats (callers may hand numpy rows): fast to sort and compare
        start_logits = [float(x) for x in start_logits[:win.seq_len]]
        end_logits = [float(x) for x in end_logits[:win.seq_len]]
        if with_null:
            cls = start_logits[0] + end_logits[0]
            null = cls if null is None else min(null, cls)
        lo, hi = win.context_start, win.context_start + win.length
        for i in _top(start_logits, lo, hi, n_best):
            for j in _top(end_logits, lo, hi, n_best):
                if j < i or j - i + 1 > max_answer_length:
                    continue
                a, b = enc.tokens[win.offset + i - lo], enc.tokens[win.offset + j - lo]
                if b.end <= a.start or not ctx[a.start:b.end].strip():
                    continue  # no visible text: not an answer
                score = start_logits[i] + end_logits[j]
                if best is None or score > best[0]:
                    best = (score, a.start, b.end)
    qid = enc.example.qid
    if best is None:
        return Prediction(qid, "", -1, -1, None, null)
    return Prediction(qid, ctx[best[1]:best[2]], best[1], best[2], best[0], null)


def predict(encoded: Sequence[Encoded], logits: Sequence[Tuple[Sequence[float], Sequence[float]]],
            version: str, n_best: int = 20, max_answer_length: int = 30,
            null_score_threshold: float = 0.0):
    """(official predictions qid -> text, best-span predictions qid -> text,
    no-answer scores qid -> na or None for v1.1). ``logits`` is flat: every
    window of ``encoded`` in order."""
    n = sum(len(e.windows) for e in encoded)
    if len(logits) != n:
        raise MagicConfigError(f"{len(logits)} windows of logits, expected {n}")
    if n_best < 1 or max_answer_length < 1:
        raise MagicConfigError(f"--n-best {n_best} and --max-answer-length "
                               f"{max_answer_length}: expected >= 1")
    preds, spans, na = {}, {}, {} if version == "2.0" else None
    k = 0
    for enc in encoded:
        p = best_span(enc, logits[k:k + len(enc.windows)], n_best, max_answer_length,
                      with_null=version == "2.0")
        k += len(enc.windows)
        spans[p.qid] = p.text
        preds[p.qid] = p.text
        if na is not None:
            na[p.qid] = p.na
            if p.na > null_score_threshold:
                preds[p.qid] = ""
    return preds, spans, na
