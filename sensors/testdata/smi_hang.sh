#!/bin/sh
# A wedged nvidia-smi: a child holds stdout open; its pid goes to $SMI_PIDFILE
# so the test can check the whole group was killed.
sleep 30 &
[ -n "$SMI_PIDFILE" ] && echo $! > "$SMI_PIDFILE"
wait
