"""The schema version this unitcost writes, apart from the migrations that reach it.

Opening a ledger to read it only compares versions; the migrations (`schema`) describe every
table with Arrow schemas, which a read does not need to load. `schema` checks that its
last migration is this version.
"""

SCHEMA_VERSION = 8
