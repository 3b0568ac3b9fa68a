"""Generate the small, learnable CLUE-format sample data shipped in ``clue/sample_data/``.

Run ``python -m bert4keras_ng.clue.make_sample_data`` to rewrite it (deterministic: same seed,
same bytes). Every task gets its files in exactly the layout of the CLUE download, with a few
hundred records whose labels follow simple lexical cues (a topic word, a cue word in the
hypothesis, a "good" answer word, a bracketed answer span, an entity lexicon), so that a tiny
randomly initialised model learns them in a few epochs. The texts are synthetic, not CLUE
data.
"""

from __future__ import annotations

import argparse
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "sample_data")
SEED = 20211031

FILLERS = [
    "今天天气不错", "大家都知道", "这个时候", "我们一起看看", "其实很简单", "据说", "事实上",
    "总的来说", "看起来", "有人认为", "听朋友说", "最近", "前几天", "说实话", "一般来说",
    "很多人觉得", "在这里", "不管怎样", "就在昨天", "换句话说",
]

IFLYTEK = {  # label → (description, keywords)
    "0": ("打车", ["打车", "叫车", "司机接单"]),
    "1": ("地图导航", ["导航", "地图", "路线规划"]),
    "2": ("免费WIFI", ["无线网络", "热点", "上网"]),
    "3": ("租车", ["租车", "自驾", "还车"]),
    "4": ("同城服务", ["同城", "跑腿", "上门"]),
    "5": ("快递物流", ["快递", "物流", "包裹"]),
    "6": ("婚庆", ["婚礼", "婚纱", "新娘"]),
    "7": ("家政", ["保洁", "家政", "阿姨"]),
}

TNEWS = {  # code → (label_desc, keywords)
    "102": ("news_entertainment", ["明星", "电影", "综艺", "演唱会"]),
    "103": ("news_sports", ["球队", "比赛", "冠军", "进球"]),
    "104": ("news_finance", ["银行", "理财", "利率", "基金"]),
    "107": ("news_car", ["汽车", "车型", "发动机", "油耗"]),
    "108": ("news_edu", ["学校", "考试", "老师", "高考"]),
    "110": ("news_military", ["军队", "武器", "战机", "航母"]),
}

AFQMC_TOPICS = [
    ["花呗", "还款"], ["借呗", "额度"], ["余额宝", "收益"], ["蚂蚁森林", "能量"],
    ["信用卡", "账单"], ["转账", "手续费"],
]
AFQMC_OTHER = [  # topics of the non-matching second questions (never asked first)
    ["天气", "下雨"], ["外卖", "配送"], ["电影", "票价"], ["手机", "充电"], ["地铁", "换乘"],
]
AFQMC_ASK = ["怎么", "如何", "为什么", "能不能", "可以"]
AFQMC_END = ["？", "呢", "啊", "吗"]

NLI_CUES = {"entailment": ["确实", "的确", "真的"], "neutral": ["也许", "可能", "大概"],
            "contradiction": ["没有", "从不", "并非"]}
NLI_SUBJECTS = ["老师", "学生", "医生", "农民", "司机", "厨师", "记者", "工人"]
NLI_ACTIONS = ["去了北京", "读完了那本书", "买了新房子", "参加了比赛", "做了晚饭", "写了一封信"]

CSL_TRUE = ["神经网络", "图像识别", "数据挖掘", "机器翻译", "语音合成", "推荐系统", "知识图谱",
            "强化学习", "目标检测", "文本分类", "聚类分析", "特征提取"]
CSL_FAKE = ["蝴蝶效应", "古典音乐", "烹饪技巧", "园艺栽培", "钓鱼装备", "茶叶品鉴", "陶瓷工艺",
            "民间舞蹈"]

WSC_PEOPLE = ["小明", "小红", "张老师", "李医生", "王阿姨", "老刘"]
WSC_THINGS = ["手机", "桌子", "书包", "杯子", "钥匙", "雨伞"]
WSC_TAILS = ["很开心", "有点累了", "笑了起来", "走了出去", "睡着了"]

C3_GOOD = ["苹果", "香蕉", "西瓜", "葡萄", "草莓", "橘子"]
C3_BAD = ["石头", "铁钉", "沙子", "木板", "砖块", "塑料"]
C3_PEOPLE = ["小王", "小李", "小张", "小赵", "小陈"]

