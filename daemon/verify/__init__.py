"""Project verification: the static tier (imports, exported names, routes against calls).

Every function here reads text a model chose and is total: a file it cannot read is a
problem of that file, never an exception. The static modules run no code
and touch no network; ``toolchain`` runs the generated project itself (npm, tsc, the
build, pip and the app), sandboxed in subprocesses."""
