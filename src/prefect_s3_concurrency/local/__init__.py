"""The local side: safe key-to-path mapping, atomic writes, temp files, scans and sync."""
