#!/bin/sh
# What nvidia-smi prints (on stdout) when the driver is gone; it exits 9.
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
echo
exit 9
