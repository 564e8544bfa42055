"""Models, tokenizers and data sets named by Hugging Face id, as users of LLaMA-Factory, axolotl and lm-eval do.

A reference is a local path (used as it is) or a hub id (`owner/name`). An id resolves through
`huggingface_hub`'s own cache, so a snapshot someone already downloaded is found without the network; with the
network a missing one is downloaded (with its progress bar); offline, the error names the id and the command that
fetches it. The snapshot folder's name is the commit hash, which provenance records beside the id.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from medtrain.core.errors import UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# What is downloaded for a model (config, safetensors weights, the tokenizer in any form) and for a tokenizer alone.
MODEL_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.txt"]
TOKENIZER_FILES = ["tokenizer*", "special_*", "*.txt", "vocab*", "config.json"]


class HubError(UserError):
    """A hub id that cannot be resolved here; the message says how to get it."""


@dataclass(frozen=True)
class Resolved:
    path: Path
    hub_id: str | None = None
    revision: str | None = None

    def provenance(self) -> dict:
        """What lineage and manifests record: the id and commit for hub snapshots, the path otherwise."""
        if self.hub_id is None:
            return {"path": str(self.path)}
        return {"hub_id": self.hub_id, "revision": self.revision, "path": str(self.path)}


def source_label(source: dict | None) -> str | None:
    """How a hub snapshot is named in tables and lines: `owner/name@revision` (12 characters of the commit);
    None for a source that is not a hub snapshot (Resolved.provenance() of a local path)."""
    if not source or not source.get("hub_id"):
        return None
    return f"{source['hub_id']}@{str(source.get('revision') or '?')[:12]}"


def is_hub_id(ref: str | os.PathLike) -> bool:
    """`owner/name` that is not a path on this machine (a local folder of that name wins, as in transformers)."""
    text = str(ref)
    return bool(HUB_ID.match(text)) and not Path(text).exists()


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fetch_command(hub_id: str, repo_type: str = "model") -> str:
    kind = "" if repo_type == "model" else f" --repo-type {repo_type}"
    return f"hf download {hub_id}{kind}"


def resolve(ref: str | os.PathLike, *, what: str = "model", repo_type: str = "model", need: tuple[str, ...] = (),
            allow_patterns: list[str] | None = None, download: bool = True) -> Resolved:
    """A local directory for `ref`: the path itself, the cached snapshot, or a fresh download.

    `need` names files (globs) a usable snapshot must hold, so a cache that holds only a config.json fetched by
    some other tool is completed rather than trusted.
    """
    text = str(ref)
    if not is_hub_id(text):
        path = Path(text).expanduser()
        if not path.exists():
            raise HubError(f"{what} '{text}': no such file or directory (nor a Hugging Face id like owner/name)")
        return Resolved(path)
    cached = cached_snapshot(text, repo_type=repo_type, need=need)
    if cached is not None:
        return cached
    if offline() or not download:
        why = "HF_HUB_OFFLINE is set" if offline() else "it is not downloaded here"
        raise HubError(f"{what} '{text}' is no directory here and not in the Hugging Face cache ({cache_dir()}), "
                       f"and {why}; fetch it with `{fetch_command(text, repo_type)}` (or pass a local directory)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        path = Path(snapshot_download(text, repo_type=repo_type, allow_patterns=allow_patterns))
    except RepositoryNotFoundError:
        raise HubError(f"{what} '{text}': no such directory here, nor a {repo_type} repository on the Hugging Face "
                       "hub (a gated one needs `hf auth login` with an account that accepted its licence)") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise HubError(f"{what} '{text}' could not be downloaded ({type(e).__name__}: {str(e).splitlines()[0]}); "
                       f"fetch it with `{fetch_command(text, repo_type)}` where the network is") from None
    return Resolved(path, text, path.name)


def resolve_model(ref: str | os.PathLike, *, what: str = "model", download: bool = True) -> Resolved:
    """A model directory: a cached snapshot counts only with its config and weights."""
    return resolve(ref, what=what, need=("config.json", "*.safetensors*"), allow_patterns=MODEL_FILES,
                   download=download)


def resolve_tokenizer(ref: str | os.PathLike, *, what: str = "tokenizer", download: bool = True) -> Resolved:
    """A tokenizer directory (a model id gives its tokenizer files only, not the weights)."""
    return resolve(ref, what=what, need=("tokenizer*",), allow_patterns=TOKENIZER_FILES, download=download)


def cached_snapshot(hub_id: str, *, repo_type: str = "model", need: tuple[str, ...] = ()) -> Resolved | None:
    """The cached snapshot of `hub_id` (its main ref), or None; never touches the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(hub_id, repo_type=repo_type, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        return None
    if not all(any(path.glob(pattern)) for pattern in need):
        return None
    return Resolved(path, hub_id, path.name)


def cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def snapshot_origin(path: str | os.PathLike) -> Resolved:
    """The id and commit of a directory inside the hub cache (models--owner--name/snapshots/<commit>), else the
    path alone: how a run launched with a resolved path still records where its weights came from."""
    p = Path(path).resolve()
    for snap in (p, *p.parents):
        if snap.parent.name == "snapshots" and snap.parent.parent.name.count("--") >= 2:
            kind, owner, name = snap.parent.parent.name.split("--", 2)
            if kind in ("models", "datasets"):
                return Resolved(Path(path), f"{owner}/{name}", snap.name)
    return Resolved(Path(path))
