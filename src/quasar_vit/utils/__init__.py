"""Small shared helpers (atomic file I/O, seeding)."""
