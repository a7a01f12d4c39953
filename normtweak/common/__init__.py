"""Low-level helpers every layer may use (they import nothing else from normtweak).

files.py: atomic writes (one implementation for files and one for folders);
tables.py: Markdown result tables.
"""
