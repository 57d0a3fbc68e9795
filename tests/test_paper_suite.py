"""The paper's evaluation suite (eval=paper): the authors' prompts and letter extraction
reproduced exactly (golden strings from their enhancement/eval_finetune.py), the task YAMLs
wired to them, the stand-ins readable as the hub datasets, and bad input in one line."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from langsub.evaluation import paper
from langsub.evaluation.benchmarks import PACKAGE_TASKS, task_manager

STANDINS = ROOT / "data" / "lm_eval" / "paper_offline"

DOCS = {
    "translation": {"source": "Die kat sit op die mat.", "target_name": "English"},
    "sib200": {"text": "The match ended 2-1.", "category": "sports"},
    "belebele": {"flores_passage": "P text.", "question": "Why?", "mc_answer1": "a1",
                 "mc_answer2": "a2", "mc_answer3": "a3", "mc_answer4": "a4",
                 "correct_answer_num": "3"},
    "mmlu": {"question": "2+2?", "choices": ["1", "2", "3", "4"], "answer": 3},
    "hellaswag": {"ctx": "A man sits.", "endings": ["e0", "e1", "e2", "e3"], "label": "2"},
    "piqa": {"goal": "Open a jar", "sol1": "twist", "sol2": "push", "label": 1},
    "winogrande": {"sentence": "Tom gave _ the ball.", "option1": "Ann", "option2": "Bob",
                   "answer": "2"},
    "arc": {"question": "Why?", "choices": {"text": ["x", "y", "z"], "label": ["1", "2", "3"]},
            "answerKey": "3"},
}
# typed from the authors' f-strings, whitespace included (SIB-200's "B) Travel  ")
GOLDEN = {
    "translation": "Translate this sentence into English: Die kat sit op die mat. Translation:",
    "sib200": "Classify the following text into one of these topics:\nA) Science/Technology\n"
              "B) Travel  \nC) Politics\nD) Sports\nE) Health\nF) Entertainment\nG) Geography\n"
              "\nText: The match ended 2-1.\n\nAnswer:",
    "belebele": "Read the following passage and pick the right answer.\n\nPassage: P text.\n\n"
                "Question: Why?\n\nA) a1\nB) a2\nC) a3\nD) a4\n\nAnswer:",
    "mmlu": "Answer the following multiple choice question:\n\n2+2?\n\nA) 1\nB) 2\nC) 3\nD) 4"
            "\n\nAnswer:",
    "hellaswag": "Complete the following scenario by choosing the most likely continuation:\n\n"
                 "A man sits.\n\nA) e0\nB) e1\nC) e2\nD) e3\n\nAnswer:",
    "piqa": "Choose the most appropriate solution for the following goal:\n\nGoal: Open a jar\n\n"
            "A) twist\nB) push\n\nAnswer:",
    "winogrande": "Complete the sentence by choosing the correct option:\n\nTom gave _ the ball."
                  "\n\nA) Ann\nB) Bob\n\nAnswer:",
    "arc": "Answer the following question:\n\nWhy?\n\nA) x\nB) y\nC) z\n\nAnswer:",
}
ANSWERS = {"sib200": "D", "belebele": "C", "mmlu": "D", "hellaswag": "C", "piqa": "B",
           "winogrande": "B", "arc": "C"}


@pytest.mark.parametrize("kind", sorted(GOLDEN))
def test_prompts_are_the_authors(kind):
    assert getattr(paper, f"{kind}_prompt")(DOCS[kind]) == GOLDEN[kind]
    if kind in ANSWERS:
        assert getattr(paper, f"{kind}_answer")(DOCS[kind]) == ANSWERS[kind]


@pytest.mark.parametrize("reply, n, letter", [
    ("A) Science", 7, "A"), (" b. because", 4, "B"), ("c because", 4, "C"), ("d", 4, "D"),
    ("The answer is B) push", 2, "B"), ("answer: c.", 4, "C"), ("E) x", 4, None),
    ("A: yes", 4, None), ("AB", 4, None), ("", 4, None), ("G) Geography", 7, "G"),
    ("I think (A) and B)", 4, "A"),  # "(A)" holds "A)": the first match of the ")"-pattern
    ("D. or A)", 4, "D"),            # start-of-reply patterns come first
])
def test_letter_extraction_is_the_authors(reply, n, letter):
    assert paper.extract_answer_choice(reply, n) == letter


def test_scoring():
    assert paper.sib200_results(DOCS["sib200"], ["D) Sports"]) == {"acc": 1.0}
    assert paper.sib200_results(DOCS["sib200"], ["Sports"]) == {"acc": 0.0}  # no letter
    assert paper.arc_results(DOCS["arc"], [" C."]) == {"acc": 1.0}
    s = paper.translation_results({"reference": "The cat sits on the mat."},
                                  ["  The cat sits on the mat.  "])
    assert s["chrf"] == pytest.approx(100) and s["bleu"] == pytest.approx(100)
    s = paper.translation_results({"reference": "The cat sits on the mat."}, ["dog"])
    assert s["chrf"] < 20 and s["bleu"] < 5


def test_generation_settings_are_the_authors():
    cfg = yaml.safe_load((PACKAGE_TASKS / "_generate_yaml").read_text().replace("!function", ""))
    g = cfg["generation_kwargs"]
    assert g["until"] == paper.STOP and len(paper.STOP) == 29
    assert g["do_sample"] is False and g["max_gen_toks"] == 128 and g["repetition_penalty"] == 1.1
    assert cfg["num_fewshot"] == 0


def test_task_files_are_what_the_script_builds(tmp_path):
    subprocess.run([sys.executable, "scripts/build_paper_tasks.py", "--out", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    built = {p.name: p.read_text() for p in tmp_path.glob("langsub_*.yaml")}
    shipped = {p.name: p.read_text() for p in PACKAGE_TASKS.glob("langsub_*.yaml")}
    assert built == shipped and len(built) == 134


def test_suite_tasks_render_the_authors_prompts_on_the_standins():
    """Every task of af's suite loads from the stand-ins (as from the hub) and its first
    document's prompt is the authors' format; the log-likelihood twins are lm-eval's."""
    names = paper.task_names("af")
    assert len(names) == 19 and names[0] == "langsub_flores_af_en"
    tasks = task_manager(names, [], str(STANDINS)).load(names)["tasks"]
    assert sorted(tasks) == sorted(names)
    fn = {"flores": "translation", "opus": "translation", "arc": "arc"}
    for name, task in tasks.items():
        doc = next(iter(task.test_docs()))
        text = task.doc_to_text(doc)
        kind = name.removeprefix("langsub_").split("_")[0]
        if name.endswith("_ll"):
            assert task.OUTPUT_TYPE == "multiple_choice" and not str(text).startswith(
                ("Answer the", "Complete the", "Choose the", "Read the")), name  # winogrande: int
            continue
        assert task.OUTPUT_TYPE == "generate_until", name
        assert text == getattr(paper, f"{fn.get(kind, kind)}_prompt")(doc), name
    d = next(iter(tasks["langsub_flores_en_af"].test_docs()))
    assert d["target_name"] == "Afrikaans" and d["source"] != d["reference"]


