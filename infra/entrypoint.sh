#!/bin/sh
# The image's entrypoint. `vqvp` subcommands (and no arguments, or options) go to `vqvp`;
# anything else runs as given, so `prefect flow-run execute` (what Prefect's docker and
# kubernetes workers pass as the command), `torchrun ...`, `dvc ...` and `bash` work too.
#   podman run IMAGE stage ingest -S ingest.size=32   ->  vqvp stage ingest -S ingest.size=32
#   podman run IMAGE torchrun --nproc_per_node 2 /opt/venv/bin/vqvp stage train_vqvae
set -e
case "${1:-}" in
    "" | -* | run | rerun | stage | predict | params | lineage | human-eval) exec vqvp "$@" ;;
    *) exec "$@" ;;
esac
