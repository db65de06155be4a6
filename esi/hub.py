"""Uploading a finished folder (model, caption dataset) to the Hugging Face Hub: the one place that talks to it.

What leaves the machine must not carry the machine's file paths (they mean nothing to Hub users and reveal
local details), so every JSON and Markdown file is uploaded with local paths reduced to their last component.
The local folder is left as it is.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

# An absolute POSIX path: a "/" that does not continue a word, a URL ("https://") or another path.
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.@+-]+/)*[\w.@+-]+/?")
_SCRUBBED_SUFFIXES = (".json", ".md")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")


def _basename(path: str) -> str:
    return Path(path.rstrip("/")).name or path


def scrub_local_paths(value):
    """`value` (a JSON-like object or a string) with absolute paths and existing local paths reduced to names."""
    if isinstance(value, dict):
        return {key: scrub_local_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub_local_paths(item) for item in value]
    if isinstance(value, str):
        if "/" in value and "://" not in value and "\n" not in value and len(value) < 4096 and Path(value).exists():
            return _basename(value)
        return _ABSOLUTE_PATH.sub(lambda match: _basename(match.group(0)), value)
    return value


def scrubbed_bytes(path: Path) -> bytes:
    """The bytes of `path` as they are uploaded: JSON and Markdown files without local paths."""
    data = path.read_bytes()
    if path.suffix == ".json":
        return (json.dumps(scrub_local_paths(json.loads(data)), indent=2, ensure_ascii=False) + "\n").encode()
    if path.suffix == ".md":
        return scrub_local_paths(data.decode()).encode()
    return data


def upload_files(folder: Path, ignore_patterns: Sequence[str] = ()) -> list[str]:
    """The files of `folder` that are uploaded (relative POSIX paths), sorted."""
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return [n for n in names if not any(fnmatch.fnmatch(n, pattern) for pattern in ignore_patterns)]


def push_folder(
    folder: str | Path,
    repo_id: str,
    repo_type: str = "model",
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    ignore_patterns: Sequence[str] = (),
) -> str:
    """Create `repo_id` if needed and upload `folder` as one commit; returns the commit URL.

    The token comes from `token`, else HF_TOKEN or `hf auth login`. An existing repository keeps its
    visibility: asking for `private=True` on a public one uploads nothing and says how to change it, because
    silently publishing what the user meant to keep private is the worse failure.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    api = HfApi(token=token)
    if api.repo_exists(repo_id, repo_type=repo_type):
        is_private = bool(api.repo_info(repo_id, repo_type=repo_type).private)
        if private and not is_private:
            raise PermissionError(
                f"{repo_type} repo {repo_id} already exists and is public; --private does not change the visibility "
                "of an existing repo. Make it private in its settings (or with HfApi.update_repo_settings) and push "
                "again, or push without --private."
            )
        if not private and is_private:
            logger.warning("%s repo %s exists and is private; it stays private", repo_type, repo_id)
    else:
        api.create_repo(repo_id, repo_type=repo_type, private=private)
    operations = [
        CommitOperationAdd(
            path_in_repo=name,
            path_or_fileobj=scrubbed_bytes(folder / name) if name.endswith(_SCRUBBED_SUFFIXES) else str(folder / name),
        )
        for name in upload_files(folder, ignore_patterns)
    ]
    commit = api.create_commit(
        repo_id=repo_id,
        repo_type=repo_type,
        revision=revision,
        operations=operations,
        commit_message=f"Upload {folder.name} with ESI",
    )
    return str(commit.commit_url)


def resolve_model_dir(spec: str | Path) -> Path:
    """A local model folder for `spec`: the folder itself, or the Hub snapshot of a repo id at a pinned commit
    (`org/name@<40-character commit hash>`).

    Loading an ESI model runs its `modeling_esi.py` (`trust_remote_code=True`), so a repo id without a pinned
    commit is refused: a branch or tag can be moved to other code after the operator checked it. The snapshot
    is fetched with `huggingface_hub.snapshot_download`, which honours HF_HUB_OFFLINE and the local cache.
    """
    text = str(spec)
    path = Path(text)
    repo_id, _, revision = text.partition("@")
    if path.exists() or repo_id.count("/") != 1 or text.startswith((".", "/")):
        return path
    if not _COMMIT_RE.fullmatch(revision):
        raise ValueError(
            f"{text} is a Hub repository: the app runs its modeling code, so it loads one only at a pinned commit. "
            f"Name it as {repo_id}@<40-character commit hash> (the repository's history lists them), or download "
            "the folder and name the folder."
        )
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, revision=revision))
