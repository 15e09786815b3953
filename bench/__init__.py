"""daxd benchmarks against the fake kernel (see docs/benchmarks.md).

    .venv/bin/python -m bench all              # everything, about 3-4 minutes on 2 cores
    .venv/bin/python -m bench startup          # or: scale, rest, dbus
    .venv/bin/python -m bench all --json out.json

Benchmarks print their figures; they are not tests and assert nothing beyond "the daemon did
what it was asked" (a benchmark whose daemon failed is reported as an error, not as a number).
"""
