"""The files of a Hugging Face model directory checked before anything loads them."""

from __future__ import annotations

import json
from pathlib import Path

from medtrain.core.errors import UserError


def verify_model_dir(model_dir: Path) -> None:
    """Before loading: a truncated or damaged weights file or config is one line naming the file, not the
    traceback transformers and safetensors give for it (a copy cut short, a disk that filled during a download)."""
    model_dir = Path(model_dir)
    for name in ("config.json", "generation_config.json", "tokenizer_config.json", "model.safetensors.index.json"):
        path = model_dir / name
        if path.is_file():
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise UserError(f"{path}: damaged, not valid JSON ({e}); copy or export the model again") from None
    for path in sorted(model_dir.glob("*.safetensors")):
        size = path.stat().st_size
        try:
            with open(path, "rb") as f:
                header_len = int.from_bytes(f.read(8), "little")
                if not 0 < header_len <= size - 8:
                    raise ValueError(f"header length {header_len} in a file of {size} bytes")
                header = json.loads(f.read(header_len))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: damaged safetensors file ({e}); copy or export the model again") from None
        if size < 8 + header_len + end:
            raise UserError(f"{path}: truncated ({size:,} bytes; its header needs {8 + header_len + end:,}); copy or "
                            "export the model again")
