"""Stage 5, the analyses: their maths (`maths`), the registry with before/after hooks
(`registry`), the paper's four analyses (`analyses`), language fidelity of generations (`fidelity`) and
figures (`figures`)."""
from langsub.analysis import analyses, fidelity  # noqa: F401  (registration)
from langsub.analysis.registry import ANALYSES, Analysis, AnalysisContext, register, wanted

__all__ = ["ANALYSES", "Analysis", "AnalysisContext", "register", "wanted"]
