"""The on-disk dataset format "medtrain.tokens/1": writer (a builder) and reader (memory-mapped, pickle-safe).

    manifest.json    format, kind, tokenizer {path, sha256, vocab_size, ids}, dtype, counts, sources, template
    tokens.npy       1-D token ids (uint16 when the vocabulary fits, else uint32)
    offsets.npy      int64, num_docs + 1 document boundaries
    prompt_lens.npy  int32, sft only: leading tokens of each document that carry no loss

A dataset is written into a temporary sibling directory, manifest last, and renamed into place: a directory
with a manifest is complete by construction.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtrain.core.errors import UserError
from medtrain.core.publish import publish_dir, staging_dir

FORMAT = "medtrain.tokens/1"
_HEADER_LEN = 128  # bytes reserved for the .npy header of a 1-D array; written once the length is known


class DatasetError(UserError):
    """A dataset or input the user can fix; one line naming the file and the fix."""


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def check_token_range(ids: np.ndarray, vocab_size: int, where: str) -> None:
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise DatasetError(f"token id out of range [0, {vocab_size}) while writing {where}")


class DatasetWriter:
    """Append documents, then `finalize(manifest)`; tokens stream to disk, never held whole in memory."""

    def __init__(self, out: Path, vocab_size: int, sft: bool):
        self.out = Path(out)
        self.tmp = staging_dir(self.out)
        self.dtype = token_dtype(vocab_size)
        self.vocab_size = vocab_size
        self._tokens = open(self.tmp / "tokens.npy", "wb")
        self._tokens.write(b"\0" * _HEADER_LEN)
        self.offsets: list[int] = [0]
        self.prompt_lens: list[int] | None = [] if sft else None

    @property
    def num_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return self.offsets[-1]

    def add(self, ids: np.ndarray | list[int], prompt_len: int = 0) -> None:
        arr = np.asarray(ids, dtype=np.int64)
        check_token_range(arr, self.vocab_size, str(self.out))
        self._tokens.write(arr.astype(self.dtype).tobytes())
        self.offsets.append(self.offsets[-1] + int(arr.size))
        if self.prompt_lens is not None:
            self.prompt_lens.append(int(prompt_len))

    def add_many(self, flat: np.ndarray, lengths: np.ndarray, prompt_lens: np.ndarray | None = None) -> None:
        """A chunk of documents in one write: flat ids and their lengths (and prompt lengths for SFT)."""
        check_token_range(flat, self.vocab_size, str(self.out))
        self._tokens.write(flat.astype(self.dtype, copy=False).data)
        ends = self.offsets[-1] + np.cumsum(lengths)
        self.offsets.extend(int(x) for x in ends)
        if self.prompt_lens is not None:
            self.prompt_lens.extend(int(x) for x in prompt_lens)

    def add_shard(self, shard: Path, lengths: np.ndarray, prompt_lens: np.ndarray | None = None) -> None:
        """A chunk a worker already wrote to disk in the on-disk dtype: appended by the kernel (copy_file_range),
        so token bytes never pass through this process."""
        size = os.path.getsize(shard)
        if size != int(lengths.sum()) * self.dtype.itemsize:
            raise DatasetError(f"{shard}: {size} bytes for {int(lengths.sum())} tokens; re-run prep")
        self._tokens.flush()
        with open(shard, "rb") as src:
            copied = 0
            while copied < size:
                n = os.copy_file_range(src.fileno(), self._tokens.fileno(), size - copied)
                if n == 0:
                    break
                copied += n
        if copied != size:
            raise DatasetError(f"{shard}: copied {copied} of {size} bytes into {self.tmp}; check free disk space")
        self._tokens.seek(0, os.SEEK_END)
        os.remove(shard)
        self.add_many(np.empty(0, dtype=self.dtype), lengths, prompt_lens)

    def abort(self) -> None:
        try:
            self._tokens.close()
        except OSError:
            pass  # its buffered bytes could not be flushed to a full disk: the file goes anyway
        shutil.rmtree(self.tmp, ignore_errors=True)

    def finalize(self, manifest: dict[str, Any], overwrite: bool = False) -> Path:
        if self.num_docs == 0:
            self.abort()
            raise DatasetError(f"{self.out}: no documents survived reading; nothing written (see skipped counts)")
        try:
            self._tokens.seek(0)
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": (self.num_tokens,)}
            np.lib.format.write_array_header_1_0(self._tokens, header)
            if self._tokens.tell() != _HEADER_LEN:
                raise AssertionError("npy header size changed; _HEADER_LEN must match numpy's 64-byte alignment")
            self._tokens.close()
            np.save(self.tmp / "offsets.npy", np.asarray(self.offsets, dtype=np.int64))
            if self.prompt_lens is not None:
                np.save(self.tmp / "prompt_lens.npy", np.asarray(self.prompt_lens, dtype=np.int32))
            manifest = {"format": FORMAT, **manifest, "dtype": self.dtype.name, "num_docs": self.num_docs,
                        "num_tokens": self.num_tokens}
            (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                                    encoding="utf-8")
            return publish_dir(self.tmp, self.out, overwrite=overwrite, kind="dataset")
        except BaseException:
            self.abort()  # a full disk at the last write leaves nothing that looks like a dataset
            raise


def read_manifest(root: Path) -> dict[str, Any]:
    root = Path(root)
    path = root / "manifest.json"
    if not path.is_file():
        raise DatasetError(f"{root}: no manifest.json, so not a (complete) medtrain dataset; run `medtrain prep`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); re-run `medtrain prep`") from None
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}; re-run `medtrain prep`")
    return manifest


@dataclass(frozen=True)
class TokenizerId:
    """A tokenizer as a dataset's manifest records it: its files' hash and what it does (tokenizer_fingerprint)."""
    sha256: str
    fingerprint: str

    def matches(self, recorded: dict[str, Any]) -> bool:
        """The same ids, even from another copy or form of the tokenizer (tokenizer.model or tokenizer.json,
        other config files, other path)."""
        return recorded.get("fingerprint") == self.fingerprint


class TokenDataset:
    """Documents of a prepared dataset, O(1) each, over a memory map opened lazily in every process."""

    def __init__(self, root: str | Path, expect_tokenizer: TokenizerId | None = None):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.kind = self.manifest["kind"]
        self.offsets = np.load(self.root / "offsets.npy")
        self.prompt_lens = np.load(self.root / "prompt_lens.npy") if self.kind == "sft" else None
        self._tokens: np.ndarray | None = None
        self._check(expect_tokenizer)

    def _check(self, expect: TokenizerId | None) -> None:
        m, where = self.manifest, self.root
        if len(self.offsets) != m["num_docs"] + 1 or int(self.offsets[-1]) != m["num_tokens"]:
            raise DatasetError(f"{where}: offsets.npy disagrees with manifest num_docs/num_tokens; re-run prep")
        if self.prompt_lens is not None and len(self.prompt_lens) != m["num_docs"]:
            raise DatasetError(f"{where}: prompt_lens.npy has {len(self.prompt_lens)} rows, manifest "
                               f"{m['num_docs']}; re-run prep")
        tokens = np.load(self.root / "tokens.npy", mmap_mode="r")
        if tokens.shape != (m["num_tokens"],) or tokens.dtype.name != m["dtype"]:
            raise DatasetError(f"{where}: tokens.npy is {tokens.shape} {tokens.dtype}, manifest says "
                               f"({m['num_tokens']},) {m['dtype']}; re-run prep")
        if expect is not None and not expect.matches(m["tokenizer"]):
            raise DatasetError(
                f"{where}: prepared with tokenizer {m['tokenizer']['path']} (ids "
                f"{str(m['tokenizer'].get('fingerprint'))[:12]}), not the run's (ids {expect.fingerprint[:12]}): they "
                "split text "
                "into different ids; re-run prep with the run's tokenizer"
            )

    @property
    def tokens(self) -> np.ndarray:
        if self._tokens is None:
            self._tokens = np.load(self.root / "tokens.npy", mmap_mode="r")
        return self._tokens

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def doc_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokens": None}  # each worker maps the file again
