"""Model shapes by name or from a Hugging Face directory, and the parameter arithmetic `plan` needs.

Named configs let the planner size a 13B run without its weights, and let tests and the demo build tiny Llamas
from a config instead of downloading anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from medtrain.core import hub
from medtrain.core.errors import UserError


class ModelSpecError(UserError):
    """A model name or directory that cannot be resolved."""


@dataclass(frozen=True)
class LlamaShape:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int = 32000
    num_key_value_heads: int | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def layer_params(self) -> int:
        h, kv = self.hidden_size, self.kv_heads * self.head_dim
        attention = 2 * h * h + 2 * h * kv
        mlp = 3 * h * self.intermediate_size
        return attention + mlp + 2 * h  # two RMSNorm weights

    def num_params(self) -> int:
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_hidden_layers * self.layer_params() + self.hidden_size

    def largest_module_params(self) -> int:
        """Largest single module (what ZeRO-3 gathers at once); the same rule as DeepSpeed's model_to_params."""
        return max(self.vocab_size * self.hidden_size, self.hidden_size * self.intermediate_size)

    def to_hf_config(self) -> dict:
        d = asdict(self)
        d["num_key_value_heads"] = self.kv_heads
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **d}


NAMED: dict[str, LlamaShape] = {
    "llama2-7b": LlamaShape(4096, 32, 32, 11008),
    "llama2-13b": LlamaShape(5120, 40, 40, 13824),
    "llama2-70b": LlamaShape(8192, 80, 64, 28672, num_key_value_heads=8),
    # ~1.1B (TinyLlama's shape), for throughput and MFU measurements on one GPU
    "llama-1b": LlamaShape(2048, 22, 32, 5632, num_key_value_heads=4, max_position_embeddings=2048),
    # CPU-sized; vocab comes from the run's tokenizer
    "tiny": LlamaShape(64, 2, 4, 176, vocab_size=32000, max_position_embeddings=2048),
    "tiny-wide": LlamaShape(128, 4, 4, 344, vocab_size=32000, max_position_embeddings=2048),
}


# Hub ids whose shape is known here, so `plan` sizes them before a byte is downloaded (their config.json wins
# when it is in the cache).
HUB_SHAPES = {f"meta-llama/Llama-2-{size}{kind}": f"llama2-{size}" for size in ("7b", "13b", "70b")
              for kind in ("-hf", "-chat-hf")}


def resolve_shape(model: str, vocab_size: int | None = None) -> LlamaShape:
    """A named config (vocab overridable), the config.json of a Hugging Face directory, or of a hub id's cached
    snapshot (a known id's shape without it)."""
    if model in NAMED:
        shape = NAMED[model]
        if vocab_size is not None:
            shape = LlamaShape(**{**asdict(shape), "vocab_size": vocab_size})
        return shape
    cfg_path = Path(model) / "config.json"
    if hub.is_hub_id(model):
        cached = hub.cached_snapshot(model, need=("config.json",))
        if cached is not None:
            cfg_path = cached.path / "config.json"
        elif model in HUB_SHAPES:
            return NAMED[HUB_SHAPES[model]]
        else:
            raise ModelSpecError(f"model '{model}': its config.json is not in the Hugging Face cache, so its shape "
                                 f"is unknown here; fetch it with `{hub.fetch_command(model)}`")
    if not cfg_path.is_file():
        raise ModelSpecError(
            f"model '{model}' is neither a named config ({', '.join(NAMED)}) nor a directory with config.json"
        )
    cfg = json.loads(cfg_path.read_text())
    try:
        return LlamaShape(
            hidden_size=cfg["hidden_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=cfg["num_attention_heads"],
            intermediate_size=cfg["intermediate_size"],
            vocab_size=cfg["vocab_size"],
            num_key_value_heads=cfg.get("num_key_value_heads"),
            max_position_embeddings=cfg.get("max_position_embeddings", 4096),
            tie_word_embeddings=cfg.get("tie_word_embeddings", False),
        )
    except KeyError as e:
        raise ModelSpecError(f"{cfg_path}: missing {e.args[0]}; only Llama-shaped configs can be planned") from None
