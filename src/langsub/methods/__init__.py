"""Fine-tuning methods: one small module each, registered in one table (`base.METHODS`)."""
from langsub.methods.base import METHODS, Method, MethodConfig, build_method, count_params, register
from langsub.methods import dense, peft_methods, subnetwork  # noqa: E402,F401  (registration)

__all__ = ["METHODS", "Method", "MethodConfig", "build_method", "count_params", "register"]
