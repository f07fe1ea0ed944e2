"""advfast: fused adversarial-perturbation kernels and adversarial attacks for PyTorch.

x_adv = advfast.pgd(model, x, y, eps=8/255, alpha=2/255, steps=10)
"""

from advfast import ops, reference
from advfast._extension import build_info, has_cuda_kernels
from advfast.attacks import fgsm, pgd

__all__ = ["build_info", "fgsm", "has_cuda_kernels", "ops", "pgd", "reference"]
__version__ = "0.1.0"

# The upper layers (and their matplotlib / scikit-learn imports) load on first use: advfast.train, ...
_LAYERS = ("data", "eval", "gan", "llm", "models", "pipelines", "runtime", "text", "train")


def __getattr__(name: str):
    if name in _LAYERS:
        import importlib

        return importlib.import_module(f"advfast.{name}")
    raise AttributeError(f"module 'advfast' has no attribute {name!r}")
