"""Project verification: the static tier (imports, exported names, routes against calls).

Every function here reads text a model chose and is total: a file it cannot read is a
problem of that file, never an exception. Nothing runs code or touches the network; the
toolchain tier (npm, tsc, the app itself) lives elsewhere."""
