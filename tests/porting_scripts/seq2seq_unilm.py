#! -*- coding: utf-8 -*-
# UniLM seq2seq: a Loss subclass masked by the segment ids, variable-length batches, beam search.
import os
import numpy as np
from bert4keras.backend import keras, K
from bert4keras.layers import Loss
from bert4keras.models import build_transformer_model
from bert4keras.tokenizers import Tokenizer, load_vocab
from bert4keras.optimizers import Adam
from bert4keras.snippets import sequence_padding, open
from bert4keras.snippets import DataGenerator, AutoRegressiveDecoder
from keras.models import Model

maxlen = 48
batch_size = 3
epochs = 2

config_path = os.environ['B4K_CONFIG']
checkpoint_path = os.environ['B4K_CHECKPOINT']
dict_path = os.environ['B4K_VOCAB']
workdir = os.environ['B4K_WORKDIR']

# (content, title) pairs of different lengths, so that the padded batches differ in length
pairs = [
    (u'今天天气很好，我们去公园散步。', u'天气好'),
    (u'他在学校里学习数学和语文，成绩一直很好。', u'学习好'),
    (u'北京是中国的首都。', u'首都'),
    (u'明天会下雨，出门记得带伞，路上小心。', u'下雨'),
    (u'我们一起吃饭吧。', u'吃饭'),
    (u'这本书写得非常好，推荐大家都去看一看，一定会有收获。', u'好书'),
    (u'电影很好看。', u'电影'),
]

token_dict, keep_tokens = load_vocab(
    dict_path=dict_path,
    simplified=True,
    startswith=['[PAD]', '[UNK]', '[CLS]', '[SEP]'],
)
tokenizer = Tokenizer(token_dict, do_lower_case=True)


class data_generator(DataGenerator):
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids = [], []
        for is_end, (content, title) in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(content, title, maxlen=maxlen)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                yield [batch_token_ids, batch_segment_ids], None
                batch_token_ids, batch_segment_ids = [], []


class CrossEntropy(Loss):
    def compute_loss(self, inputs, mask=None):
        y_true, y_mask, y_pred = inputs
        y_true = y_true[:, 1:]
        y_mask = y_mask[:, 1:]  # the segment ids mark the part to predict
        y_pred = y_pred[:, :-1]
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        loss = K.sum(loss * y_mask) / K.sum(y_mask)
        return loss


model = build_transformer_model(
    config_path,
    checkpoint_path,
    application='unilm',
    keep_tokens=keep_tokens,
)
output = CrossEntropy(2)(model.inputs + model.outputs)
model = Model(model.inputs, output)
model.compile(optimizer=Adam(1e-3))


class AutoTitle(AutoRegressiveDecoder):
    @AutoRegressiveDecoder.wraps(default_rtype='probas')
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        return self.last_token(model).predict([token_ids, segment_ids], verbose=0)

    def generate(self, text, topk=2):
        max_c_len = maxlen - self.maxlen
        token_ids, segment_ids = tokenizer.encode(text, maxlen=max_c_len)
        output_ids = self.beam_search([token_ids, segment_ids], topk=topk)
        return tokenizer.decode(output_ids)


autotitle = AutoTitle(start_id=None, end_id=tokenizer._token_end_id, maxlen=6)


class Evaluator(keras.callbacks.Callback):
    def __init__(self):
        self.lowest = 1e10
        self.losses = []

    def on_epoch_end(self, epoch, logs=None):
        self.losses.append(logs['loss'])
        if logs['loss'] <= self.lowest:
            self.lowest = logs['loss']
            model.save_weights(os.path.join(workdir, 'best_model.weights.h5'))
        print(u'title:', autotitle.generate(pairs[0][0]))


evaluator = Evaluator()
train_generator = data_generator(pairs, batch_size)
model.fit(
    train_generator.forfit(),
    steps_per_epoch=len(train_generator),
    epochs=epochs,
    callbacks=[evaluator]
)
model.load_weights(os.path.join(workdir, 'best_model.weights.h5'))
title = autotitle.generate(pairs[2][0])
result = {'losses': evaluator.losses, 'title': title}
