#! -*- coding: utf-8 -*-
# Sequence labelling with a CRF: sparse_loss / sparse_accuracy, K.eval(CRF.trans), ViterbiDecoder.
import os
import numpy as np
from bert4keras.backend import keras, K
from bert4keras.models import build_transformer_model
from bert4keras.tokenizers import Tokenizer
from bert4keras.optimizers import Adam
from bert4keras.snippets import sequence_padding, DataGenerator
from bert4keras.snippets import open, ViterbiDecoder, to_array
from bert4keras.layers import ConditionalRandomField
from keras.layers import Dense
from keras.models import Model

maxlen = 64
epochs = 2
batch_size = 2
bert_layers = 2
learning_rate = 1e-3
crf_lr_multiplier = 100
categories = ['LOC', 'PER']

config_path = os.environ['B4K_CONFIG']
checkpoint_path = os.environ['B4K_CHECKPOINT']
dict_path = os.environ['B4K_VOCAB']
workdir = os.environ['B4K_WORKDIR']

# [text, [start, end, label], ...]
train_data = [
    [u'我在北京工作', [2, 3, 'LOC']],
    [u'小明去了上海', [0, 1, 'PER'], [4, 5, 'LOC']],
    [u'他喜欢看书', [0, 0, 'PER']],
    [u'明天去中国的首都北京看看', [3, 4, 'LOC'], [8, 9, 'LOC']],
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
            labels = np.zeros(len(token_ids))
            for start, end, label in d[1:]:
                if start in start_mapping and end in end_mapping:
                    start = start_mapping[start]
                    end = end_mapping[end]
                    labels[start] = categories.index(label) * 2 + 1
                    labels[start + 1:end + 1] = categories.index(label) * 2 + 2
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            batch_labels.append(labels)
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                batch_labels = sequence_padding(batch_labels)
                yield [batch_token_ids, batch_segment_ids], batch_labels
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


model = build_transformer_model(config_path, checkpoint_path)
output_layer = 'Transformer-%s-FeedForward-Norm' % (bert_layers - 1)
output = model.get_layer(output_layer).output
output = Dense(len(categories) * 2 + 1)(output)
CRF = ConditionalRandomField(lr_multiplier=crf_lr_multiplier)
output = CRF(output)
model = Model(model.input, output)
model.compile(
    loss=CRF.sparse_loss,
    optimizer=Adam(learning_rate),
    metrics=[CRF.sparse_accuracy]
)


class NamedEntityRecognizer(ViterbiDecoder):
    def recognize(self, text):
        tokens = tokenizer.tokenize(text, maxlen=512)
        mapping = tokenizer.rematch(text, tokens)
        token_ids = tokenizer.tokens_to_ids(tokens)
        segment_ids = [0] * len(token_ids)
        token_ids, segment_ids = to_array([token_ids], [segment_ids])
        nodes = model.predict([token_ids, segment_ids], verbose=0)[0]
        labels = self.decode(nodes)
        entities, starting = [], False
        for i, label in enumerate(labels):
            if label > 0:
                if label % 2 == 1:
                    starting = True
                    entities.append([[i], categories[(label - 1) // 2]])
                elif starting:
                    entities[-1][0].append(i)
                else:
                    starting = False
            else:
                starting = False
        return [(mapping[w[0]][0], mapping[w[-1]][-1], l) for w, l in entities]


NER = NamedEntityRecognizer(trans=K.eval(CRF.trans), starts=[0], ends=[0])


class Evaluator(keras.callbacks.Callback):
    def __init__(self):
        self.best_val_f1 = -1
        self.entities = []

    def on_epoch_end(self, epoch, logs=None):
        NER.trans = K.eval(CRF.trans)
        self.entities.append(NER.recognize(train_data[0][0]))
        model.save_weights(os.path.join(workdir, 'best_model.weights.h5'))


evaluator = Evaluator()
train_generator = data_generator(train_data, batch_size)
history = model.fit(
    train_generator.forfit(),
    steps_per_epoch=len(train_generator),
    epochs=epochs,
    callbacks=[evaluator]
)
result = {'loss': history.history['loss'], 'entities': evaluator.entities,
          'trans': K.eval(CRF.trans).tolist()}
