"""Push a finished folder (model or dataset) to the Hugging Face Hub.

python -m model_cards.publish --folder outputs/demo/model --repo-id you/esi-atto --repo-type model
"""

from __future__ import annotations

import argparse
from pathlib import Path


def push_folder(
    folder: str | Path,
    repo_id: str,
    repo_type: str = "model",
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
) -> str:
    """Create `repo_id` if needed and upload `folder` as one commit; returns the commit URL.

    The token comes from `token`, else HF_TOKEN or `hf auth login`.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type=repo_type,
        revision=revision,
        commit_message=f"Upload {Path(folder).name} with ESI's model_cards.publish",
    )
    return str(commit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--repo-id", required=True)
    parser.add_argument("--repo-type", choices=["model", "dataset"], default="model")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None)
    args = parser.parse_args()
    print(push_folder(args.folder, args.repo_id, args.repo_type, args.private, args.token))


if __name__ == "__main__":
    main()
