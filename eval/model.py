"""Loading a Hugging Face model directory for evaluation: on the accelerator when there is one, in a 16-bit
dtype there (a 13B model is 26 GB in fp16 and 52 GB in fp32), spread over the node's GPUs when one is too small,
with the generation batch sized to the memory that is left. No remote code unless asked."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from medtrain.core.checkpoint_files import MARKER
from medtrain.core.gpu_build import auto_dtype
from medtrain.core.model_files import verify_model_dir
from medtrain.core.model_specs import resolve_shape
from medtrain.eval.task import TaskError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_STORED = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Placement:
    device: str
    """Where inputs go: 'cpu', 'cuda' or 'cuda:0' (the first GPU of a spread model)."""
    dtype: str
    spread: bool = False
    """The model is spread over several GPUs (device_map='auto')."""

    def describe(self) -> str:
        return f"{self.device}{' (spread over GPUs)' if self.spread else ''}, {self.dtype}"


def accelerator_available() -> bool:
    return torch.cuda.is_available()


def stored_dtype(model_dir: Path) -> str:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return _STORED.get(str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32"), "fp32")


def choose_placement(model_dir: Path, device: str = "auto", dtype: str = "auto") -> Placement:
    """auto device: the accelerator when present. auto dtype: the stored one, except that an fp32 checkpoint
    runs in bf16 (fp16 where bf16 is missing, as on a V100) on a GPU, and an fp16 one in fp32 on a CPU (no fast
    half-precision kernels there)."""
    if device not in DEVICES:
        raise TaskError(f"--device {device} is not one of {', '.join(DEVICES)}")
    if dtype not in ("auto", *DTYPES):
        raise TaskError(f"--dtype {dtype} is not one of auto, {', '.join(DTYPES)}")
    if device == "auto":
        device = "cuda" if accelerator_available() else "cpu"
    if device == "cuda" and not accelerator_available():
        raise TaskError("--device cuda: no CUDA device is visible here; use --device cpu or auto")
    if dtype == "auto":
        dtype = stored_dtype(model_dir)
        if device == "cuda" and dtype == "fp32":
            # by architecture: is_bf16_supported() counts emulation and says True on a V100
            dtype = auto_dtype(torch.cuda.get_device_capability())
        elif device == "cpu" and dtype == "fp16":
            dtype = "fp32"
    elif device == "cuda" and dtype == "bf16" and auto_dtype(torch.cuda.get_device_capability()) != "bf16":
        raise TaskError(f"--dtype bf16: {torch.cuda.get_device_name()} has no bf16 tensor cores (compute capability "
                        "below 8.0, bf16 only emulated); use --dtype fp16 or auto")
    return Placement(device, dtype)


def _weights_bytes(model_dir: Path, dtype: str) -> int:

    return resolve_shape(str(model_dir)).num_params() * DTYPES[dtype].itemsize


def load_model(model_dir: Path, trust_remote_code: bool = False, device: str = "auto", dtype: str = "auto"):
    """(model, tokenizer, placement) in eval mode; a directory that is not a model is a TaskError."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model_dir = Path(model_dir)
    refuse_training_dir(model_dir)
    if not (model_dir / "config.json").is_file():
        raise TaskError(f"{model_dir}: not a Hugging Face model directory (no config.json); pass an exported "
                        "model, e.g. runs/NAME/export")

    verify_model_dir(model_dir)
    placement = choose_placement(model_dir, device, dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict = {"dtype": DTYPES[placement.dtype]}
    if placement.device == "cuda":
        free = torch.cuda.mem_get_info()[0]
        if torch.cuda.device_count() > 1 and _weights_bytes(model_dir, placement.dtype) > 0.8 * free:
            kwargs["device_map"] = "auto"  # accelerate places whole layers on each GPU in turn
            placement = Placement("cuda:0", placement.dtype, spread=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True,
                                            trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True,
                                                     trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError) as e:
        raise TaskError(f"{model_dir}: cannot load model or tokenizer ({e})") from None
    refuse_missing_bos(model_dir, tok)
    if not placement.spread:
        model.to(placement.device)
    model.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok, placement


def refuse_training_dir(path: Path) -> None:
    """A checkpoint or run directory holds ZeRO-3 shards, not a model transformers can load (a checkpoint's
    config.json makes it look like one, and the tokenizer error that follows misleads): name the export."""
    if (path / MARKER).is_file() or (path / "trainer_state.json").is_file():
        run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        raise TaskError(f"{path} is a training checkpoint (ZeRO-3 shards), not a Hugging Face model; export it first: "
                        f"medtrain export --checkpoint {path} --out {run / ('export-' + path.name)}")
    if (path / "checkpoints").is_dir() and not (path / "config.json").is_file():
        export = path / "export"
        if (export / "config.json").is_file():
            raise TaskError(f"{path} is a training run; its model is {export} (pass --model {export})")
        raise TaskError(f"{path} is a training run without an export; export its newest checkpoint first: medtrain "
                        f"export --checkpoint {path} --out {export}")


def trained_with_bos(model_dir: Path) -> tuple[bool | None, str]:
    """Whether the model saw BOS first in training, and where that is recorded: its lineage.json (medtrain's
    exports), else the manifest of the data it was trained on; (None, "") when nothing says."""
    try:
        lineage = json.loads((Path(model_dir) / "lineage.json").read_text())
    except (OSError, ValueError):
        return None, ""
    if "bos_first" in (lineage.get("tokenizer") or {}):
        return bool(lineage["tokenizer"]["bos_first"]), f"{model_dir}/lineage.json"
    for data in lineage.get("datasets") or []:
        manifest = Path(data.get("path", "")) / "manifest.json"
        try:
            return json.loads(manifest.read_text())["tokenizer"].get("bos_id") is not None, str(manifest)
        except (OSError, ValueError, KeyError):
            continue
    return None, ""


def refuse_missing_bos(model_dir: Path, tok) -> None:
    """A model trained with BOS first and scored without it answers inputs it never saw (on the real MMLU files
    that moved a third of the choices): refuse, and say how to give the tokenizer its BOS back."""
    trained, where = trained_with_bos(model_dir)
    if not trained:
        return
    ids = tok("医学", add_special_tokens=True)["input_ids"]
    if tok.bos_token_id is None or not ids or ids[0] != tok.bos_token_id:
        raise TaskError(f"{model_dir}: its tokenizer adds no BOS, but the model was trained with BOS first ({where}); "
                        "re-export it with `medtrain export` (which writes a complete tokenizer), or set "
                        f'"add_bos_token": true in {Path(model_dir) / "tokenizer_config.json"}')


def context_length(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 2048))


