"""Tests for bert4keras_ng.tokenizers.

Golden values come from bert4keras 0.11.5 and Hugging Face transformers (BertTokenizer, Rust
backed, and BertTokenizerLegacy, pure Python) via tests/fixtures/make_tokenizer_goldens.py.
"""

import json
import os
import random
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bert4keras_ng.tokenizers import SpTokenizer, Tokenizer, load_vocab, save_vocab

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = os.path.join(HERE, "fixtures", "tokenizer_vocab.txt")
with open(os.path.join(HERE, "fixtures", "tokenizer_goldens.json"), encoding="utf-8") as _f:
    GOLDEN = json.load(_f)

CASES = GOLDEN["cases"]


@pytest.fixture(scope="module")
def toks():
    return {lower: Tokenizer(VOCAB, do_lower_case=lower) for lower in (False, True)}


def _case_id(case):
    return "%s-%r" % ("lower" if case["lower"] else "cased", case["text"][:20])


# ---------------------------------------------------------------------------------------------
# bert4keras goldens
# ---------------------------------------------------------------------------------------------


def test_tokenize_encode_decode_match_bert4keras(toks):
    mismatches = []
    for case in CASES:
        tok = toks[case["lower"]]
        got = {
            "tokens": tok.tokenize(case["text"]),
            "ids": list(tok.encode(case["text"])),
            "tokens_maxlen8": tok.tokenize(case["text"], maxlen=8),
            "decode": tok.decode(case["ids"]),
        }
        expected = {
            "tokens": case["tokens"],
            "ids": [case["ids"], case["segment_ids"]],
            "tokens_maxlen8": case["tokens_maxlen8"],
            "decode": case["decode"],
        }
        for key in got:
            if got[key] != expected[key]:
                mismatches.append((_case_id(case), key, got[key], expected[key]))
    assert not mismatches, mismatches[:5]


def test_encode_batch_matches_bert4keras(toks):
    for lower in (False, True):
        cases = [c for c in CASES if c["lower"] == lower]
        ids, segments = toks[lower].encode_batch([c["text"] for c in cases])
        assert ids == [c["ids"] for c in cases]
        assert segments == [c["segment_ids"] for c in cases]


def test_pairs_match_bert4keras(toks):
    for case in GOLDEN["pairs"]:
        tok = toks[case["lower"]]
        kwargs = dict(maxlen=case["maxlen"], truncate_from=case["truncate_from"])
        got = tok.encode(case["first"], case["second"], **kwargs)
        assert list(got) == [case["ids"], case["segment_ids"]], case
        batch = tok.encode_batch([case["first"]], [case["second"]], **kwargs)
        assert batch == ([case["ids"]], [case["segment_ids"]])


def test_rematch_matches_bert4keras(toks):
    compared = 0
    for case in CASES:
        if not isinstance(case["rematch"], list):
            continue
        # bert4keras's offsets drift after characters whose lower case is longer (U+0130);
        # ours stay on the original text, so only compare where the two cannot differ.
        if case["lower"] and len(case["text"].lower()) != len(case["text"]):
            continue
        assert toks[case["lower"]].rematch(case["text"], case["tokens"]) == case["rematch"]
        compared += 1
    assert compared > 400


def test_rematch_spells_tokens_after_length_changing_lower_case(toks):
    # İ lowers to two characters, and the whole-text lower case turns the final Σ into ς:
    # bert4keras-style per-character lowering gave [] for the token 'bς😀'.
    text = "İ bΣ😀 x"
    tok = toks[True]
    tokens = tok.tokenize(text)
    assert tokens == ["[CLS]", "i", "bς😀", "x", "[SEP]"]
    assert tok.rematch(text, tokens) == [[], [0], [2, 3, 4], [6], []]
    text = "ΣΑΣ İΣ"
    tokens = tok.tokenize(text)
    assert tokens[1:-1] == ["σας", "iς"]
    assert tok.rematch(text, tokens) == [[], [0, 1, 2], [4, 5], []]


