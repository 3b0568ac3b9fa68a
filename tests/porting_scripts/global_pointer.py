#! -*- coding: utf-8 -*-
# Entity extraction with GlobalPointer and the multilabel crossentropy of bert4keras.backend,
# written with K.prod / K.shape / K.reshape as bert4keras scripts do.
import os
import numpy as np
from bert4keras.backend import keras, K
from bert4keras.backend import multilabel_categorical_crossentropy
from bert4keras.layers import EfficientGlobalPointer as GlobalPointer
from bert4keras.models import build_transformer_model
from bert4keras.tokenizers import Tokenizer
from bert4keras.optimizers import Adam
from bert4keras.snippets import sequence_padding, DataGenerator, open, to_array
from keras.models import Model

maxlen = 64
epochs = 2
batch_size = 2
categories = ['LOC', 'PER']

config_path = os.environ['B4K_CONFIG']
checkpoint_path = os.environ['B4K_CHECKPOINT']
dict_path = os.environ['B4K_VOCAB']

train_data = [
    [u'我在北京工作', (2, 3, 'LOC')],
    [u'小明去了上海', (0, 1, 'PER'), (4, 5, 'LOC')],
    [u'明天去中国的首都北京看看吧', (3, 4, 'LOC'), (8, 9, 'LOC')],
]
tokenizer = Tokenizer(dict_path, do_lower_case=True)


class data_generator(DataGenerator):
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, d in self.sample(random):
            tokens = tokenizer.tokenize(d[0], maxlen=maxlen)
            mapping = tokenizer.rematch(d[0], tokens)
            start_mapping = {j[0]: i for i, j in enumerate(mapping) if j}
            end_mapping = {j[-1]: i for i, j in enumerate(mapping) if j}
            token_ids = tokenizer.tokens_to_ids(tokens)
            segment_ids = [0] * len(token_ids)
            labels = np.zeros((len(categories), maxlen, maxlen))
            for start, end, label in d[1:]:
                if start in start_mapping and end in end_mapping:
                    labels[categories.index(label), start_mapping[start], end_mapping[end]] = 1
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            batch_labels.append(labels[:, :len(token_ids), :len(token_ids)])
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                batch_labels = sequence_padding(batch_labels, seq_dims=3)
                yield [batch_token_ids, batch_segment_ids], batch_labels
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


def global_pointer_crossentropy(y_true, y_pred):
    bh = K.prod(K.shape(y_pred)[:2])
    y_true = K.reshape(y_true, (bh, -1))
    y_pred = K.reshape(y_pred, (bh, -1))
    return K.mean(multilabel_categorical_crossentropy(y_true, y_pred))


def global_pointer_f1_score(y_true, y_pred):
    y_pred = K.cast(K.greater(y_pred, 0), K.floatx())
    return 2 * K.sum(y_true * y_pred) / K.sum(y_true + y_pred)


model = build_transformer_model(config_path, checkpoint_path)
output = GlobalPointer(len(categories), 16)(model.output)
model = Model(model.input, output)
model.compile(
    loss=global_pointer_crossentropy,
    optimizer=Adam(1e-3),
    metrics=[global_pointer_f1_score]
)


def recognize(text, threshold=0):
    tokens = tokenizer.tokenize(text, maxlen=512)
    mapping = tokenizer.rematch(text, tokens)
    token_ids = tokenizer.tokens_to_ids(tokens)
    segment_ids = [0] * len(token_ids)
    token_ids, segment_ids = to_array([token_ids], [segment_ids])
    scores = model.predict([token_ids, segment_ids], verbose=0)[0]
    scores[:, [0, -1]] -= np.inf
    scores[:, :, [0, -1]] -= np.inf
    entities = []
    for l, start, end in zip(*np.where(scores > threshold)):
        entities.append((mapping[start][0], mapping[end][-1], categories[l]))
    return entities


train_generator = data_generator(train_data, batch_size)
history = model.fit(
    train_generator.forfit(),
    steps_per_epoch=len(train_generator),
    epochs=epochs,
)
result = {'loss': history.history['loss'], 'entities': recognize(train_data[1][0])}
