"""The functions the task YAMLs of this directory name (`!function utils.<name>`)."""
from lm_eval.tasks.hellaswag.utils import process_docs as hellaswag_docs  # noqa: F401
from lm_eval.tasks.winogrande.preprocess_winogrande import (  # noqa: F401
    doc_to_choice as winogrande_choices, doc_to_target as winogrande_continuation,
    doc_to_text as winogrande_gold)

from langsub.evaluation.paper import (  # noqa: F401
    arc_prompt, arc_results, belebele_prompt, belebele_results, hellaswag_prompt,
    hellaswag_results, load, mmlu_prompt, mmlu_results, piqa_prompt, piqa_results,
    sib200_prompt, sib200_results, translation_prompt, translation_results,
    winogrande_prompt, winogrande_results, sib200_answer, belebele_answer, mmlu_answer,
    hellaswag_answer, piqa_answer, winogrande_answer, arc_answer)