def test_rematch_after_dotted_capital_i(toks):
    text = "İİ the"
    tokens = toks[True].tokenize(text)
    mapping = toks[True].rematch(text, tokens)
    assert tokens == ["[CLS]", "i", "##i", "the", "[SEP]"]
    assert mapping == [[], [0], [1], [3, 4, 5], []]


def test_pre_tokenize_and_token_translate_match_bert4keras():
    spec = GOLDEN["pre_tokenize_translate"]
    for lower in (False, True):
        tok = Tokenizer(VOCAB, do_lower_case=lower, pre_tokenize=lambda s: s.split(),
                        token_translate=spec["translate"])
        cases = [c for c in spec["cases"] if c["lower"] == lower]
        for case in cases:
            assert tok.tokenize(case["text"]) == case["tokens"]
            assert tok.encode(case["text"])[0] == case["ids"]
        assert tok.encode_batch([c["text"] for c in cases])[0] == [c["ids"] for c in cases]


def test_token_translate_without_pre_tokenize():
    translate = {"hello": "[unused5]", "##s": "[unused6]"}
    tok = Tokenizer(VOCAB, token_translate=translate)
    plain = Tokenizer(VOCAB)
    text = "hello worlds hello"
    expected = [translate.get(t) or t for t in plain.tokenize(text)]
    assert tok.tokenize(text) == expected
    assert tok.encode(text)[0] == plain.tokens_to_ids(expected)
    assert tok.encode_batch([text])[0] == [plain.tokens_to_ids(expected)]


def test_simplified_vocab_matches_bert4keras():
    spec = GOLDEN["simplified"]
    token_dict, keep = load_vocab(VOCAB, simplified=True, startswith=spec["startswith"])
    assert sorted(token_dict, key=token_dict.get) == spec["tokens"]
    assert keep == spec["keep_tokens"]
    full = load_vocab(VOCAB)
    assert "中国" in full and "中国" not in token_dict and "##国" not in token_dict
    assert all(full[t] == keep[i] for t, i in token_dict.items())


# ---------------------------------------------------------------------------------------------
# Hugging Face agreement
# ---------------------------------------------------------------------------------------------


def _hf_disagreement_reason(text, ids):
    """The documented reasons why HF BertTokenizer may differ from bert4keras (None if none)."""
    if any(unicodedata.category(ch) == "Co" for ch in text):
        return "private use characters (HF drops them, bert4keras keeps them as word characters)"
    if any(s in text or s in text.lower() for s in ("[CLS]", "[SEP]", "[UNK]", "[MASK]", "[PAD]")):
        return "literal special tokens in the text (HF matches them, bert4keras splits them)"
    if any(len(w) > 100 for w in text.split()):
        return "words longer than 100 characters (HF default limit; bert4keras uses 200)"
    if any(0x2B820 <= ord(ch) <= 0x2B91F for ch in text):
        return "U+2B820..U+2B91F (CJK for bert4keras, not for HF)"
    return None


def test_ids_match_hf_bert_tokenizer_except_documented_cases(toks):
    reasons = set()
    for case in CASES:
        ours = toks[case["lower"]].encode(case["text"])[0]
        assert ours == case["ids"]
        reason = _hf_disagreement_reason(case["text"], ours)
        if reason is None:
            assert ours == case["hf_ids"], _case_id(case)
        elif ours != case["hf_ids"]:
            reasons.add(reason)
    assert len(reasons) == 4  # every documented disagreement really occurs in the corpus


def test_hf_legacy_differs_only_by_nfc_when_cased(toks):
    """BertTokenizerLegacy NFC-normalises input when not lower-casing; nothing else differs."""
    for case in CASES:
        if _hf_disagreement_reason(case["text"], None) is not None:
            continue
        if case["ids"] != case["hf_legacy_ids"]:
            assert not case["lower"]
            nfc = unicodedata.normalize("NFC", case["text"])
            assert nfc != case["text"]
            assert toks[False].encode(nfc)[0] == case["hf_legacy_ids"]