def test_standins_are_laid_out_like_the_hub():
    import datasets

    flores = datasets.load_dataset(str(STANDINS / "openlanguagedata/flores_plus"), "afr_Latn",
                                   split="devtest")
    assert {"id", "text", "iso_639_3", "iso_15924"} <= set(flores.column_names)
    sib = datasets.load_dataset(str(STANDINS / "Davlan/sib200"), "est_Latn", split="test")
    assert set(sib["category"]) <= set(paper.SIB_TOPICS)


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        return compose("train", overrides=list(overrides))


def _problems(cfg):
    from langsub.evaluation.benchmarks import config_problems

    return config_problems(cfg)


def test_paper_suite_config():
    from langsub.evaluation.benchmarks import tasks_of

    cfg = _compose("lang=ka", "eval=paper_offline", "eval.lm_eval.tasks=[langsub_cloze_ka]")
    assert tasks_of(cfg) == paper.task_names("ka") + ["langsub_cloze_ka"]
    assert _problems(cfg) == []
    assert tasks_of(_compose("lang=ka")) == []


def test_log_likelihood_twins_alone():
    """eval=paper_ll_offline: the suite's `_ll` tasks only (Welsh has no Belebele), and no
    FLORES+/SIB-200 names needed."""
    from langsub.evaluation.benchmarks import tasks_of

    af = tasks_of(_compose("lang=af", "eval=paper_ll_offline"))
    assert af == [t for t in paper.task_names("af") if t.endswith("_ll")]
    assert af[0] == "langsub_belebele_af_ll" and "langsub_mmlu_ll" in af and len(af) == 7
    cy = tasks_of(_compose("lang=cy", "eval=paper_ll_offline"))
    assert cy == af[1:]
    assert _problems(_compose("lang=af", "eval=paper_ll_offline", "lang.sib200=null")) == []


