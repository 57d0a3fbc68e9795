"""The evaluation suite of arXiv 2510.13580, as lm-eval tasks (eval=paper, eval=paper_offline).

The prompts, the stop strings and the letter extraction are the authors' (their
enhancement/eval_finetune.py): zero-shot, greedy generation with repetition penalty 1.1
and at most 128 new tokens, the first answer letter pulled out of the reply by their six
patterns, translation scored by sentence-level chrF and BLEU (sacrebleu) averaged over
sentences. The task YAMLs in `paper_tasks/` call the functions below; their datasets
come from `load`, which reads the hub or, with `eval.lm_eval.data_dir`, local copies laid
out like the hub repositories (a README.md with `configs:` and the data files): under
eval=paper_offline the real SIB-200 items and FLORES sentences, and stand-ins (marked by a
`STANDIN` file, `standin_tasks`) of the rest.

Task names: `langsub_flores_<xx>_en`, `langsub_flores_en_<xx>`, `langsub_opus_<xx>_en`,
`langsub_opus_en_<xx>`, `langsub_sib200_<xx>`, `langsub_belebele_<xx>` (generation, the
authors' way), `langsub_belebele_<xx>_ll` (log-likelihood, lm-eval's formulation);
general: `langsub_<task>` and `langsub_<task>_ll` for mmlu, hellaswag, piqa, winogrande,
arc_easy, arc_challenge. <xx> is the language's code in conf/lang.
"""
from __future__ import annotations

import re
from pathlib import Path

LETTERS = "ABCDEFG"
MONOLINGUAL = ("flores_{x}_en", "flores_en_{x}", "opus_{x}_en", "opus_en_{x}",
               "sib200_{x}", "belebele_{x}")
GENERAL = ("mmlu", "hellaswag", "piqa", "winogrande", "arc_easy", "arc_challenge")
HUB = {  # dataset key -> (hub id, config (None: per language), split)
    "flores": ("openlanguagedata/flores_plus", None, "devtest"),
    "opus": ("Helsinki-NLP/opus-100", None, "test"),
    "sib200": ("Davlan/sib200", None, "test"),
    "belebele": ("facebook/belebele", None, "test"),
    "mmlu": ("cais/mmlu", "all", "validation"),
    "hellaswag": ("Rowan/hellaswag", None, "validation"),
    "piqa": ("baber/piqa", None, "validation"),
    "winogrande": ("allenai/winogrande", "winogrande_xl", "validation"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "validation"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "validation"),
}
# the authors' SamplingParams(stop=...): generation ends at the first of these
STOP = ["\n", "\n\n", "Question:", "Q:", "Answer:", "A:", "Translation:", "The translation",
        "Translate:", "Summary:", "The summary", "Summarize:", "Passage:", "The passage",
        "Text:", "Options:", "The options", "The choices", "Choices:", "Context:",
        "The context", "The problem", "Problem:", "\n\nQuestion", "\n\nAnswer", "</s>",
        "<|endoftext|>", "Human:", "Assistant:"]
SIB_TOPICS = ["science/technology", "travel", "politics", "sports", "health",
              "entertainment", "geography"]


def task_names(code: str, fields: dict | None = None) -> list[str]:
    """The whole suite for target `code`: monolingual (generation + Belebele log-likelihood),
    then general (generation + log-likelihood). `fields` (conf/lang/<code>.yaml) drop the
    datasets that lack the language (`opus: null`: not in OPUS-100; `belebele: null`)."""
    fields = fields or {}
    has = {k: fields.get(k, True) is not None for k in ("opus", "belebele")}
    mono = [f"langsub_{t.format(x=code)}" for t in MONOLINGUAL if has.get(t.split("_")[0], True)]
    mono += [f"langsub_belebele_{code}_ll"] if has["belebele"] else []
    return mono + [f"langsub_{t}{s}" for t in GENERAL for s in ("", "_ll")]


# ---- prompts (the authors' format strings, character for character) ----

def _lettered(options) -> str:
    return "\n".join(f"{chr(65 + i)}) {o}" for i, o in enumerate(options))


def translation_prompt(doc: dict) -> str:
    return f"Translate this sentence into {doc['target_name']}: {doc['source']} Translation:"


