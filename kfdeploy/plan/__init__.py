"""Pure planning: apply phases, prune sets and diffs. Never imports `kubernetes`."""
