"""Uploading a finished folder (model, caption dataset) to the Hugging Face Hub: the one place that talks to it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


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
    from huggingface_hub import HfApi

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
    commit = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type=repo_type,
        revision=revision,
        ignore_patterns=list(ignore_patterns) or None,
        commit_message=f"Upload {Path(folder).name} with ESI",
    )
    return str(commit)