def sib200_prompt(doc: dict) -> str:
    return ("Classify the following text into one of these topics:\nA) Science/Technology\n"
            "B) Travel  \nC) Politics\nD) Sports\nE) Health\nF) Entertainment\nG) Geography\n\n"
            f"Text: {doc['text']}\n\nAnswer:")


def belebele_prompt(doc: dict) -> str:
    options = _lettered(doc[f"mc_answer{i}"] for i in range(1, 5))
    return ("Read the following passage and pick the right answer.\n\n"
            f"Passage: {doc['flores_passage']}\n\nQuestion: {doc['question']}\n\n"
            f"{options}\n\nAnswer:")


def mmlu_prompt(doc: dict) -> str:
    return (f"Answer the following multiple choice question:\n\n{doc['question']}\n\n"
            f"{_lettered(doc['choices'])}\n\nAnswer:")


def hellaswag_prompt(doc: dict) -> str:
    return ("Complete the following scenario by choosing the most likely continuation:\n\n"
            f"{doc['ctx']}\n\n{_lettered(doc['endings'])}\n\nAnswer:")


def piqa_prompt(doc: dict) -> str:
    return ("Choose the most appropriate solution for the following goal:\n\n"
            f"Goal: {doc['goal']}\n\nA) {doc['sol1']}\nB) {doc['sol2']}\n\nAnswer:")


def winogrande_prompt(doc: dict) -> str:
    return ("Complete the sentence by choosing the correct option:\n\n"
            f"{doc['sentence']}\n\nA) {doc['option1']}\nB) {doc['option2']}\n\nAnswer:")


def arc_prompt(doc: dict) -> str:
    return (f"Answer the following question:\n\n{doc['question']}\n\n"
            f"{_lettered(doc['choices']['text'])}\n\nAnswer:")


# ---- references (the letter the authors compare with) ----

