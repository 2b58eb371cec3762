#!/bin/sh
# GPU 1 fell off the bus: nvidia-smi prints placeholders for it.
printf '0, GPU-5f1c2a9e-8d4b-4a7c-9e3f-1b2c3d4e5f60, 20000, 81559\n'
printf '1, GPU-0a7e63c1-2f44-4b1d-8c0e-6d2b9f3a1e77, [N/A], [N/A]\n'
