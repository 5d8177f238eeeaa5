#!/bin/sh
# Main container under Bytewax's Helm chart (and so waxctl), which runs
# `sh ./entrypoint.sh` in the image's working directory. Chart 0.8 names the
# deployed dataflow file in BYTEWAX_PYTHON_FILE_PATH, later charts give an import
# string in BYTEWAX_IMPORT_STR; `bytewax.run` itself derives the process id and
# the peers from the chart's BYTEWAX_POD_NAME, BYTEWAX_STATEFULSET_NAME and host file.
set -eu
cd "${BYTEWAX_WORKDIR:?BYTEWAX_WORKDIR is not set}"
exec python -m bytewax.run "${BYTEWAX_IMPORT_STR:-${BYTEWAX_PYTHON_FILE_PATH:?neither BYTEWAX_IMPORT_STR nor BYTEWAX_PYTHON_FILE_PATH is set}}"
