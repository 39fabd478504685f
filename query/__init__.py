"""Reading the archive: plan the files from the time range, scan them, format the rows."""
