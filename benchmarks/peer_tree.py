"""Running one benchmark child in this working tree and in a peer commit, in one command.

`run_in_trees` checks the peer commit out with `git worktree` into a temporary folder, runs
`script --child ARGS` once per tree in a fresh process with PYTHONPATH set to that tree, and
returns each child's last output line parsed as JSON. Children measure themselves with
`status_kib` and `reset_peak` (Linux /proc: VmRSS now, VmHWM the peak since the reset).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM). Raises RuntimeError when absent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Set this process's peak RSS (VmHWM) to its current RSS (Linux clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def run_in_trees(script: Path, args: list[str], peer: str) -> dict[str, dict]:
    """{"this tree": ..., "peer <rev>": ...}: the JSON each child printed last, this tree first.
    Raises subprocess.CalledProcessError when a child or git fails."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="peer-tree-") as folder:
        worktree = Path(folder) / "peer"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(worktree), peer], check=True)
        try:
            for name, tree in (("this tree", REPO), (f"peer {peer}", worktree)):
                output = subprocess.run([sys.executable, str(script), "--child", *args], check=True, capture_output=True, text=True,
                                        env={**os.environ, "PYTHONPATH": str(tree)}).stdout
                results[name] = json.loads(output.strip().splitlines()[-1])
                print(f"{name}: {results[name]}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False)
    return results


def print_peak_table(results: dict[str, dict], peer: str, what: str) -> None:
    """The Markdown table of `run_in_trees` results that carry before_mib, peak_mib and
    seconds, and the ratio of this tree's peak above its start to the peer's. `what`: what was
    measured ("the split", "the decision")."""
    print(f"| tree | RSS before {what} | peak RSS above it | seconds |")
    print("|---|---|---|---|")
    for name, result in results.items():
        print(f"| {name} | {result['before_mib']:,.0f} MiB | {result['peak_mib'] - result['before_mib']:,.0f} MiB | {result['seconds']:.1f} |")
    mine, theirs = results["this tree"], results[f"peer {peer}"]
    print(f"peak above the start, this tree against the peer: "
          f"{(mine['peak_mib'] - mine['before_mib']) / max(1e-9, theirs['peak_mib'] - theirs['before_mib']):.2f}x")