# Characters for random texts: what Chinese/English text is made of, plus the edge cases.
_POOL = (
    [chr(c) for c in range(0x20, 0x7F)] * 3
    + [chr(c) for c in range(0xA0, 0x250)]
    + [chr(c) for c in range(0x370, 0x3A2)] + [chr(c) for c in range(0x3A4, 0x400)]
    + [chr(c) for c in range(0x2000, 0x2070)]
    + [chr(c) for c in range(0x3000, 0x3100)]
    + [chr(c) for c in range(0x4E00, 0x5200)] * 2
    + [chr(c) for c in range(0xFF01, 0xFF5F)]
    + [chr(c) for c in range(0x1F600, 0x1F650)]
    + list("\t\n\r\x00\x01\x0b\x1c\x7f\x85\u200b\u200d\ufeff\ufffd\u0301\u0308\ufe0f")
)


@pytest.fixture(scope="module")
def hf_pipelines():
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, normalizers, pre_tokenizers

    vocab = load_vocab(VOCAB)
    out = {}
    for lower in (False, True):
        rust = tokenizers.Tokenizer(models.WordPiece(
            vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=200,
            continuing_subword_prefix="##"))
        rust.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=lower, lowercase=lower)
        rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        out[lower] = rust
    return out


def test_random_texts_match_hf_tokenizers_pipeline(toks, hf_pipelines):
    rng = random.Random(0)
    texts = ["".join(rng.choice(_POOL) for _ in range(rng.randint(0, 60))) for _ in range(1500)]
    texts = [t for t in texts if "\u03a3" not in t]  # final sigma: context rule, see docs
    for lower in (False, True):
        expected = [[22] + e.ids + [23] for e in hf_pipelines[lower].encode_batch(
            texts, add_special_tokens=False)]
        assert [toks[lower].encode(t)[0] for t in texts] == expected
        assert toks[lower].encode_batch(texts)[0] == expected


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

# Characters whose lower case changes the length (U+0130) or depends on the context (the
# final sigma), with neighbours that make the context rule fire, and astral characters.
_CASE_CHANGING = list("İΣΣσςΑΒab B x") + ["\U0001F600", "\u0301", "\u0307", "中"]

_text = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from(_POOL), st.sampled_from(_POOL),
                       st.sampled_from(_CASE_CHANGING)),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(text=_text, lower=st.booleans())
def test_rematch_never_raises_and_maps_back(toks, text, lower):
    tok = toks[lower]
    tokens = tok.tokenize(text)
    mapping = tok.rematch(text, tokens)
    assert len(mapping) == len(tokens)
    assert mapping[0] == [] and mapping[-1] == []
    last = -1
    for token, span in zip(tokens[1:-1], mapping[1:-1]):
        assert span, (token, text)
        assert span == sorted(span) and span[0] >= last
        last = span[-1]
        piece = "".join(text[i] for i in dict.fromkeys(span))
        stem = Tokenizer.stem(token)
        if lower:
            piece = "".join(unicodedata.normalize("NFD", ch.lower()) for ch in piece)
            piece = "".join(ch for ch in piece if unicodedata.category(ch) != "Mn")
            # per-character lowering cannot see the final-sigma context: compare σ/ς as one
            piece, stem = piece.replace("ς", "σ"), stem.replace("ς", "σ")
        assert stem in piece, (token, piece, text)
    # garbage tokens never raise either
    assert tok.rematch(text, ["[CLS]", "##", "", "zzzz", "中", None]) is not None


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(_text, min_size=1, max_size=6), lower=st.booleans(),
       maxlen=st.one_of(st.none(), st.integers(3, 30)), side=st.sampled_from(["right", "left"]))
