#!/bin/sh
# Stand-in for nvidia-smi on a 4-GPU H100 host; refuses any other query.
# Shell builtins only: tests run it with PATH narrowed to one folder.
if [ "$1" != "--query-gpu=index,uuid,memory.used,memory.total" ] || [ "$2" != "--format=csv,noheader,nounits" ]; then
	echo "unexpected arguments: $*" >&2
	exit 2
fi
printf '%s\n' \
	'0, GPU-5f1c2a9e-8d4b-4a7c-9e3f-1b2c3d4e5f60, 61234, 81559' \
	'1, GPU-0a7e63c1-2f44-4b1d-8c0e-6d2b9f3a1e77, 12040, 81559' \
	'2, GPU-9c3d2b1a-7e6f-4a5b-8c9d-0e1f2a3b4c5d, 40780, 81559' \
	'3, GPU-1e2f3a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b, 0, 81559'