CHID_IDIOMS = {  # idiom → trigger word placed next to its blank
    "一帆风顺": "航行", "画蛇添足": "多余", "守株待兔": "等待", "亡羊补牢": "补救",
    "对牛弹琴": "听不懂", "井底之蛙": "眼界", "掩耳盗铃": "自欺", "拔苗助长": "急于",
    "刻舟求剑": "固执", "杯弓蛇影": "疑心", "胸有成竹": "把握", "半途而废": "放弃",
}
CHID_DISTRACTORS = ["风和日丽", "山清水秀", "鸟语花香", "万紫千红", "春暖花开", "秋高气爽",
                    "冰天雪地", "五颜六色", "花好月圆", "国泰民安"]

CMRC_SUBJECTS = ["这座城市", "那家公司", "这所大学", "那条河流", "这个乐队", "那座山"]
CMRC_ASPECTS = ["名字", "创始人", "特产", "口号", "代号", "别称"]
CMRC_ANSWERS = ["星光", "远航", "青松", "晨曦", "飞鸿", "碧波", "长风", "明月", "翠竹", "金沙",
                "白云", "彩虹"]

NER_LEXICON = {
    "name": ["张伟", "王芳", "李强", "刘洋", "陈静", "杨磊"],
    "company": ["腾讯公司", "华为公司", "小米科技", "百度公司"],
    "address": ["中山路", "北京市", "浦东新区", "西湖区"],
    "book": ["红楼梦", "三国演义", "围城", "平凡的世界"],
    "game": ["王者荣耀", "英雄联盟", "魔兽世界", "梦幻西游"],
    "government": ["教育部", "公安局", "税务局", "卫生部"],
    "movie": ["流浪地球", "战狼", "大话西游", "霸王别姬"],
    "organization": ["红十字会", "皇家马德里", "联合国", "曼联队"],
    "position": ["总经理", "教授", "记者", "董事长"],
    "scene": ["故宫", "长城", "黄山", "鼓浪屿"],
}
NER_TEMPLATES = {
    "name": "{}说", "company": "{}发布了新产品", "address": "住在{}", "book": "读了《{}》",
    "game": "玩{}", "government": "{}发布通知", "movie": "看了电影{}", "organization": "{}宣布",
    "position": "担任{}", "scene": "去{}旅游",
}


def _filler(rng, k=1):
    return "，".join(rng.choice(FILLERS) for _ in range(k))


