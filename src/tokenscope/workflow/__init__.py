"""Workflow glue: DAG-time planning from the config dict (torch-free) and job-time helpers for rule scripts."""