def test_language_without_names_is_one_line():
    cfg = _compose("lang=af", "eval=paper_offline", "lang.sib200=null")
    (line,) = _problems(cfg)
    assert "conf/lang/af.yaml has no sib200 name" in line and "eval=paper" in line


def test_offline_hub_is_one_line_naming_the_dataset(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    (line,) = _problems(_compose("lang=af", "eval=paper"))
    assert "openlanguagedata/flores_plus" in line and "eval=paper_offline" in line


def test_missing_standin_and_bad_suite_are_one_line(tmp_path):
    (line,) = _problems(_compose("lang=af", "eval=paper", f"eval.lm_eval.data_dir={tmp_path}"))
    assert str(tmp_path) in line and "Davlan/sib200" in line
    (line,) = _problems(_compose("lang=af", "eval.lm_eval.suite=papers"))
    assert "eval.lm_eval.suite='papers'" in line and "paper" in line


def test_datasets_without_the_language_are_left_out():
    """OPUS-100 has no Swahili, Belebele no Welsh (conf/lang: opus/belebele null)."""
    from langsub.evaluation.benchmarks import tasks_of

    cy, sw = tasks_of(_compose("lang=cy", "eval=paper_offline")), \
        tasks_of(_compose("lang=sw", "eval=paper_offline"))
    assert "langsub_sib200_cy" in cy and not [t for t in cy if "belebele" in t]
    assert "langsub_belebele_sw_ll" in sw and not [t for t in sw if "opus" in t]
    assert _problems(_compose("lang=cy", "eval=paper_offline")) == []
    (line,) = _problems(_compose("lang=en", "eval=paper_offline"))
    assert "lang=en" in line and "non-English" in line


def test_gated_dataset_is_one_line(monkeypatch):
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError

    def gated(self, repo_id, **kw):  # what the hub answers before the terms are accepted
        err = GatedRepoError.__new__(GatedRepoError)  # (its __init__ wants an HTTP response)
        Exception.__init__(err, f"{repo_id} is gated")
        raise err

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "auth_check", gated)
    (line,) = _problems(_compose("lang=af", "eval=paper"))
    assert "openlanguagedata/flores_plus, which is gated" in line and "eval=paper_offline" in line


def test_lm_eval_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    (line,) = _problems(_compose("lang=af", "eval=paper_offline"))
    assert "lm-eval is not installed" in line and ".[eval]" in line


def test_train_refuses_offline_suite_before_loading(tmp_path):
    r = subprocess.run([sys.executable, "train.py", "lang=af", "eval=paper",
                        f"hydra.run.dir={tmp_path}/run"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={**__import__("os").environ,
                                                    "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "eval=paper_offline" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_report_of_log_likelihood_runs_has_only_their_table(tmp_path):
    """Runs with eval=paper_ll_offline: the log-likelihood table with its base row and the
    change of the averages, no empty generation table; the figure drawn from the same."""
    from langsub.report import paper_table

    def run(method, after):
        m = {"method": method, "lang": "af"}
        for task, (b, a) in {"belebele_af_ll": (0.25, after), "mmlu_ll": (0.5, 0.5)}.items():
            m[f"lm_eval_before/langsub_{task}/acc"], m[f"lm_eval_after/langsub_{task}/acc"] = b, a
        return m

    runs = [run("lape", 0.5), run("lape", 0.75), run("lora", 0.25)]
    text = paper_table.table(runs)
    assert "Generation" not in text and "FLORES" not in text
    assert "| af | base | 3 | 25.00 | 25.00 | 50.00 |" in text
    assert "| af | lape | 2 | 62.50 | 62.50 (+37.50) | 50.00 |" in text
    paper_table.figure(runs, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
