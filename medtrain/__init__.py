"""medtrain: continual pretraining, SFT and evaluation of Llama-2 for medical QA on DeepSpeed ZeRO-3."""

from medtrain.core import __version__

__all__ = ["__version__"]
