"""A character-level stand-in with the bert4keras Tokenizer interface, for CLUE unit tests.

Every non-space character is one token, lower-cased; ids are handed out on first sight.
It lets the input-construction tests state exact token counts without a vocabulary file.
"""


class CharTokenizer:
    def __init__(self):
        self.vocab = {"[PAD]": 0, "[unused1]": 1, "[UNK]": 2, "[CLS]": 3, "[SEP]": 4, "[MASK]": 5}
        self._token_start_id, self._token_end_id = 3, 4

    def token_to_id(self, token):
        if token not in self.vocab:
            self.vocab[token] = len(self.vocab)
        return self.vocab[token]

    def tokens_to_ids(self, tokens):
        return [self.token_to_id(t) for t in tokens]

    def id_to_token(self, i):
        return {v: k for k, v in self.vocab.items()}[i]

    def _chars(self, text):
        return [c.lower() for c in text if not c.isspace()]

    def tokenize(self, text, maxlen=None):
        tokens = ["[CLS]"] + self._chars(text) + ["[SEP]"]
        if maxlen is not None:
            while len(tokens) > maxlen:
                tokens.pop(-2)
        return tokens

    def encode(self, first, second=None, maxlen=None):
        a = self.tokenize(first)
        b = self.tokenize(second)[1:] if second is not None else []
        if maxlen is not None:
            while len(a) + len(b) > maxlen:
                if len(a) >= len(b):
                    a.pop(-2)
                else:
                    b.pop(-2)
        ids = self.tokens_to_ids(a + b)
        return ids, [0] * len(a) + [1] * len(b)

    def rematch(self, text, tokens):
        positions = [i for i, c in enumerate(text) if not c.isspace()]
        out, k = [], 0
        for t in tokens:
            if t in ("[CLS]", "[SEP]"):
                out.append([])
            else:
                out.append([positions[k]])
                k += 1
        return out
