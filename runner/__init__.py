"""Shared launcher plumbing: typed settings and flags, devices, RNGs, run directories, clean user errors."""
