"""UnixFS: files and directories as dag-pb DAGs (importer, reader, HAMT sharding)."""