def test_encode_batch_equals_encode(toks, texts, lower, maxlen, side):
    tok = toks[lower]
    ids, segments = tok.encode_batch(texts, maxlen=maxlen, truncate_from=side)
    single = [tok.encode(t, maxlen=maxlen, truncate_from=side) for t in texts]
    assert (ids, segments) == tuple(map(list, zip(*single)))
    seconds = texts[::-1]
    ids, segments = tok.encode_batch(texts, seconds, maxlen=maxlen, truncate_from=side)
    expected = [tok.encode(a, b, maxlen=maxlen, truncate_from=side)
                for a, b in zip(texts, seconds)]
    assert ids == [e[0] for e in expected] and segments == [e[1] for e in expected]
    if maxlen is not None:
        assert all(len(i) <= maxlen for i in ids)


def _reference_truncate(maxlen, index, first, second):
    """Plain-Python bert4keras truncation: pop from the longer (first on ties) one at a time."""
    seqs = [list(s) for s in (first, second) if s]
    while sum(map(len, seqs)) > maxlen:
        longest = max(range(len(seqs)), key=lambda i: (len(seqs[i]), -i))
        seqs[longest].pop(index)
    return seqs


@settings(max_examples=100, deadline=None)
@given(a=_text, b=_text, maxlen=st.integers(3, 40), side=st.sampled_from(["right", "left"]))
def test_pair_truncation_against_reference(toks, a, b, maxlen, side):
    tok = toks[False]
    first, second = tok.tokenize(a), tok.tokenize(b)
    index = -2 if side == "right" else 1
    f, s = _reference_truncate(maxlen + 1, index, first, second)
    expected = tok.tokens_to_ids(f) + tok.tokens_to_ids(s[1:])
    ids, segments = tok.encode(a, b, maxlen=maxlen, truncate_from=side)
    assert ids == expected
    assert segments == [0] * len(f) + [1] * (len(s) - 1)


# ---------------------------------------------------------------------------------------------
# API details and errors
# ---------------------------------------------------------------------------------------------


def test_token_id_conversions(toks):
    tok = toks[False]
    vocab = load_vocab(VOCAB)
    assert tok.token_to_id("[CLS]") == vocab["[CLS]"]
    assert tok.token_to_id("definitely-not-a-token") == vocab["[UNK]"]
    assert tok.id_to_token(vocab["中"]) == "中"
    assert tok.ids_to_tokens([vocab["a"], vocab["##b"]]) == ["a", "##b"]
    assert tok.tokens_to_ids(["a", "##b", "??!"]) == [vocab["a"], vocab["##b"], vocab["[UNK]"]]
    assert tok.vocab_size == len(vocab)
    assert tok._token_start_id == vocab["[CLS]"] and tok._token_end_id == vocab["[SEP]"]
    with pytest.raises(KeyError, match="not in the vocabulary"):
        tok.id_to_token(10 ** 6)


def test_token_lists_and_custom_specials():
    tok = Tokenizer(VOCAB, token_start=None, token_end="[SEP]")
    assert tok.tokenize("中国") == ["中", "国", "[SEP]"]
    ids, segs = tok.encode("中国", "北京")
    vocab = load_vocab(VOCAB)
    assert ids == [vocab[t] for t in ["中", "国", "[SEP]", "北", "京", "[SEP]"]]
    assert segs == [0, 0, 0, 1, 1, 1]
    tokens = ["[CLS]", "中", "[SEP]"]
    assert Tokenizer(VOCAB).encode(tokens)[0] == [vocab[t] for t in tokens]
    assert tokens == ["[CLS]", "中", "[SEP]"]  # not mutated by truncation either
    Tokenizer(VOCAB).encode(tokens, maxlen=2)
    assert tokens == ["[CLS]", "中", "[SEP]"]


def test_maxlen_smaller_than_special_tokens(toks):
    tok = toks[False]
    with pytest.raises(ValueError, match="special token"):
        tok.tokenize("中国", maxlen=1)
    with pytest.raises(ValueError, match="special token"):
        tok.encode("中国", maxlen=1)
    with pytest.raises(ValueError, match="special token"):
        tok.encode("中国", "北京", maxlen=2)
    with pytest.raises(ValueError, match="special token"):
        tok.encode_batch(["中国"], ["北京"], maxlen=2)
    assert tok.encode("中国", "北京", maxlen=3)[0] == tok.tokens_to_ids(["[CLS]", "[SEP]", "[SEP]"])
    with pytest.raises(ValueError, match="truncate_from"):
        tok.encode("中国", maxlen=3, truncate_from="middle")


