"""Stage 5, the analyses: their maths (`maths`), the registry with before/after hooks
(`registry`), the paper's four analyses (`analyses`) and figures (`figures`)."""
from langsub.analysis import analyses  # noqa: F401  (registration)
from langsub.analysis.registry import ANALYSES, Analysis, AnalysisContext, register, wanted

__all__ = ["ANALYSES", "Analysis", "AnalysisContext", "register", "wanted"]
