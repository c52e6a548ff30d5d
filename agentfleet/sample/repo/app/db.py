"""The database schema."""

SCHEMA = "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total INTEGER);"
INDEXES = []