def test_encode_batch_argument_errors(toks):
    with pytest.raises(ValueError, match="2 first texts and 1 second"):
        toks[False].encode_batch(["a", "b"], ["c"])


def test_vocab_without_unk():
    tok = Tokenizer({"[CLS]": 0, "[SEP]": 1, "a": 2})
    assert tok.encode("a")[0] == [0, 2, 1]
    with pytest.raises(KeyError, match=r"no \[UNK\] token"):
        tok.encode("b")


def test_word_maxlen(toks):
    tok = Tokenizer(VOCAB, word_maxlen=5)
    assert tok.tokenize("abcdef") == ["[CLS]", "abcdef", "[SEP]"]
    assert tok.encode("abcdef")[0][1] == tok.token_to_id("[UNK]")
    assert toks[False].tokenize("abcdef")[1:-1] == ["a", "##b", "##c", "##d", "##e", "##f"]


def test_decode_edge_cases(toks):
    tok = toks[False]
    assert tok.decode([], tokens=["##", "a"]) == "a"
    assert tok.decode(tok.encode("中国 hello world")[0]) == "中国hello world"


# ---------------------------------------------------------------------------------------------
# Vocabulary files
# ---------------------------------------------------------------------------------------------


def test_load_vocab_duplicates_and_blank_lines(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("[PAD]\n[UNK]\na\nb\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dup\.txt, line 5: duplicate token 'a' \(first seen on line 3\)"):
        load_vocab(str(path))
    path = tmp_path / "blank.txt"
    path.write_text("[PAD]\n\n[UNK]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"blank\.txt, line 2: blank line"):
        load_vocab(str(path))
    path = tmp_path / "trailing.txt"
    path.write_text("[PAD]\n[UNK]\tfreq 3\n\n\n", encoding="utf-8")
    assert load_vocab(str(path)) == {"[PAD]": 0, "[UNK]": 1}
    with pytest.raises(ValueError, match="startswith token"):
        load_vocab(str(path), simplified=True, startswith=["[CLS]"])


def test_vocab_with_byte_order_mark(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n")
    assert load_vocab(str(path)) == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4}
    token_dict, keep = load_vocab(str(path), simplified=True, startswith=["[PAD]", "[UNK]"])
    assert keep[:2] == [0, 1]
    assert Tokenizer(str(path)).encode("a")[0] == [2, 4, 3]


def test_non_utf8_vocab_names_file_and_line(tmp_path):
    path = tmp_path / "gbk.txt"
    path.write_bytes("[PAD]\n[UNK]\n[CLS]\n中国\n".encode("gbk"))
    with pytest.raises(ValueError, match=r"gbk\.txt, line 4: not valid utf-8"):
        load_vocab(str(path))
    assert load_vocab(str(path), encoding="gbk")["中国"] == 3


def test_vocab_without_start_or_end_token_warns_then_encodes_the_unknown_id(tmp_path):
    """bert4keras encodes a missing [CLS]/[SEP] as the unknown-token id (its Chinese-chess
    example relies on it); here that is said at construction, and with no unknown id either
    encoding fails with the same explanation."""
    path = tmp_path / "nospecials.txt"
    path.write_text("[PAD]\n[UNK]\na\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"nospecials\.txt has no \[CLS\] and no \[SEP\]"):
        tok = Tokenizer(str(path))
    assert tok.encode("a a")[0] == [1, 2, 2, 1]  # [UNK] a a [UNK]
    with pytest.warns(UserWarning, match=r"no \[SEP\] token.*token_end="):
        tok = Tokenizer({"[CLS]": 0, "a": 1}, token_end="[SEP]")
    with pytest.raises(ValueError, match=r"no \[SEP\] token.*_token_unk_id"):
        tok.encode("a")
    tok._token_unk_id = 0  # as bert4keras scripts set it
    assert tok.encode("a")[0] == [0, 1, 0]
    assert [list(row) for row in tok.encode_batch(["a a"])[0]] == [[0, 1, 1, 0]]
    assert Tokenizer(str(path), token_start=None, token_end=None).encode("a")[0] == [2]


def test_bytes_and_single_strings_are_type_errors(toks):
    tok = toks[False]
    with pytest.raises(TypeError, match="first_text must be a str or a list of token strings, "
                                        "got bytes"):
        tok.encode(b"abc")
    with pytest.raises(TypeError, match="second_text .* got int"):
        tok.encode("abc", 5)
    with pytest.raises(TypeError, match="first_texts must be a list of texts, got a single str"):
        tok.encode_batch("a string")
    with pytest.raises(TypeError, match="second_texts .* single bytes"):
        tok.encode_batch(["a"], b"b")
    with pytest.raises(TypeError, match="got bytes"):
        tok.encode_batch(["a", b"b"])


def test_save_vocab_round_trip(tmp_path):
    token_dict, _ = load_vocab(VOCAB, simplified=True, startswith=["[PAD]", "[UNK]"])
    path = str(tmp_path / "vocab.txt")
    save_vocab(path, token_dict)
    assert load_vocab(path) == token_dict
    with pytest.raises(ValueError, match="without gaps"):
        save_vocab(path, {"a": 0, "b": 2})
    with pytest.raises(ValueError, match="whitespace"):
        save_vocab(path, {"a b": 0})


# ---------------------------------------------------------------------------------------------
# WordPiece search and caches
# ---------------------------------------------------------------------------------------------


def _reference_word_piece(word, vocab, word_maxlen=200):
    """bert4keras's search: at each start, the longest piece, trying ends from the word's end."""
    if len(word) > word_maxlen:
        return [word]
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
        else:
            return [word]
        pieces.append(piece)
        start = end
    return pieces


_abc = st.text(alphabet="abc", min_size=1, max_size=5)


@settings(max_examples=200, deadline=None)
@given(heads=st.sets(_abc, max_size=12), tails=st.sets(_abc, max_size=12),
       words=st.lists(st.text(alphabet="abcd", min_size=1, max_size=14), min_size=1,
                      max_size=8), word_maxlen=st.sampled_from([3, 200]))
def test_word_piece_equals_the_backward_longest_match_search(heads, tails, words, word_maxlen):
    tokens = ["[UNK]", "[CLS]", "[SEP]", "##"] + sorted(heads) + ["##" + t for t in sorted(tails)]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    tok = Tokenizer(vocab, word_maxlen=word_maxlen)
    expected = [_reference_word_piece(w, vocab, word_maxlen) for w in words]
    expected_ids = [[vocab.get(p, 0) for p in pieces] for pieces in expected]
    assert [tok.tokenize(w)[1:-1] for w in words] == expected
    assert [tok.encode(w)[0][1:-1] for w in words] == expected_ids
    assert [ids[1:-1] for ids in tok.encode_batch(words)[0]] == expected_ids
    assert [ids[1:-1] for ids in tok.encode_batch([" ".join(words)])[0]] == [
        [i for ids in expected_ids for i in ids]]


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(alphabet=st.one_of(st.sampled_from(_CASE_CHANGING + ["\uffff", "\n"]),
                                                 st.sampled_from(_POOL), st.characters()),
                              max_size=12), max_size=6))
def test_batch_lower_casing_equals_per_text_lower_casing(texts):
    """encode_batch lower-cases and NFD-normalises all texts joined in one call."""
    from bert4keras_ng.tokenizers import _lower_nfd, _lower_nfd_all

    assert _lower_nfd_all(texts) == [_lower_nfd(t.lower()) for t in texts]


def _mixed_texts(n, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(_POOL) for _ in range(rng.randint(0, 20))) for _ in range(n)]