def input_device(model) -> torch.device:
    """Where a batch goes: the device of the input embeddings (the first GPU of a spread model)."""
    return model.get_input_embeddings().weight.device


def left_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), each row right-aligned so every row's last token sits in the last column: what
    generation continues from and what scoring reads."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    return ids, mask


def kv_bytes_per_token(model) -> int:
    """KV cache per token: 2 (K and V) x layers x KV width x bytes."""
    cfg = model.config
    heads = cfg.num_attention_heads
    kv_width = cfg.hidden_size // heads * (getattr(cfg, "num_key_value_heads", None) or heads)
    return 2 * cfg.num_hidden_layers * kv_width * next(model.parameters()).element_size()


def generation_row_bytes(model, longest_prompt: int, max_new_tokens: int) -> int:
    """Memory one question of a generation batch needs: its KV cache over prompt and answer, and the fp32 logits
    of the position being decoded."""
    return kv_bytes_per_token(model) * (longest_prompt + max_new_tokens) + 2 * 4 * model.config.vocab_size


def scoring_row_bytes(model, longest_prompt: int) -> int:
    """Memory one prompt of a scoring batch needs: a layer's transient activations (hidden states, attention
    and MLP inputs and outputs; no cache is kept) for every position, and the logits of the one scored position
    (16-bit, then fp32 and its log-softmax)."""
    cfg = model.config
    width = cfg.hidden_size + getattr(cfg, "intermediate_size", 4 * cfg.hidden_size)
    per_token = 4 * width * next(model.parameters()).element_size() + kv_bytes_per_token(model)
    return longest_prompt * per_token + 10 * cfg.vocab_size


def auto_batch_size(model, row_bytes: int, rows: int, cpu_default: int, cap: int = 512,
                    headroom: float = 0.8) -> tuple[int, str]:
    """The largest batch whose rows fit the accelerator's free memory (after the weights); the CPU default
    on the CPU, where memory is not what limits a batch."""
    device = input_device(model)
    if device.type != "cuda":
        size = max(1, min(cpu_default, rows))
        return size, f"{size} (CPU default)"
    free = torch.cuda.mem_get_info(device)[0]
    size = max(1, min(cap, rows, int(headroom * free // row_bytes)))
    return size, f"{size} ({free / 2**30:.1f} GiB free, {row_bytes / 2**20:.1f} MiB per row)"


def parse_batch_size(value: str | int) -> int | str:
    """--batch-size: a positive number, or 'auto'."""
    if value == "auto":
        return "auto"
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise TaskError(f"--batch-size {value!r} must be a positive number or 'auto'") from None
    if size <= 0:
        raise TaskError(f"--batch-size {size} must be a positive number or 'auto'")
    return size
