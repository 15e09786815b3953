"""Deciding: observed state + policy → desired state → ordered steps. Pure; no I/O."""