def _int(value, fallback: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return fallback


def sib200_answer(doc: dict) -> str | None:
    k = doc["category"].lower()
    return LETTERS[SIB_TOPICS.index(k)] if k in SIB_TOPICS else None


def belebele_answer(doc: dict) -> str | None:
    n = _int(doc["correct_answer_num"], 0)
    return LETTERS[n - 1] if 1 <= n <= 4 else None


def mmlu_answer(doc: dict) -> str:
    return LETTERS[int(doc["answer"])]


def hellaswag_answer(doc: dict) -> str:
    return LETTERS[_int(doc["label"], 0)]


def piqa_answer(doc: dict) -> str:
    return LETTERS[_int(doc["label"], 0)]


def winogrande_answer(doc: dict) -> str:
    return LETTERS[_int(doc["answer"], 1) - 1]


def arc_answer(doc: dict) -> str:
    key = str(doc["answerKey"])
    return LETTERS[int(key) - 1] if key.isdigit() else key.upper()


# ---- scoring ----

def extract_answer_choice(response: str, num_choices: int = 4) -> str | None:
    """The authors' extraction: the first of six patterns that matches the upper-cased reply."""
    response = response.strip().upper()
    valid = "".join(chr(65 + i) for i in range(num_choices))
    for pattern in (rf"^([{valid}])\)", rf"^([{valid}])\.", rf"^([{valid}])\s", rf"^([{valid}])$",
                    rf"\b([{valid}])\)", rf"\b([{valid}])\."):
        m = re.search(pattern, response)
        if m:
            return m.group(1)
    return None


def letter_accuracy(reference: str | None, response: str, num_choices: int) -> float:
    pred = extract_answer_choice(response.strip(), num_choices)
    return float(pred is not None and pred == reference)


def _letters(answer, n_choices: int):
    def process(doc, results):
        return {"acc": letter_accuracy(answer(doc), results[0], n_choices)}
    return process


sib200_results = _letters(sib200_answer, 7)
belebele_results = _letters(belebele_answer, 4)
mmlu_results = _letters(mmlu_answer, 4)
hellaswag_results = _letters(hellaswag_answer, 4)
piqa_results = _letters(piqa_answer, 2)
winogrande_results = _letters(winogrande_answer, 2)
# the authors allow the first item's choice count (4 in ARC's validation splits) for all
arc_results = _letters(arc_answer, 4)


def translation_results(doc: dict, results: list[str]) -> dict[str, float]:
    """Sentence-level chrF and BLEU of the stripped reply (averaged over sentences by lm-eval)."""
    from sacrebleu import sentence_bleu, sentence_chrf

    hyp = results[0].strip()
    return {"chrf": sentence_chrf(hyp, [doc["reference"]]).score,
            "bleu": sentence_bleu(hyp, [doc["reference"]]).score}


# ---- datasets ----

def source(dataset: str, data_dir: str | None) -> str:
    """Where `dataset` is read from: its hub id, or its stand-in under `data_dir`."""
    hub_id = HUB[dataset][0]
    return str(Path(data_dir) / hub_id) if data_dir else hub_id


def _load(dataset: str, name: str | None, data_dir: str | None, split: str):
    import datasets

    # a local stand-in is re-read every time: datasets' cache of a local directory can
    # outlive a rebuild of its files (measured: 100 cached rows served for a 24-row file)
    kw = {"download_mode": "force_redownload", "verification_mode": "no_checks"} \
        if data_dir else {}
    return datasets.load_dataset(source(dataset, data_dir), name=name, split=split, **kw)


def _opus(src: str, tgt: str, data_dir: str | None, split: str):
    """OPUS-100 names a pair in one order only (af-en, en-mt): as the authors, try both."""
    try:
        return _load("opus", f"{src}-{tgt}", data_dir, split)
    except ValueError:
        return _load("opus", f"{tgt}-{src}", data_dir, split)


def translation_rows(dataset: str, src: str, tgt: str, target_name: str,
                     data_dir: str | None, split: str) -> list[dict]:
    """{"id", "source", "reference", "target_name"} per sentence (FLORES+ joined on id)."""
    if dataset == "opus":
        a, b = src.split("_")[0], tgt.split("_")[0]
        return [{"id": i, "source": r["translation"][a], "reference": r["translation"][b],
                 "target_name": target_name}
                for i, r in enumerate(_opus(a, b, data_dir, split))]
    left, right = _load(dataset, src, data_dir, split), _load(dataset, tgt, data_dir, split)
    by_id = {r["id"]: r["text"] for r in right}
    return [{"id": r["id"], "source": r["text"], "reference": by_id[r["id"]],
             "target_name": target_name} for r in left if r["id"] in by_id]


def load(dataset: str, config: str | None = None, src: str | None = None,
         tgt: str | None = None, target_name: str | None = None,
         langsub_data_dir: str | None = None, **_):
    """lm-eval's `custom_dataset`: a DatasetDict with the dataset's evaluation split."""
    import datasets

    _, default_config, split = HUB[dataset]
    if src is not None:
        rows = translation_rows(dataset, src, tgt, target_name, langsub_data_dir, split)
        ds = datasets.Dataset.from_list(rows)
    else:
        ds = _load(dataset, config or default_config, langsub_data_dir, split)
    return datasets.DatasetDict({split: ds})


def is_standin(dataset: str, data_dir: str | None) -> bool:
    """Whether `dataset` is read from a stand-in: a local directory that
    scripts/build_paper_standins.py marked (a `STANDIN` file). The hub's datasets and the real
    items of build_flores.py (SIB-200, FLORES) are not."""
    return bool(data_dir) and (Path(source(dataset, data_dir)) / "STANDIN").is_file()


def task_dataset(task: str) -> str | None:
    """The dataset key (HUB) a suite task reads; None for a task of another suite."""
    return next((k for k in HUB if task.startswith(f"langsub_{k}")), None)


def standin_tasks(tasks, data_dir: str | None) -> list[str]:
    """The tasks among `tasks` whose scores come from stand-ins, not the real benchmark."""
    return [t for t in tasks if (k := task_dataset(t)) is not None and is_standin(k, data_dir)]


def hub_datasets(tasks, lang_fields: dict) -> list[tuple[str, str | None]]:
    """(hub id, config) of every dataset the suite's `tasks` read, in task order."""
    out = []
    for t in tasks:
        key = task_dataset(t)
        if key is None:
            continue
        hub_id, config, _ = HUB[key]
        if config is None and key in ("flores", "sib200", "belebele"):
            config = lang_fields.get(key)
        if (hub_id, config) not in out:
            out.append((hub_id, config))
    return out
