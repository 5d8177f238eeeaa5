#!/bin/sh
# Recovery init container under Bytewax's Helm chart, which runs
# `sh ./entrypoint-recovery.sh` with BYTEWAX_RECOVERY_DIRECTORY and
# BYTEWAX_RECOVERY_PARTS set but no pod name. Each pod creates only its own
# partition, so this is right for one volume per pod and for one shared volume.
set -eu
BYTEWAX_POD_NAME="${BYTEWAX_POD_NAME:-$(hostname)}"
export BYTEWAX_POD_NAME
exec python -m dataflows.cluster init-recovery