@pytest.mark.parametrize("lower", [False, True])
def test_word_cache_is_bounded_and_changes_no_output(monkeypatch, lower):
    import bert4keras_ng.tokenizers as tokenizers

    texts = _mixed_texts(400, seed=1) + ["abcdefghij" * 3, "x" * 250]
    results = {}
    for limit in (0, 7, tokenizers._CACHE_LIMIT):
        monkeypatch.setattr(tokenizers, "_CACHE_LIMIT", limit)
        tok = Tokenizer(VOCAB, do_lower_case=lower)
        first = tok.encode_batch(texts, maxlen=16)
        again = tok.encode_batch(texts, maxlen=16)  # warm caches
        single = [tuple(tok.encode(t, maxlen=16)) for t in texts]
        tokens = [tok.tokenize(t) for t in texts]
        assert first == again
        assert list(zip(*first)) == single
        assert len(tok._word_ids) <= limit and len(tok._word_tokens) <= limit
        results[limit] = (first, tokens)
    assert results[0] == results[7] == results[tokenizers._CACHE_LIMIT]


def test_unknown_id_change_reaches_every_cache():
    vocab = load_vocab(VOCAB)
    unknown_cjk = next(chr(c) for c in range(0x4E00, 0xA000) if chr(c) not in vocab)
    texts = ["a%sb" % unknown_cjk, "\ue000 hello", unknown_cjk]
    tok = Tokenizer(VOCAB)
    before = tok.encode_batch(texts)[0], [tok.encode(t)[0] for t in texts]
    unk = vocab["[UNK]"]
    assert all(unk in ids for ids in before[0]) and before[0] == before[1]
    tok._token_unk_id = 0  # bert4keras scripts do this once the tokenizer is built
    fresh = Tokenizer(VOCAB)
    fresh._token_unk_id = 0
    expected = [[0 if i == unk else i for i in ids] for ids in before[0]]
    assert tok.encode_batch(texts)[0] == expected == fresh.encode_batch(texts)[0]
    assert [tok.encode(t)[0] for t in texts] == expected


