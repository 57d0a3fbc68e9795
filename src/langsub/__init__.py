"""langsub: fine-tune the language-specific neurons of a causal LM (LAPE, arXiv 2510.13580)."""
__version__ = "0.1.0"

from langsub.model.dtypes import register as _register_resolvers  # noqa: E402

_register_resolvers()  # ${fast_dtype:...} in model configs
