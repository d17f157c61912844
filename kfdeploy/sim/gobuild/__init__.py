"""Go sources for `kfdeploy sim build` (package data, read with importlib.resources)."""