def test_vocabulary_edits_after_construction_are_honoured():
    vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "a": 3, "##b": 4, "##c": 5, "中": 6}
    tok = Tokenizer(vocab)
    assert tok.encode_batch(["abc 中国"])[0] == [[1, 3, 4, 5, 6, 0, 2]]
    assert tok.tokenize("abc") == ["[CLS]", "a", "##b", "##c", "[SEP]"]
    # In place, as bert4keras's dict lookups would see it ...
    tok._token_dict["abc"] = 7
    tok._token_dict["国"] = 8
    assert tok.encode_batch(["abc 中国"])[0] == [[1, 7, 6, 8, 2]]
    assert tok.encode("abc 中国")[0] == [1, 7, 6, 8, 2]
    assert tok.tokenize("abc") == ["[CLS]", "abc", "[SEP]"]
    # ... and a replaced dict.
    tok._token_dict = dict(vocab, ab=9)
    assert tok.encode_batch(["abc"])[0] == [[1, 9, 5, 2]]
    assert tok.encode("abc")[0] == [1, 9, 5, 2]


# ---------------------------------------------------------------------------------------------
# SentencePiece
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    tmp = tmp_path_factory.mktemp("sp")
    corpus = tmp / "corpus.txt"
    rng = random.Random(0)
    words = "the model learns tokens from text and speaks chinese 中文 自然 语言 处理".split()
    corpus.write_text(
        "\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(400)),
        encoding="utf-8",
    )
    prefix = str(tmp / "tiny")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=prefix, vocab_size=40, model_type="unigram", hard_vocab_limit=False,
        pad_id=0, unk_id=1, bos_id=-1, eos_id=2, character_coverage=1.0,
        minloglevel=2,
    )
    proc = spm.SentencePieceProcessor()
    proc.Load(prefix + ".model")
    return prefix + ".model", proc


