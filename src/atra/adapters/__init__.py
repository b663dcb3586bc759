"""I/O shell: the only code that touches disk or network."""
