#!/usr/bin/env bash
# Runs every exercise in order against a real Docker engine (the image is built once).
set -euo pipefail
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$dir/../cluster.sh" build
for ex in "$dir"/0*.sh; do
	echo
	echo "######## $(basename "$ex")"
	"$ex"
done
echo
echo "all exercises passed"