def test_sp_tokenizer_against_sentencepiece(sp_model):
    path, proc = sp_model
    tok = SpTokenizer(path, token_start=None, token_end="</s>")
    text = "the model speaks 中文 and learns"
    pieces = proc.encode_as_pieces(text)
    assert tok.tokenize(text) == pieces + ["</s>"]
    ids, segments = tok.encode(text)
    assert ids == proc.encode_as_ids(text) + [proc.eos_id()]
    assert segments == [0] * len(ids)
    assert tok.decode(ids) == proc.decode_ids(proc.encode_as_ids(text))
    assert tok._token_pad_id == 0 and tok._token_end_id == proc.eos_id()
    assert tok.vocab_size == proc.get_piece_size()
    assert tok.id_to_token(10 ** 6) == ""
    assert tok.token_to_id(pieces[0]) == proc.piece_to_id(pieces[0])
    ids, _ = tok.encode(text, maxlen=4)
    assert ids == proc.encode_as_ids(text)[:3] + [proc.eos_id()]
    ids, segs = tok.encode("the model", "learns text")
    assert ids == proc.encode_as_ids("the model") + [2] + proc.encode_as_ids("learns text") + [2]
    assert segs == [0] * (len(proc.encode_as_ids("the model")) + 1) + [1] * (
        len(proc.encode_as_ids("learns text")) + 1)
    assert tok.encode_batch([text, "the model"])[0] == [tok.encode(text)[0], tok.encode("the model")[0]]
    assert tok._is_special(proc.eos_id()) and not tok._is_decodable(proc.eos_id())


def test_sp_tokenizer_translate_and_pre_tokenize(sp_model):
    path, proc = sp_model
    tok = SpTokenizer(path, token_start=None, token_end=None,
                      pre_tokenize=lambda s: list(s.replace(" ", "")),
                      token_translate={"▁t": "▁m"})
    pieces = proc.encode_as_pieces(" ".join(list("themodel")))
    assert tok.tokenize("the model") == [{"▁t": "▁m"}.get(p, p) for p in pieces]
    with pytest.raises(ValueError, match="could not load"):
        SpTokenizer(os.path.join(HERE, "fixtures", "tokenizer_vocab.txt"))


# ---------------------------------------------------------------------------------------------
# Every code point: our engines against a direct transcription of the bert4keras rules
# ---------------------------------------------------------------------------------------------


def _reference_words(text, lower):
    """bert4keras's character loop, spelled out: lower/NFD/strip Mn, then classify each char."""
    if lower:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    out = ""
    for ch in text:
        code = ord(ch)
        cat = unicodedata.category(ch)
        cjk = any(lo <= code <= hi for lo, hi in (
            (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
            (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))
        punct = (33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126
                 or cat.startswith("P"))
        if punct or cjk:
            out += " " + ch + " "
        elif ch in " \t\n\r" or cat == "Zs":
            out += " "
        elif code == 0 or code == 0xFFFD or cat in ("Cc", "Cf"):
            continue
        else:
            out += ch
    return out.split()


def _code_point_texts(step):
    if step == 1:  # planes 4-13 hold no assigned character: sample them
        codes = list(range(0, 0x40000)) + list(range(0x40000, 0xE0000, 97))
        codes += list(range(0xE0000, 0x110000))
    else:
        codes = list(range(0, 0x3100)) + list(range(0x3100, 0x110000, step))
    return ["x" + chr(c) + "y" + chr(c) for c in codes]


def _check_code_points(toks, texts):
    for lower in (False, True):
        tok = toks[lower]
        expected = []
        for text in texts:
            tokens = []
            for word in _reference_words(text, lower):
                tokens.extend(tok._word_piece(word))
            expected.append(["[CLS]"] + tokens + ["[SEP]"])
        assert [tok.tokenize(t) for t in texts] == expected
        expected_ids = [tok.tokens_to_ids(e) for e in expected]
        assert [tok.encode(t)[0] for t in texts] == expected_ids
        assert tok.encode_batch(texts)[0] == expected_ids


def test_code_points_sampled(toks):
    _check_code_points(toks, _code_point_texts(step=211) + ["a\ud800b", "\udfff"])


@pytest.mark.slow
def test_code_points_exhaustive(toks):
    _check_code_points(toks, _code_point_texts(step=1))
