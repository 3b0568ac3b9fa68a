"""Tokenizers with bert4keras 0.11.5 semantics.

``Tokenizer`` is BERT's WordPiece tokenizer as bert4keras implements it: CJK characters and
punctuation become single tokens, optional lower-casing with accent stripping, control
characters dropped, greedy longest-match WordPiece with ``##`` continuations. Its output equals
bert4keras's token for token (``tests/test_tokenizers.py`` checks it against golden files made
with bert4keras 0.11.5, against Hugging Face ``tokenizers`` and, for every Unicode code point,
against a transcription of the bert4keras rules). It is pure Python and NumPy: characters are
classified once through lookup tables and the WordPiece split of every distinct word is cached,
which makes it faster than the Rust ``tokenizers`` pipeline for this job.

Where Hugging Face ``BertTokenizer`` (transformers 5, Rust backed) gives different ids, we follow
bert4keras:

* private-use characters (U+E000..U+F8FF, planes 15-16): HF deletes them, bert4keras keeps them
  as word characters (so the word usually becomes ``[UNK]``);
* literal special tokens in the text (``"[CLS]"``, ``"[UNK]"`` ...): HF maps them to the special
  ids, bert4keras splits them like any text (``[``, ``cls``, ``]``);
* words longer than 100 characters: HF's default limit is 100, bert4keras's ``word_maxlen`` 200;
* U+2B820..U+2B91F (CJK Extension E start): CJK for bert4keras, not for HF (which, like Google's
  BERT, starts that range at U+2B920), so HF keeps them inside words;
* characters newer than HF's Unicode tables (e.g. recent punctuation): classified by Python's
  ``unicodedata`` here.

``BertTokenizerLegacy`` (HF's pure-Python tokenizer) also NFC-normalises the text when it does
not lower-case; bert4keras (and we) do not. ``rematch`` follows bert4keras except that offsets
stay on the original text after characters whose lower case is longer (U+0130), where
bert4keras's drift by one.

``SpTokenizer`` wraps a SentencePiece model with the same interface.
"""

import contextlib
import gc
import io
import re
import unicodedata
import warnings
from itertools import chain as _chain
from itertools import compress as _compress
from itertools import islice as _islice
from itertools import repeat as _repeat
from operator import is_ as _is
from operator import mul as _mul

import numpy as np

from bert4keras_ng.snippets import is_string, lowercase_and_normalize, truncate_sequences

__all__ = ["load_vocab", "save_vocab", "TokenizerBase", "Tokenizer", "SpTokenizer"]


# ---------------------------------------------------------------------------------------------
# Character classes (bert4keras definitions)
# ---------------------------------------------------------------------------------------------

# Code point ranges treated as CJK ideographs: each becomes a token of its own. This is
# bert4keras's table; note U+2B820..U+2CEAF (Google's BERT and Hugging Face start that range at
# U+2B920, so U+2B820..U+2B91F are CJK for us and word characters for them).
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def _is_cjk(ch):
    code = ord(ch)
    for lo, hi in _CJK_RANGES:
        if lo <= code <= hi:
            return True
    return False


