"""medtrain: continual pretraining, SFT and evaluation of Llama-2 for medical QA on DeepSpeed ZeRO-3."""

__version__ = "0.1.0"