def _write_lines(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _write_json(path, obj, indent=None):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


def _split(records, n_train, n_dev):
    return records[:n_train], records[n_train:n_train + n_dev], records[n_train + n_dev:]


def _with_ids(records, drop=("label",)):
    out = []
    for i, r in enumerate(records):
        r = {k: v for k, v in r.items() if k not in drop}
        out.append({"id": i, **r})
    return out


def make_iflytek(rng, out):
    recs = []
    for _ in range(420):
        label = rng.choice(sorted(IFLYTEK))
        des, words = IFLYTEK[label]
        text = f"{_filler(rng)}，这款应用提供{rng.choice(words)}服务，{_filler(rng, 2)}。"
        recs.append({"label": label, "label_des": des, "sentence": text})
    train, dev, test = _split(recs, 300, 80)
    _write_lines(f"{out}/train.json", train)
    _write_lines(f"{out}/dev.json", dev)
    _write_lines(f"{out}/test.json", _with_ids(test, ("label", "label_des")))


def make_tnews(rng, out):
    recs = []
    for _ in range(460):
        code = rng.choice(sorted(TNEWS))
        desc, words = TNEWS[code]
        w = rng.choice(words)
        text = f"{_filler(rng)}，{w}{rng.choice(['引发热议', '成为焦点', '传来消息', '有了新变化'])}"
        recs.append({"label": code, "label_desc": desc, "sentence": text, "keywords": w})
    train, dev, rest = _split(recs, 300, 80)
    _write_lines(f"{out}/train.json", train)
    _write_lines(f"{out}/dev.json", dev)
    drop = ("label", "label_desc")
    _write_lines(f"{out}/test1.0.json", _with_ids(rest[:40], drop))
    _write_lines(f"{out}/test.json", _with_ids(rest[40:], drop))


def _afqmc_question(rng, topic):
    return f"{topic[0]}{rng.choice(AFQMC_ASK)}{topic[1]}{rng.choice(AFQMC_END)}"


def make_afqmc(rng, out):
    recs = []
    for _ in range(460):
        t1 = rng.choice(AFQMC_TOPICS)
        if rng.random() < 0.5:
            s2, label = _afqmc_question(rng, t1), "1"
        else:
            t2 = rng.choice(AFQMC_OTHER)
            s2, label = _afqmc_question(rng, t2), "0"
        recs.append({"sentence1": _afqmc_question(rng, t1), "sentence2": s2, "label": label})
    train, dev, test = _split(recs, 320, 80)
    _write_lines(f"{out}/train.json", train)
    _write_lines(f"{out}/dev.json", dev)
    _write_lines(f"{out}/test.json", _with_ids(test))


def _nli_records(rng, n, n_dash):
    recs = []
    labels = sorted(NLI_CUES)
    for i in range(n):
        subj, act = rng.choice(NLI_SUBJECTS), rng.choice(NLI_ACTIONS)
        label = rng.choice(labels)
        premise = f"{_filler(rng)}，那位{subj}{act}。"
        hypothesis = f"{subj}{rng.choice(NLI_CUES[label])}{act}"
        recs.append({"sentence1": premise, "sentence2": hypothesis,
                     "label": "-" if i < n_dash else label})
    rng.shuffle(recs)
    return recs


def make_nli(rng, out, train_name, genre):
    train = _nli_records(rng, 306, 6)
    dev = _nli_records(rng, 81, 1)
    test = [r for r in _nli_records(rng, 60, 0)]
    if genre:
        for r in train + dev + test:
            r["genre"] = genre
    _write_lines(f"{out}/{train_name}", train)
    _write_lines(f"{out}/dev.json", dev)
    _write_lines(f"{out}/test.json", _with_ids(test))


def make_csl(rng, out):
    recs = []
    for i in range(420):
        kws = rng.sample(CSL_TRUE, 3)
        abst = (f"本文研究了{kws[0]}的方法，{_filler(rng)}，结合{kws[1]}与{kws[2]}，"
                f"实验表明效果显著。")
        label = "1" if rng.random() < 0.5 else "0"
        keyword = list(kws)
        if label == "0":
            keyword[rng.randrange(3)] = rng.choice(CSL_FAKE)
        recs.append({"id": i, "abst": abst, "keyword": keyword, "label": label})
    train, dev, test = _split(recs, 300, 80)
    _write_lines(f"{out}/train.json", train)
    _write_lines(f"{out}/dev.json", dev)
    _write_lines(f"{out}/test.json", [{k: v for k, v in r.items() if k != "label"}
                                       for r in test])


def _wsc_record(rng, i):
    person, thing = rng.choice(WSC_PEOPLE), rng.choice(WSC_THINGS)
    pre = rng.choice(["", f"{_filler(rng)}，"])
    text = f"{pre}{person}拿起了{thing}，后来他{rng.choice(WSC_TAILS)}。"
    p_idx, t_idx = text.index(person), text.index(thing)
    pron = text.index("他", t_idx + len(thing))
    if rng.random() < 0.5:
        span1, idx, label = person, p_idx, "true"
    else:
        span1, idx, label = thing, t_idx, "false"
    return {"target": {"span2_index": pron, "span1_index": idx, "span1_text": span1,
                       "span2_text": "他"}, "idx": i, "label": label, "text": text}


def make_wsc(rng, out):
    recs = [_wsc_record(rng, i) for i in range(400)]
    train, dev, rest = _split(recs, 280, 80)
    _write_lines(f"{out}/train.json", train)
    _write_lines(f"{out}/dev.json", dev)
    _write_lines(f"{out}/test1.0.json", _with_ids(rest[:20]))
    _write_lines(f"{out}/test.json", _with_ids(rest[20:]))


def _c3_docs(rng, n_docs, prefix, labelled=True):
    docs = []
    for d in range(n_docs):
        person = rng.choice(C3_PEOPLE)
        good = rng.choice(C3_GOOD)
        passage = [f"{person}：今天我去了市场。", f"{rng.choice(FILLERS)}，我买了一些{good}。"]
        questions = []
        for k in range(rng.choice([1, 2])):
            n_choices = rng.choice([2, 3, 4, 4])
            choices = [good] + rng.sample(C3_BAD, n_choices - 1)
            rng.shuffle(choices)
            q = {"question": f"{person}买了什么？", "choice": choices,
                 "id": f"{prefix}-{d}-{k}"}
            if labelled:
                q["answer"] = good
            questions.append(q)
        docs.append([passage, questions, f"{prefix}-{d}"])
    return docs


def make_c3(rng, out):
    _write_json(f"{out}/m-train.json", _c3_docs(rng, 110, "m-train"))
    _write_json(f"{out}/d-train.json", _c3_docs(rng, 110, "d-train"))
    _write_json(f"{out}/m-dev.json", _c3_docs(rng, 30, "m-dev"))
    _write_json(f"{out}/d-dev.json", _c3_docs(rng, 30, "d-dev"))
    _write_json(f"{out}/test1.0.json", _c3_docs(rng, 20, "test1.0", labelled=False))
    _write_json(f"{out}/test1.1.json", _c3_docs(rng, 20, "test1.1", labelled=False))


def _chid_file(rng, n_records, counter):
    lines, answers = [], {}
    idioms = sorted(CHID_IDIOMS)
    for _ in range(n_records):
        n_blanks = rng.choice([1, 1, 2])
        chosen = rng.sample(idioms, n_blanks)
        # distractors come from their own list: a tiny model first learns which idioms can
        # answer at all, then the trigger word next to each blank tells the answers apart
        candidates = chosen + rng.sample(CHID_DISTRACTORS, 10 - n_blanks)
        rng.shuffle(candidates)
        content = []
        passage = _filler(rng)
        for idiom in chosen:
            key = f"#idiom{counter[0]:06d}#"
            counter[0] += 1
            answers[key] = candidates.index(idiom)
            passage += f"，说到{CHID_IDIOMS[idiom]}，真是{key}啊，{_filler(rng)}"
        content.append(passage + "。")
        lines.append({"candidates": candidates, "content": content})
    return lines, answers


def make_chid(rng, out):
    counter = [0]
    for name, n in (("train", 300), ("dev", 80)):
        lines, answers = _chid_file(rng, n, counter)
        _write_lines(f"{out}/{name}.json", lines)
        _write_json(f"{out}/{name}_answer.json", answers, indent=4)
    for name in ("test1.0", "test1.1"):
        lines, _ = _chid_file(rng, 20, counter)
        _write_lines(f"{out}/{name}.json", lines)


def _cmrc_file(rng, n_articles, prefix, labelled=True):
    data = []
    for a in range(n_articles):
        subject, aspect = rng.choice(CMRC_SUBJECTS), rng.choice(CMRC_ASPECTS)
        answer = rng.choice(CMRC_ANSWERS)
        before = "，".join(rng.choice(FILLERS) for _ in range(rng.randint(2, 30)))
        after = "，".join(rng.choice(FILLERS) for _ in range(rng.randint(2, 12)))
        context = f"{before}。{subject}的{aspect}是「{answer}」。{after}。"
        start = context.index("「") + 1
        qa = {"id": f"{prefix}_{a}_QUERY_0", "question": f"{subject}的{aspect}是什么？"}
        if labelled:
            qa["answers"] = [{"text": answer, "answer_start": start}] * rng.choice([1, 1, 2])
        else:
            qa["answers"] = [{"text": "", "answer_start": -1}]
        data.append({"id": f"{prefix}_{a}", "title": subject,
                     "paragraphs": [{"id": f"{prefix}_{a}", "context": context, "qas": [qa]}]})
    return {"version": "v1.0", "data": data}


def make_cmrc2018(rng, out):
    _write_json(f"{out}/train.json", _cmrc_file(rng, 240, "TRAIN"))
    _write_json(f"{out}/dev.json", _cmrc_file(rng, 60, "DEV"))
    _write_json(f"{out}/test.json", _cmrc_file(rng, 30, "TEST", labelled=False))


def _ner_record(rng):
    types = rng.sample(sorted(NER_LEXICON), rng.choice([1, 2, 2, 3]))
    text, label = "", {}
    for t in types:
        piece = rng.choice([_filler(rng) + "，", ""])
        entity = rng.choice(NER_LEXICON[t])
        template = NER_TEMPLATES[t]
        start = len(text) + len(piece) + template.index("{}")
        text += piece + template.format(entity) + "，"
        label.setdefault(t, {}).setdefault(entity, []).append([start, start + len(entity) - 1])
    return {"text": text[:-1] + "。", "label": label}


def make_cluener(rng, out):
    recs = [_ner_record(rng) for _ in range(460)]
    train, dev, test = _split(recs, 320, 80)
    _write_lines(f"{out}/train.json", train)
    _write_lines(f"{out}/dev.json", dev)
    _write_lines(f"{out}/test.json", [{"id": i, "text": r["text"]} for i, r in enumerate(test)])


MAKERS = {
    "iflytek": make_iflytek, "tnews": make_tnews, "afqmc": make_afqmc,
    "cmnli": lambda rng, out: make_nli(rng, out, "train.json", None),
    "ocnli": lambda rng, out: make_nli(rng, out, "train.50k.json", "news"),
    "csl": make_csl, "wsc": make_wsc, "c3": make_c3, "chid": make_chid,
    "cmrc2018": make_cmrc2018, "cluener": make_cluener,
}


def generate(out=DEFAULT_OUT, seed=SEED, tasks=None):
    """Write the sample data of ``tasks`` (default: all) under ``out/<task>/``."""
    for name in tasks or MAKERS:
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        MAKERS[name](random.Random(f"{seed}-{name}"), folder)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    print(generate(args.out, args.seed))


if __name__ == "__main__":
    main()
