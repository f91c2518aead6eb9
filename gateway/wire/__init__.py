"""Translations between the front doors' wire formats and the pipeline's Chat Completions shape."""
