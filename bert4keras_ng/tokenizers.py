"""Tokenizers with bert4keras 0.11.5 semantics.

``Tokenizer`` is BERT's WordPiece tokenizer as bert4keras implements it (CJK characters and
punctuation become single tokens, optional lower-casing with accent stripping, control characters
dropped). It has two engines that give identical output:

* an exact pure-Python engine, and
* the Hugging Face ``tokenizers`` Rust library (``BertNormalizer`` + ``BertPreTokenizer`` +
  ``WordPiece``), used automatically when installed, for texts made only of characters on which
  the two engines are known to agree (``_FAST_SAFE_RANGES``; the test-suite checks every one of
  them). Any other text, and any configuration the Rust pipeline cannot express
  (``pre_tokenize``, ``token_translate``), goes through the Python engine.

``SpTokenizer`` wraps a SentencePiece model with the same interface.
"""

import re
import unicodedata

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


def _read_vocab(dict_path, encoding):
    tokens, first_line, blank = [], {}, []
    with open(dict_path, encoding=encoding) as reader:
        for number, line in enumerate(reader, 1):
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

    Raises ValueError naming the file and line for blank lines and duplicate tokens.
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
        if maxlen is not None:
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
        first_ids = self._any_ids(first_text)
        second_ids = self._any_ids(second_text) if pair else None
        return self._assemble(first_ids, second_ids, maxlen, pattern, truncate_from)

    def _any_ids(self, text):
        if is_string(text):
            return self._text_ids(text)
        return self.tokens_to_ids(list(text))

    def _batch_text_ids(self, texts):
        return [self._any_ids(t) for t in texts]

    def encode_batch(
        self, first_texts, second_texts=None, maxlen=None, pattern="S*E*E", truncate_from="right"
    ):
        """``encode`` over lists of texts (and optional second texts): returns
        ``(list of token_ids, list of segment_ids)``, equal to per-text ``encode`` calls."""
        first_texts = list(first_texts)
        pair = second_texts is not None
        if pair:
            second_texts = list(second_texts)
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
        firsts = self._batch_text_ids(first_texts)
        seconds = self._batch_text_ids(second_texts) if pair else [None] * len(firsts)
        all_ids, all_segments = [], []
        for a, b in zip(firsts, seconds):
            ids, segments = self._assemble(a, b, maxlen, pattern, truncate_from)
            all_ids.append(ids)
            all_segments.append(segments)
        return all_ids, all_segments


# ---------------------------------------------------------------------------------------------
# WordPiece tokenizer
# ---------------------------------------------------------------------------------------------

# Characters on which the Rust pipeline (tokenizers 0.23, BertNormalizer + BertPreTokenizer)
# and the bert4keras rules agree, alone and between letters, with and without lower-casing,
# checked for every code point listed (Unicode 14 assigned characters in the blocks used by
# Chinese/English text: Latin, Greek without U+03A3 (context-dependent final sigma), Cyrillic,
# punctuation, symbols, CJK, kana, Hangul, full-width forms, emoji). Outside: private use
# (dropped by Rust, kept by bert4keras), U+2B820..U+2B91F (CJK only for bert4keras), characters
# newer than the Rust tables, and everything not listed; those texts use the Python engine.
_FAST_SAFE_RANGES = (
    (0x0000, 0x0377), (0x037A, 0x037F), (0x0384, 0x038A), (0x038C, 0x038C), (0x038E, 0x03A1),
    (0x03A4, 0x04FF), (0x1E00, 0x1EFF), (0x2000, 0x2064), (0x2066, 0x2071), (0x2074, 0x208E),
    (0x2090, 0x209C), (0x20A0, 0x20C0), (0x20D0, 0x20F0), (0x2100, 0x218B), (0x2190, 0x2426),
    (0x2440, 0x244A), (0x2460, 0x2B73), (0x2B76, 0x2B95), (0x2B97, 0x2BFF), (0x2E80, 0x2E99),
    (0x2E9B, 0x2EF3), (0x2F00, 0x2FD5), (0x3000, 0x303F), (0x3041, 0x3096), (0x3099, 0x30FF),
    (0x3105, 0x312F), (0x3131, 0x318E), (0x3190, 0x31E3), (0x31F0, 0x321E), (0x3220, 0x9FFF),
    (0xAC00, 0xD7A3), (0xF900, 0xFA6D), (0xFA70, 0xFAD9), (0xFE00, 0xFE19), (0xFE20, 0xFE52),
    (0xFE54, 0xFE66), (0xFE68, 0xFE6B), (0xFEFF, 0xFEFF), (0xFF01, 0xFFBE), (0xFFC2, 0xFFC7),
    (0xFFCA, 0xFFCF), (0xFFD2, 0xFFD7), (0xFFDA, 0xFFDC), (0xFFE0, 0xFFE6), (0xFFE8, 0xFFEE),
    (0xFFFD, 0xFFFD), (0x1F000, 0x1F02B), (0x1F030, 0x1F093), (0x1F0A0, 0x1F0AE),
    (0x1F0B1, 0x1F0BF), (0x1F0C1, 0x1F0CF), (0x1F0D1, 0x1F0F5), (0x1F100, 0x1F1AD),
    (0x1F1E6, 0x1F202), (0x1F210, 0x1F23B), (0x1F240, 0x1F248), (0x1F250, 0x1F251),
    (0x1F260, 0x1F265), (0x1F300, 0x1F6D7), (0x1F6DD, 0x1F6EC), (0x1F6F0, 0x1F6FC),
    (0x1F700, 0x1F773), (0x1F780, 0x1F7D8), (0x1F7E0, 0x1F7EB), (0x1F7F0, 0x1F7F0),
    (0x1F800, 0x1F80B), (0x1F810, 0x1F847), (0x1F850, 0x1F859), (0x1F860, 0x1F887),
    (0x1F890, 0x1F8AD), (0x1F8B0, 0x1F8B1), (0x1F900, 0x1FA53), (0x1FA60, 0x1FA6D),
    (0x1FA70, 0x1FA74), (0x1FA78, 0x1FA7C), (0x1FA80, 0x1FA86), (0x1FA90, 0x1FAAC),
    (0x1FAB0, 0x1FABA), (0x1FAC0, 0x1FAC5), (0x1FAD0, 0x1FAD9), (0x1FAE0, 0x1FAE7),
    (0x1FAF0, 0x1FAF6), (0x20000, 0x2A6DF), (0x2A700, 0x2B738), (0x2B740, 0x2B81D),
    (0x2B920, 0x2CEA1), (0x2CEB0, 0x2EBE0), (0x2F800, 0x2FA1D),
)


