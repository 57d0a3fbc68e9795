"""langsub: fine-tune the language-specific neurons of a causal LM (LAPE, arXiv 2510.13580)."""
__version__ = "0.1.0"
