#!/bin/sh
printf 'index, uuid, memory.used [MiB], memory.total [MiB]\n'
