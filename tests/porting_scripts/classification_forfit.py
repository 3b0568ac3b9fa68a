#! -*- coding: utf-8 -*-
# Sentence-pair classification: set_gelu, forfit with variable-length [tokens, segments] batches,
# a Lambda pooling, a piecewise-linear learning rate, K.* in a metric, an evaluator callback.
import os
import numpy as np
from bert4keras.backend import keras, set_gelu, K
from bert4keras.tokenizers import Tokenizer
from bert4keras.models import build_transformer_model
from bert4keras.optimizers import Adam, extend_with_piecewise_linear_lr
from bert4keras.snippets import sequence_padding, DataGenerator, to_array
from keras.layers import Lambda, Dense

set_gelu('tanh')

maxlen = 64
batch_size = 2
config_path = os.environ['B4K_CONFIG']
checkpoint_path = os.environ['B4K_CHECKPOINT']
dict_path = os.environ['B4K_VOCAB']
workdir = os.environ['B4K_WORKDIR']

train_data = [
    (u'今天天气怎么样', u'今天天气如何', 1),
    (u'我想去北京', u'北京在哪里呢，离这里远不远', 0),
    (u'这个电影好看吗', u'这部电影好不好看', 1),
    (u'手机坏了怎么办', u'明天吃什么', 0),
    (u'怎么学习数学', u'数学怎么学才能学好', 1),
]
tokenizer = Tokenizer(dict_path, do_lower_case=True)


class data_generator(DataGenerator):
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, (text1, text2, label) in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(text1, text2, maxlen=maxlen)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            batch_labels.append([label])
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                batch_labels = sequence_padding(batch_labels)
                yield [batch_token_ids, batch_segment_ids], batch_labels
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


def sparse_accuracy(y_true, y_pred):
    y_true = K.reshape(y_true, K.shape(y_pred)[:-1])
    y_true = K.cast(y_true, 'int32')
    y_pred = K.cast(K.argmax(y_pred, axis=-1), 'int32')
    return K.mean(K.cast(K.equal(y_true, y_pred), K.floatx()))


bert = build_transformer_model(
    config_path=config_path,
    checkpoint_path=checkpoint_path,
    return_keras_model=False,
)
output = Lambda(lambda x: x[:, 0], name='CLS-token')(bert.model.output)
output = Dense(units=2, activation='softmax',
               kernel_initializer=bert.initializer)(output)
model = keras.models.Model(bert.model.input, output)

AdamLR = extend_with_piecewise_linear_lr(Adam, name='AdamLR')
model.compile(
    loss='sparse_categorical_crossentropy',
    optimizer=AdamLR(learning_rate=1e-3, lr_schedule={2: 1, 10: 0.1}),
    metrics=['accuracy', sparse_accuracy],
)

train_generator = data_generator(train_data, batch_size)
valid_generator = data_generator(train_data, batch_size)


def evaluate(data):
    total, right = 0., 0.
    for x_true, y_true in data:
        y_pred = model.predict(x_true, verbose=0).argmax(axis=1)
        y_true = y_true[:, 0]
        total += len(y_true)
        right += (y_true == y_pred).sum()
    return right / total


class Evaluator(keras.callbacks.Callback):
    def __init__(self):
        self.best_val_acc = 0.
        self.accs = []

    def on_epoch_end(self, epoch, logs=None):
        val_acc = evaluate(valid_generator)
        self.accs.append(val_acc)
        if val_acc >= self.best_val_acc:
            self.best_val_acc = val_acc
            model.save_weights(os.path.join(workdir, 'best_model.weights.h5'))


evaluator = Evaluator()
history = model.fit(
    train_generator.forfit(),
    steps_per_epoch=len(train_generator),
    epochs=2,
    callbacks=[evaluator]
)
model.load_weights(os.path.join(workdir, 'best_model.weights.h5'))
token_ids, segment_ids = tokenizer.encode(u'今天天气怎么样', u'今天天气如何')
probas = model.predict(to_array([token_ids], [segment_ids]), verbose=0)[0]
result = {'accs': evaluator.accs, 'probas': probas.tolist(),
          'loss': history.history['loss'],
          'gelu': bert.model.get_layer('Transformer-0-FeedForward').get_config()['activation']}
