#!/usr/bin/env python3
"""Runs a command and writes the CPU time it used (user + system, seconds,
its children included) to a file: the load generator's own CPU.

Usage: cpu_of.py OUT_FILE COMMAND [ARGS...]; exits with the command's code.
"""
import resource
import subprocess
import sys

out, command = sys.argv[1], sys.argv[2:]
code = subprocess.call(command)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out, "w") as f:
    f.write(f"{usage.ru_utime + usage.ru_stime:.3f}\n")
sys.exit(code)
