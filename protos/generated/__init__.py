"""Stubs generated from protos/*.proto."""
