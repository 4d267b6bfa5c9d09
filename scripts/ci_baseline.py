"""Fetch the baseline of the GPU workflow: the newest `quantbench-results` artifact of a successful
push run of the workflow on the default branch of this very repository (never a fork's run, never
an expired artifact), unzipped into a folder. Exit status 1, with a line saying why, when there is
none: a gate without a baseline must fail, not skip.

Uses only the standard library and the GitHub REST API (no `gh` on the runner):

    python3 scripts/ci_baseline.py --out baseline

reads GITHUB_TOKEN (or GH_TOKEN), GITHUB_REPOSITORY, GITHUB_API_URL and the workflow file name
(--workflow, default gpu-bench.yml) from the environment and arguments.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import urllib.request
import zipfile
from pathlib import Path

ARTIFACT = "quantbench-results"


def api(url: str, token: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}",
                                                   "Accept": "application/vnd.github+json",
                                                   "X-GitHub-Api-Version": "2022-11-28"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def choose(runs: list[dict], artifacts_of: dict[int, list[dict]], repository: str, branch: str) -> dict | None:
    """The artifact to compare against: from the newest run (runs come newest first) that is a
    successful push to `branch` of `repository` itself and still holds an unexpired ARTIFACT."""
    for run in runs:
        if (run.get("event") != "push" or run.get("conclusion") != "success" or run.get("head_branch") != branch
                or (run.get("head_repository") or {}).get("full_name") != repository):
            continue
        for artifact in artifacts_of.get(run["id"], []):
            if artifact.get("name") == ARTIFACT and not artifact.get("expired"):
                return artifact
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder to unzip the baseline run folder into")
    ap.add_argument("--workflow", default="gpu-bench.yml")
    ap.add_argument("--branch", default="main")
    ap.add_argument("--runs", type=int, default=20, help="how many of the newest runs to look through")
    args = ap.parse_args(argv)
    token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN")
    repository = os.environ.get("GITHUB_REPOSITORY")
    base = os.environ.get("GITHUB_API_URL", "https://api.github.com")
    if not token or not repository:
        print("ci_baseline: GITHUB_TOKEN (or GH_TOKEN) and GITHUB_REPOSITORY must be set", file=sys.stderr)
        return 1
    runs = json.loads(api(f"{base}/repos/{repository}/actions/workflows/{args.workflow}/runs?branch={args.branch}"
                          f"&event=push&status=success&per_page={args.runs}", token))["workflow_runs"]
    artifacts_of = {run["id"]: json.loads(api(run["artifacts_url"], token))["artifacts"] for run in runs}
    artifact = choose(runs, artifacts_of, repository, args.branch)
    if artifact is None:
        print(f"ci_baseline: no unexpired '{ARTIFACT}' artifact from a successful push run of {args.workflow} on "
              f"{repository}@{args.branch} among its {len(runs)} newest runs: run the workflow on {args.branch} "
              f"first (or again, if the artifact expired)", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    zipfile.ZipFile(io.BytesIO(api(artifact["archive_download_url"], token))).extractall(out)
    print(f"baseline: artifact {artifact['id']} of run {artifact.get('workflow_run', {}).get('id')} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