def _is_punctuation(ch):
    """ASCII symbols (all of !"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~) or a Unicode P* category."""
    code = ord(ch)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_space(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_removed(ch):
    """Characters dropped before splitting: NUL, U+FFFD and the Cc/Cf categories."""
    return ch == "\x00" or ch == "\ufffd" or unicodedata.category(ch) in ("Cc", "Cf")


# Punctuation after which decode() removes the following space (full-width forms, CJK and
# general punctuation). Written as code point lists/ranges.
_DECODE_NO_SPACE_AFTER = "".join(
    chr(c)
    for c in (
        list(range(0xFF02, 0xFF0E))
        + [0xFF0F, 0xFF1A, 0xFF1B, 0xFF1C, 0xFF1D, 0xFF1E, 0xFF20]
        + list(range(0xFF3B, 0xFF41))
        + list(range(0xFF5B, 0xFF61))
        + [0xFF62, 0xFF63, 0xFF64, 0x3000, 0x3001, 0x3003]
        + list(range(0x3008, 0x3012))
        + list(range(0x3014, 0x3020))
        + [0x3030, 0x303E, 0x303F, 0x2013, 0x2014, 0x2018, 0x2019]
        + list(range(0x201B, 0x2020))
        + [0x2026, 0x2027, 0xFE4F, 0xFE51, 0xFE54, 0x00B7, 0xFF01, 0xFF1F, 0xFF61, 0x3002]
    )
) + "+-/={(<["

_DECODE_SPACES = re.compile(" +")
_DECODE_CONTRACTION = re.compile("' (re|m|s|t|ve|d|ll) ")
_DECODE_PUNCT_SPACE = re.compile(
    "(%s) " % "|".join(re.escape(p) for p in _DECODE_NO_SPACE_AFTER)
)
_DECODE_DECIMAL = re.compile(r"(\d\.) (\d)")


# ---------------------------------------------------------------------------------------------
# Vocabulary files
# ---------------------------------------------------------------------------------------------


def _vocab_text(dict_path, encoding):
    """The decoded text of a vocab file, without a leading byte order mark.

    A byte sequence that is not valid ``encoding`` raises ValueError naming the file, the line
    and the byte offset (``UnicodeDecodeError`` alone names neither).
    """
    with open(dict_path, "rb") as reader:
        data = reader.read()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(
            "%s, line %d: not valid %s (byte 0x%02x at offset %d: %s); save the vocabulary "
            "as UTF-8 or pass its encoding"
            % (dict_path, line, encoding, data[exc.start], exc.start, exc.reason)
        ) from None
    return text[1:] if text[:1] == "\ufeff" else text


def _read_vocab(dict_path, encoding):
    tokens, first_line, blank = [], {}, []
    # newline=None: the universal newlines of open() (\r\n and \r end a line, as before)
    for number, line in enumerate(io.StringIO(_vocab_text(dict_path, encoding), newline=None), 1):
        parts = line.split()
        if not parts:
            blank.append(number)
            continue
        if blank:
            raise ValueError(
                "%s, line %d: blank line inside the vocabulary (every line must hold one "
                "token; ids are line numbers)" % (dict_path, blank[0])
            )
        token = parts[0]
        if token in first_line:
            raise ValueError(
                "%s, line %d: duplicate token %r (first seen on line %d)"
                % (dict_path, number, token, first_line[token])
            )
        first_line[token] = number
        tokens.append(token)
    # Blank lines at the very end of the file are tolerated (they shift no id).
    return {token: i for i, token in enumerate(tokens)}


def _is_redundant(token):
    """A token this tokenizer can never produce: longer than one character and containing a
    CJK character or punctuation after its ``##`` prefix (those are always split off)."""
    if len(token) <= 1:
        return False
    stem = token[2:] if token[:2] == "##" else token
    return any(_is_cjk(ch) or _is_punctuation(ch) for ch in stem)


def load_vocab(dict_path, encoding="utf-8", simplified=False, startswith=None):
    """Read a BERT ``vocab.txt`` (one token per line; the first whitespace-separated field of a
    line is the token, its 0-based line number the id).

    ``simplified=True`` returns ``(token_dict, keep_tokens)``: the ``startswith`` tokens first,
    then, in id order, every token the tokenizer can produce (redundant multi-character tokens
    with CJK characters or punctuation are dropped); ``keep_tokens[i]`` is the original id of
    new id ``i`` (pass it to ``build_transformer_model(keep_tokens=...)``).

    A UTF-8 byte order mark at the start of the file is ignored. Raises ValueError naming the
    file and line for blank lines, duplicate tokens and bytes that are not valid ``encoding``.
    """
    token_dict = _read_vocab(dict_path, encoding)
    if not simplified:
        return token_dict

    new_dict, keep_tokens = {}, []
    for token in startswith or []:
        if token not in token_dict:
            raise ValueError(
                "startswith token %r is not in the vocabulary %s" % (token, dict_path)
            )
        if token not in new_dict:
            new_dict[token] = len(new_dict)
            keep_tokens.append(token_dict[token])
    for token, index in sorted(token_dict.items(), key=lambda item: item[1]):
        if token not in new_dict and not _is_redundant(token):
            new_dict[token] = len(new_dict)
            keep_tokens.append(index)
    return new_dict, keep_tokens


def save_vocab(dict_path, token_dict, encoding="utf-8"):
    """Write ``token_dict`` (token -> id, ids 0..n-1) as a vocab file, one token per line."""
    ordered = sorted(token_dict.items(), key=lambda item: item[1])
    for expected, (token, index) in enumerate(ordered):
        if index != expected:
            raise ValueError(
                "token ids must be 0..%d without gaps; %r has id %r where %d was expected"
                % (len(ordered) - 1, token, index, expected)
            )
        if not token or token.split() != [token]:
            raise ValueError(
                "token %r (id %d) is empty or contains whitespace and cannot be saved one per "
                "line" % (token, index)
            )
    with open(dict_path, "w", encoding=encoding) as writer:
        for token, _ in ordered:
            writer.write(token + "\n")


@contextlib.contextmanager
def _gc_paused():
    """Pause Python's cyclic garbage collector while building many small lists (it would
    otherwise rescan the young lists every few hundred allocations); restores the previous
    state. Reference counting still frees everything as usual."""
    was_enabled = gc.isenabled()
    if was_enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _text_list(texts, argument):
    """``texts`` as a list; a single text (str or bytes) is a TypeError, not a list of chars."""
    if isinstance(texts, (str, bytes, bytearray)):
        raise TypeError(
            "%s must be a list of texts, got a single %s (wrap it: [text], or call encode)"
            % (argument, type(texts).__name__)
        )
    try:
        return list(texts)
    except TypeError:
        raise TypeError(
            "%s must be a list of texts, got %s" % (argument, type(texts).__name__)
        ) from None


# ---------------------------------------------------------------------------------------------
# Base class
# ---------------------------------------------------------------------------------------------


class TokenizerBase:
    """Shared interface: ``tokenize``, ``encode``, ``encode_batch`` and id/token conversion.

    ``token_start``/``token_end`` wrap every tokenized text (None leaves that side bare).
    ``pre_tokenize``: optional callable splitting a text into words first (a word found in the
    vocabulary is kept whole, others are tokenized as usual). ``token_translate``: dict mapping
    produced tokens to replacements (``decode`` maps them back where applicable).
    """

    def __init__(
        self, token_start="[CLS]", token_end="[SEP]", pre_tokenize=None, token_translate=None
    ):
        self._token_pad = "[PAD]"
        self._token_unk = "[UNK]"
        self._token_mask = "[MASK]"
        self._token_start = token_start
        self._token_end = token_end
        self._pre_tokenize = pre_tokenize
        self._token_translate = dict(token_translate or {})
        self._token_translate_inv = {v: k for k, v in self._token_translate.items()}

    # -- to implement --------------------------------------------------------------------------
    def _tokenize(self, text):
        raise NotImplementedError

    def token_to_id(self, token):
        raise NotImplementedError

    def id_to_token(self, i):
        raise NotImplementedError

    def decode(self, ids):
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    def tokens_to_ids(self, tokens):
        return [self.token_to_id(token) for token in tokens]

    def ids_to_tokens(self, ids):
        return [self.id_to_token(i) for i in ids]

    def _wrap(self, tokens):
        if self._token_translate:
            tokens = [self._token_translate.get(t) or t for t in tokens]
        if self._token_start is not None:
            tokens.insert(0, self._token_start)
        if self._token_end is not None:
            tokens.append(self._token_end)
        return tokens

    def _n_special(self):
        return int(self._token_start is not None) + int(self._token_end is not None)

    def tokenize(self, text, maxlen=None):
        """Tokens of ``text`` including ``token_start``/``token_end``; ``maxlen`` cuts content
        tokens from the right (before ``token_end``)."""
        tokens = self._wrap(list(self._tokenize(text)))
        if maxlen is not None:
            if maxlen < self._n_special():
                raise ValueError(
                    "maxlen=%d is smaller than the %d special token(s) every text gets"
                    % (maxlen, self._n_special())
                )
            truncate_sequences(maxlen, -(int(self._token_end is not None) + 1), tokens)
        return tokens

    def _truncate_index(self, truncate_from):
        if truncate_from == "right":
            return -int(self._token_end is not None) - 1
        if truncate_from == "left":
            return int(self._token_start is not None)
        if isinstance(truncate_from, int):
            return truncate_from
        raise ValueError(
            "truncate_from must be 'right', 'left' or an int index, got %r" % (truncate_from,)
        )

    def _check_maxlen(self, maxlen, pair, pattern):
        needed = self._n_special()
        if pair:
            needed *= 2
            if pattern == "S*E*E" and self._token_start is not None:
                needed -= 1
        if maxlen < needed:
            raise ValueError(
                "maxlen=%d is smaller than the %d special token(s) of a%s encoding"
                % (maxlen, needed, " pair" if pair else " single-text")
            )

    def _text_ids(self, text):
        """Token ids of one text including specials (overridden by fast engines)."""
        return self.tokens_to_ids(self.tokenize(text))

    def _assemble(self, first_ids, second_ids, maxlen, pattern, truncate_from):
        """bert4keras ``encode`` on id lists (truncation is positional, so ids == tokens)."""
        pair = second_ids is not None
        if maxlen is not None and len(first_ids) + (len(second_ids) if pair else 0) > maxlen:
            index = self._truncate_index(truncate_from)
            limit = maxlen + 1 if (pair and pattern == "S*E*E") else maxlen
            truncate_sequences(limit, index, first_ids, second_ids)
        segment_ids = [0] * len(first_ids)
        if pair:
            if pattern == "S*E*E":
                second_ids = second_ids[int(bool(self._token_start)):]
            first_ids = first_ids + second_ids
            segment_ids = segment_ids + [1] * len(second_ids)
        return first_ids, segment_ids

    def encode(
        self, first_text, second_text=None, maxlen=None, pattern="S*E*E", truncate_from="right"
    ):
        """``(token_ids, segment_ids)`` of a text or a text pair (bert4keras semantics).

        Texts may also be given as token lists (used as they are, specials included).
        ``pattern='S*E*E'`` drops the second text's start token. ``maxlen`` bounds the total
        length: tokens are removed one at a time from the longer side, just before its end
        token (``truncate_from='right'``), just after its start token (``'left'``), or at a
        given index.
        """
        pair = second_text is not None
        if maxlen is not None:
            self._check_maxlen(maxlen, pair, pattern)
            self._truncate_index(truncate_from)  # validates it
        first_ids = self._any_ids(first_text, "first_text")
        second_ids = self._any_ids(second_text, "second_text") if pair else None
        return self._assemble(first_ids, second_ids, maxlen, pattern, truncate_from)

    def _any_ids(self, text, argument="text"):
        if is_string(text):
            return self._text_ids(text)
        if isinstance(text, (list, tuple)) and all(is_string(t) for t in text):
            return self.tokens_to_ids(list(text))
        raise TypeError(
            "%s must be a str or a list of token strings, got %s%s"
            % (argument, type(text).__name__,
               " (decode bytes first, e.g. text.decode('utf-8'))"
               if isinstance(text, (bytes, bytearray)) else "")
        )

    def _batch_text_ids(self, texts):
        return [self._any_ids(t) for t in texts]

    def encode_batch(
        self, first_texts, second_texts=None, maxlen=None, pattern="S*E*E", truncate_from="right"
    ):
        """``encode`` over lists of texts (and optional second texts): returns
        ``(list of token_ids, list of segment_ids)``, equal to per-text ``encode`` calls."""
        first_texts = _text_list(first_texts, "first_texts")
        pair = second_texts is not None
        if pair:
            second_texts = _text_list(second_texts, "second_texts")
            if len(second_texts) != len(first_texts):
                raise ValueError(
                    "encode_batch got %d first texts and %d second texts"
                    % (len(first_texts), len(second_texts))
                )
            for k, t in enumerate(second_texts):
                if t is None:
                    raise ValueError(
                        "second_texts[%d] is None; encode_batch needs a text for every pair" % k
                    )
        if maxlen is not None:
            self._check_maxlen(maxlen, pair, pattern)
            self._truncate_index(truncate_from)  # validates it
        with _gc_paused():
            return self._encode_batch(first_texts, second_texts, maxlen, pattern, truncate_from)

    def _encode_batch(self, first_texts, second_texts, maxlen, pattern, truncate_from):
        pair = second_texts is not None
        firsts = self._batch_text_ids(first_texts)
        if not pair:
            # Common case inline: truncate only where needed, segments all zero.
            if maxlen is not None:
                for k in [k for k, n in enumerate(map(len, firsts)) if n > maxlen]:
                    firsts[k] = self._assemble(firsts[k], None, maxlen, pattern, truncate_from)[0]
            return firsts, list(map(_mul, _repeat([0]), map(len, firsts)))
        seconds = self._batch_text_ids(second_texts)
        all_ids, all_segments = [], []
        for a, b in zip(firsts, seconds):
            ids, segments = self._assemble(a, b, maxlen, pattern, truncate_from)
            all_ids.append(ids)
            all_segments.append(segments)
        return all_ids, all_segments


# ---------------------------------------------------------------------------------------------
# WordPiece tokenizer
# ---------------------------------------------------------------------------------------------

class _CharTable(dict):
    """``str.translate`` table applying bert4keras's character rules, filled on demand.

    Punctuation and CJK characters become ``' c '``, spaces ``' '``, removed characters are
    deleted, other characters map to themselves; with ``drop_marks`` the non-spacing marks
    (``Mn``) are deleted too (the accent stripping of lower-casing mode, applied after NFD).
    Splitting the translated text with ``str.split()`` gives exactly bert4keras's words.
    """

    def __init__(self, drop_marks):
        super().__init__()
        self.drop_marks = drop_marks

    def __missing__(self, code):
        ch = chr(code)
        if self.drop_marks and unicodedata.category(ch) == "Mn":
            value = None
        elif _is_punctuation(ch) or _is_cjk(ch):
            value = " " + ch + " "
        elif _is_space(ch):
            value = " "
        elif _is_removed(ch):
            value = None
        else:
            value = code
        self[code] = value
        return value


_TABLE_CASED = _CharTable(drop_marks=False)
_TABLE_LOWER = _CharTable(drop_marks=True)

# Class codes of the vectorised batch path, in lazily filled NumPy tables (255 = not yet known).
_WORD, _SPLIT, _SPACE, _DROP, _UNKNOWN = 0, 1, 2, 3, 255
_CLASS_ARRAYS = {}


def _lower_nfd(text):
    """NFD of an already lower-cased text (skipped when it is already in NFD)."""
    if text.isascii() or unicodedata.is_normalized("NFD", text):
        return text
    return unicodedata.normalize("NFD", text)


# Joins texts for lower-casing them in one call: a noncharacter that is neither cased nor
# case-ignorable (so the final-sigma rule stops at it, as at the end of a text) and an NFD
# starter that nothing decomposes into (so normalisation never moves anything across it).
_LOWER_JOIN = "\uffff"


def _lower_nfd_all(texts):
    """``[_lower_nfd(t.lower()) for t in texts]`` in a few C-level calls on the joined texts
    (per text where a text itself contains the joining character)."""
    joined = _LOWER_JOIN.join(texts)
    if joined.count(_LOWER_JOIN) != len(texts) - 1:
        return [_lower_nfd(t.lower()) for t in texts]
    return _lower_nfd(joined.lower()).split(_LOWER_JOIN)


def _class_of(code, drop_marks):
    value = (_TABLE_LOWER if drop_marks else _TABLE_CASED)[code]
    if value is None:
        return _DROP
    if value == " ":
        return _SPACE
    if isinstance(value, str):
        return _SPLIT
    if chr(code).isspace():  # U+2028, U+2029: word characters that str.split() splits on
        return _SPACE
    return _WORD


def _class_array(drop_marks, codes):
    table = _CLASS_ARRAYS.get(drop_marks)
    if table is None:
        table = _CLASS_ARRAYS[drop_marks] = np.full(0x110000, _UNKNOWN, dtype=np.uint8)
    classes = table[codes]
    unknown = classes == _UNKNOWN
    if unknown.any():
        for code in np.unique(codes[unknown]).tolist():
            table[code] = _class_of(code, drop_marks)
        classes = table[codes]
    return classes

_NOT_A_PREFIX = object()

# Words cached per tokenizer (word -> ids and word -> tokens); beyond this many entries new
# words are still tokenized, just not remembered.
_CACHE_LIMIT = 500000


class Tokenizer(TokenizerBase):
    """BERT WordPiece tokenizer with bert4keras 0.11.5 behaviour.

    ``token_dict``: a vocab file path or a dict token -> id. ``do_lower_case``: lower-case and
    strip accents (NFD, drop ``Mn``). ``word_maxlen``: longer words are kept whole (so they
    encode as ``[UNK]``). Other keyword arguments: see :class:`TokenizerBase`.

    Pure Python, but fast: characters are classified once through a ``str.translate`` table
    (NumPy tables in ``encode_batch``), WordPiece scans tables of the vocabulary's token
    prefixes (one lookup per character, where bert4keras's search is quadratic in the word
    length) and the split of every distinct word is cached (up to 500,000 words per
    tokenizer), so encoding is several times faster than bert4keras, with identical output.
    ``encode_batch`` allocates a 4 MB lookup table per tokenizer on first use. The caches
    follow ``_token_unk_id`` changes and ``_token_dict`` being replaced or gaining/losing
    tokens; re-mapping an existing token to another id in place is not noticed.
    """

    def __init__(
        self,
        token_dict,
        do_lower_case=False,
        word_maxlen=200,
        token_start="[CLS]",
        token_end="[SEP]",
        pre_tokenize=None,
        token_translate=None,
    ):
        super().__init__(
            token_start=token_start,
            token_end=token_end,
            pre_tokenize=pre_tokenize,
            token_translate=token_translate,
        )
        source = token_dict if is_string(token_dict) else ""
        if is_string(token_dict):
            token_dict = load_vocab(token_dict)
        self._do_lower_case = bool(do_lower_case)
        self._token_dict = dict(token_dict)
        self._token_dict_inv = {v: k for k, v in self._token_dict.items()}
        self._vocab_size = len(self._token_dict)
        self._word_maxlen = word_maxlen
        missing = [
            t for t in (token_start, token_end) if t is not None and t not in self._token_dict
        ]
        self._missing_specials = None
        if missing:
            # bert4keras encodes a missing start/end token as the unknown-token id (scripts
            # such as its Chinese-chess example set ``_token_unk_id = 0`` and cut them off):
            # say so now, fail at encode time if there is no unknown id either
            self._missing_specials = (
                "the vocabulary%s has no %s token, which every encoding %s with; add %s to "
                "the vocabulary or pass %s (None leaves that side bare)"
                % (" " + source if source else "", " and no ".join(missing),
                   "starts/ends" if len(missing) > 1 else
                   ("starts" if missing[0] == token_start else "ends"),
                   "them" if len(missing) > 1 else "it",
                   " and ".join(a for a, t in (("token_start=", token_start),
                                               ("token_end=", token_end)) if t in missing))
            )
            warnings.warn(self._missing_specials + "; until then encodings carry the "
                          "unknown-token id in place of %s, as in bert4keras"
                          % " and ".join(missing), stacklevel=2)
        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(self, "_token_%s" % name)
            if token is not None and token in self._token_dict:
                setattr(self, "_token_%s_id" % name, self._token_dict[token])
        self._token_unk_id = self._token_dict.get(self._token_unk)
        self._table = _TABLE_LOWER if self._do_lower_case else _TABLE_CASED
        self._reset_caches()

    def _reset_caches(self):
        """Forget everything derived from the vocabulary or the unknown id: the word caches,
        the single-character id table and the longest-token bounds of WordPiece."""
        self._word_tokens = {}
        self._word_ids = {}
        self._split_table = None
        self._prefix_tables = None
        self._vocab_seen = (self._token_dict, len(self._token_dict))

    def _check_vocab(self):
        """Reset the caches when ``_token_dict`` was replaced or grew/shrank in place since
        they were filled (bert4keras reads the dict on every lookup, so such edits count)."""
        token_dict = self._token_dict
        seen, size = self._vocab_seen
        if token_dict is not seen or len(token_dict) != size:
            self._reset_caches()

    # -- vocabulary ----------------------------------------------------------------------------
    @property
    def vocab_size(self):
        return self._vocab_size

    @property
    def _token_unk_id(self):
        """The id unknown tokens get; bert4keras scripts set it (e.g. to 0), which is honoured."""
        return self.__dict__.get("_unk_id")

    @_token_unk_id.setter
    def _token_unk_id(self, value):
        previous = self.__dict__.get("_unk_id")
        self.__dict__["_unk_id"] = value
        if previous != value and "_word_ids" in self.__dict__:
            self._reset_caches()  # cached ids may hold the previous unknown id

    def _unk(self):
        if self._unk_id is None:
            raise KeyError(
                "the vocabulary has no %s token, so an unknown token cannot be encoded"
                % self._token_unk
            )
        return self._unk_id

    def token_to_id(self, token):
        index = self._token_dict.get(token)
        return self._unk() if index is None else index

    def tokens_to_ids(self, tokens):
        get = self._token_dict.get
        out = [get(t) for t in tokens]
        if None in out:
            unk = self._unk()
            out = [unk if i is None else i for i in out]
        return out

    def id_to_token(self, i):
        try:
            return self._token_dict_inv[i]
        except KeyError:
            raise KeyError(
                "token id %r is not in the vocabulary (size %d)" % (i, self._vocab_size)
            ) from None

    # -- tokenization --------------------------------------------------------------------------
    def _words(self, text):
        """bert4keras's normalisation and splitting: words before WordPiece."""
        if self._do_lower_case:
            text = _lower_nfd(text.lower())
        return text.translate(self._table).split()

    def _piece_tables(self):
        """``(heads, tails)``: every prefix of a vocabulary token mapped to that token's id
        when the prefix is itself a token, else to None; ``tails`` does the same for the stems
        of the ``##`` continuation tokens. Built once per vocabulary (a few MB for a BERT
        vocabulary); they let WordPiece find the longest match scanning forwards."""
        tables = self._prefix_tables
        if tables is None:
            vocab = self._token_dict
            heads, tails = dict(vocab), {}
            for token in [t for t in vocab if len(t) > 1]:
                for i in range(1, len(token)):
                    heads.setdefault(token[:i], None)
                if token[:2] == "##" and len(token) > 2:
                    stem = token[2:]
                    for i in range(1, len(stem)):
                        tails.setdefault(stem[:i], None)
                    tails[stem] = vocab[token]
            tables = self._prefix_tables = (heads, tails)
        return tables

    def _piece_ends(self, word):
        """End offsets of the greedy longest-match-first WordPiece split of ``word``, or None
        when it cannot be split (bert4keras keeps such a word whole) or is too long.

        Same split as trying every end from the end of the word down (bert4keras), found by
        scanning forwards while the piece is still a prefix of some token: a piece costs as
        many lookups as it has characters, not as the rest of the word has."""
        n = len(word)
        if n > self._word_maxlen:
            return None
        heads, tails = self._piece_tables()
        if heads.get(word) is not None:  # the whole word is a token (the common case)
            return [n]
        ends, start, table = [], 0, heads
        while start < n:
            best, end = 0, start + 1
            while end <= n:
                index = table.get(word[start:end], _NOT_A_PREFIX)
                if index is _NOT_A_PREFIX:
                    break
                if index is not None:
                    best = end
                end += 1
            if not best:
                return None
            ends.append(best)
            start, table = best, tails
        return ends

    def _word_piece(self, word):
        """Greedy longest-match-first WordPiece tokens; an unsplittable word stays whole."""
        ends = self._piece_ends(word)
        if ends is None:
            return [word]
        starts = [0] + ends[:-1]
        return [word[:ends[0]]] + ["##" + word[a:b] for a, b in zip(starts[1:], ends[1:])]

    def _tokens_of_word(self, word):
        tokens = self._word_tokens.get(word)
        if tokens is None:
            tokens = self._word_piece(word)
            if len(self._word_tokens) < _CACHE_LIMIT:
                self._word_tokens[word] = tokens
        return tokens

    def _new_word_ids(self, words):
        """Id lists of ``words``, computed (not looked up in the cache) in one loop."""
        if self._token_translate:
            translate = self._token_translate.get
            return [self.tokens_to_ids([translate(t) or t for t in self._word_piece(word)])
                    for word in words]
        heads, tails = self._piece_tables()
        known, maxlen, out = heads.get, self._word_maxlen, []
        for word in words:
            index = known(word)
            if index is not None:  # the whole word is a token (the common case)
                out.append([index])
                continue
            ends = self._piece_ends(word)
            if ends is None:  # kept whole: unknown (unless too long and yet in the vocab)
                out.append(self.tokens_to_ids([word]) if len(word) > maxlen else [self._unk()])
                continue
            ids = [heads[word[:ends[0]]]]
            for a, b in zip(ends, ends[1:]):
                ids.append(tails[word[a:b]])
            out.append(ids)
        return out

    def _remember(self, found):
        """Add ``found`` (word -> ids) to the word cache, as far as its size limit allows."""
        room = _CACHE_LIMIT - len(self._word_ids)
        if room >= len(found):
            self._word_ids.update(found)
        elif room > 0:
            self._word_ids.update(_islice(found.items(), room))

    def _ids_of_word(self, word):
        ids = self._word_ids.get(word)
        if ids is None:
            ids = self._new_word_ids([word])[0]
            self._remember({word: ids})
        return ids

    def _tokenize(self, text, pre_tokenize=True):
        self._check_vocab()
        if pre_tokenize and self._pre_tokenize is not None:
            if self._do_lower_case:
                text = lowercase_and_normalize(text)
            tokens = []
            for word in self._pre_tokenize(text):
                if word in self._token_dict:
                    tokens.append(word)
                else:
                    tokens.extend(self._tokenize(word, False))
            return tokens
        tokens = []
        for word in self._words(text):
            tokens.extend(self._tokens_of_word(word))
        return tokens

    def _specials_ids(self):
        if self._missing_specials and self._unk_id is None:
            raise ValueError(self._missing_specials + ", or give the tokenizer an unknown-token "
                             "id to stand in (tokenizer._token_unk_id = ...)")
        start = None if self._token_start is None else self.token_to_id(self._token_start)
        end = None if self._token_end is None else self.token_to_id(self._token_end)
        return start, end

    def _cached_ids(self, words):
        """List of id lists, one per word, through the word cache (C-level when warm)."""
        cached = list(map(self._word_ids.get, words))
        if None in cached:
            # Compute every distinct new word once, then merge: found.get(word, cached id).
            new = list(set(_compress(words, map(_is, cached, _repeat(None)))))
            found = dict(zip(new, self._new_word_ids(new)))
            self._remember(found)
            cached = list(map(found.get, words, cached))
        return cached

    def _content_ids(self, text):
        """Ids of the content tokens of ``text`` (no start/end tokens)."""
        return list(_chain(*self._cached_ids(self._words(text))))

    def _text_ids(self, text, specials=None):
        self._check_vocab()
        if self._pre_tokenize is not None:
            return self.tokens_to_ids(self.tokenize(text))
        start, end = specials or self._specials_ids()
        ids = self._content_ids(text)
        if start is not None:
            ids.insert(0, start)
        if end is not None:
            ids.append(end)
        return ids

    def _batch_text_ids(self, texts):
        self._check_vocab()
        if self._pre_tokenize is not None or set(map(type, texts)) - {str}:
            return [self._any_ids(t) for t in texts]
        if not texts:
            return []
        start, end = self._specials_ids()
        content, bounds = self._batch_content_ids(texts)
        # Insert the start/end ids in NumPy, then cut one flat list into the texts.
        n_texts = len(texts)
        per_text = np.diff(bounds)
        n_head, n_tail = int(start is not None), int(end is not None)
        extra = n_head + n_tail
        first = bounds[:-1] + np.arange(n_texts) * extra
        last = first + extra + per_text
        if extra:
            full = np.empty(len(content) + n_texts * extra, dtype=np.int64)
            dest = np.arange(len(content)) + np.repeat(first - bounds[:-1] + n_head, per_text)
            full[dest] = content
            if n_head:
                full[first] = start
            if n_tail:
                full[last - 1] = end
        else:
            full = content
        return list(map(full.tolist().__getitem__, map(slice, first.tolist(), last.tolist())))

    def _batch_content_ids(self, texts):
        """Content ids of many texts at once: ``(flat id list, boundaries)``.

        Vectorised version of ``_content_ids``: characters are classified with a NumPy lookup
        table, single-character tokens (CJK, punctuation) are mapped to ids by another table,
        and only runs of word characters go through the (cached) WordPiece in Python.
        """
        if self._do_lower_case:
            texts = _lower_nfd_all(texts)
        # A newline (a space) after every text keeps words from running across texts.
        joined = "\n".join(texts) + "\n"
        codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) + 1
        separators = np.cumsum(lengths) - 1

        classes = _class_array(self._do_lower_case, codes)
        keep = classes != _DROP
        if not keep.all():
            separators = (np.cumsum(keep) - 1)[separators]
            codes, classes = codes[keep], classes[keep]

        is_word = classes == _WORD
        run_start = is_word.copy()
        run_start[1:] &= ~is_word[:-1]
        unit_pos = np.flatnonzero((classes == _SPLIT) | run_start)
        unit_is_run = run_start[unit_pos]
        unit_is_char = ~unit_is_run
        counts = np.ones(len(unit_pos), dtype=np.int64)

        # Word runs: blank out everything else and let str.split() cut the runs (no word
        # character is whitespace for str.split), then look the words up in the cache.
        n_runs = int(np.count_nonzero(unit_is_run))
        if n_runs:
            word_codes = np.where(is_word, codes, np.uint32(32))
            words = word_codes.tobytes().decode("utf-32-le", "surrogatepass").split()
            cached = self._cached_ids(words)
            run_lengths = np.fromiter(map(len, cached), dtype=np.int64, count=n_runs)
            counts[unit_is_run] = run_lengths

        ends = np.cumsum(counts)
        out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
        out[(ends - counts)[unit_is_char]] = self._split_id_array(codes[unit_pos[unit_is_char]])
        if n_runs:
            total = int(run_lengths.sum())
            run_ids = np.fromiter(_chain(*cached), dtype=np.int64, count=total)
            run_offsets = (ends - counts)[unit_is_run]
            first = np.cumsum(run_lengths) - run_lengths
            within = np.arange(total) - np.repeat(first, run_lengths)
            out[np.repeat(run_offsets, run_lengths) + within] = run_ids

        units_before = np.searchsorted(unit_pos, separators)
        bounds = np.concatenate([[0], ends])[units_before]
        return out, np.concatenate([[0], bounds]).astype(np.int64)

    def _split_id_array(self, codes):
        """Ids of single-character tokens, through a lazily filled per-tokenizer table."""
        table = self._split_table
        if table is None:
            dtype = np.int32 if self._vocab_size < 2**31 - 1 else np.int64
            table = self._split_table = np.full(0x110000, -1, dtype=dtype)
        ids = table[codes]
        missing = ids < 0
        if missing.any():
            for code in np.unique(codes[missing]).tolist():
                table[code] = self._ids_of_word(chr(code))[0]
            ids = table[codes]
        return ids

    # -- decoding and offsets ------------------------------------------------------------------
    @staticmethod
    def stem(token):
        """The token without its ``##`` continuation prefix."""
        return token[2:] if token[:2] == "##" else token

    @staticmethod
    def _is_special(token):
        return bool(token) and token[0] == "[" and token[-1] == "]"

    _is_cjk_character = staticmethod(_is_cjk)
    _is_punctuation = staticmethod(_is_punctuation)
    _is_space = staticmethod(_is_space)
    _is_redundant = staticmethod(_is_redundant)

    @staticmethod
    def _is_control(ch):
        return unicodedata.category(ch) in ("Cc", "Cf")

    def decode(self, ids, tokens=None):
        """Readable text from ids (or from ``tokens`` when given): specials dropped, ``##``
        pieces joined, spaces between words but not around CJK characters."""
        tokens = tokens or self.ids_to_tokens(ids)
        tokens = [t for t in tokens if not self._is_special(t)]
        text = ""
        for k, token in enumerate(tokens):
            if token[:2] == "##":
                text += token[2:]
            elif len(token) == 1 and _is_cjk(token):
                text += token
            elif len(token) == 1 and _is_punctuation(token):
                text += token + " "
            elif k > 0 and text and _is_cjk(text[-1]):
                text += token
            else:
                text += " " + token
        text = _DECODE_SPACES.sub(" ", text)
        text = _DECODE_CONTRACTION.sub("'\\1 ", text)
        text = _DECODE_PUNCT_SPACE.sub("\\1", text)
        text = _DECODE_DECIMAL.sub("\\1\\2", text)
        return text.strip()

    def rematch(self, text, tokens):
        """For every token, the list of indices of the characters of ``text`` it came from.

        Special tokens (``[...]``) get ``[]``. Never raises: a token that cannot be found in
        the normalised text (e.g. not produced from ``text``) also gets ``[]``. Indices always
        refer to ``text`` itself (bert4keras shifts them after characters whose lower case is
        longer, e.g. U+0130; we do not).
        """
        text = str(text)
        pieces = _lowered_pieces(text) if self._do_lower_case else text
        normalized, char_mapping = [], []
        for i, ch in enumerate(pieces):
            if self._do_lower_case:
                ch = lowercase_and_normalize(ch)
            for c in ch:
                if not _is_removed(c):
                    normalized.append(c)
                    char_mapping.append(i)
        normalized = "".join(normalized)

        token_mapping, offset = [], 0
        for token in tokens:
            if not is_string(token) or self._is_special(token):
                token_mapping.append([])
                continue
            token = self.stem(token)
            if not token:
                token_mapping.append([])
                continue
            start = normalized.find(token, offset)
            if start < 0:
                token_mapping.append([])
                continue
            end = start + len(token)
            token_mapping.append(char_mapping[start:end])
            offset = end
        return token_mapping


