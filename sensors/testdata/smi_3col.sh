#!/bin/sh
# Stand-in printing the older 3-column query (index, memory.used, memory.total).
printf '0, 70000, 81559\n1, 1024, 81559\n'
