#!/bin/sh
echo "Failed to initialize NVML: Driver/library version mismatch" >&2
exit 18