def _charset(ranges):
    parts = []
    for lo, hi in ranges:
        parts.append(re.escape(chr(lo)) if lo == hi else re.escape(chr(lo)) + "-" + re.escape(chr(hi)))
    return "".join(parts)


# Matches the first character the fast engine must not see.
_FAST_UNSAFE = re.compile("[^%s]" % _charset(_FAST_SAFE_RANGES))

# Character class codes for the Python engine.
_WORD, _SPLIT, _SPACE, _DROP = 0, 1, 2, 3
_char_class_cache = {}


def _char_class(ch):
    cls = _char_class_cache.get(ch)
    if cls is None:
        if _is_punctuation(ch) or _is_cjk(ch):
            cls = _SPLIT
        elif _is_space(ch):
            cls = _SPACE
        elif _is_removed(ch):
            cls = _DROP
        else:
            cls = _WORD
        _char_class_cache[ch] = cls
    return cls


def _rust_available():
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        return False
    return True


class Tokenizer(TokenizerBase):
    """BERT WordPiece tokenizer with bert4keras 0.11.5 behaviour.

    ``token_dict``: a vocab file path or a dict token -> id. ``do_lower_case``: lower-case and
    strip accents (NFD, drop ``Mn``). ``word_maxlen``: longer words become one unknown token.
    ``fast``: None (default) uses the Rust engine from the ``tokenizers`` package when it is
    installed and the configuration allows it, True requires it, False forces the pure-Python
    engine; the output is the same either way.
    """

    def __init__(
        self,
        token_dict,
        do_lower_case=False,
        word_maxlen=200,
        fast=None,
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
        if is_string(token_dict):
            token_dict = load_vocab(token_dict)
        self._do_lower_case = bool(do_lower_case)
        self._token_dict = dict(token_dict)
        self._token_dict_inv = {v: k for k, v in self._token_dict.items()}
        self._vocab_size = len(self._token_dict)
        self._word_maxlen = word_maxlen
        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(self, "_token_%s" % name)
            if token is not None and token in self._token_dict:
                setattr(self, "_token_%s_id" % name, self._token_dict[token])
        self._unk_id = self._token_dict.get(self._token_unk)
        self._piece_cache = {}

        if fast and not _rust_available():
            raise ImportError("Tokenizer(fast=True) needs the 'tokenizers' package")
        use_rust = _rust_available() if fast is None else bool(fast)
        if use_rust:
            reasons = []
            if pre_tokenize is not None:
                reasons.append("pre_tokenize")
            if self._token_translate:
                reasons.append("token_translate")
            if self._unk_id is None:
                reasons.append("no %s token in the vocabulary" % self._token_unk)
            if any(len(t) > word_maxlen for t in self._token_dict):
                reasons.append("vocabulary tokens longer than word_maxlen")
            if reasons:
                if fast:
                    raise ValueError(
                        "Tokenizer(fast=True) cannot be used with: %s" % ", ".join(reasons)
                    )
                use_rust = False
        self._use_rust = use_rust
        self._rust = None

    # -- vocabulary ----------------------------------------------------------------------------
    @property
    def vocab_size(self):
        return self._vocab_size

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
            raise KeyError("token id %r is not in the vocabulary (size %d)" % (i, self._vocab_size))

    # -- Python engine -------------------------------------------------------------------------
    def _split_words(self, text):
        """Normalise and split into words (no WordPiece yet)."""
        out = []
        word = []
        for ch in text:
            cls = _char_class(ch)
            if cls == _WORD:
                word.append(ch)
            elif cls == _DROP:
                continue
            else:
                if word:
                    out.append("".join(word))
                    word = []
                if cls == _SPLIT:
                    out.append(ch)
        if word:
            out.append("".join(word))
        # Python's str.split() also splits on separators outside the classes above
        # (U+001C..U+001F, U+0085, U+2028, U+2029), exactly as bert4keras does.
        words = []
        for w in out:
            words.extend(w.split())
        return words

    def _word_piece(self, word):
        cached = self._piece_cache.get(word)
        if cached is not None:
            return cached
        if len(word) > self._word_maxlen:
            pieces = [word]
        else:
            pieces, start, n, vocab = [], 0, len(word), self._token_dict
            while start < n:
                end = n
                while end > start:
                    sub = word[start:end] if start == 0 else "##" + word[start:end]
                    if sub in vocab:
                        break
                    end -= 1
                if end == start:
                    pieces = [word]
                    break
                pieces.append(sub)
                start = end
        if len(self._piece_cache) < 100000:
            self._piece_cache[word] = pieces
        return pieces

    def _tokenize(self, text, pre_tokenize=True):
        if self._do_lower_case:
            text = lowercase_and_normalize(text)
        if pre_tokenize and self._pre_tokenize is not None:
            tokens = []
            for word in self._pre_tokenize(text):
                if word in self._token_dict:
                    tokens.append(word)
                else:
                    tokens.extend(self._tokenize(word, False))
            return tokens
        tokens = []
        for word in self._split_words(text):
            tokens.extend(self._word_piece(word))
        return tokens

    # -- Rust engine ---------------------------------------------------------------------------
    def _rust_tokenizer(self):
        if self._rust is None:
            from tokenizers import Tokenizer as RustTokenizer
            from tokenizers import models, normalizers, pre_tokenizers

            rust = RustTokenizer(
                models.WordPiece(
                    vocab=self._token_dict,
                    unk_token=self._token_unk,
                    max_input_chars_per_word=self._word_maxlen,
                    continuing_subword_prefix="##",
                )
            )
            rust.normalizer = normalizers.BertNormalizer(
                clean_text=True,
                handle_chinese_chars=True,
                strip_accents=self._do_lower_case,
                lowercase=self._do_lower_case,
            )
            rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            self._rust = rust
        return self._rust

    def _specials_ids(self):
        start = None if self._token_start is None else self.token_to_id(self._token_start)
        end = None if self._token_end is None else self.token_to_id(self._token_end)
        return start, end

    def _wrap_ids(self, ids, start, end):
        if start is not None:
            ids.insert(0, start)
        if end is not None:
            ids.append(end)
        return ids

    def _text_ids(self, text):
        if self._use_rust and _FAST_UNSAFE.search(text) is None:
            ids = self._rust_tokenizer().encode(text, add_special_tokens=False).ids
            return self._wrap_ids(ids, *self._specials_ids())
        return self.tokens_to_ids(self.tokenize(text))

    def _batch_text_ids(self, texts):
        if not self._use_rust:
            return [self._any_ids(t) for t in texts]
        results = [None] * len(texts)
        fast_index, fast_texts = [], []
        search = _FAST_UNSAFE.search
        for k, text in enumerate(texts):
            if is_string(text) and search(text) is None:
                fast_index.append(k)
                fast_texts.append(text)
            else:
                results[k] = self._any_ids(text)
        if fast_texts:
            start, end = self._specials_ids()
            encodings = self._rust_tokenizer().encode_batch_fast(
                fast_texts, add_special_tokens=False
            )
            for k, enc in zip(fast_index, encodings):
                results[k] = self._wrap_ids(enc.ids, start, end)
        return results

    def _fast_tokens(self, text):
        """Content tokens via Rust, or None where they could differ from bert4keras."""
        if not self._use_rust or _FAST_UNSAFE.search(text) is not None:
            return None
        enc = self._rust_tokenizer().encode(text, add_special_tokens=False)
        if self._unk_id in enc.ids:
            # bert4keras keeps an unknown word's text as its token; only the id is [UNK].
            return None
        return enc.tokens

    def tokenize(self, text, maxlen=None):
        tokens = self._fast_tokens(text) if is_string(text) else None
        if tokens is None:
            return super().tokenize(text, maxlen)
        tokens = self._wrap(tokens)
        if maxlen is not None:
            if maxlen < self._n_special():
                raise ValueError(
                    "maxlen=%d is smaller than the %d special token(s) every text gets"
                    % (maxlen, self._n_special())
                )
            truncate_sequences(maxlen, -(int(self._token_end is not None) + 1), tokens)
        return tokens

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
        if self._do_lower_case:
            lowered = text.lower()
            # Whole-text lowering applies the final-sigma rule; fall back to per-character
            # lowering when it changes the length (indices must stay aligned with ``text``).
            if len(lowered) != len(text):
                lowered = None
        normalized, char_mapping = [], []
        for i, ch in enumerate(text):
            if self._do_lower_case:
                ch = lowered[i] if lowered is not None else ch.lower()
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
        if not self.sp_model.Load(sp_model_path):
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
