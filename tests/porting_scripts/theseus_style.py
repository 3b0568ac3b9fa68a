#! -*- coding: utf-8 -*-
# Custom layers in Keras 2 style: K.random_binomial + K.in_train_phase (BERT-of-Theseus-like
# module replacing), batch_gather of subject positions, search_layer of the token embedding,
# K.int_shape, and tokenizer._token_unk_id = 0.
import os
import numpy as np
from bert4keras.backend import keras, search_layer, K, batch_gather
from bert4keras.models import build_transformer_model
from bert4keras.tokenizers import Tokenizer
from bert4keras.optimizers import Adam
from bert4keras.snippets import sequence_padding, DataGenerator
from keras.layers import Input, Lambda, Dense, Layer
from keras.models import Model

maxlen = 32
batch_size = 2
config_path = os.environ['B4K_CONFIG']
checkpoint_path = os.environ['B4K_CHECKPOINT']
dict_path = os.environ['B4K_VOCAB']

tokenizer = Tokenizer(dict_path, do_lower_case=True)
tokenizer._token_unk_id = 0  # unknown characters become [PAD]
data = [(u'今天天气很好', 1), (u'这个电影太难看了', 0), (u'我很喜欢这本书', 1), (u'东西坏了', 0)]


class data_generator(DataGenerator):
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_subjects, batch_labels = [], [], [], []
        for is_end, (text, label) in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            batch_subjects.append([1, len(token_ids) - 2])
            batch_labels.append([label])
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                yield [batch_token_ids, batch_segment_ids, np.array(batch_subjects)], \
                    sequence_padding(batch_labels)
                batch_token_ids, batch_segment_ids, batch_subjects, batch_labels = [], [], [], []


class BinaryRandomChoice(Layer):
    """While training, take the source or the target at random; the target otherwise."""
    def __init__(self, **kwargs):
        super(BinaryRandomChoice, self).__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        if mask is not None:
            return mask[1]

    def call(self, inputs):
        source, target = inputs
        mask = K.random_binomial(shape=[1], p=0.5)
        output = mask * source + (1 - mask) * target
        return K.in_train_phase(output, target)

    def compute_output_shape(self, input_shape):
        return input_shape[1]


bert = build_transformer_model(config_path, checkpoint_path, return_keras_model=False)
subject_ids = Input(shape=(2,), dtype='int32')
hidden = bert.model.output
source = Dense(K.int_shape(hidden)[-1])(hidden)
mixed = BinaryRandomChoice()([source, hidden])


def extract_subject(inputs):
    output, subject_ids = inputs
    start = batch_gather(output, subject_ids[:, :1])
    end = batch_gather(output, subject_ids[:, 1:])
    subject = K.concatenate([start, end], 2)
    return subject[:, 0]


subject = Lambda(extract_subject)([mixed, subject_ids])
output = Dense(2, activation='softmax')(subject)
model = Model(bert.model.inputs + [subject_ids], output)
model.compile(loss='sparse_categorical_crossentropy', optimizer=Adam(1e-3),
              metrics=['accuracy'])
embedding_layer = search_layer(model.output, 'Embedding-Token')

train_generator = data_generator(data, batch_size)
history = model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=2)
x, y = next(iter(train_generator))
same = [np.allclose(model.predict(x, verbose=0), model.predict(x, verbose=0))]
result = {'loss': history.history['loss'], 'embedding': embedding_layer.name,
          'deterministic_predict': same[0],
          'unk': tokenizer.encode(u'\u2603')[0]}