def _lowered_pieces(text):
    """``text.lower()`` cut into one piece per character of ``text``.

    Lowering the whole text applies the context rule of the Greek final sigma (as ``tokenize``
    does); cutting it by the per-character lengths (U+0130 lowers to two characters) keeps each
    piece aligned with the character it came from. Only the sigma depends on context and both
    its lower cases are one character, so the lengths add up.
    """
    lowered = text.lower()
    pieces, pos = [], 0
    for ch in text:
        n = len(ch.lower())
        pieces.append(lowered[pos:pos + n])
        pos += n
    if pos != len(lowered):  # pragma: no cover - a Unicode rule this code does not know
        return [ch.lower() for ch in text]
    return pieces


# ---------------------------------------------------------------------------------------------
# SentencePiece tokenizer
# ---------------------------------------------------------------------------------------------


class SpTokenizer(TokenizerBase):
    """Tokenizer over a SentencePiece model (``sp_model_path``), bert4keras interface.

    Padding and unknown tokens come from the model; ``token_start``/``token_end`` default to
    ``[CLS]``/``[SEP]`` like the base class (T5-style models pass ``token_start=None,
    token_end='</s>'``).
    """

    def __init__(self, sp_model_path, **kwargs):
        super().__init__(**kwargs)
        import sentencepiece as spm

        self.sp_model = spm.SentencePieceProcessor()
        try:
            loaded = self.sp_model.Load(sp_model_path)
        except (OSError, RuntimeError) as exc:
            raise ValueError(
                "could not load the SentencePiece model %r: %s" % (sp_model_path, exc)
            ) from exc
        if not loaded:
            raise ValueError("could not load the SentencePiece model %r" % (sp_model_path,))
        self._vocab_size = self.sp_model.get_piece_size()
        if self.sp_model.pad_id() >= 0:
            self._token_pad = self.sp_model.id_to_piece(self.sp_model.pad_id())
        if self.sp_model.unk_id() >= 0:
            self._token_unk = self.sp_model.id_to_piece(self.sp_model.unk_id())
        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(self, "_token_%s" % name)
            if token is not None:
                setattr(self, "_token_%s_id" % name, self.sp_model.piece_to_id(token))

    @property
    def vocab_size(self):
        return self._vocab_size

    def token_to_id(self, token):
        return self.sp_model.piece_to_id(token)

    def id_to_token(self, i):
        return self.sp_model.id_to_piece(i) if 0 <= i < self._vocab_size else ""

    def decode(self, ids):
        tokens = [self._token_translate_inv.get(t) or t for t in self.ids_to_tokens(ids)]
        return self.sp_model.decode_pieces([t for t in tokens if t])

    def _tokenize(self, text):
        if self._pre_tokenize is not None:
            text = " ".join(self._pre_tokenize(text))
        return self.sp_model.encode_as_pieces(text)

    def _is_special(self, i):
        return (
            self.sp_model.is_control(i) or self.sp_model.is_unknown(i) or self.sp_model.is_unused(i)
        )

    def _is_decodable(self, i):
        return i < self._vocab_size and not self._is_special(i)
