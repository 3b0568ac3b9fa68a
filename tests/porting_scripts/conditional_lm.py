#! -*- coding: utf-8 -*-
# Conditional language model: a label fed through conditional LayerNorm, a Loss subclass masked
# by the padding mask, random sampling with topp (topp >= 1: no truncation).
import os
import numpy as np
from bert4keras.backend import keras, K
from bert4keras.layers import Loss
from bert4keras.models import build_transformer_model
from bert4keras.tokenizers import Tokenizer, load_vocab
from bert4keras.optimizers import Adam
from bert4keras.snippets import sequence_padding, open
from bert4keras.snippets import DataGenerator, AutoRegressiveDecoder
from bert4keras.snippets import uniout  # kept by bert4keras scripts to print Chinese
from keras.layers import Input, Embedding, Reshape
from keras.models import Model

maxlen = 32
batch_size = 2
num_classes = 2
epochs = 2

config_path = os.environ['B4K_CONFIG']
checkpoint_path = os.environ['B4K_CHECKPOINT']
dict_path = os.environ['B4K_VOCAB']

data = [(u'今天天气很好', 1), (u'这个电影太难看了', 0), (u'我很喜欢这本书，写得真好', 1),
        (u'东西坏了', 0), (u'服务很好，下次还来', 1)]

token_dict, keep_tokens = load_vocab(
    dict_path=dict_path,
    simplified=True,
    startswith=['[PAD]', '[UNK]', '[CLS]', '[SEP]'],
)
tokenizer = Tokenizer(token_dict, do_lower_case=True)


class data_generator(DataGenerator):
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, (text, label) in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            batch_labels.append([label])
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                batch_labels = sequence_padding(batch_labels)
                yield [batch_token_ids, batch_segment_ids, batch_labels], None
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


class CrossEntropy(Loss):
    def compute_loss(self, inputs, mask=None):
        y_true, y_pred = inputs
        if mask[1] is None:
            y_mask = 1.0
        else:
            y_mask = K.cast(mask[1], K.floatx())[:, 1:]
        y_true = y_true[:, 1:]
        y_pred = y_pred[:, :-1]
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        loss = K.sum(loss * y_mask) / K.sum(y_mask)
        return loss


c_in = Input(shape=(1,))
c = Embedding(num_classes, 32)(c_in)
c = Reshape((32,))(c)

model = build_transformer_model(
    config_path,
    checkpoint_path,
    application='lm',
    keep_tokens=keep_tokens,
    layer_norm_cond=c,
    additional_input_layers=c_in,
)
output = CrossEntropy(1)([model.inputs[0], model.outputs[0]])
model = Model(model.inputs, output)
model.compile(optimizer=Adam(1e-3))


class RandomSentiment(AutoRegressiveDecoder):
    @AutoRegressiveDecoder.wraps(default_rtype='probas')
    def predict(self, inputs, output_ids, states):
        token_ids = output_ids
        segment_ids = np.zeros_like(token_ids)
        return self.last_token(model).predict([token_ids, segment_ids, inputs[0]], verbose=0)

    def generate(self, label, n=1, topp=0.95):
        results = self.random_sample([[label]], n, topp=topp)
        return [tokenizer.decode(ids) for ids in results]


random_sentiment = RandomSentiment(
    start_id=tokenizer._token_start_id,
    end_id=tokenizer._token_end_id,
    maxlen=8
)

train_generator = data_generator(data, batch_size)
history = model.fit(
    train_generator.forfit(),
    steps_per_epoch=len(train_generator),
    epochs=epochs,
)
np.random.seed(0)
texts = random_sentiment.generate(1, 2, topp=0.95) + random_sentiment.generate(0, 2, topp=1.0)
print(u'generated:', texts)
result = {'loss': history.history['loss'], 'texts': texts}
