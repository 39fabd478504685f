"""The archive as a Delta Lake table: its schema, a read-only log reader, and the writer over delta-rs.

``schema`` (the table's columns), ``files`` (what a table file is to us), ``stats``
(exact AddAction statistics from a Parquet footer), ``log`` and ``log_files``
(our own read-only reader of ``_delta_log/`` over the Storage interface),
``location`` (table URI and delta-rs storage options), ``writer`` (commits
through delta-rs), ``upkeep`` (checkpoint, log clean-up, vacuum) and
``bootstrap`` (registering an existing archive's files as version 0).
"""
