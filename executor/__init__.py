"""Runs committed cells in isolated containers."""
